"""EKFAC (George et al. 2018, "Fast approximate natural gradient descent in a Kronecker-factored
eigenbasis"): KFAC's Kronecker eigenbasis, with the eigenvalues re-estimated in it.

KFAC approximates a layer's Fisher block ``F = (1/m) sum_t (a_t a_t^T) (x) (g_t g_t^T)`` by
``A (x) G`` with ``A = E[a a^T] = Q_A L_A Q_A^T`` and ``G = E[g g^T] = Q_G L_G Q_G^T``, i.e. by
``Q diag(L_A (x) L_G) Q^T`` in the basis ``Q = Q_A (x) Q_G``. EKFAC keeps ``Q`` and replaces the
Kronecker-structured eigenvalues with the best diagonal in that basis, the diagonal of ``Q^T F Q``:

    S[i, j] = (1/m) sum_t (q_G,i^T g_t)^2 (q_A,j^T a_t)^2          (laid out like dW: d_g x d_a)

computed from the per-example statistics in ``O(m (d_a^2 + d_g^2 + d_a d_g))``, never forming ``F``.
The block computes it (``eigenbasis_second_moment``): for a weight-sharing layer's exact block
(:class:`~kfac_bench.curvature.spatial.SpatialFisherBlock`) ``S[i, j] = (1/N) sum_n ((Q_G^T DW_n Q_A)_ij)^2``
with ``DW_n`` the per-example gradient, the basis KFC's factors' (docs/mathematics.md, "Convolutional layers").
It is not a sum of Kronecker products: a diagonal in a Kronecker eigenbasis.

Because ``Q^T F_hat Q`` is diagonal for both methods and ``S`` is the diagonal of ``Q^T F Q``,
``||F - F_EKFAC||_F <= ||F - F_KFAC||_F`` whenever both use the same ``Q`` (the factors of the same
statistics): EKFAC's Error 1 is never above KFAC's. With ``F_hat`` the projection of ``F`` on the
diagonal, ``<F, F_hat> = ||F_hat||^2 = ||S||^2``, so ``||F - F_hat||^2 = ||F||^2 - ||S||^2`` and the
eigenvalues of ``F_hat`` are the entries of ``S`` (Figure 1's two errors at the cost of ``S``).

Damping is added to the scaling, ``(Q (diag(S) + lam I) Q^T)^{-1} vec(X) =
vec(Q_G ((Q_G^T X Q_A) / (S + lam)) Q_A^T)`` -- the form of the rank-2 methods' damped inverse
(:class:`.inverse.TwoTermKroneckerInverse` with orthogonal ``K1 = Q_A``, ``K2 = Q_G``), so the solve
costs 4 matrix products per layer and reuses that class.

The method in training (:class:`EKFAC`, its per-layer :class:`EigenbasisBlock`), on the optimizer's
schedule like every other curvature method (decisions; docs/design.md section 11), plus the scaling's
own schedule, ``T_scale`` (issue 33):

* every ``T1`` steps (statistics): KFAC's factors averaged as KFAC averages them,
  ``A <- rho A + (1 - rho) A_batch`` (same for ``G``), ``rho = min(1 - 1/k, alpha)`` with ``k`` the
  number of statistics updates. The basis is left alone: it is marked stale (its factors moved).
* every ``T_scale`` steps (default 1: every step), the scaling: re-estimated from that step's
  minibatch, its per-example statistics projected on the *current* eigenbasis, and averaged with
  KFAC's rule and ``alpha``, ``S <- rho_s S + (1 - rho_s) S_batch``, ``rho_s = min(1 - 1/k_s, alpha)``
  with ``k_s`` the number of scaling estimates (:meth:`EigenbasisBlock.update_scaling`). This is George
  et al.'s Algorithm 1: the scaling from every minibatch, the eigenbasis every ``n_eigen`` (our
  ``T2``) steps, the scaling a running average. Its damped inverse is rebuilt at once in the same
  basis, ``1 / (S + lam)`` -- no eigendecomposition. Per step it costs one statistics pass (forward
  and backward with sampled targets) and the projection, ``O(m (d_a^2 + d_g^2 + d_a d_g))`` for a
  Linear layer's ``m`` rows; each treatment of a convolution's positions projects as its block does
  (``eigenbasis_second_moment``; the exact block through ``Q_G^T DW_n Q_A``).
  ``T_scale="T1"`` (:data:`SCALING_WITH_STATISTICS`) is the schedule before issue 33: the scaling
  re-estimated in the same update as the factors, every ``T1`` steps, with their ``rho``
  (:meth:`EigenbasisDiagonal.averaged`).
* every ``T2`` steps (inverses): the eigenbasis recomputed from the averaged ``A``, ``G`` (the
  eigendecompositions KFAC's inverse pays too), then the damped inverse ``Q (S + lam)^{-1} Q^T``.
  The averaged ``S`` belongs to the old basis. George et al. re-estimate it from fresh statistics in
  the new basis; here it is carried over exactly instead: the new ``S`` is the diagonal of the old
  estimate in the new basis, ``diag(Q_new^T F_hat_old Q_new) = (P_G o P_G) S (P_A o P_A)^T`` with
  ``P = Q_new^T Q_old`` (``O(d^3)``, the cost of the eigendecompositions). This is the Fisher-space
  moving average the SVD methods use (:mod:`.approximations`): the estimate is averaged as a matrix,
  and the history is kept -- restarting the average at every basis change would, with
  ``T_scale = T1 = T2``, leave ``S`` unaveraged (one batch) for the whole run. It keeps ``S >= 0`` and the trace.
  What it loses is the off-diagonal part of the old estimate in the new basis, which no diagonal in
  that basis can hold. A constant stream of statistics is a fixed point (the basis does not move).
  A step due for both measures its batch in the old basis, which is then carried over.
* ``averaging="factors"`` (the authors' code, for the Kronecker sums) is the same update here: EKFAC
  averages its factors one by one either way. ``damping_convention`` and ``psd_floor`` concern the
  Kronecker sums' damped inverses and do not apply (``S >= 0``: nothing to floor); EKFAC is not in the
  authors' code, and its damping is George et al.'s, added to every entry of ``S``.

The first statistics update fits the batch alone (basis from its own factors, the scaling measured
in it: the first scaling estimate), as the Figure 1 study does at every evaluation point
(:func:`fit_ekfac`): there EKFAC and KFAC come from the same batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .approximations import Approximation, FitResult
from .block import AVERAGINGS, CurvatureBlock
from .inverse import CurvatureError, TwoTermKroneckerInverse, symmetric_eigh
from .kronecker import SampledFisherBlock, all_finite
from .spectrum import DT, SpectrumResult


# ``T_scale`` of the schedule before issue 33: the scaling re-estimated with the statistics, every T1 steps
SCALING_WITH_STATISTICS = "T1"


def scaling_period(T_scale: int | str) -> int | None:
    """The steps between two scaling estimates that ``T_scale`` asks for: an integer >= 1, or None for
    :data:`SCALING_WITH_STATISTICS` (the scaling updated with the factors, on the ``T1`` schedule)."""
    if T_scale == SCALING_WITH_STATISTICS:
        return None
    if isinstance(T_scale, bool) or not isinstance(T_scale, int) or T_scale < 1:
        raise ValueError(f"T_scale must be an integer >= 1 or {SCALING_WITH_STATISTICS!r} (the scaling re-estimated "
                         f"with the statistics every T1 steps, the schedule before issue 33), got {T_scale!r}")
    return T_scale


def kronecker_eigenbasis(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """``(Q_A, Q_G)``: eigenvectors of KFAC's factors ``A`` (d_a x d_a) and ``G`` (d_g x d_g)."""
    return symmetric_eigh(a)[1], symmetric_eigh(g)[1]


