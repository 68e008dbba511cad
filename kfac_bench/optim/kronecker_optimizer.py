"""The ``torch.optim`` front of the Kronecker-factored methods.

One class does the work; the public ones only name their approximation class (the list of methods
and their options is :mod:`kfac_bench.registry`, which sits above this module: nothing here reads it).
Each supported layer's curvature (``nn.Linear``, ``nn.Conv2d``, ``nn.ConvTranspose2d``: one block per
capture of :mod:`kfac_bench.curvature.capture`, chosen and reported by :mod:`kfac_bench.optim.layers`)
is a :class:`kfac_bench.curvature.estimate.CurvatureEstimate`
(``opt.blocks``, made by the approximation's ``new_estimate``: a
:class:`kfac_bench.curvature.block.CurvatureBlock` for the Kronecker sums), which owns the fit, the
damped inverse, the solve and the checkpoint state; the optimizer only schedules them. A user's loop
stays::

    opt = Lanczos(model, lr=3e-3, damping=1e-3, likelihood="bernoulli")
    for x, y in batches:
        opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()

How the true Fisher is sampled without changing that contract (docs/design.md §1): a forward pre-hook keeps
a reference to the last input the model saw; on a statistics iteration (every ``T1`` steps) the
optimizer runs its own forward on that input with capture hooks and its own backward with targets
sampled from ``likelihood`` (about 1/T1 of the training cost). Statistics use the model's LAST
forward before ``step()``.

The step (decisions where the paper is silent, following the authors' code where it is explicit):

* every ``T1`` steps: statistics, then the approximation of ``rho F_old_hat + (1 - rho) F_batch``
  with ``rho = min(1 - 1/k, alpha)``, ``k`` the number of statistics updates so far (so the first
  update uses the batch alone and early estimates are running means);
* every ``T2`` steps: the damped inverses (cached in between; EKFAC's scaling: every ``T_scale`` steps);
* preconditioned gradient ``Delta_i`` per block (weight and bias together), then KL clipping
  (appendix E): ``nu = min(1, sqrt(c / sum_i |<Delta_i, grad_i>|)``, *without* the ``lr^2`` factor
  of Ba et al. -- the paper's formula, followed as written;
* heavy-ball momentum (default 0.9) on ``nu Delta + weight_decay W`` (weight decay after
  preconditioning, as in the authors' code; off by default), then ``W -= lr * buffer``.

Parameters of no curvature block get the same momentum update on their plain gradient (BatchNorm,
embeddings, unsupported convolutions, layers left out by ``layers=``); ``opt.layer_report`` and
``opt.describe_layers()`` account for every parameter (:mod:`kfac_bench.optim.layers`).

Convolutions: ``spatial=`` chooses the treatment of a layer's positions ("independent", KFC, the
default; "reduce"; "exact"; "banded", the authors' code, with ``spatial_radius``, None = min(kernel) - 1
per layer): :mod:`kfac_bench.curvature.spatial`.

Options that emulate the authors' code (repository ``Abdoulaye-Koroko/natural-gradients``, commit
97105b6), each off by default -- the default is the paper's specification. They exist to reproduce
and explain the authors' published curves, not as recommendations; :mod:`kfac_bench.optim.authors_code`
switches them on together:

* ``curvature_schedule="frozen_after_first"``: statistics, factors and inverses are computed at the
  first step only. In the authors' optimizers ``_iteration_counter`` advances only while
  ``update_stats`` is true (``optimizers/kfac.py`` lines 148-150, the same in every optimizer), and
  ``apps/mlp_cnn/train_mlp.py`` line 162 sets ``update_stats`` only when that counter is a multiple
  of ``T_cov``: after the first statistics step the counter stays at 1 for the rest of training.
* ``damping_convention="authors"``: their damped inverses
  (:func:`kfac_bench.curvature.inverse.authors_damped_inverse`).
* ``second_term="leading"``: Deflation's and KFAC-corrected's second term is the leading Kronecker
  term again (:class:`kfac_bench.curvature.approximations.Approximation`).
* ``stats_sampling="with_replacement"`` with ``stats_fraction=0.25``: statistics from a quarter batch
  drawn with replacement (``train_mlp.py`` lines 30, 164-165).
* ``averaging="factors"``: Kronecker factors averaged one by one
  (:func:`kfac_bench.curvature.block.average_factors`).
* ``kl_clip_terms="tensor"``: the KL clip's ``sum |<Delta, grad>|`` taken per weight and per bias
  tensor, plus 1e-8, instead of per layer (``optimizers/kfac.py`` lines 111-146, the same in every
  optimizer): a layer whose weight and bias parts point different ways counts more.
* ``gaussian_target_std=1.0``: Gaussian (FACES) Fisher targets drawn with unit variance
  (:meth:`kfac_bench.curvature.stats.Likelihood.sample`).

Robustness: a non-finite approximation keeps the previous one (with a warning); a failed or
non-finite inverse keeps the previous inverse (with a warning; plain gradient if there is none yet).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from typing import Callable, Protocol

import torch
from torch import Tensor, nn

from .. import curvature
from ..curvature.approximations import ROUTES, Approximation, FitResult
from ..curvature.block import AVERAGINGS
from ..curvature.estimate import CurvatureEstimate
from ..curvature.inverse import DAMPING_CONVENTIONS, CurvatureError
from ..curvature.kronecker import SampledFisherBlock
from ..curvature.spatial import SPATIAL_TREATMENTS
from ..curvature.stats import collect_statistics, get_likelihood
from .layers import describe_layers, plan_layers
from .training import StepReport, layer_gradient

log = logging.getLogger("kfac_bench.optim")


# Options that emulate the authors' code (default: the paper's specification). Each is documented
# where it acts, with the authors' file and line; kfac_bench/optim/authors_code.py switches them on
# together.
CURVATURE_SCHEDULES = ("periodic", "frozen_after_first")
STATS_SAMPLINGS = ("prefix", "with_replacement")
KL_CLIP_TERMS = ("layer", "tensor")


def _check(name: str, ok: bool, rule: str, value) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


class TimingCallback(Protocol):
    def __call__(self, phase: str, layer: int | None, seconds: float) -> None: ...


class PhaseTimer:
    """Wall time per phase when enabled (synchronising CUDA so times are real): totals and counts of the
    optimizer-wide phases ``statistics``, ``factors``, ``inverse``, ``precondition``, ``scaling`` (EKFAC),
    the last seconds of the per-layer phases ``fit`` and ``layer_inverse`` (``layers[phase][layer]``,
    cleared by the caller), and every measurement passed to the registered callbacks as
    ``callback(phase, layer, seconds)`` (``layer`` None for optimizer-wide phases)."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.layers: dict[str, dict[int, float]] = {}
        self.callbacks: list[TimingCallback] = []

    @contextlib.contextmanager
    def __call__(self, phase: str, layer: int | None = None):
        if not (self.enabled or self.callbacks):
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        if layer is None:
            self.totals[phase] = self.totals.get(phase, 0.0) + seconds
            self.counts[phase] = self.counts.get(phase, 0) + 1
        else:
            self.layers.setdefault(phase, {})[layer] = seconds
        for callback in self.callbacks:
            callback(phase, layer, seconds)


