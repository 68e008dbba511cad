"""One layer's curvature block and its lifecycle, in the manner of kfac-jax's curvature blocks:
statistics -> :meth:`CurvatureBlock.update` (the approximation, with its moving average) ->
:meth:`CurvatureBlock.invert` (the damped inverse object) -> :meth:`CurvatureBlock.solve` (the
preconditioned gradient), plus :meth:`CurvatureBlock.bare_products` (the floor the benchmark
measures a solve against) and :meth:`CurvatureBlock.state` / :meth:`CurvatureBlock.load_state`
(checkpoints).

The block delegates everything that depends on the method to its :class:`Approximation` (the fit
and the kind of damped inverse), so nothing that holds a block branches on the Kronecker rank or
the type of the inverse. It knows nothing of training loops: the optimizer decides when to call it.
It is the :class:`~kfac_bench.curvature.estimate.CurvatureEstimate` of every Kronecker-sum method
(:meth:`Approximation.new_estimate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .estimate import EstimationMethod, FitResult
from .kronecker import KroneckerSum, SampledFisherBlock


def average_factors(previous: KroneckerSum | None, new: KroneckerSum, rho: float) -> KroneckerSum:
    """Every Kronecker factor averaged on its own, ``rho * old + (1 - rho) * new`` (the authors'
    ``averaging="factors"``, e.g. ``optimizers/deflation.py`` lines 276-282 at commit 97105b6;
    ill-posed for singular-vector factors, see :mod:`kfac_bench.curvature.approximations`, and kept
    only to reproduce their runs)."""
    if previous is None or rho == 0.0 or previous.rank != new.rank:
        return new
    return KroneckerSum([(rho * a0 + (1 - rho) * a1, rho * g0 + (1 - rho) * g1)
                         for (a0, g0), (a1, g1) in zip(previous.terms, new.terms)])


AVERAGINGS = ("fisher", "factors")


@dataclass
class CurvatureBlock:
    """The curvature state of one layer: approximation, damped inverse, warm-start vectors and the
    number of accepted statistics updates."""

    method: EstimationMethod         # an Approximation (approximations.py), which makes the blocks
    approximation: KroneckerSum | None = None
    inverse: object | None = None
    warm: dict = field(default_factory=dict)
    updates: int = 0

    # -------------------------------------------------------------------------- lifecycle
    def update(self, batch: SampledFisherBlock, rho: float, averaging: str = "fisher") -> tuple[FitResult, bool]:
        """Fit the approximation of ``rho * previous + (1 - rho) * batch`` (``averaging="fisher"``)
        or of the batch, then average the factors (``"factors"``). Returns the fit and whether it
        was accepted: a non-finite approximation leaves the previous one in place."""
        if averaging == "factors":
            fit = self.method.fit(batch, None, 0.0, self.warm)
            fit.approximation = average_factors(self.approximation, fit.approximation, rho)
        elif averaging == "fisher":
            fit = self.method.fit(batch, self.approximation, rho, self.warm)
        else:
            raise ValueError(f"unknown averaging {averaging!r}; choose one of {AVERAGINGS}")
        accepted = fit.approximation.is_finite()
        if accepted:
            self.approximation = fit.approximation
            self.updates += 1
        return fit, accepted

    def trial_fit(self, batch: SampledFisherBlock, rho: float, warm_start: bool = True) -> FitResult:
        """The fit :meth:`update` would make (``averaging="fisher"``), leaving the block unchanged;
        ``warm_start=False`` starts every solver from the identity (what a first update costs)."""
        before = self.method.warm_start
        self.method.warm_start = bool(warm_start)
        try:
            return self.method.fit(batch, self.approximation, rho, dict(self.warm) if warm_start else {})
        finally:
            self.method.warm_start = before

    def invert(self, damping: float, psd_floor: float = 0.1, convention: str = "paper") -> None:
        """Recompute the damped inverse; raises :class:`CurvatureError` (the previous inverse is
        kept) when the decomposition fails. No approximation yet: nothing to do."""
        if self.approximation is None:
            return
        self.inverse = self.method.damped_inverse(self.approximation, damping, psd_floor, convention)

    def solve(self, grad: Tensor) -> Tensor:
        """The preconditioned gradient ``(F_hat + damping)^{-1} vec(grad)``; the gradient itself
        before the first inverse."""
        return grad if self.inverse is None else self.inverse.solve(grad)

    def solve_with_bias(self, weight_grad: Tensor, bias_grad: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`solve` of ``[dW | db]`` (bias last, like ``a_bar``) from its parts, without
        concatenating them, returned as the weight part and the bias part; the parts themselves
        before the first inverse."""
        if self.inverse is None:
            return weight_grad, bias_grad
        return self.inverse.solve_with_bias(weight_grad, bias_grad)

    def bare_products(self, x: Tensor):
        """A callable doing the matrix products of :meth:`solve` and nothing else (None before the
        first inverse)."""
        return None if self.inverse is None else self.inverse.bare_products(x)

    @property
    def rank(self) -> int:
        return 0 if self.approximation is None else self.approximation.rank

    def to_dense(self) -> Tensor:
        """The explicit fitted approximation (tests, Figure 1 on small layers)."""
        if self.approximation is None:
            raise ValueError("no approximation yet: update() the block first")
        return self.approximation.to_dense()

    # ------------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {
            "terms": None if self.approximation is None else [[a, g] for a, g in self.approximation.terms],
            "inverse": None if self.inverse is None else self.inverse.state(),
            "warm": dict(self.warm),
            "updates": self.updates,
        }

    def load_state(self, saved: dict, **to) -> None:
        """Restore :meth:`state`, tensors moved with ``Tensor.to(**to)`` (device, dtype) and copied."""
        def move(t: Tensor) -> Tensor:
            return t.to(**to).clone()
        self.approximation = None if saved["terms"] is None else KroneckerSum(
            [(move(a), move(g)) for a, g in saved["terms"]])
        self.inverse = None if saved["inverse"] is None else self.method.inverse_from_state(
            {k: move(v) for k, v in saved["inverse"].items()})
        self.warm = {k: move(v) for k, v in saved["warm"].items()}
        self.updates = int(saved["updates"])


__all__ = ["AVERAGINGS", "CurvatureBlock", "average_factors"]
