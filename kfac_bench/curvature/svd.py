"""Leading singular triplets of an implicit operator: power SVD (appendix B.1) and restarted
Golub-Kahan-Lanczos bidiagonalisation (section 3.2.2, appendix B.2).

Both solvers only call ``op.matvec`` (``Z v``), ``op.rmatvec`` (``Z^T u``) and the inner products
``op.inner_left`` / ``op.inner_right`` of the two vector spaces, so they run unchanged on the
zigzag operators of :mod:`kfac_bench.curvature.kronecker` (vectors are matrices there) or on any
other representation.

Stopping rule (a decision; the paper's ``||A v - sigma u|| <= eps`` is absolute): we stop when
``||Z v - sigma u|| <= tol * sigma_1``. The Fisher's scale depends on the loss convention (the
per-element mean makes G-side entries ~1/d_out^2), so an absolute 1e-6 would be met by the initial
guess on some layers and never on others. ``tol`` defaults to the paper's 1e-6.

A numerically zero operator (the remainder of a block that is exactly one Kronecker product, after
deflation or the KFAC correction) has no direction to converge to: power iterations would wander on
rounding noise up to ``max_iter``. The callers pass the level below which a singular value is
rounding noise (``zero_below``: :func:`rounding_floor` times the norm of what was subtracted); the
solvers then stop and report a zero triplet (``zero=True``, sigma 0, exact: converged).

A residual can also stall at the rounding level of the products, above ``tol * sigma_1``: float32
products summed over ~10^5 rows (a conv layer's positions under ``spatial="independent"``) stall it at
~2.5e-6 relative even with the chunked float64 sums of :func:`kfac_bench.curvature.kronecker.rows_inner`
(2e-4 before them, measured on the MNIST CNN's first layer at batch 512), and the power method would run
to ``max_iter`` (1000 iterations, 138 s for one KPSVD fit of that layer; float64 converges in 5).
:func:`power_svd` stops when the residual has set no new low in ``STALL_ITERATIONS`` iterations while it
is below ``sqrt(eps)`` (half the dtype's digits: float32 3.5e-4, float64 1.5e-8) times sigma plus the
norm of what was subtracted (``zero_below / rounding_floor``); the triplet is then as accurate as its
products allow and is reported converged, with ``stalled=True``. A residual that keeps falling, however
slowly (power iterations with sigma_2 / sigma_1 near 1), or stalls above that level, runs on to ``tol`` or
``max_iter`` as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SingularTriplets:
    """``Z v_i = sigma_i u_i``, ``Z^T u_i = sigma_i v_i`` (to the reported residuals)."""

    sigmas: list[float]
    left: list[Tensor]     # u_i, A-space
    right: list[Tensor]    # v_i, G-space
    iterations: int        # pairs of operator applications
    converged: bool
    residuals: list[float]
    zero: list[bool] | None = None   # per triplet: the operator was numerically zero there (sigma set to 0)
    stalled: bool = False            # stopped at the products' rounding level (module doc), not at tol


def rounding_floor(dtype: torch.dtype) -> float:
    """Relative size of the rounding noise of a zigzag product computed in ``dtype``, with a margin:
    64 eps (float32 7.6e-6, float64 1.4e-14). Measured on exactly-Kronecker blocks: the remainder's
    apparent sigma is 1-5 eps of the subtracted term's."""
    return 64.0 * torch.finfo(dtype).eps


STALL_ITERATIONS = 10


class _StallWatch:
    """Whether a power-method residual has stopped falling at the products' rounding level (module doc)."""

    def __init__(self, dtype: torch.dtype, zero_below: float):
        self.half_digits = math.sqrt(torch.finfo(dtype).eps)
        self.subtracted = zero_below / rounding_floor(dtype)
        self.best, self.since_best = float("inf"), 0

    def stalled(self, residual: float, sigma: float) -> bool:
        if residual < self.best:
            self.best, self.since_best = residual, 0
        else:
            self.since_best += 1
        level = self.half_digits * (sigma + self.subtracted)
        return self.since_best >= STALL_ITERATIONS and residual <= level