class KroneckerFactoredOptimizer(torch.optim.Optimizer):
    """Natural-gradient optimizer with a Kronecker-factored approximation of each supported layer's
    Fisher block (``nn.Linear``, ``nn.Conv2d``, ``nn.ConvTranspose2d``; ``layers=`` restricts them,
    ``spatial=`` treats a convolution's positions; ``opt.layer_report`` lists every parameter).
    ``approximation`` is the class of a curvature method (an
    :class:`~kfac_bench.curvature.estimate.EstimationMethod`; the subclasses name theirs in
    ``approximation_class``); ``method_options`` are that method's own options, its class's
    ``extra_options`` (e.g. ``k`` of ``lanczos_k``, ``second_term`` of Deflation and KFAC-corrected).

    It is also the harness's :class:`~kfac_bench.optim.training.TrainingOptimizer` (``train_step``,
    ``curvature_due``, ``curvature_layers``, ...): the training loop, the bench and the peer bench
    drive it and any first-order optimizer alike.
    """

    approximation_class: type[Approximation] | None = None

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.1,
        damping: float = 1e-3,
        likelihood: str = "bernoulli",
        *,
        approximation: type[Approximation] | None = None,
        T1: int = 100,
        T2: int = 100,
        alpha: float = 0.95,
        kl_clip: float | None = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        fisher: str = "sampled",
        reduction: str = "mean",
        stats_fraction: float = 1.0,
        psd_floor: float = 0.1,
        tol: float = 1e-6,
        max_iter: int = 1000,
        krylov_dim: int = 6,
        max_restarts: int = 100,
        route: str = "auto",
        seed: int = 0,
        record_timings: bool = False,
        curvature_schedule: str = "periodic",
        damping_convention: str = "paper",
        stats_sampling: str = "prefix",
        averaging: str = "fisher",
        gaussian_target_std: float | None = None,
        kl_clip_terms: str = "layer",
        spatial: str = "independent",
        spatial_radius: int | None = None,
        layers: list[str] | None = None,
        **method_options,
    ):
        method_class = approximation or self.approximation_class
        if not (isinstance(method_class, type) and issubclass(method_class, Approximation)):
            raise TypeError(f"approximation must be a curvature method class (e.g. kfac_bench.curvature.KFAC), "
                            f"got {method_class!r}")
        name, own = method_class.name, method_class.extra_options
        unknown = sorted(set(method_options) - set(own))
        if unknown:
            raise TypeError(f"{name} takes no option(s) {unknown}"
                            + (f"; its own options are {list(own)}" if own else ""))
        _check("lr", lr > 0, "positive", lr)
        _check("damping", damping > 0, "positive", damping)
        _check("T1", int(T1) == T1 and T1 >= 1, "an integer >= 1", T1)
        _check("T2", int(T2) == T2 and T2 >= 1, "an integer >= 1", T2)
        _check("alpha", 0.0 <= alpha <= 1.0, "in [0, 1]", alpha)
        _check("kl_clip", kl_clip is None or kl_clip > 0, "positive or None", kl_clip)
        _check("momentum", 0.0 <= momentum < 1.0, "in [0, 1)", momentum)
        _check("weight_decay", weight_decay >= 0, "non-negative", weight_decay)
        fisher = {True: "sampled", "true": "sampled"}.get(fisher, fisher)
        _check("fisher", fisher in ("sampled", "empirical"), "'sampled' or 'empirical'", fisher)
        _check("reduction", reduction in ("mean", "sum"), "'mean' or 'sum'", reduction)
        _check("stats_fraction", 0 < stats_fraction <= 1, "in (0, 1]", stats_fraction)
        _check("psd_floor", psd_floor > 0, "positive", psd_floor)
        _check("curvature_schedule", curvature_schedule in CURVATURE_SCHEDULES,
               f"one of {CURVATURE_SCHEDULES}", curvature_schedule)
        _check("damping_convention", damping_convention in DAMPING_CONVENTIONS,
               f"one of {DAMPING_CONVENTIONS}", damping_convention)
        _check("stats_sampling", stats_sampling in STATS_SAMPLINGS, f"one of {STATS_SAMPLINGS}", stats_sampling)
        _check("averaging", averaging in AVERAGINGS, f"one of {AVERAGINGS}", averaging)
        _check("kl_clip_terms", kl_clip_terms in KL_CLIP_TERMS, f"one of {KL_CLIP_TERMS}", kl_clip_terms)
        _check("gaussian_target_std", gaussian_target_std is None or gaussian_target_std > 0,
               "positive or None", gaussian_target_std)
        _check("route", route in ROUTES, f"one of {ROUTES}", route)
        _check("spatial", spatial in SPATIAL_TREATMENTS, f"one of {SPATIAL_TREATMENTS}", spatial)
        radius_ok = isinstance(spatial_radius, int) and not isinstance(spatial_radius, bool) and spatial_radius >= 0
        _check("spatial_radius", spatial_radius is None or radius_ok, "an integer >= 0 or None", spatial_radius)
        self.likelihood = get_likelihood(likelihood)
        self.method: Approximation = method_class(
            tol=tol, max_iter=max_iter, krylov_dim=krylov_dim, max_restarts=max_restarts,
            route=route, **method_options)
        self.curvature_schedule = curvature_schedule
        self.damping_convention = damping_convention
        self.stats_sampling = stats_sampling
        self.averaging = averaging
        self.gaussian_target_std = gaussian_target_std
        self.kl_clip_terms = kl_clip_terms
        plan = plan_layers(model, layers, spatial, spatial_radius)
        self.spatial, self.spatial_radius = spatial, spatial_radius
        self.captures = plan.captures
        self.layers: list[nn.Module] = [c.module for c in self.captures]   # each block's module
        self.layer_report: list[dict] = plan.report
        log.info("%s preconditions:\n%s", type(self).__name__, describe_layers(plan.report))
        defaults = dict(lr=lr, damping=damping, momentum=momentum, weight_decay=weight_decay,
                        kl_clip=kl_clip)
        super().__init__(model.parameters(), defaults)
        self.model = model
        self.T1, self.T2, self.alpha = int(T1), int(T2), float(alpha)
        self.fisher, self.reduction, self.stats_fraction = fisher, reduction, float(stats_fraction)
        self.psd_floor = float(psd_floor)
        device = self.captures[0].device_dtype["device"]
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(int(seed))
        self.timer = PhaseTimer(record_timings, device)
        self.steps = 0
        self.last_fit: list[FitResult] = []
        self.skipped_updates = 0
        self.blocks: list[CurvatureEstimate] = [self.method.new_estimate() for _ in self.captures]
        self._last_updates = (False, False)   # (refit, inverses) of the last step
        self._update_requested = False
        self._last_input: Tensor | None = None
        self._hook = model.register_forward_pre_hook(self._remember_input)
        self._other_params = plan.plain

    # ----------------------------------------------------------------------------- public hooks
    def add_timing_callback(self, callback: TimingCallback) -> None:
        """Call ``callback(phase, layer, seconds)`` after every timed phase of ``step`` (see
        :class:`PhaseTimer`); for profilers and the benchmark."""
        self.timer.callbacks.append(callback)

    def remove_timing_callback(self, callback: TimingCallback) -> None:
        self.timer.callbacks.remove(callback)

    def describe_layers(self) -> str:
        """Which layers get curvature blocks (path, type, shapes, block ``(d_g, d_a)``, treatment) and
        which parameters take the plain step: :attr:`layer_report` as a table."""
        return describe_layers(self.layer_report)

    def request_curvature_update(self) -> None:
        """Make the next ``step()`` collect statistics, refit every approximation (EKFAC: its scaling
        too) and recompute the inverses, whatever the schedule (the step counter, hence the schedule
        after it, is unchanged)."""
        self._update_requested = True

    # ----------------------------------------------------------------------------------- hooks
    def _remember_input(self, module, args):
        if args and torch.is_tensor(args[0]):
            self._last_input = args[0].detach()

    # ------------------------------------------------------------------------------ curvature
    def update_curvature(self, inputs: Tensor | None = None, targets: Tensor | None = None,
                         scaling: bool = False) -> None:
        """Collect statistics and refit every layer's approximation (what ``step`` does every T1); with
        ``scaling``, EKFAC's scaling from the same statistics first (:meth:`update_scaling`)."""
        with self.timer("statistics"):
            blocks = self._statistics(inputs, targets)
        if scaling:
            self.update_scaling(blocks)
        fits = []
        with self.timer("factors"):
            for i, (curvature, batch) in enumerate(zip(self.blocks, blocks)):
                with self.timer("fit", layer=i):
                    fit, accepted = curvature.update(batch, self.averaging_weight(curvature.updates + 1),
                                                     self.averaging)
                if not accepted:
                    self.skipped_updates += 1
                    warnings.warn(f"non-finite {self.method.name} factors for a layer of shape "
                                  f"{batch.shape_g}x{batch.shape_a}: update skipped, previous kept")
                fits.append(fit)
        self.last_fit = fits

    def update_scaling(self, batches: list | None = None, targets: Tensor | None = None) -> None:
        """EKFAC's scaling (every ``T_scale`` steps) from ``batches`` or a pass of its own; timed as ``scaling``."""
        with self.timer("scaling"):
            batches = self._statistics(None, targets) if batches is None else batches
            for curvature, batch in zip(self.blocks, batches):
                if not curvature.update_scaling(batch, self.averaging_weight, self.param_groups[0]["damping"]):
                    self.skipped_updates += 1
                    warnings.warn(f"non-finite {self.method.name} scaling, layer {batch.shape_g}x{batch.shape_a}: kept")

    def _statistics(self, inputs: Tensor | None, targets: Tensor | None) -> list:
        inputs = self._last_input if inputs is None else inputs
        if inputs is None:
            raise RuntimeError("no input seen yet: run a forward pass of the model before step()")
        if self.fisher == "empirical" and targets is None:
            raise ValueError("fisher='empirical' needs the real targets: call step(targets=y)")
        if self.stats_fraction < 1.0 or self.stats_sampling == "with_replacement":
            n = max(1, math.ceil(self.stats_fraction * inputs.shape[0]))
            if self.stats_sampling == "with_replacement":
                # the authors' code: int(batch_size / 4) row indices drawn uniformly with replacement
                # (apps/mlp_cnn/train_mlp.py lines 30 and 164-165 at commit 97105b6); the int() there
                # rounds down where ceil() is used here -- equal for their batch sizes 256/512/1024
                rows = torch.randint(inputs.shape[0], (n,), generator=self._generator,
                                     device=self._generator.device).to(inputs.device)
            else:
                rows = slice(0, n)
            inputs = inputs[rows]
            targets = None if targets is None else targets[rows]
        return collect_statistics(self.model, self.captures, inputs, self.likelihood, self._generator,
                                  targets if self.fisher == "empirical" else None, self.reduction,
                                  self.gaussian_target_std)

    def averaging_weight(self, k: int) -> float:
        """``rho`` of the k-th statistics update (k >= 1): ``min(1 - 1/k, alpha)``; the first uses
        its batch alone. With ``averaging="factors"`` (the authors' code) the counter is the number
        of *earlier* updates, ``min(1 - 1/(k-1), alpha)`` (``optimizers/kfac.py`` lines 310-320 at
        commit 97105b6, where ``_iteration_counter`` is still k-1), so the second update also
        replaces the first."""
        if self.averaging == "factors":
            return 0.0 if k <= 2 else min(1.0 - 1.0 / (k - 1), self.alpha)
        return min(1.0 - 1.0 / k, self.alpha)

    def curvature_due(self) -> bool:
        """Whether the next ``step()`` collects statistics and refits the approximation."""
        if self._update_requested:
            return True
        if self.curvature_schedule == "frozen_after_first" and any(b.updates for b in self.blocks):
            return False
        return self.steps % self.T1 == 0

    def scaling_due(self) -> bool:
        """Whether the next ``step()`` re-estimates EKFAC's scaling (every ``T_scale`` steps; George et al. 2018)."""
        period = getattr(self.method, "scaling_period", None)
        frozen = self.curvature_schedule == "frozen_after_first" and any(b.updates for b in self.blocks)
        return period is not None and (self._update_requested or not frozen and self.steps % period == 0)

    def inverse_due(self) -> bool:
        """Whether the next ``step()`` recomputes the damped inverses (a layer with an
        approximation but no inverse yet always gets one)."""
        if self._update_requested:
            return True
        if any(b.inverse is None and b.approximation is not None for b in self.blocks):
            return True
        if self.curvature_schedule == "frozen_after_first" and any(b.inverse is not None for b in self.blocks):
            return False
        return self.steps % self.T2 == 0

    layer_gradient = staticmethod(layer_gradient)   # [dW | db] of a layer (kfac_bench.optim.training)

    def update_inverses(self) -> None:
        with self.timer("inverse"):
            damping = self.param_groups[0]["damping"]
            for i, block in enumerate(self.blocks):
                if block.approximation is None:
                    continue
                try:
                    with self.timer("layer_inverse", layer=i):
                        block.invert(damping, self.psd_floor, self.damping_convention)
                except CurvatureError as err:
                    self.skipped_updates += 1
                    warnings.warn(f"damped inverse failed ({err}); previous inverse kept")

    # ----------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, targets: Tensor | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        refit, rescale = self.curvature_due(), self.scaling_due()
        if refit:
            self.update_curvature(targets=targets, scaling=rescale)
        elif rescale:
            self.update_scaling(targets=targets)
        invert = self.inverse_due()
        if invert:
            self.update_inverses()
        self._update_requested = False
        self._last_updates = (refit, invert)
        group = self.param_groups[0]
        with self.timer("precondition"):
            clip = group["kl_clip"] is not None
            directions, dots = [], []
            for capture, block in zip(self.captures, self.blocks):
                # the block's coordinates: [dW | db] as the weight matrix and the bias (a capture
                # without bias column: the matrix alone); a Linear layer's are its .grad themselves
                weight_grad, bias_grad = capture.gradient()
                if weight_grad is None:
                    directions.append(None)
                    continue
                if bias_grad is None:
                    parts = (block.solve(weight_grad),)
                    grads = (weight_grad,)
                else:
                    # the solve of [dW | db] from its parts: no concatenation, and the weight part
                    # comes out contiguous for the dot and the update
                    parts = block.solve_with_bias(weight_grad, bias_grad)
                    grads = (weight_grad, bias_grad)
                directions.append(parts)
                if clip:
                    # <Delta_i, grad_i> right after the solve, while both are still in cache;
                    # torch.dot: no d * g temporary. Per tensor (the authors' code) or per layer.
                    layer_dots = [torch.dot(d.reshape(-1), g.reshape(-1)) for d, g in zip(parts, grads)]
                    if self.kl_clip_terms == "tensor":
                        dots.extend(layer_dots)
                    else:
                        dots.append(layer_dots[0] if len(layer_dots) == 1 else layer_dots[0] + layer_dots[1])
            nu = 1.0
            if dots:
                # one reduction for all layers, and nu stays on the device: no host sync per step
                # (float64, as the Python float this was before: the same bits on CPU)
                total = torch.stack(dots).abs().sum().double()
                if self.kl_clip_terms == "tensor":
                    total = total + 1e-8   # the authors' fisher_norm += 1e-8
                nu = torch.where((total > 0) & torch.isfinite(total),
                                 torch.sqrt(group["kl_clip"] / total).clamp(max=1.0), 1.0)
            self._nu = nu
        for capture, parts in zip(self.captures, directions):
            if parts is None:
                continue
            # nu is applied inside the momentum update (no scaled copy of the direction)
            for p, direction in capture.directions(parts):
                self._apply(p, direction, group, nu)
        for p in self._other_params:
            if p.grad is not None:
                self._apply(p, p.grad, group)
        self.steps += 1
        return loss

    @property
    def last_nu(self) -> float:
        """The KL clip's factor of the last step (reading it waits for the device)."""
        return float(self._nu)

    def _apply(self, p: Tensor, direction: Tensor, group: dict, scale: Tensor | float = 1.0) -> None:
        """``p -= lr * buffer`` with ``buffer = momentum * buffer + scale * direction + weight_decay * p``.
        ``scale`` (the KL clip's nu, a device scalar or 1) enters through ``addcmul_``: no pass
        over memory to scale the direction first, no host sync."""
        if group["weight_decay"]:
            direction = direction * scale + group["weight_decay"] * p
            scale = 1.0
        tensor_scale = torch.is_tensor(scale)
        if group["momentum"]:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = direction * scale   # a new tensor (x * 1.0 == x exactly)
            elif tensor_scale:
                buf.mul_(group["momentum"]).addcmul_(direction, scale)
            else:
                buf.mul_(group["momentum"]).add_(direction, alpha=scale)
            p.add_(buf, alpha=-group["lr"])
        elif tensor_scale:
            p.addcmul_(direction, scale, value=-group["lr"])
        else:
            p.add_(direction, alpha=-group["lr"] * scale)

    # ---------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["curvature"] = {
            "method": self.method.name,
            "steps": self.steps,
            "skipped_updates": self.skipped_updates,
            "generator": self._generator.get_state(),
            "layers": [block.state() for block in self.blocks],
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        curvature = state_dict.pop("curvature", None)
        super().load_state_dict(state_dict)
        if curvature is None:
            return
        if curvature["method"] != self.method.name:
            raise ValueError(f"state_dict was saved by {curvature['method']!r}, not {self.method.name!r}")
        if len(curvature["layers"]) != len(self.blocks):
            raise ValueError(f"state_dict has {len(curvature['layers'])} curvature blocks, this optimizer "
                             f"{len(self.blocks)} (another model, or other layers=; opt.describe_layers() lists "
                             f"this one's)")
        self.steps = int(curvature["steps"])
        self.skipped_updates = int(curvature.get("skipped_updates", 0))
        self._generator.set_state(curvature["generator"].cpu() if torch.is_tensor(curvature["generator"])
                                  else curvature["generator"])
        for capture, block, saved in zip(self.captures, self.blocks, curvature["layers"]):
            block.load_state(saved, **capture.device_dtype)

    def close(self) -> None:
        """Remove the forward pre-hook from the model."""
        self._hook.remove()

    # ------------------------------------------------- the harness's interface (TrainingOptimizer)
    def train_step(self, targets: Tensor | None = None) -> StepReport:
        """``step(targets=targets)`` (targets: the real ones, for ``fisher="empirical"``), reported:
        whether it refit the curvature and recomputed the inverses, the fits, and -- with
        ``record_timings`` -- the seconds of its phases (optimizer-wide and per layer)."""
        before = dict(self.timer.totals)
        self.timer.layers = {}
        self.step(targets=targets)
        refit, invert = self._last_updates
        phases = {k: v - before.get(k, 0.0) for k, v in self.timer.totals.items() if k not in before or v > before[k]}
        return StepReport(curvature_update=refit, inverse_update=invert, fits=list(self.last_fit) if refit else [],
                          phases=phases, layer_phases={k: dict(v) for k, v in self.timer.layers.items()})

    def curvature_layers(self) -> list[tuple[nn.Module, CurvatureEstimate]]:
        """Every curvature block's layer with its estimate (a ConvTranspose2d with a bias appears
        twice: its weight's block, then its bias's)."""
        return list(zip(self.layers, self.blocks))

    def trial_statistics(self, inputs: Tensor, generator: torch.Generator
                         ) -> list[tuple[CurvatureEstimate, SampledFisherBlock, float]]:
        """The statistics of ``inputs`` (targets sampled with ``generator``) for every layer, with the
        moving-average weight its next update would use -- the operator of that update, for
        :meth:`CurvatureEstimate.trial_fit`; the optimizer's state is untouched."""
        batches = collect_statistics(self.model, self.captures, inputs, self.likelihood, generator, None,
                                     self.reduction)
        return [(block, batch, self.averaging_weight(block.updates + 1)) for block, batch in zip(self.blocks, batches)]