def eigenbasis_scaling(block: SampledFisherBlock, q_a: Tensor, q_g: Tensor) -> Tensor:
    """``S = diag(Q^T F Q)`` for ``Q = Q_A (x) Q_G``, as a (d_g, d_a) matrix (``S[i, j]`` scales the
    direction ``q_A,j (x) q_G,i``, the entry ``[i, j]`` of a weight gradient): the block's own
    ``eigenbasis_second_moment`` (a batch's per-example statistics; a weight-sharing layer's exact or
    banded block, :class:`~kfac_bench.curvature.spatial.SpatialFisherBlock`, sums over position pairs)."""
    return block.eigenbasis_second_moment(q_a, q_g)


@dataclass
class EigenbasisDiagonal:
    """``Q diag(vec(S)) Q^T`` with ``Q = Q_A (x) Q_G``: EKFAC's estimate of one layer's block.

    ``a``, ``g``: KFAC's (averaged) factors the basis is recomputed from; ``stale``: they moved since
    the basis was computed (:meth:`refreshed` recomputes it)."""

    q_a: Tensor        # (d_a, d_a), orthogonal
    q_g: Tensor        # (d_g, d_g), orthogonal
    scaling: Tensor    # (d_g, d_a), non-negative
    a: Tensor | None = None
    g: Tensor | None = None
    stale: bool = False

    rank = 1              # one pair of Kronecker factors stored (the bench's column; not a Kronecker rank)
    kronecker_rank = None  # not a Kronecker sum: no best-Kronecker-rank optimum to compare with
    spectrum_needs_eigensolve = False   # its eigenvalues are the entries of S

    # ------------------------------------------------------------------------- training
    def averaged(self, batch: SampledFisherBlock, rho: float) -> "EigenbasisDiagonal":
        """``rho * self + (1 - rho) * batch`` in one statistics update (``T_scale="T1"``, the schedule
        before issue 33): the factors averaged and the batch's scaling measured in this basis and
        averaged, with one ``rho``; the basis kept (stale)."""
        return self.rescaled(batch, rho).factors_averaged(batch, rho)

    def factors_averaged(self, batch: SampledFisherBlock, rho: float) -> "EigenbasisDiagonal":
        """KFAC's factors averaged, ``rho * old + (1 - rho) * batch``; the basis and the scaling kept,
        the basis marked stale (its factors moved)."""
        if self.a is None or self.g is None:
            raise ValueError("an EKFAC estimate without KFAC factors cannot be averaged")
        a_new, g_new = batch.kfac_factors()
        # rho * old + (1 - rho) * new in one pass, like KFAC.averaged_factors
        return EigenbasisDiagonal(self.q_a, self.q_g, self.scaling, torch.lerp(a_new, self.a, rho),
                                  torch.lerp(g_new, self.g, rho), stale=True)

    def rescaled(self, batch: SampledFisherBlock, rho: float) -> "EigenbasisDiagonal":
        """The scaling re-estimated from ``batch`` in this (current) eigenbasis and averaged,
        ``rho * S + (1 - rho) * S_batch``; the basis and the factors kept."""
        scaling = eigenbasis_scaling(batch, self.q_a, self.q_g)
        return EigenbasisDiagonal(self.q_a, self.q_g, torch.lerp(scaling, self.scaling, rho), self.a, self.g,
                                  self.stale)

    def refreshed(self) -> "EigenbasisDiagonal":
        """The eigenbasis of the current factors, with the scaling carried into it as the diagonal of
        this estimate in the new basis (module docstring); itself when the basis is current. Raises
        :class:`CurvatureError` when an eigendecomposition fails."""
        if not self.stale:
            return self
        q_a, q_g = kronecker_eigenbasis(self.a, self.g)
        p_a = (q_a.mT @ self.q_a).square()      # (new, old): squared cosines, doubly stochastic
        p_g = (q_g.mT @ self.q_g).square()
        return EigenbasisDiagonal(q_a, q_g, p_g @ self.scaling @ p_a.mT, self.a, self.g, stale=False)

    def is_finite(self) -> bool:
        return all(all_finite(t) for t in (self.q_a, self.q_g, self.scaling, self.a, self.g) if t is not None)

    def damped_inverse(self, damping: float) -> TwoTermKroneckerInverse:
        """``(F_hat + damping I)^{-1}``: the damping added to every scaling entry."""
        if damping <= 0:
            raise ValueError(f"EKFAC damping must be positive, got {damping}")
        shifted = self.scaling + damping
        if not all_finite(shifted):
            raise CurvatureError("non-finite EKFAC scaling")
        return TwoTermKroneckerInverse(self.q_a, self.q_g, 1.0 / shifted, 0)

    # ---------------------------------------------- Figure 1 (kfac_bench.curvature.metrics)
    def inner_with(self, block: SampledFisherBlock) -> float:
        """``<F, F_hat> = (1/m) sum_t sum_ij S_ij (q_G,i.g_t)^2 (q_A,j.a_t)^2 = <S, diag(Q^T F Q)>``
        in float64: ``O(m (d_a^2 + d_g^2 + d_a d_g))``."""
        measured = eigenbasis_scaling(block.to(DT), self.q_a.to(DT), self.q_g.to(DT))
        return float(torch.sum(self.scaling.to(DT) * measured))

    def frobenius_sq(self) -> float:
        """``||F_hat||_F^2 = ||S||_F^2`` (``Q`` orthogonal)."""
        return float(self.scaling.double().square().sum())

    def spectrum(self) -> Tensor:
        """The eigenvalues of ``F_hat``, decreasing: the entries of ``S``."""
        return torch.sort(self.scaling.reshape(-1), descending=True).values

    def top_spectrum(self, top: int | None = None, **_solver: object) -> SpectrumResult:
        """The ``top`` largest eigenvalues (float64): the largest entries of ``S``, no eigensolve
        (the spectrum solver's options do not apply)."""
        values = self.spectrum().to(DT)
        return SpectrumResult(values if top is None else values[:top], "diagonal")

    def to_dense(self) -> Tensor:
        """The explicit ``n x n`` matrix, index ``(i_a, i_g)`` a-major like :meth:`SampledFisherBlock.to_dense`.
        For tests and tiny problems only."""
        q = torch.kron(self.q_a, self.q_g)
        return q @ torch.diag(self.scaling.mT.reshape(-1)) @ q.mT

    # ------------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"q_a": self.q_a, "q_g": self.q_g, "scaling": self.scaling, "a": self.a, "g": self.g,
                "stale": self.stale}

    @classmethod
    def from_state(cls, state: dict) -> "EigenbasisDiagonal":
        return cls(state["q_a"], state["q_g"], state["scaling"], state.get("a"), state.get("g"),
                   bool(state.get("stale", False)))


