"""Exact-block error metrics of Figure 1 (paper section 4.1): how far a Kronecker sum
``F_hat = sum_k A_k (x) G_k`` is from the sampled Fisher block ``F = J^T J / m`` of one layer (for a
weight-sharing layer's exact block the rows of ``J`` are the per-example gradients ``vec(DW_n)``,
:class:`~kfac_bench.curvature.spatial.SpatialFisherBlock`, which brings its own ``gram()``).
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

The spectra of Kronecker sums, the one deliberate expensive step of Error 2, are computed in
:mod:`kfac_bench.curvature.spectrum` (its docstring says how and what it costs).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .estimate import MeasurableEstimate
from .kronecker import KroneckerSum, SampledFisherBlock
from .spectrum import DENSE_MAX, DT, SPECTRUM_MAX_ITER, SPECTRUM_POWERS, SPECTRUM_RTOL, _eigh, _eigvalsh, _f64, _sync

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the exact block F
# What the metrics ask of a block: ``gram()`` (an ``m x m`` Gram ``K`` with ``F = J^T J / m``: same
# non-zero spectrum, same Frobenius norm), ``inner_kronecker(ks)``, ``to(dtype)``, ``shape_a``,
# ``shape_g``. A :class:`SampledFisherBlock` has one row per example; a weight-sharing layer's exact
# block (:class:`~kfac_bench.curvature.spatial.SpatialFisherBlock`) one per example's summed gradient
# ``vec(DW_n)``. Only the exact zigzag singular values need the rank-one rows (``supports_gram_route``).
def _require_rows(block, what: str) -> None:
    if not getattr(block, "supports_gram_route", False):
        raise NotImplementedError(f"{what} need one rank-one term (a_t a_t^T) (x) (g_t g_t^T) per row "
                                  f"(SampledFisherBlock); a {type(block).__name__} has none: build the "
                                  "reference with zigzag_sigmas=False")


def gram_factors(block: SampledFisherBlock) -> tuple[Tensor, Tensor]:
    """``(C_a, C_g) = (A_bar A_bar^T, G G^T)`` in float64, ``m x m`` each: ``O(m^2 (d_a + d_g))``."""
    _require_rows(block, "the Gram factors")
    a, g = _f64(block.abar), _f64(block.g)
    return a @ a.mT, g @ g.mT


def fisher_gram(block: SampledFisherBlock) -> Tensor:
    """``K = J J^T / m`` in float64 (``m x m``), the block's own ``gram()``: same non-zero spectrum as
    ``F``, ``||F||_F = ||K||_F``. Cost ``O(m^2 (d_a + d_g))`` (an exact spatial block:
    ``O(N T d_a d_g + N^2 d_a d_g)``)."""
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
    solver-independent reference. Raises NotImplementedError for a block without those rows (a
    weight-sharing layer's exact block).
    """
    _require_rows(block, "the exact zigzag singular values")
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
    leading singular values of ``Z(F)`` (``zigzag_sigmas``: True for two, or a count; a block without
    rank-one rows, a weight-sharing layer's exact block, has none). ``seconds`` is the time this took."""

    block: SampledFisherBlock            # float64 copy (or a SpatialFisherBlock's: any block with gram())
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
