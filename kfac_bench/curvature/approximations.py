"""The Kronecker-factored approximations of a layer's Fisher block (the paper's five and Lanczos of
any Kronecker rank).

Each one is a strategy that turns a batch of statistics (a :class:`SampledFisherBlock`), the
previous approximation and a moving-average weight ``rho`` into a :class:`KroneckerSum`. Everything
else -- schedules, preconditioning, error metrics -- is shared; each class names its damped inverse
(:meth:`Approximation.damped_inverse`) and the per-layer estimate that holds it
(:meth:`Approximation.new_estimate`): an :class:`Approximation` is an
:class:`~kfac_bench.curvature.estimate.EstimationMethod`. Nothing here lists the methods: the list is
:mod:`kfac_bench.registry`, above the mathematics (docs/design.md, "Adding a method").

Moving averages (a decision; docs/design.md §4): KFAC averages its factors, as in the paper (section 2.2).
Averaging singular-vector factors separately is ill-posed -- a joint sign flip of ``(u, v)`` leaves
``R (x) S`` unchanged but cancels ``rho R_old + (1 - rho) R_new`` -- so the SVD-based methods
average in *Fisher space*: they decompose ``Z(rho F_old_hat + (1 - rho) F_batch)``, where
``F_old_hat`` is the previous approximation. Folding it in costs one inner product per term and
product. A constant stream ``F_batch = F`` is a fixed point: the leading singular triplets of
``rho * (best rank-r of Z(F)) + (1 - rho) Z(F)`` are those of ``Z(F)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .block import CurvatureBlock
from .estimate import FitResult
from .gram import GramZigzagOperator
from .inverse import CG_MAX_ITER, KroneckerInverse, KroneckerSumInverse, TwoTermKroneckerInverse, leading_damped_inverse
from .kronecker import KroneckerSum, SampledFisherBlock, ZigzagOperator
from .svd import SingularTriplets, lanczos_svd, power_svd, rounding_floor

ROUTES = ("auto", "direct", "gram")
SECOND_TERMS = ("deflated", "leading")


def _symmetrize(x: Tensor) -> Tensor:
    return 0.5 * (x + x.mT)


def factors_from_triplet(sigma: float, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(sqrt(sigma) MAT(u), sqrt(sigma) MAT(v))`` with a canonical joint sign: ``tr(R) >= 0``.

    For the leading triplet of a Fisher block this makes both factors PSD (Proposition 3.2: the
    factors are semi-definite of the same sign). For an indefinite second term it only fixes the
    arbitrary sign of the pair, which does not change ``R (x) S``.
    """
    s = max(sigma, 0.0) ** 0.5
    r, q = _symmetrize(s * u), _symmetrize(s * v)
    if torch.trace(r) < 0:
        r, q = -r, -q
    return r, q


def gram_route_is_cheaper(batch: SampledFisherBlock, iterations: int = 4) -> bool:
    """Rough flop comparison: the direct route costs ~4 m (d_a^2 + d_g^2) per pair of products;
    the Gram route ~2 m^2 (d_a + d_g) once plus ~4 m (d_a^2 + d_g^2) to assemble the factors. False
    for a block that has no Gram route (``supports_gram_route``: a weight-sharing layer's exact or
    banded :class:`~kfac_bench.curvature.spatial.SpatialFisherBlock`)."""
    if not getattr(batch, "supports_gram_route", False):
        return False
    da, dg, m = batch.shape_a, batch.shape_g, batch.m
    return 2 * m * m * (da + dg) < 4 * iterations * m * (da * da + dg * dg)


def averaged_operator(batch: SampledFisherBlock, previous: KroneckerSum | None, rho: float,
                      route: str = "auto"):
    """``Z(rho * previous + (1 - rho) * batch)`` on the direct route (Proposition 3.1 products) or
    the Gram route (:mod:`kfac_bench.curvature.gram`); ``auto`` picks the cheaper (the direct route for
    a block without a Gram route; ``gram`` on one raises ValueError)."""
    terms = [] if previous is None or rho == 0.0 or previous.rank == 0 else [(rho, previous)]
    weight = 1.0 - rho if terms else 1.0
    if route == "auto":
        route = "gram" if gram_route_is_cheaper(batch) else "direct"
    if route == "gram":
        return GramZigzagOperator(batch, weight, terms)
    if route != "direct":
        raise ValueError(f"unknown zigzag route {route!r}; choose one of {ROUTES}")
    return ZigzagOperator([(weight, batch)] + terms)