def fit_ekfac(block: SampledFisherBlock, factors: tuple[Tensor, Tensor] | None = None) -> EigenbasisDiagonal:
    """EKFAC on one batch of statistics: the eigenbasis of ``factors`` (KFAC's ``(A, G)``; default the
    batch's own) and the scaling re-estimated from the batch's per-example gradients."""
    a, g = block.kfac_factors() if factors is None else factors
    q_a, q_g = kronecker_eigenbasis(a, g)
    return EigenbasisDiagonal(q_a, q_g, eigenbasis_scaling(block, q_a, q_g), a, g)


def ekfac_frobenius_error_sq(fisher_frobenius_sq: float, estimate: EigenbasisDiagonal) -> float:
    """``||F - F_hat||_F^2 = ||F||^2 - ||S||^2`` when ``S`` was estimated from ``F``'s own statistics
    (the projection identity of the module docstring; clipped at 0 against rounding)."""
    return max(fisher_frobenius_sq - estimate.frobenius_sq(), 0.0)


@dataclass
class EigenbasisBlock(CurvatureBlock):
    """EKFAC's per-layer estimate: :class:`CurvatureBlock`'s lifecycle, with the eigenbasis refreshed
    when the inverse is (every ``T2``), the scaling re-estimated on its own schedule
    (:meth:`update_scaling`) and a checkpoint of its own format."""

    scaling_updates: int = 0   # scaling estimates averaged so far: k_s of rho_s = min(1 - 1/k_s, alpha)

    def update(self, batch: SampledFisherBlock, rho: float, averaging: str = "fisher") -> tuple[FitResult, bool]:
        if averaging not in AVERAGINGS:
            raise ValueError(f"unknown averaging {averaging!r}; choose one of {AVERAGINGS}")
        first = self.approximation is None
        # "factors" and "fisher" are one update for EKFAC (module docstring)
        fit, accepted = super().update(batch, rho, "fisher")
        if accepted and (first or self.method.scaling_period is None):
            self.scaling_updates += 1   # this fit measured the scaling too
        return fit, accepted

    def update_scaling(self, batch: SampledFisherBlock, averaging_weight: Callable[[int], float],
                       damping: float) -> bool:
        """The scaling re-estimated from ``batch`` in the current eigenbasis and averaged in with
        ``rho = averaging_weight(k)`` for its ``k``-th estimate (the optimizer's, KFAC's running average
        ``min(1 - 1/k, alpha)``; :meth:`EigenbasisDiagonal.rescaled`), then the damped inverse rebuilt
        with it in the same basis, ``1 / (S + damping)``: no eigendecomposition. George et al. 2018,
        Algorithm 1, do it for every minibatch. False when the new scaling is not finite (estimate and
        inverse kept). Nothing to do before the first fit, which measures the scaling itself."""
        if self.approximation is None:
            return True
        estimate = self.approximation.rescaled(batch, averaging_weight(self.scaling_updates + 1))
        if not all_finite(estimate.scaling):
            return False
        self.approximation = estimate
        self.scaling_updates += 1
        if self.inverse is not None:
            # the inverse is in the estimate's basis: both change only at a refresh (invert)
            self.inverse = self.method.damped_inverse(estimate, damping)
        return True

    def invert(self, damping: float, psd_floor: float = 0.1, convention: str = "paper") -> None:
        """The eigenbasis of the averaged factors, then the damped inverse; when either fails
        (:class:`CurvatureError`) the estimate and the previous inverse are both kept."""
        if self.approximation is None:
            return
        current = self.approximation.refreshed()
        self.inverse = self.method.damped_inverse(current, damping, psd_floor, convention)
        self.approximation = current

    def state(self) -> dict:
        return {"estimate": None if self.approximation is None else self.approximation.state(),
                "inverse": None if self.inverse is None else self.inverse.state(),
                "warm": dict(self.warm), "updates": self.updates, "scaling_updates": self.scaling_updates}

    def load_state(self, saved: dict, **to) -> None:
        def move(t):
            return t.to(**to).clone() if torch.is_tensor(t) else t
        est = saved["estimate"]
        self.approximation = None if est is None else EigenbasisDiagonal.from_state(
            {k: move(v) for k, v in est.items()})
        self.inverse = None if saved["inverse"] is None else self.method.inverse_from_state(
            {k: move(v) for k, v in saved["inverse"].items()})
        self.warm = {k: move(v) for k, v in saved["warm"].items()}
        self.updates = int(saved["updates"])
        # a checkpoint from before issue 33 measured the scaling at every statistics update
        self.scaling_updates = int(saved.get("scaling_updates", self.updates))


