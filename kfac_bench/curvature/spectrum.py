"""Spectra of Kronecker sums ``sum_k A_k (x) G_k`` without forming them (Figure 1's Error 2 needs
the leading eigenvalues of an approximation; :mod:`kfac_bench.curvature.metrics` compares them with the
exact block's), and the CPU thread count of the eigensolvers. Imports nothing of this package, so
:class:`~kfac_bench.curvature.kronecker.KroneckerSum` can offer its spectrum without an import circle:
a Kronecker sum is read through its ``rank``, ``shape_a``, ``shape_g`` and ``terms``.

The rank-2 eigensolve: the one deliberate expensive step. No closed form exists for the spectrum of
``A (x) G + C (x) D`` with non-commuting factors. A dense ``eigvalsh`` of the ``n x n`` matrix costs
``O(n^3)`` time and ``8 n^2`` bytes; measured here (2 shared CPU cores, MKL; docs/fisher_metrics.md):
20-23 s at MNIST layer 5 (``n = 7,750``, 480 MB) and 147 s at FACES layer 5 (``n = 15,500``,
1.9 GB) with ``OMP_WAIT_POLICY=PASSIVE``, 43-124 s at MNIST without it; float32 (80 s), scipy
``evr`` for the top 512 only (77 s) and ARPACK ``eigsh`` (177 s) were no faster than float64 in the
same conditions. So ``solver="auto"`` uses it only for
``n <= dense_max`` (2,000; CURVES layer 5 has ``n = 1,275``: ~1 s) and otherwise computes the ``m``
largest eigenvalues by subspace iteration with Rayleigh-Ritz on the structured operator, exactly
(to a stated tolerance) and without any ``n x n`` array:

* rotate to the eigenbasis ``V (x) U`` of the first term (an exact orthogonal similarity); there it
  is the diagonal ``alpha (x) beta`` and a product with a block of ``k`` vectors costs
  ``O(k n (d_a + d_g))``;
* start from the ``k = m + p`` (``p = max(16, m / 8)``) coordinate vectors with the largest
  diagonal entries: orthonormal, and their Rayleigh quotient is a gathered submatrix, so the first
  step costs one ``k x k`` eigensolve; or from a warm basis (``basis``), e.g. the Ritz vectors of
  the other best-rank-2 method: with ``trust_basis`` (both solvers converged) one Rayleigh-Ritz step
  on it is exact to second order in the difference of the two matrices and is all it costs;
* step ``X <- F_hat^2 (X W)`` (``powers = 2`` structured products) and Rayleigh-Ritz on the pencil
  ``(X^T F_hat X, X^T X)``: three ``n x k`` products and one ``k x k`` eigensolve, ``O(n k^2)``;
* stop when the monitored quantity (Error 2 itself in :func:`fisher_error`; the top Ritz values
  otherwise) changes by less than ``rtol`` (1e-4) relatively. Ritz values are lower bounds of the
  top eigenvalues (Cauchy interlacing) and ``lambda_i >= 0``, so up to rounding the Error 2 reported
  is an upper bound that decreases to the exact one. From a cold start it stops after the gathered
  step and two full ones. Against dense ``eigvalsh`` (same threads): MNIST layer 5 1.4 s instead of
  20-23 s, Error 2 within 1.5e-6 (Deflation) and 2.7e-6 (KFAC-corrected) relative; FACES layer 5
  8.8-9.8 s instead of 147 s, within 9e-8.
* Power steps favour large magnitudes: negative eigenvalues (the second term is indefinite) larger
  than the wanted ``mu_m`` occupy columns of the block (10 of 64 spare ones at MNIST layer 5).
  When they take more than half of the spare columns the block is widened with random columns, so
  the top ``m`` keep converging; no shift is used (it would slow every typical case).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

DT = torch.float64
log = logging.getLogger(__name__)

DENSE_MAX = 2000          # n at or below which a rank >= 2 spectrum is computed densely
SPECTRUM_RTOL = 1e-4      # relative change of the monitored quantity that ends subspace iteration
SPECTRUM_POWERS = 2       # structured products per Rayleigh-Ritz step
# LAPACK's symmetric eigensolvers (MKL syevd) synchronise their threads at every Householder step.
# With OpenMP's default (active, spinning) wait policy and the cores shared with other processes they
# stall: eigh of a 1024 x 1024 matrix took 2-28 s on 2 threads and 0.25-0.6 s on 1 on this project's
# 2-core machine under load; with OMP_WAIT_POLICY=PASSIVE in the environment (set before torch
# starts) 2 threads took 0.3 s. So the eigensolvers here can run with their own CPU thread count
# (matrix products keep all threads): None (the default) leaves torch's setting alone. The mathematics
# reads no environment and changes no setting at import; the harness decides, where it starts
# (kfac_bench.utils.configure_cpu_eigensolvers: one thread unless the wait policy is passive).
CPU_EIGEN_THREADS: int | None = None


def set_cpu_eigen_threads(threads: int | None) -> None:
    """The torch CPU thread count of this module's eigensolvers (None: torch's own setting)."""
    global CPU_EIGEN_THREADS
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise ValueError(f"eigensolver threads must be None or an integer >= 1, got {threads!r}")
    CPU_EIGEN_THREADS = None if threads is None else int(threads)


@contextmanager
def _eigen_threads(x: Tensor):
    old = torch.get_num_threads()
    if x.device.type != "cpu" or CPU_EIGEN_THREADS is None or old == CPU_EIGEN_THREADS:
        yield
        return
    torch.set_num_threads(CPU_EIGEN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _eigh(x: Tensor) -> tuple[Tensor, Tensor]:
    with _eigen_threads(x):
        return torch.linalg.eigh(x)


def _eigvalsh(x: Tensor) -> Tensor:
    with _eigen_threads(x):
        return torch.linalg.eigvalsh(x)


SPECTRUM_MAX_ITER = 50    # subspace-iteration steps (each one structured product + Rayleigh-Ritz)


def _f64(x: Tensor) -> Tensor:
    return x.to(DT)


def _terms64(ks) -> list[tuple[Tensor, Tensor]]:
    return [(_f64(a), _f64(g)) for a, g in ks.terms]




def _sync(x: Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


# --------------------------------------------------------------------------- spectra of F_hat
@dataclass
class SpectrumResult:
    """Decreasing eigenvalues of a Kronecker sum (``values``, float64) and how they were found."""

    values: Tensor
    solver: str                  # "factors" (rank 1), "dense" or "subspace"
    iterations: int = 0          # subspace steps (structured products + Rayleigh-Ritz)
    converged: bool = True
    basis: Tensor | None = field(default=None, repr=False)  # Ritz basis (original coordinates)


def kronecker_product_spectrum(a: Tensor, g: Tensor, top: int | None = None) -> Tensor:
    """``spec(A (x) G)`` = all products ``alpha_i beta_j`` of the factors' eigenvalues, decreasing.
    ``O(d_a^3 + d_g^3 + n log n)``; exact, signs kept (no ``abs``)."""
    alpha = _eigvalsh(_f64(a))
    beta = _eigvalsh(_f64(g))
    prod = (alpha[:, None] * beta[None, :]).reshape(-1)
    if top is not None and top < prod.numel():
        return torch.topk(prod, top).values
    return torch.sort(prod, descending=True).values


def _structured_apply(terms: list[tuple[Tensor, Tensor]], x: Tensor, d_a: int, d_g: int) -> Tensor:
    """``(sum_k A_k (x) G_k) X`` for a block ``X`` of ``k`` vectors (``n x k``; row ``j d_g + i`` is
    entry ``(i, j)`` of the column-major ``MAT``): ``O(k n (d_a + d_g))`` per term."""
    k = x.shape[1]
    x3 = x.reshape(d_a, d_g, k)
    out = None
    for a, g in terms:
        y = (a @ torch.matmul(g, x3).reshape(d_a, d_g * k)).reshape(d_a * d_g, k)
        out = y if out is None else out + y
    return out


def _rotate(x: Tensor, v: Tensor, u: Tensor, d_a: int, d_g: int, inverse: bool = False) -> Tensor:
    """``(V (x) U)^T X`` (or ``(V (x) U) X`` with ``inverse=True``) for a block of vectors."""
    if inverse:
        return _structured_apply([(v, u)], x, d_a, d_g)
    return _structured_apply([(v.mT, u.mT)], x, d_a, d_g)


def _normalize_columns(x: Tensor) -> Tensor:
    norms = torch.linalg.vector_norm(x, dim=0)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def _rayleigh_ritz(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Ritz values (decreasing) and coefficient matrix ``W`` of the pencil
    ``(X^T Y, X^T X)``: ``X W`` are B-orthonormal Ritz vectors, ``Y W = F_hat X W``."""
    h = x.mT @ y
    h = 0.5 * (h + h.mT)
    b = x.mT @ x
    b = 0.5 * (b + b.mT)
    chol, info = torch.linalg.cholesky_ex(b)
    if int(info) != 0:  # a numerically dependent basis: re-orthonormalise it (rare)
        raise torch.linalg.LinAlgError("basis Gram is not positive definite")
    hs = torch.linalg.solve_triangular(chol, h, upper=False)
    hs = torch.linalg.solve_triangular(chol, hs.mT, upper=False)
    theta, ws = _eigh(0.5 * (hs + hs.mT))
    w = torch.linalg.solve_triangular(chol.mT, ws, upper=True)
    return theta.flip(0), w.flip(1)