def _norm(inner, x: Tensor) -> Tensor:
    return torch.sqrt(torch.clamp(inner(x, x), min=0))


def power_svd(op, v0: Tensor, tol: float = 1e-6, max_iter: int = 1000, zero_below: float = 0.0,
              precision: torch.dtype | None = None) -> SingularTriplets:
    """Dominant singular triplet of ``op`` by the power method of appendix B.1.

    ``v0`` is the starting right vector (warm start: the previous factor). Each iteration costs one
    ``Z v`` and one ``Z^T u``; the residual of the paper's stopping test reuses the ``Z v`` of the
    next iteration, so it costs nothing extra.

    ``zero_below`` (> 0 for a remainder operator): an estimate of sigma at or below it in two
    successive iterations, or a product that vanishes outright (its squared norm rounds to zero or
    below), means a numerically zero operator (module doc): the triplet is returned with sigma 0
    and ``zero=[True]``. One iteration already gives sigma to within the noise unless ``Z v`` was
    all noise; the second guards that case.

    ``precision``: the dtype the operator's products are computed in, which sets the level at which a
    stalled residual is accepted (module doc) and against which ``zero_below`` was set; default the
    vectors' (the Gram route's float64 coefficients can stand for float32 data).
    """
    def zero_triplet(u, v):
        return SingularTriplets([0.0], [u], [v], it, True, [0.0], [True])

    v = v0 / _norm(op.inner_right, v0)
    w = op.matvec(v)
    sigma, residual, it = 0.0, float("inf"), 0
    u = w
    below, stalled, watch = 0, False, _StallWatch(precision or w.dtype, zero_below)
    for it in range(1, max_iter + 1):
        alpha = _norm(op.inner_left, w)
        if not torch.isfinite(alpha):
            break
        if alpha == 0:
            if zero_below > 0:
                return zero_triplet(u, v)
            break
        u = w / alpha
        z = op.rmatvec(u)
        sigma_t = _norm(op.inner_right, z)
        if not torch.isfinite(sigma_t):
            break
        if sigma_t == 0:
            if zero_below > 0:
                return zero_triplet(u, v)
            break
        v = z / sigma_t
        sigma = float(sigma_t)
        below = below + 1 if sigma <= zero_below else 0
        if below == 2:
            return zero_triplet(u, v)
        w = op.matvec(v)
        residual = float(_norm(op.inner_left, w - sigma_t * u))
        if residual <= tol * sigma:
            break
        stalled = watch.stalled(residual, sigma)
        if stalled:
            break
    converged = stalled or (residual <= tol * sigma if sigma > 0 else False)
    return SingularTriplets([sigma], [u], [v], it, bool(converged), [residual], [False], stalled)


def _combine(vectors: list[Tensor], coefficients: Tensor) -> Tensor:
    """``sum_i c_i x_i`` for a list of equally-shaped tensors."""
    stacked = torch.stack(vectors)
    return torch.tensordot(coefficients.to(stacked.dtype), stacked, dims=1)


