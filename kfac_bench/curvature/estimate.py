"""The interfaces of a curvature estimate: what the optimizers, the bench and the Figure 1 study may
assume of a method's mathematics, and all that a new method has to provide.

Three protocols, from the outside in (docs/design.md, "Adding a method"):

* :class:`CurvatureEstimate` -- one layer's estimate of its Fisher block and its lifecycle:
  ``update`` (fit the statistics of a batch, with the moving average), ``invert`` (the damped
  inverse), ``solve`` / ``solve_with_bias`` (the preconditioned gradient), ``to_dense`` (the
  explicit estimate, for tests and Figure 1), ``state`` / ``load_state`` (checkpoints).
  :class:`kfac_bench.curvature.block.CurvatureBlock` implements it for every Kronecker-sum method.
* :class:`EstimationMethod` -- the method itself (an :class:`~kfac_bench.curvature.approximations.Approximation`):
  ``fit`` turns statistics into a :class:`FittedEstimate`, ``damped_inverse`` turns that into a
  :class:`DampedInverse`, ``new_estimate`` makes the per-layer :class:`CurvatureEstimate` the
  optimizer holds.
* :class:`FittedEstimate` -- the fitted matrix (``KroneckerSum`` for the paper's methods): finite or
  not, its dense form. :class:`DampedInverse` -- ``(F_hat + damping)^{-1}`` as cached factors.
  :class:`MeasurableEstimate` -- what Figure 1's metrics ask of it besides (``<F, F_hat>``,
  ``||F_hat||^2``, its leading eigenvalues), so they never branch on its structure.

None of them says "Kronecker sum": a method whose estimate is not a sum of Kronecker products (EKFAC:
a diagonal in a Kronecker eigenbasis) implements :class:`EstimationMethod` and returns its own
:class:`CurvatureEstimate` from ``new_estimate`` (or reuses ``CurvatureBlock`` if its fitted estimate
and inverse follow :class:`FittedEstimate` and :class:`DampedInverse`); nothing that holds an
estimate branches on its type.

This module states the interfaces (``typing.Protocol``) and the report every fit returns
(:class:`FitResult`); of this package it imports only :mod:`kfac_bench.curvature.kronecker`, so every
other module of the mathematics can import it without an import circle.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from .kronecker import SampledFisherBlock


@runtime_checkable
class FittedEstimate(Protocol):
    """A fitted estimate ``F_hat`` of one layer's Fisher block (``KroneckerSum`` for the paper's
    methods)."""

    def is_finite(self) -> bool:
        """Whether every stored number is finite (a non-finite fit is rejected, the previous kept)."""

    def to_dense(self) -> Tensor:
        """The explicit ``(d_a d_g) x (d_a d_g)`` matrix, ``vec`` column-stacked, A-side outer (tests,
        Figure 1 on small layers)."""


@runtime_checkable
class MeasurableEstimate(FittedEstimate, Protocol):
    """A fitted estimate Figure 1 can measure without forming ``n x n`` matrices
    (:func:`kfac_bench.curvature.metrics.fisher_error`; training does not need it). Numbers in
    float64."""

    # the number of Kronecker terms when it is a Kronecker sum (the rank of the Theorem 3.1 optimum it
    # is compared with), None when it is not one
    kronecker_rank: int | None
    # whether its spectrum needs an iterative or dense eigensolver (the study skips those on layers
    # over fisher.spectrum_max_n); False when it comes in closed form
    spectrum_needs_eigensolve: bool

    def inner_with(self, block: SampledFisherBlock) -> float:
        """``<F, F_hat>_F`` against the batch's exact block ``F``."""

    def frobenius_sq(self) -> float:
        """``||F_hat||_F^2``."""

    def top_spectrum(self, top: int | None = None, **solver: Any) -> Any:
        """Its ``top`` largest eigenvalues, decreasing, as a
        :class:`~kfac_bench.curvature.spectrum.SpectrumResult` (``solver``: the spectrum solver's
        options, for estimates that need one)."""