@dataclass
class Triplet:
    """A singular triplet with its vectors as matrices (``MAT(u)``, ``MAT(v)``)."""

    sigma: float
    u: Tensor
    v: Tensor
    iterations: int
    converged: bool
    raw: SingularTriplets | None = None   # the solver's own vectors (operator coordinates), for deflation
    zero: bool = False                    # numerically zero operator: sigma is 0


def _identity(n: int, like: Tensor) -> Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


class Approximation:
    """Base class: ``fit`` returns the approximation of ``rho * previous + (1 - rho) * batch``.

    ``warm`` is a per-layer dict of warm-start vectors the method reads and updates (the previous
    right singular vectors, paper section 4: "the final results of the previous iteration are used
    as a starting point").
    """

    name = "base"
    rank = 1
    inverse_class = KroneckerInverse   # what :meth:`damped_inverse` returns (and rebuilds from a state)
    # the options of this method beyond the solver settings every approximation takes (tol, max_iter,
    # route, krylov_dim, max_restarts), checked by the optimizer. The one place that says which: the
    # registry reads them from here (kfac_bench/options.py documents what each means)
    extra_options: tuple[str, ...] = ()

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000, route: str = "auto", warm_start: bool = True,
                 second_term: str = "deflated", **_: object):
        self.tol = float(tol)
        # "deflated" (the paper): the second Kronecker term of Deflation and KFAC-corrected is the
        # best Kronecker product of the remainder. "leading" emulates the authors' code, where both
        # optimizers set ``self.method = "kpsvd"`` (optimizers/deflation.py line 55, kfac_cor.py
        # line 55 at commit 97105b6) so ``power_svd_mlp`` skips the subtraction
        # (utils/optim_utils.py lines 226, 233, 239): the second term is the leading term again.
        if second_term not in SECOND_TERMS:
            raise ValueError(f"unknown second_term {second_term!r}; choose one of {SECOND_TERMS}")
        self.second_term = second_term
        self.max_iter = int(max_iter)
        # False: every solve starts cold from vec(I), ignoring the previous approximation and the stored
        # vectors (what a first update costs; the benchmark measures both)
        self.warm_start = bool(warm_start)
        if route not in ROUTES:
            raise ValueError(f"unknown zigzag route {route!r}; choose one of {ROUTES}")
        self.route = route

    def fit(self, batch: SampledFisherBlock, previous: KroneckerSum | None = None, rho: float = 0.0,
            warm: dict | None = None) -> FitResult:
        raise NotImplementedError

    def operator(self, batch, previous, rho):
        return averaged_operator(batch, previous, rho, self.route)

    # The damped inverse belongs to the approximation: callers never branch on its rank or type.
    def damped_inverse(self, approx: KroneckerSum, damping: float, psd_floor: float = 0.1,
                       convention: str = "paper"):
        """The cached damped inverse of ``approx`` (a result of :meth:`fit`), an object with
        ``solve``, ``bare_products``, ``state`` (see :mod:`kfac_bench.curvature.inverse`)."""
        return leading_damped_inverse(approx, damping, psd_floor, convention)

    def inverse_from_state(self, state: dict):
        """The inverse :meth:`damped_inverse` returned, rebuilt from its ``state()``."""
        return self.inverse_class.from_state(state)

    def new_estimate(self) -> CurvatureBlock:
        """A fresh per-layer estimate of this method (a :class:`CurvatureEstimate`)."""
        return CurvatureBlock(self)

    def _start(self, previous: KroneckerSum | None, rho: float, warm: dict | None, k: int, dim: int):
        """Warm start of the (k+1)-th right vector (paper section 4): the previous approximation's k-th
        G-factor when it is part of the operator (moving average; it has the direction of the previous
        v_k and costs nothing on the Gram route), else the stored ``warm["v{k+1}"]``; None for a cold
        start."""
        if not self.warm_start:
            return None
        if previous is not None and rho != 0.0 and previous.rank > k:
            cand = previous.terms[k][1]
        else:
            cand = warm.get(f"v{k + 1}") if warm is not None else None
        if cand is None or cand.shape != (dim, dim) or not torch.isfinite(cand).all() or not cand.abs().sum() > 0:
            return None
        return cand

    def _power(self, op, previous: KroneckerSum | None, rho: float, warm: dict | None, k: int,
               like: Tensor, subtracted_norm: float = 0.0) -> Triplet:
        """The leading triplet of ``op`` by power iterations from the (k+1)-th warm start; stores
        its right vector as ``warm["v{k+1}"]``. ``subtracted_norm``: the norm of the term taken off
        a remainder operator, against which its singular values below the rounding floor are zero."""
        start = self._start(previous, rho, warm, k, op.shape_g)
        if start is None:
            start = _identity(op.shape_g, like)  # cold start: Z(F) vec(I) = E[|g|^2 a a^T], a good first guess
        trip = power_svd(op, op.start_vector(start.to(like) if start.dtype != like.dtype else start),
                         tol=self.tol, max_iter=self.max_iter,
                         zero_below=rounding_floor(like.dtype) * subtracted_norm, precision=like.dtype)
        t = Triplet(trip.sigmas[0], op.left_matrix(trip.left[0]), op.right_matrix(trip.right[0]),
                    trip.iterations, trip.converged, trip, bool(trip.zero and trip.zero[0]))
        if warm is not None:
            warm[f"v{k + 1}"] = t.v.detach()
        return t