class KFAC(KroneckerFactoredOptimizer):
    """KFAC (Martens & Grosse 2015; paper eq. 1): ``E[a a^T] (x) E[g g^T]`` per layer."""

    approximation_class = curvature.KFAC


class KPSVD(KroneckerFactoredOptimizer):
    """KPSVD (paper 3.1): the best single Kronecker product, by power SVD of the zigzag Fisher."""

    approximation_class = curvature.KPSVD


class Deflation(KroneckerFactoredOptimizer):
    """Deflation (paper 3.2.1): best rank-1, then best rank-1 of the remainder."""

    approximation_class = curvature.Deflation


class Lanczos(KroneckerFactoredOptimizer):
    """Lanczos (paper 3.2.2): the best Kronecker rank-2 by restarted Lanczos bidiagonalisation."""

    approximation_class = curvature.Lanczos


class KFACCorrected(KroneckerFactoredOptimizer):
    """KFAC-corrected (paper 3.3): KFAC plus the best Kronecker correction term."""

    approximation_class = curvature.KFACCorrected


class LanczosK(KroneckerFactoredOptimizer):
    """Kronecker rank ``k`` (option ``k``, default 3) by restarted Lanczos bidiagonalisation; damped
    solve by preconditioned conjugate gradients (options ``cg_tol``, ``cg_max_iter``)."""

    approximation_class = curvature.LanczosK


class EKFAC(KroneckerFactoredOptimizer):
    """EKFAC (George et al. 2018): a diagonal in KFAC's Kronecker eigenbasis, refreshed every ``T2``; the scaling
    every ``T_scale`` steps (``"T1"``: the schedule before issue 33; :mod:`kfac_bench.curvature.ekfac`)."""

    approximation_class = curvature.EKFAC