@runtime_checkable
class DampedInverse(Protocol):
    """``(F_hat + damping)^{-1}`` with its factors cached between inverse updates."""

    def solve(self, x: Tensor) -> Tensor:
        """``(F_hat + damping)^{-1} vec(X)`` as a ``(d_g, d_a)`` matrix."""

    def solve_with_bias(self, weight_grad: Tensor, bias_grad: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`solve` of ``X = [dW | db]`` from its parts, as its weight and bias columns."""

    def bare_products(self, x: Tensor) -> Callable[[], None]:
        """A callable doing the solve's matrix products and nothing else (the bench's floor)."""

    def state(self) -> dict[str, Tensor]:
        """The tensors that rebuild it (:meth:`EstimationMethod.inverse_from_state`)."""

    def dense_inverse(self) -> Tensor:
        """The explicit inverse (tests, tiny problems)."""


@dataclass
class FitResult:
    """What a fit returns: the fitted estimate and the solvers' report (the bench's iteration
    counts, Figure 1's singular values)."""

    approximation: FittedEstimate   # a KroneckerSum for the paper's methods
    iterations: dict[str, int] = field(default_factory=dict)   # solver -> pairs of Z products
    sigmas: list[float] = field(default_factory=list)           # singular values found
    converged: bool = True
    # the second term's operator (remainder after deflation / the KFAC correction) was numerically
    # zero: F is one Kronecker product to rounding, and the second term is exactly zero
    zero_remainder: bool = False


@runtime_checkable
class EstimationMethod(Protocol):
    """A curvature method: statistics -> fitted estimate -> damped inverse."""

    name: str
    warm_start: bool

    def fit(self, batch: SampledFisherBlock, previous: Any = None, rho: float = 0.0,
            warm: dict | None = None) -> Any:
        """The estimate of ``rho * previous + (1 - rho) * batch`` as a fit report: an object with
        ``approximation`` (a :class:`FittedEstimate`), ``iterations`` (solver -> count) and
        ``converged`` (:class:`FitResult`). ``warm``: the
        layer's warm-start vectors, read and updated."""

    def damped_inverse(self, estimate: Any, damping: float, psd_floor: float = 0.1,
                       convention: str = "paper") -> DampedInverse:
        """The damped inverse of a fitted estimate; raises ``CurvatureError`` when it fails."""

    def inverse_from_state(self, state: dict) -> DampedInverse:
        """The inverse :meth:`damped_inverse` returned, rebuilt from its ``state()``."""

    def new_estimate(self) -> "CurvatureEstimate":
        """A fresh per-layer estimate (nothing fitted yet) for this method."""


@runtime_checkable
class CurvatureEstimate(Protocol):
    """One layer's curvature estimate and its lifecycle (what an optimizer holds per layer)."""

    method: EstimationMethod
    inverse: DampedInverse | None    # None before the first inverse
    updates: int                     # accepted statistics updates so far

    @property
    def rank(self) -> int:
        """The number of Kronecker terms (0 before the first fit; a method that is not a Kronecker
        sum states its own count of stored factor pairs)."""

    def update(self, batch: SampledFisherBlock, rho: float, averaging: str = "fisher") -> tuple[Any, bool]:
        """Fit the estimate of ``rho * previous + (1 - rho) * batch``; the fit report and whether it
        was accepted (a non-finite fit keeps the previous estimate)."""

    def trial_fit(self, batch: SampledFisherBlock, rho: float, warm_start: bool = True) -> Any:
        """The fit :meth:`update` would make, leaving the estimate unchanged."""

    def invert(self, damping: float, psd_floor: float = 0.1, convention: str = "paper") -> None:
        """Recompute the damped inverse (nothing to do before the first fit)."""

    def solve(self, grad: Tensor) -> Tensor:
        """The preconditioned gradient; the gradient itself before the first inverse."""

    def solve_with_bias(self, weight_grad: Tensor, bias_grad: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`solve` of ``[dW | db]`` from its parts."""

    def bare_products(self, x: Tensor) -> Callable[[], None] | None:
        """The solve's bare matrix products (None before the first inverse)."""

    def to_dense(self) -> Tensor:
        """The explicit fitted estimate (raises before the first fit)."""

    def state(self) -> dict:
        """Everything needed to resume (tensors, counters)."""

    def load_state(self, saved: dict, **to) -> None:
        """Restore :meth:`state`, tensors moved with ``Tensor.to(**to)``."""


__all__ = ["CurvatureEstimate", "DampedInverse", "EstimationMethod", "FittedEstimate", "MeasurableEstimate"]