def lanczos_svd(
    op,
    q0: Tensor,
    rank: int = 2,
    krylov_dim: int = 6,
    tol: float = 1e-6,
    max_restarts: int = 100,
    zero_rtol: float = 0.0,
) -> SingularTriplets:
    """The ``rank`` leading singular triplets by restarted Golub-Kahan-Lanczos bidiagonalisation.

    Golub-Kahan with full reorthogonalisation builds ``Z Q = P B`` (``B`` upper triangular,
    bidiagonal before the first restart) and ``Z^T P = Q B^T + beta q_{j+1} e_j^T``. The Ritz
    triplets ``(sigma, P x, Q y)`` of ``B`` satisfy ``Z v = sigma u`` exactly and
    ``||Z^T u - sigma v|| = |beta x_j|``, the stopping residual. A restart keeps the ``rank`` Ritz
    vectors and the residual direction (thick restart, Baglama & Reichel 2005) -- the paper's
    "set q(0) = linear combination of singular vectors", without discarding what was learnt -- and
    rebuilds up to ``krylov_dim`` vectors. ``krylov_dim`` must exceed ``rank``.

    A block of lower Kronecker rank than ``rank`` stops early by itself (its Krylov space is
    exhausted, or every residual is below ``tol * sigma_1`` at once); the triplets whose sigma is at
    most ``zero_rtol * sigma_1`` are rounding noise and are reported as zero (``zero``, sigma 0).
    """
    kdim = max(int(krylov_dim), rank + 1)
    dtype = q0.dtype
    left_inner, right_inner = op.inner_left, op.inner_right
    qs: list[Tensor] = [q0 / _norm(right_inner, q0)]
    ps: list[Tensor] = []
    b = torch.zeros(kdim, kdim, dtype=torch.float64)
    j = 0
    applications = 0
    restarts = 0
    converged = False

    def ritz(j: int, beta: float):
        x, sig, yt = torch.linalg.svd(b[:j, :j])
        k = min(rank, j)
        res = [abs(beta * float(x[j - 1, i])) for i in range(k)]
        return x, sig, yt.mT, res

    while True:
        # One Golub-Kahan step: p_j from q_j, then q_{j+1} from p_j.
        p = op.matvec(qs[j])
        applications += 1
        for _ in range(2):  # classical Gram-Schmidt, twice (full reorthogonalisation)
            for i in range(j):
                c = left_inner(ps[i], p)
                p = p - c * ps[i]
                b[i, j] += float(c)
        alpha = float(_norm(left_inner, p))
        scale = max(float(b.abs().max()), alpha, 1e-300)
        b[j, j] = alpha
        exhausted = alpha <= 1e-13 * scale
        ps.append(p / alpha if not exhausted else torch.zeros_like(p))
        beta = 0.0
        if not exhausted:
            z = op.rmatvec(ps[j])
            for _ in range(2):
                for i in range(j + 1):
                    z = z - right_inner(qs[i], z) * qs[i]
            beta = float(_norm(right_inner, z))
            exhausted = beta <= 1e-13 * scale  # invariant subspace: the Ritz values are exact
            qs.append(z / beta if not exhausted else torch.zeros_like(z))
        j += 1
        if j < rank and not exhausted:
            continue
        x, sig, y, residuals = ritz(j, beta)
        if exhausted or all(r <= tol * float(sig[0]) for r in residuals):
            converged = True
            break
        if j < kdim:
            continue
        if restarts == max_restarts:
            break
        # Thick restart: keep the rank Ritz vectors and the residual direction q_{j+1}.
        restarts += 1
        xk, yk = x[:, :rank], y[:, :rank]
        ps = [_combine(ps[:j], xk[:, i]) for i in range(rank)]
        qs = [_combine(qs[:j], yk[:, i]) for i in range(rank)] + [qs[j]]
        b = torch.zeros(kdim, kdim, dtype=torch.float64)
        b[:rank, :rank] = torch.diag(sig[:rank])
        j = rank
    k = min(rank, j)
    left = [_combine(ps[:j], x[:, i]).to(dtype) for i in range(k)]
    right = [_combine(qs[:j], y[:, i]).to(dtype) for i in range(k)]
    sigmas = [float(s) for s in sig[:k]]
    zero = [i > 0 and s <= zero_rtol * sigmas[0] for i, s in enumerate(sigmas)]
    sigmas = [0.0 if z else s for s, z in zip(sigmas, zero)]
    while len(sigmas) < rank:  # operator of lower rank than requested
        sigmas.append(0.0)
        left.append(torch.zeros_like(left[0]))
        right.append(torch.zeros_like(right[0]))
        residuals.append(0.0)
        zero.append(True)
    return SingularTriplets(sigmas, left, right, applications, converged, residuals, zero)
