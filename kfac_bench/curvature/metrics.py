"""Exact-block error metrics of Figure 1 (paper section 4.1): how far a Kronecker sum
``F_hat = sum_k A_k (x) G_k`` is from the sampled Fisher block ``F = J^T J / m`` of one layer.
(:func:`fisher_error` asks the estimate for ``<F, F_hat>``, ``||F_hat||^2`` and its spectrum, so an
estimate of another structure -- EKFAC's diagonal in a Kronecker eigenbasis -- brings its own routes.)

* **Error 1** ``||F - F_hat||_F / ||F||_F``
* **Error 2** ``||spec(F) - spec(F_hat)||_2 / ||spec(F)||_2``, both spectra sorted decreasingly and
  zero-padded to ``n = d_a d_g``.

Nothing of size ``n x n`` is formed for a realistic layer. With ``J_t = vec(g_t a_t^T) = a_t (x) g_t``
(the rows of ``J``, ``m`` examples), ``C_a = A_bar A_bar^T`` and ``C_g = G G^T`` (``m x m``):

==============================  ==============================================  =====================
quantity                        route                                           cost
==============================  ==============================================  =====================
Gram ``K = J J^T / m``          ``(C_a o C_g) / m`` (Hadamard product)          ``O(m^2 (d_a + d_g))``
``||F||_F^2``                   ``||K||_F^2`` (``F`` and ``K`` share spectra)   ``O(m^2)``
``spec(F)``                     ``eigvalsh(K)``, the ``n - m`` others are 0      ``O(m^3)``
``<F, A (x) G>``                ``(1/m) sum_t (a_t^T A a_t)(g_t^T G g_t)``       ``O(m (d_a^2 + d_g^2))`` per term
``||F_hat||_F^2``               ``sum_jk <A_j, A_k> <G_j, G_k>``                 ``O(r^2 (d_a^2 + d_g^2))``
``spec(A (x) G)``               products of the factors' eigenvalues            ``O(d_a^3 + d_g^3 + n log n)``
``spec(A (x) G + C (x) D)``     ONE eigensolve, see :func:`kronecker_sum_spectrum`  see below
``sigma_k(Z(F))`` (reference)   ``eig(P_s^T (C_g o C_g) P_s) / m^2``, svec rows     ``O(m^2 s + s^3)``
==============================  ==============================================  =====================

All of it is accumulated in float64 (float32 statistics are promoted first): Error 1 is
``sqrt(||F||^2 - 2 <F, F_hat> + ||F_hat||^2) / ||F||``, which cancels to ``Error1^2`` (1e-2..1e-5
relative for a good approximation); Error 2 cancels far more (below).

The spectral-tail identity. ``F`` has at most ``m`` non-zero eigenvalues ``lambda_1..lambda_m``, so
with ``mu`` the eigenvalues of ``F_hat`` sorted decreasingly

    ||spec(F) - spec(F_hat)||^2 = sum_{i<=m} (lambda_i - mu_i)^2 + (||F_hat||_F^2 - sum_{i<=m} mu_i^2)

and only the ``m`` largest eigenvalues of ``F_hat`` are needed (``n`` of them if ``m > n``). The
bracket is small against ``||F_hat||^2`` (``Error2^2 ||F||^2`` at most, 3e-9 of it at FACES
layer 5), so the top eigenvalues are needed to ~1e-12 relative: float64, and float32 is not an
option for them (its eigenvalue errors of ~1e-7 ``mu_1`` would swamp Error 2 there).

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
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .estimate import MeasurableEstimate
from .kronecker import KroneckerSum, SampledFisherBlock

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


def _terms64(ks: KroneckerSum) -> list[tuple[Tensor, Tensor]]:
    return [(_f64(a), _f64(g)) for a, g in ks.terms]


# ----------------------------------------------------------------------------- the exact block F
def gram_factors(block: SampledFisherBlock) -> tuple[Tensor, Tensor]:
    """``(C_a, C_g) = (A_bar A_bar^T, G G^T)`` in float64, ``m x m`` each: ``O(m^2 (d_a + d_g))``."""
    a, g = _f64(block.abar), _f64(block.g)
    return a @ a.mT, g @ g.mT


def fisher_gram(block: SampledFisherBlock) -> Tensor:
    """``K = J J^T / m`` in float64 (``m x m``): same non-zero spectrum as ``F``,
    ``||F||_F = ||K||_F``. Cost ``O(m^2 (d_a + d_g))``."""
    return block.to(DT).gram()


def _gram_spectrum(gram: Tensor, n: int) -> Tensor:
    """Decreasing eigenvalues of the PSD Gram, at most ``n`` of them, round-off negatives set to 0."""
    lam = _eigvalsh(0.5 * (gram + gram.mT)).flip(0)
    return torch.clamp(lam[: min(gram.shape[0], n)], min=0.0)


def fisher_spectrum(block: SampledFisherBlock, full: bool = False) -> Tensor:
    """``spec(F)`` sorted decreasingly, float64, through the ``m x m`` Gram (``O(m^3)``).

    Returns the ``min(m, n)`` eigenvalues that can be non-zero; ``full=True`` zero-pads to
    ``n = d_a d_g`` (tests and tiny layers only).
    """
    n = block.shape_a * block.shape_g
    lam = _gram_spectrum(fisher_gram(block), n)
    if full and lam.numel() < n:
        lam = torch.cat([lam, lam.new_zeros(n - lam.numel())])
    return lam


def fisher_frobenius_sq(block: SampledFisherBlock) -> float:
    """``||F||_F^2 = ||K||_F^2`` (float64, ``O(m^2 (d_a + d_g))``)."""
    return float(torch.sum(fisher_gram(block) ** 2))


def fisher_inner(block: SampledFisherBlock, ks: KroneckerSum) -> float:
    """``<F, sum_k A_k (x) G_k>_F = (1/m) sum_k sum_t (a_t^T A_k a_t)(g_t^T G_k g_t)`` in float64:
    ``O(m (d_a^2 + d_g^2))`` per term."""
    return ks.inner_with(block)


def kronecker_sum_frobenius_sq(ks: KroneckerSum) -> float:
    """``||sum_k A_k (x) G_k||_F^2 = sum_jk <A_j, A_k> <G_j, G_k>`` in float64."""
    return ks.frobenius_sq()


def _svec_rows(x: Tensor) -> Tensor:
    """Rows ``svec(x_t x_t^T)``: the upper triangle with off-diagonal entries times ``sqrt(2)``, an
    isometry of the symmetric matrices (``<svec(a a^T), svec(b b^T)> = (a.b)^2``)."""
    d = x.shape[1]
    i, j = torch.triu_indices(d, d, device=x.device)
    weight = torch.full(i.shape, math.sqrt(2.0), dtype=x.dtype, device=x.device)
    weight[i == j] = 1.0
    return x[:, i] * x[:, j] * weight


def zigzag_singular_values(block: SampledFisherBlock, k: int | None = None) -> Tensor:
    """Exact singular values of ``Z(F)`` (decreasing, float64), never forming ``Z(F)``.

    ``Z(F) = P^T Q / m`` with rows ``P_t = vec(a_t a_t^T)``, ``Q_t = vec(g_t g_t^T)``; both live in
    the symmetric matrices, so ``svec`` (an isometry) shrinks them to ``s = d (d + 1) / 2`` columns.
    With ``S_g = Q Q^T = C_g o C_g`` (``m x m``), ``sigma^2 = eig(P_s^T S_g P_s) / m^2`` on the
    smaller side (``s_a x s_a``; or the mirror image with ``s_g``), else
    ``eig(S_a^1/2 S_g S_a^1/2) / m^2`` (``m x m``). Cost ``O(m^2 min(s, m) + min(s, m)^3)``:
    MNIST and FACES layer 5 have ``s_a = 496``. Squared values: ``sigma_k`` is exact to about
    ``eps sigma_1^2 / sigma_k``, plenty for the leading ones it is used for. By Theorem 3.1 the best
    Kronecker rank-r approximation has ``||F - F_r||_F^2 = ||F||_F^2 - sum_{i<=r} sigma_i^2``: a
    solver-independent reference.
    """
    a, g = _f64(block.abar), _f64(block.g)
    m = block.m
    s_a = a.shape[1] * (a.shape[1] + 1) // 2
    s_g = g.shape[1] * (g.shape[1] + 1) // 2
    if min(s_a, s_g) <= m:
        small, other = (a, g) if s_a <= s_g else (g, a)
        p = _svec_rows(small)                       # m x s
        c_o = other @ other.mT
        core = p.mT @ ((c_o * c_o) @ p)             # s x s
    else:
        c_a, c_g = gram_factors(block)
        s_am, s_gm = c_a * c_a, c_g * c_g
        w, u = _eigh(0.5 * (s_am + s_am.mT))
        keep = w > w.max().clamp(min=0) * m * torch.finfo(DT).eps
        half = u[:, keep] * torch.sqrt(w[keep])
        core = half.mT @ s_gm @ half
    sig2 = _eigvalsh(0.5 * (core + core.mT)).flip(0)
    sig = torch.sqrt(torch.clamp(sig2, min=0.0)) / m
    return sig if k is None else sig[:k]


@dataclass
class FisherReference:
    """What the errors need of the exact block, computed once per batch and layer (float64):
    ``spec(F)`` (its ``min(m, n)`` possibly non-zero eigenvalues), ``||F||_F^2`` and optionally the
    leading singular values of ``Z(F)`` (``zigzag_sigmas``: True for two, or a count). ``seconds`` is the time this took."""

    block: SampledFisherBlock            # float64 copy
    eigenvalues: Tensor                  # decreasing, length min(m, n)
    frobenius_sq: float
    n: int
    zigzag_sigmas: Tensor | None = None  # exact leading singular values of Z(F), when asked for
    seconds: float = 0.0
    zigzag_count: int = 0                # how many were asked for (fewer exist when Z(F) is smaller)

    @classmethod
    def from_block(cls, block: SampledFisherBlock, zigzag_sigmas: bool | int = False) -> "FisherReference":
        t0 = time.perf_counter()
        b64 = block.to(DT)
        n = b64.shape_a * b64.shape_g
        gram = fisher_gram(b64)
        ref = cls(b64, _gram_spectrum(gram, n), float(torch.sum(gram ** 2)), n)
        if zigzag_sigmas:   # True: the two leading ones; an integer: that many
            ref.zigzag_count = 2 if zigzag_sigmas is True else int(zigzag_sigmas)
            ref.zigzag_sigmas = zigzag_singular_values(b64, ref.zigzag_count)
        _sync(gram)
        ref.seconds = time.perf_counter() - t0
        return ref

    def optimal_error(self, rank: int) -> float:
        """Error 1 of the best Kronecker rank-``rank`` approximation (Theorem 3.1),
        ``sqrt(sum_{i > rank} sigma_i^2) / ||F||_F``."""
        if self.zigzag_sigmas is None:
            raise ValueError("built without zigzag_sigmas=True")
        if rank > self.zigzag_count:
            raise ValueError(f"built with {self.zigzag_count} zigzag singular values, fewer than rank {rank}")
        tail = self.frobenius_sq - float(torch.sum(self.zigzag_sigmas[:rank] ** 2))
        return math.sqrt(max(tail, 0.0) / self.frobenius_sq) if self.frobenius_sq > 0 else float("nan")



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
    ks: KroneckerSum,
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


# ------------------------------------------------------------------------------------ errors
def spectrum_error_sq(lam: Tensor, mu_top: Tensor, approx_frobenius_sq: float) -> float:
    """``||spec(F) - spec(F_hat)||^2`` from the possibly non-zero eigenvalues ``lam`` of ``F``
    (decreasing, length ``r <= n``), the ``r`` largest eigenvalues ``mu_top`` of ``F_hat``
    (decreasing) and ``||F_hat||_F^2``, by the spectral-tail identity (module docstring)."""
    r = lam.numel()
    if mu_top.numel() < r:
        raise ValueError(f"need the {r} largest eigenvalues of F_hat, got {mu_top.numel()}")
    mu = mu_top[:r].to(lam)
    head = torch.sum((lam - mu) ** 2)
    tail = approx_frobenius_sq - torch.sum(mu ** 2)
    return float(head + torch.clamp(tail, min=0.0))


def fisher_error(
    block: SampledFisherBlock | FisherReference,
    approx: MeasurableEstimate,
    *,
    spectrum: bool = True,
    solver: str = "auto",
    dense_max: int = DENSE_MAX,
    rtol: float = SPECTRUM_RTOL,
    max_iter: int = SPECTRUM_MAX_ITER,
    oversample: int | None = None,
    powers: int = SPECTRUM_POWERS,
    warm: dict | None = None,
    trust_warm: bool = False,
) -> dict:
    """Error 1 and Error 2 of ``approx`` against the exact block (paper section 4.1).

    ``block`` is the batch's :class:`SampledFisherBlock` or, to share the Gram work between
    methods, a :class:`FisherReference` built from it. Returns a dict with ``error_frobenius``,
    ``error_spectrum`` (NaN when ``spectrum=False``), ``fisher_norm``, ``approx_norm``,
    ``inner`` (``<F, F_hat>``), ``spectrum_solver``, ``spectrum_iterations``,
    ``spectrum_converged``, ``seconds_frobenius`` and ``seconds_spectrum``.

    ``approx`` is any :class:`~kfac_bench.curvature.estimate.MeasurableEstimate`: its own
    ``inner_with``, ``frobenius_sq`` and ``top_spectrum`` give ``<F, F_hat>``, ``||F_hat||^2`` and its
    leading eigenvalues (a :class:`KroneckerSum` by the routes of the module docstring; EKFAC's
    diagonal in a Kronecker eigenbasis by its scaling, :mod:`kfac_bench.curvature.ekfac`).

    For a Kronecker sum, Error 1 costs ``O(m (d_a^2 + d_g^2))`` per term once the reference exists. Error 2 costs one
    eigensolve for rank >= 2 (:func:`kronecker_sum_spectrum`; the subspace solver stops when Error 2
    itself changes by less than ``rtol`` relatively) and none for rank 1. ``warm`` is a dict the
    subspace solver reads and updates (key ``"basis"``, the Ritz vectors) for a later approximation
    of the same block; ``trust_warm=True`` says that approximation targets the same matrix to solver
    tolerance (Deflation after Lanczos or vice versa), so one Rayleigh-Ritz step on the basis is used
    and the basis is not updated.
    """
    ref = block if isinstance(block, FisherReference) else FisherReference.from_block(block)
    t0 = time.perf_counter()
    f2 = ref.frobenius_sq
    # the estimate's own structure gives the three numbers (Kronecker sums: the routes of the table
    # above; EKFAC: its scaling), so nothing here asks which kind of estimate it is
    inner = approx.inner_with(ref.block)
    h2 = approx.frobenius_sq()
    err1_sq = max(f2 - 2.0 * inner + h2, 0.0)
    out = {
        "error_frobenius": math.sqrt(err1_sq / f2) if f2 > 0 else float("nan"),
        "fisher_norm": math.sqrt(f2),
        "approx_norm": math.sqrt(max(h2, 0.0)),
        "inner": inner,
        "seconds_frobenius": time.perf_counter() - t0,
        "error_spectrum": float("nan"),
        "spectrum_solver": "none",
        "spectrum_iterations": 0,
        "spectrum_converged": True,
        "seconds_spectrum": 0.0,
    }
    if not spectrum:
        return out
    t0 = time.perf_counter()
    lam = ref.eigenvalues
    r = lam.numel()

    def monitor(theta: Tensor) -> Tensor:  # Error 2 itself, from the current Ritz values
        return torch.sqrt(torch.tensor(spectrum_error_sq(lam, theta, h2) / f2, dtype=DT))

    basis = (warm or {}).get("basis")
    trusted = trust_warm and basis is not None
    res = approx.top_spectrum(top=r, solver=solver, dense_max=dense_max, rtol=rtol,
                                 max_iter=max_iter, oversample=oversample, basis=basis, monitor=monitor,
                                 powers=powers, trust_basis=trusted,
                                 want_basis=warm is not None and not trusted)
    if warm is not None and res.basis is not None:
        warm["basis"] = res.basis
    err2_sq = spectrum_error_sq(lam, res.values, h2)
    _sync(lam)
    out.update(error_spectrum=math.sqrt(err2_sq / f2) if f2 > 0 else float("nan"),
               spectrum_solver=res.solver, spectrum_iterations=res.iterations,
               spectrum_converged=res.converged, seconds_spectrum=time.perf_counter() - t0)
    return out