def _default_oversample(top: int) -> int:
    return max(16, top // 8)


def _subspace_top_eigenvalues(
    terms: list[tuple[Tensor, Tensor]],
    top: int,
    monitor: Callable[[Tensor], Tensor],
    rtol: float,
    max_iter: int,
    oversample: int | None,
    basis: Tensor | None,
    powers: int = SPECTRUM_POWERS,
    trust_basis: bool = False,
    want_basis: bool = True,
) -> SpectrumResult:
    """The ``top`` largest eigenvalues of ``sum_k A_k (x) G_k`` by subspace iteration with
    Rayleigh-Ritz in the eigenbasis of the first term (see the module docstring)."""
    d_a, d_g = terms[0][0].shape[0], terms[0][1].shape[0]
    n = d_a * d_g
    k = min(n, top + (_default_oversample(top) if oversample is None else int(oversample)))
    alpha, v = _eigh(terms[0][0])
    beta, u = _eigh(terms[0][1])
    main = (alpha[:, None] * beta[None, :]).reshape(n)
    rest = [(v.mT @ a @ v, u.mT @ g @ u) for a, g in terms[1:]]

    def apply(x: Tensor) -> Tensor:
        y = main[:, None] * x
        return y + _structured_apply(rest, x, d_a, d_g) if rest else y

    warm = basis is not None and basis.shape[0] == n and basis.shape[1] >= k and bool(torch.isfinite(basis).all())
    if warm:
        x = _normalize_columns(_rotate(basis.to(main), v, u, d_a, d_g))
        y = apply(x)
        if trust_basis:  # a converged basis of (nearly) the same matrix: one Rayleigh-Ritz step
            max_iter = 1
    else:  # coordinate vectors of the k largest diagonal entries; the first quotient is a gather
        diag = main.clone()
        for a, g in rest:
            diag += (torch.diagonal(a)[:, None] * torch.diagonal(g)[None, :]).reshape(n)
        idx = torch.topk(diag, k).indices
        jj, ii = idx // d_g, idx % d_g
        y = torch.zeros(n, k, dtype=main.dtype, device=main.device)
        y[idx, torch.arange(k, device=main.device)] = main[idx]
        for a, g in rest:
            y += (a[:, jj][:, None, :] * g[:, ii][None, :, :]).reshape(n, k)
        x = torch.zeros_like(y)
        x[idx, torch.arange(k, device=main.device)] = 1.0
    spare_target = k - top
    gen = None
    previous, converged, it = None, False, 0
    theta = None
    t0 = time.perf_counter()
    for it in range(1, max_iter + 1):
        try:
            if it == 1 and not warm:  # orthonormal coordinate basis: the quotient is a gathered submatrix
                h = y[idx]
                theta, w = _eigh(0.5 * (h + h.mT))
                theta, w = theta.flip(0), w.flip(1)
            else:
                theta, w = _rayleigh_ritz(x, y)
        except torch.linalg.LinAlgError:
            q, _ = torch.linalg.qr(x)
            x, y = q, apply(q)
            theta, w = _rayleigh_ritz(x, y)
        current = monitor(theta[:top])
        if log.isEnabledFor(logging.DEBUG):
            log.debug("subspace step %d: block %d, monitor %s, %.2f s", it, x.shape[1],
                      current.flatten()[:1].tolist(), time.perf_counter() - t0)
        if previous is not None:
            scale = torch.clamp(torch.max(torch.abs(current)), min=torch.finfo(DT).tiny)
            if float(torch.max(torch.abs(current - previous)) / scale) <= rtol:
                converged = True
                break
        previous = current
        if it == max_iter:
            break
        x = _normalize_columns(y @ w)   # F_hat times the Ritz vectors: one power step
        for _ in range(powers - 1):     # more products per Rayleigh-Ritz step (cheap ones)
            x = _normalize_columns(apply(x))
        # Power steps keep the eigenvalues of largest MAGNITUDE: negative ones larger than the
        # smallest wanted value occupy columns. When they leave less than half the oversampling
        # spare, widen the block (random columns) so the wanted ones keep converging fast.
        wasted = int(torch.sum(theta < -torch.abs(theta[top - 1])))
        spare = x.shape[1] - top - wasted
        if spare < spare_target // 2 and x.shape[1] < n // 2:
            grow = min(spare_target - spare, n // 2 - x.shape[1])
            if gen is None:
                gen = torch.Generator(device=main.device).manual_seed(0)
            extra = torch.randn(n, grow, generator=gen, dtype=main.dtype, device=main.device)
            x = torch.cat([x, _normalize_columns(extra)], dim=1)
            previous = None  # a new subspace: compare from the next step on
        y = apply(x)
    if warm and trust_basis:
        converged = True
    ritz = _normalize_columns(_rotate(x @ w, v, u, d_a, d_g, inverse=True)) if want_basis else None
    return SpectrumResult(theta[:top], "subspace", it, converged, ritz)


def kronecker_sum_spectrum(
    ks,
    top: int | None = None,
    *,
    solver: str = "auto",
    dense_max: int = DENSE_MAX,
    rtol: float = 1e-8,
    max_iter: int = SPECTRUM_MAX_ITER,
    oversample: int | None = None,
    basis: Tensor | None = None,
    monitor: Callable[[Tensor], Tensor] | None = None,
    powers: int = SPECTRUM_POWERS,
    trust_basis: bool = False,
    want_basis: bool = True,
) -> SpectrumResult:
    """Eigenvalues of ``sum_k A_k (x) G_k``, decreasing (float64); the ``top`` largest when given.

    * rank 1: exact, from the factors' eigenvalues (``solver="factors"``).
    * rank >= 2, ``solver="dense"`` (``"auto"`` when ``n <= dense_max``, ``top`` is None, or
      ``top`` plus oversampling reaches ``n / 2``): ``eigvalsh`` of the explicit matrix, exact,
      ``O(n^3)`` time and ``O(n^2)`` memory.
    * rank >= 2, ``solver="subspace"``: the ``top`` largest by structured subspace iteration
      (module docstring), ``O(steps * (n k^2 + k n (d_a + d_g)))`` with ``k = top + oversample``.
      It stops when ``monitor(ritz_values)`` (default: the Ritz values themselves) changes by less
      than ``rtol`` relative to its largest entry. ``basis`` warm-starts it (``n x k``, the
      ``basis`` of an earlier result).
    """
    if ks.rank == 0:
        raise ValueError("empty Kronecker sum")
    d_a, d_g = ks.shape_a, ks.shape_g
    n = d_a * d_g
    if top is not None:
        top = min(int(top), n)
    if ks.rank == 1:
        return SpectrumResult(kronecker_product_spectrum(*ks.terms[0], top=top), "factors")
    if solver not in ("auto", "dense", "subspace"):
        raise ValueError(f"unknown spectrum solver {solver!r}; choose auto, dense or subspace")
    terms = _terms64(ks)
    if solver == "subspace" and top is None:
        raise ValueError("the subspace solver needs top (the number of leading eigenvalues)")
    over = _default_oversample(top) if (top is not None and oversample is None) else (oversample or 0)
    use_dense = solver == "dense" or (solver == "auto" and (
        top is None or n <= dense_max or 2 * (top + over) >= n))
    if use_dense:
        dense = sum(torch.kron(a, g) for a, g in terms)
        values = _eigvalsh(0.5 * (dense + dense.mT)).flip(0)
        return SpectrumResult(values if top is None else values[:top], "dense")
    return _subspace_top_eigenvalues(terms, top, monitor or (lambda t: t), rtol, max_iter,
                                     oversample, basis, max(1, int(powers)), trust_basis, want_basis)