class KFAC(Approximation):
    """Equation (1): ``E[a a^T] (x) E[g g^T]``, factors averaged separately (section 2.2)."""

    name = "kfac"
    rank = 1

    @staticmethod
    def averaged_factors(batch, previous, rho) -> tuple[Tensor, Tensor]:
        a, g = batch.kfac_factors()
        if previous is not None and rho != 0.0 and previous.rank > 0:
            a_old, g_old = previous.terms[0]
            # rho * old + (1 - rho) * new in one pass: new + rho * (old - new)
            a, g = torch.lerp(a, a_old, rho), torch.lerp(g, g_old, rho)
        return a, g

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        return FitResult(KroneckerSum([self.averaged_factors(batch, previous, rho)]))


class KPSVD(Approximation):
    """Theorem 3.1: the best single Kronecker product, from the leading singular triplet of Z(F)."""

    name = "kpsvd"
    rank = 1

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        t = self._power(self.operator(batch, previous, rho), previous, rho, warm, 0, batch.g)
        r, s = factors_from_triplet(t.sigma, t.u, t.v)
        return FitResult(KroneckerSum([(r, s)]), {"power_1": t.iterations}, [t.sigma], t.converged)


class Deflation(Approximation):
    """Section 3.2.1: KPSVD, then the best Kronecker product of the remainder ``F - R (x) S``."""

    name = "deflation"
    rank = 2
    inverse_class = TwoTermKroneckerInverse
    extra_options = ("second_term",)

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        op = self.operator(batch, previous, rho)
        t1 = self._power(op, previous, rho, warm, 0, batch.g)
        first = factors_from_triplet(t1.sigma, t1.u, t1.v)
        if self.second_term == "leading":   # the authors' code: no deflation (see __init__)
            return FitResult(KroneckerSum([first, first]), {"power_1": t1.iterations},
                             [t1.sigma, t1.sigma], t1.converged)
        deflated = op.minus_triplet(t1.sigma, t1.raw.left[0], t1.raw.right[0])
        t2 = self._power(deflated, previous, rho, warm, 1, batch.g, subtracted_norm=t1.sigma)
        second = factors_from_triplet(t2.sigma, t2.u, t2.v)
        return FitResult(KroneckerSum([first, second]),
                         {"power_1": t1.iterations, "power_2": t2.iterations},
                         [t1.sigma, t2.sigma], t1.converged and t2.converged, t2.zero)


class Lanczos(Approximation):
    """Section 3.2.2: the ``rank`` leading singular triplets at once, by restarted Lanczos
    bidiagonalisation (thick restart, Krylov dimension ``krylov_dim``). The paper's method has
    ``rank = 2``; :class:`LanczosK` makes the rank an option."""

    name = "lanczos"
    rank = 2
    inverse_class = TwoTermKroneckerInverse

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000, route: str = "auto",
                 krylov_dim: int = 6, max_restarts: int = 100, **kw: object):
        super().__init__(tol, max_iter, route, **kw)
        self.krylov_dim = int(krylov_dim)
        self.max_restarts = int(max_restarts)

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        op = self.operator(batch, previous, rho)
        dim = op.shape_g
        rank = self.rank
        starts = [self._start(previous, rho, warm, k, dim) for k in range(rank)]
        starts = [x for x in starts if x is not None]
        # Warm start from all previous directions (paper 3.2.2: "linear combination of singular
        # vectors"); they have comparable norms (sqrt(sigma_k) v_k or unit vectors).
        q0 = op.start_vector(*starts) if starts else op.start_vector(_identity(dim, batch.g))
        t = lanczos_svd(op, q0, rank=rank, krylov_dim=self.krylov_dim, tol=self.tol,
                        max_restarts=self.max_restarts, zero_rtol=rounding_floor(batch.g.dtype))
        us = [op.left_matrix(u) for u in t.left]
        vs = [op.right_matrix(v) for v in t.right]
        if warm is not None:
            for k, v in enumerate(vs):
                warm[f"v{k + 1}"] = v.detach()
        terms = [factors_from_triplet(t.sigmas[i], us[i], vs[i]) for i in range(rank)]
        return FitResult(KroneckerSum(terms), {"lanczos": t.iterations}, t.sigmas, t.converged,
                         any(t.zero[1:]))


