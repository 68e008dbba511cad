"""The one interface between the harness's loops and an optimizer.

The training loop (:mod:`kfac_bench.runs.train`), the bench (:mod:`kfac_bench.studies.bench`) and the peer bench
(:mod:`kfac_bench.studies.bench_peers`) drive every optimizer the same way, through
:class:`TrainingOptimizer`, and never ask which kind it is. One step of a loop is::

    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), x)          # the forward whose input the curvature methods keep
    if opt.curvature_due(): ...          # e.g. read the losses first: never refit a diverged model
    loss.backward()
    report = opt.train_step(targets=x)   # a StepReport: refit? inverses? fits, phase timings

What the curvature methods need from the loop -- the statistics pass on the last input (they keep
it themselves, by a forward pre-hook), targets for an empirical Fisher (``train_step(targets)``),
the fit reports and the timings (:class:`StepReport`), a forced update
(``request_curvature_update``), the per-layer estimates the bench measures (``curvature_layers``,
``trial_statistics``), which layers are preconditioned and how (``layer_report``, in a run's
summary.json) -- is in this interface, and a first-order optimizer satisfies it trivially:
:class:`FirstOrder` wraps any ``torch.optim.Optimizer`` (nothing due, nothing to report, no layers).
:class:`kfac_bench.optim.KroneckerFactoredOptimizer` implements it itself, and stays a plain
``torch.optim.Optimizer`` for users (``opt.step()``).

:func:`as_training_optimizer` returns an optimizer that already implements the interface as it is
and wraps any other; :func:`kfac_bench.optim.factory.build_training_optimizer` builds a registry
entry's optimizer and does that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..curvature.capture import Capture, captures_for


@dataclass
class StepReport:
    """What one ``train_step`` did."""

    curvature_update: bool = False   # statistics collected and every estimate refit
    inverse_update: bool = False     # damped inverses recomputed
    fits: list = field(default_factory=list)   # the refit's per-layer fit reports (.iterations, .converged)
    phases: dict[str, float] = field(default_factory=dict)   # seconds per optimizer-wide phase (timed runs)
    layer_phases: dict[str, dict[int, float]] = field(default_factory=dict)   # phase -> layer -> seconds

    @property
    def curvature_work(self) -> bool:
        """Whether the step did any curvature work (a refit or new inverses)."""
        return self.curvature_update or self.inverse_update


@runtime_checkable
class TrainingOptimizer(Protocol):
    """An optimizer as the harness drives it (see the module docstring)."""

    skipped_updates: int   # curvature updates rejected (non-finite fit or failed inverse); 0 for first-order
    layer_report: list    # one dict per curvature block and per plain-step module ([] for first-order)

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def curvature_due(self) -> bool:
        """Whether the next ``train_step`` refits the curvature (the loop reads its losses first)."""

    def request_curvature_update(self) -> None:
        """Make the next ``train_step`` refit the curvature and recompute the inverses."""

    def train_step(self, targets: Tensor | None = None) -> StepReport:
        """One optimizer step after ``loss.backward()``; ``targets``: the batch's real targets."""

    def curvature_layers(self) -> list[tuple[nn.Module, Any]]:
        """``(layer, CurvatureEstimate)`` of every preconditioned layer (none for first-order)."""

    def trial_statistics(self, inputs: Tensor, generator: torch.Generator) -> list[tuple[Any, Any, float]]:
        """``(estimate, statistics of inputs, rho)`` per layer for a trial fit, state untouched."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state_dict: dict) -> None: ...

    def close(self) -> None:
        """Release what the optimizer attached to the model (hooks)."""


class FirstOrder:
    """Any ``torch.optim.Optimizer`` as a :class:`TrainingOptimizer`: ``train_step`` is its
    ``step()``; no curvature, so nothing is ever due and there is nothing to report. Its
    ``state_dict`` is the wrapped optimizer's (checkpoints are the same files)."""

    skipped_updates = 0

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    @property
    def layer_report(self) -> list:
        """No curvature: nothing to report."""
        return []

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def curvature_due(self) -> bool:
        return False

    def request_curvature_update(self) -> None:
        pass

    def train_step(self, targets: Tensor | None = None) -> StepReport:
        self.optimizer.step()
        return StepReport()

    def curvature_layers(self) -> list:
        return []

    def trial_statistics(self, inputs: Tensor, generator: torch.Generator) -> list:
        return []

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def close(self) -> None:
        pass


def as_training_optimizer(optimizer) -> TrainingOptimizer:
    """``optimizer`` itself when it implements :class:`TrainingOptimizer`, else wrapped in
    :class:`FirstOrder` (a ``torch.optim.Optimizer``)."""
    if isinstance(optimizer, TrainingOptimizer):
        return optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer or a TrainingOptimizer, got {type(optimizer).__name__}")
    return FirstOrder(optimizer)


def layer_gradient(layer, part: int = 0) -> Tensor | None:
    """One curvature block's gradient as one matrix ``[dW | db]`` (bias last, like ``a_bar``; no bias
    column where the block has none), in the block's ``(d_g, d_a)`` coordinates; None when the
    weight has no gradient. ``layer``: a :class:`~kfac_bench.curvature.capture.Capture`, or a module,
    taken as its ``part``-th capture (a ConvTranspose2d with a bias has two blocks: 0 its weight's,
    1 its bias's), through the capture's ``gradient()`` -- no branch on the module's type here."""
    capture = layer if isinstance(layer, Capture) else captures_for(layer)[part]
    grad, bias_grad = capture.gradient()
    if grad is None or bias_grad is None:
        return grad
    return torch.cat([grad, bias_grad[:, None]], dim=1)


__all__ = ["FirstOrder", "StepReport", "TrainingOptimizer", "as_training_optimizer", "layer_gradient"]
