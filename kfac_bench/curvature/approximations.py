"""The five Kronecker-factored approximations of a layer's Fisher block.

Each one is a strategy that turns a batch of statistics (a :class:`SampledFisherBlock`), the
previous approximation and a moving-average weight ``rho`` into a :class:`KroneckerSum`. Everything
else -- schedules, damping, inversion, preconditioning, error metrics -- is shared. A sixth method is
one more subclass here plus one config file.

Moving averages (a decision; DESIGN.md): KFAC averages its factors, as in the paper (section 2.2).
Averaging singular-vector factors separately is ill-posed -- a joint sign flip of ``(u, v)`` leaves
``R (x) S`` unchanged but cancels ``rho R_old + (1 - rho) R_new`` -- so the SVD-based methods
average in *Fisher space*: they decompose ``Z(rho F_old_hat + (1 - rho) F_batch)``, where
``F_old_hat`` is the previous approximation. Folding it in costs one inner product per term and
product. A constant stream ``F_batch = F`` is a fixed point: the leading singular triplets of
``rho * (best rank-r of Z(F)) + (1 - rho) Z(F)`` are those of ``Z(F)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .kronecker import KroneckerSum, SampledFisherBlock, ZigzagOperator
from .svd import SingularTriplets, lanczos_svd, power_svd


@dataclass
class FitResult:
    approximation: KroneckerSum
    iterations: dict[str, int] = field(default_factory=dict)   # solver -> pairs of Z products
    sigmas: list[float] = field(default_factory=list)           # singular values found
    converged: bool = True


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


def averaged_operator(batch: SampledFisherBlock, previous: KroneckerSum | None, rho: float) -> ZigzagOperator:
    """``Z(rho * previous + (1 - rho) * batch)``."""
    if previous is None or rho == 0.0 or previous.rank == 0:
        return ZigzagOperator.of(batch)
    return ZigzagOperator([(rho, previous), (1.0 - rho, batch)])


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

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000, **_: object):
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def fit(self, batch: SampledFisherBlock, previous: KroneckerSum | None = None, rho: float = 0.0,
            warm: dict | None = None) -> FitResult:
        raise NotImplementedError

    def _power(self, op, warm: dict | None, key: str, dim: int, like: Tensor) -> SingularTriplets:
        v0 = warm.get(key) if warm is not None else None
        if v0 is None or v0.shape != (dim, dim) or not torch.isfinite(v0).all():
            v0 = _identity(dim, like)  # cold start: Z(F) vec(I) = E[|g|^2 a a^T], a good first guess
        trip = power_svd(op, v0.to(like), tol=self.tol, max_iter=self.max_iter)
        if warm is not None:
            warm[key] = trip.right[0].detach()
        return trip


class KFAC(Approximation):
    """Equation (1): ``E[a a^T] (x) E[g g^T]``, factors averaged separately (section 2.2)."""

    name = "kfac"
    rank = 1

    @staticmethod
    def averaged_factors(batch, previous, rho) -> tuple[Tensor, Tensor]:
        a, g = batch.kfac_factors()
        if previous is not None and rho != 0.0 and previous.rank > 0:
            a_old, g_old = previous.terms[0]
            a, g = rho * a_old + (1 - rho) * a, rho * g_old + (1 - rho) * g
        return a, g

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        return FitResult(KroneckerSum([self.averaged_factors(batch, previous, rho)]))


class KPSVD(Approximation):
    """Theorem 3.1: the best single Kronecker product, from the leading singular triplet of Z(F)."""

    name = "kpsvd"
    rank = 1

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        op = averaged_operator(batch, previous, rho)
        t = self._power(op, warm, "v1", op.shape_g, batch.g)
        r, s = factors_from_triplet(t.sigmas[0], t.left[0], t.right[0])
        return FitResult(KroneckerSum([(r, s)]), {"power_1": t.iterations}, t.sigmas, t.converged)


class Deflation(Approximation):
    """Section 3.2.1: KPSVD, then the best Kronecker product of the remainder ``F - R (x) S``."""

    name = "deflation"
    rank = 2

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        op = averaged_operator(batch, previous, rho)
        t1 = self._power(op, warm, "v1", op.shape_g, batch.g)
        first = KroneckerSum([factors_from_triplet(t1.sigmas[0], t1.left[0], t1.right[0])])
        t2 = self._power(op.minus(first), warm, "v2", op.shape_g, batch.g)
        second = factors_from_triplet(t2.sigmas[0], t2.left[0], t2.right[0])
        return FitResult(KroneckerSum(first.terms + [second]),
                         {"power_1": t1.iterations, "power_2": t2.iterations},
                         t1.sigmas + t2.sigmas, t1.converged and t2.converged)


class Lanczos(Approximation):
    """Section 3.2.2: the two leading singular triplets at once, by restarted Lanczos
    bidiagonalisation (thick restart, Krylov dimension ``krylov_dim``)."""

    name = "lanczos"
    rank = 2

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000, krylov_dim: int = 6,
                 max_restarts: int = 100, **kw: object):
        super().__init__(tol, max_iter, **kw)
        self.krylov_dim = int(krylov_dim)
        self.max_restarts = int(max_restarts)

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        op = averaged_operator(batch, previous, rho)
        dim = op.shape_g
        q0 = None
        if warm is not None and warm.get("v1") is not None and warm["v1"].shape == (dim, dim):
            # Warm start from both previous directions (paper 3.2.2, "linear combination").
            q0 = warm["v1"] + (warm["v2"] if warm.get("v2") is not None else 0)
            if not torch.isfinite(q0).all() or torch.linalg.norm(q0) == 0:
                q0 = None
        if q0 is None:
            q0 = _identity(dim, batch.g)
        t = lanczos_svd(op, q0.to(batch.g), rank=2, krylov_dim=self.krylov_dim, tol=self.tol,
                        max_restarts=self.max_restarts)
        if warm is not None:
            warm["v1"], warm["v2"] = t.right[0].detach(), t.right[1].detach()
        terms = [factors_from_triplet(t.sigmas[i], t.left[i], t.right[i]) for i in range(2)]
        return FitResult(KroneckerSum(terms), {"lanczos": t.iterations}, t.sigmas, t.converged)


class KFACCorrected(Approximation):
    """Section 3.3: KFAC plus the best Kronecker correction of ``F - A_kfac (x) G_kfac``."""

    name = "kfac_corrected"
    rank = 2

    def fit(self, batch, previous=None, rho=0.0, warm=None) -> FitResult:
        kfac = KroneckerSum([KFAC.averaged_factors(batch, previous, rho)])
        op = averaged_operator(batch, previous, rho).minus(kfac)
        t = self._power(op, warm, "v2", op.shape_g, batch.g)
        corr = factors_from_triplet(t.sigmas[0], t.left[0], t.right[0])
        return FitResult(KroneckerSum(kfac.terms + [corr]), {"power_2": t.iterations}, t.sigmas,
                         t.converged)


APPROXIMATIONS: dict[str, type[Approximation]] = {
    cls.name: cls for cls in (KFAC, KPSVD, Deflation, Lanczos, KFACCorrected)
}


def make_approximation(name: str, **options: object) -> Approximation:
    try:
        cls = APPROXIMATIONS[name]
    except KeyError:
        raise ValueError(f"unknown approximation {name!r}; choose one of {sorted(APPROXIMATIONS)}") from None
    return cls(**options)