class LanczosK(Lanczos):
    """Kronecker rank ``k`` (any ``k >= 1``; the paper's conclusion: "increasing the rank does improve
    the quality of approximation"): the top-``k`` triplets of ``Z(F)`` by the restarted Lanczos
    bidiagonalisation of :class:`Lanczos`, on the same implicit operators (direct or Gram route) and
    with the same Fisher-space moving average. ``k = 2`` is :class:`Lanczos`; ``k = 1`` is KPSVD's
    target (the best Kronecker product) reached by Lanczos instead of power iterations.

    Krylov dimension ``max(krylov_dim, 2 k + 2)``: the paper's 6 at ``k = 2``, and room for the
    ``k`` kept Ritz vectors plus as many new ones after a thick restart.

    Damped inverse: :class:`kfac_bench.curvature.inverse.KroneckerSumInverse`, conjugate gradients
    on the damped sum preconditioned by the closed-form solve of its first two terms (``cg_tol``,
    ``cg_max_iter``); for ``k <= 2`` it is that closed form.
    """

    name = "lanczos_k"
    inverse_class = KroneckerSumInverse
    extra_options = ("k", "cg_tol", "cg_max_iter")

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000, route: str = "auto",
                 krylov_dim: int = 6, max_restarts: int = 100, k: int = 3, cg_tol: float | None = None,
                 cg_max_iter: int = CG_MAX_ITER, **kw: object):
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"the Kronecker rank k must be an integer >= 1, got {k!r}")
        if cg_tol is not None and not cg_tol > 0:
            raise ValueError(f"cg_tol must be positive or None, got {cg_tol!r}")
        if isinstance(cg_max_iter, bool) or int(cg_max_iter) != cg_max_iter or cg_max_iter < 1:
            raise ValueError(f"cg_max_iter must be an integer >= 1, got {cg_max_iter!r}")
        self.rank = int(k)
        super().__init__(tol, max_iter, route, max(int(krylov_dim), 2 * self.rank + 2), max_restarts, **kw)
        self.cg_tol = None if cg_tol is None else float(cg_tol)
        self.cg_max_iter = int(cg_max_iter)

    def damped_inverse(self, approx, damping, psd_floor=0.1, convention="paper"):
        return KroneckerSumInverse.build(approx, damping, psd_floor, convention, self.cg_tol, self.cg_max_iter)

    def inverse_from_state(self, state):
        return KroneckerSumInverse.from_state(state, self.cg_tol, self.cg_max_iter)


class KFACCorrected(Approximation):
    """Section 3.3: KFAC plus the best Kronecker correction of ``F - A_kfac (x) G_kfac``."""

    name = "kfac_corrected"
    rank = 2
    inverse_class = TwoTermKroneckerInverse
    extra_options = ("second_term",)

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        kfac = KroneckerSum([KFAC.averaged_factors(batch, previous, rho)])
        op = self.operator(batch, previous, rho)
        subtracted_norm = 0.0   # the leading term's operator is not a remainder: nothing to be zero against
        if self.second_term == "deflated":
            op = op.minus_kfac(kfac)
            (a, g), = kfac.terms
            subtracted_norm = float(torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(g))
        # ("leading", the authors' code: the "correction" is the leading Kronecker term of F itself)
        t = self._power(op, previous, rho, warm, 1, batch.g, subtracted_norm=subtracted_norm)
        corr = factors_from_triplet(t.sigma, t.u, t.v)
        return FitResult(KroneckerSum(kfac.terms + [corr]), {"power_2": t.iterations}, [t.sigma],
                         t.converged, t.zero)