class EKFAC(Approximation):
    """EKFAC (George et al. 2018): a diagonal in KFAC's Kronecker eigenbasis (module docstring).
    ``T_scale``: the scaling re-estimated every ``T_scale`` steps (default 1), or ``"T1"`` with the
    statistics (:data:`SCALING_WITH_STATISTICS`); the optimizer schedules it (``scaling_period``).
    Solver settings (tol, route, ...) are accepted and unused: there is no iterative solver."""

    name = "ekfac"
    rank = 1
    inverse_class = TwoTermKroneckerInverse
    extra_options = ("T_scale",)

    def __init__(self, T_scale: int | str = 1, **options):
        super().__init__(**options)
        self.T_scale = T_scale
        self.scaling_period = scaling_period(T_scale)   # None: with the statistics, every T1 steps

    def fit(self, batch: SampledFisherBlock, previous: EigenbasisDiagonal | None = None, rho: float = 0.0,
            warm: dict | None = None) -> FitResult:
        """The batch alone (its own eigenbasis, the scaling measured in it) without a previous estimate;
        else the statistics update: the factors averaged, and with ``T_scale="T1"`` the scaling too
        (:meth:`EigenbasisDiagonal.averaged`); the basis kept until the next inverse."""
        if previous is None:
            return FitResult(fit_ekfac(batch))
        if self.scaling_period is None:
            return FitResult(previous.averaged(batch, rho))
        return FitResult(previous.factors_averaged(batch, rho))   # the scaling on its own schedule

    def damped_inverse(self, approx: EigenbasisDiagonal, damping: float, psd_floor: float = 0.1,
                       convention: str = "paper") -> TwoTermKroneckerInverse:
        # psd_floor and the authors' convention belong to the Kronecker sums (module docstring)
        return approx.damped_inverse(damping)

    def new_estimate(self) -> EigenbasisBlock:
        return EigenbasisBlock(self)


__all__ = ["EKFAC", "SCALING_WITH_STATISTICS", "EigenbasisBlock", "EigenbasisDiagonal", "eigenbasis_scaling",
           "ekfac_frobenius_error_sq", "fit_ekfac", "kronecker_eigenbasis", "scaling_period"]
