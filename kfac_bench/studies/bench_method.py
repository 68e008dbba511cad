"""One method under the bench: its model, optimizer and timers, and the timing helpers every
measurement shares (medians, bootstrap intervals, a timed call that repeats until it lasts long enough).

What is measured and why is the docstring of :mod:`kfac_bench.studies.bench`, which drives one
:class:`BenchedMethod` per method and dataset through rounds of interleaved steps.
"""
from __future__ import annotations

import functools
import math
import random
import statistics
import time

import torch

from ..curvature.capture import captures_for
from ..curvature.stats import get_likelihood
from ..models import build_autoencoder
from ..optim.factory import build_training_optimizer
from ..optim.training import layer_gradient
from ..registry import get_method
from ..utils import synchronize
from .bench_common import optimizer_config


# ------------------------------------------------------------------------------------ timing
def median(xs) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def median_ci(xs: list[float], seed: int = 0, level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``xs`` (seeded)."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if len(xs) < 2:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    return meds[int(tail * (resamples - 1))], meds[int((1.0 - tail) * (resamples - 1))]


def syncer(device: torch.device):
    return functools.partial(synchronize, device)


def time_call(fn, sync, target_s: float) -> float:
    """Seconds per call: one call if it lasts ``target_s`` or more, else (that call serving as a
    warm-up) one block of calls lasting about ``target_s``."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = time.perf_counter() - t0
    if once >= target_s:
        return once
    reps = max(1, min(200, int(target_s / max(once, 1e-7))))
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def warm_up_linalg(device: torch.device) -> None:
    """The first eigh calls of a process pay a one-off cost of seconds (lazy library code paths);
    pay it here rather than inside the first method's inverse update."""
    gen = torch.Generator().manual_seed(0)
    for n in (32, 128, 256, 384, 512, 768):
        x = torch.randn(n, n, generator=gen).to(device)
        torch.linalg.eigh(x @ x.mT / n + torch.eye(n, device=device))
        torch.linalg.cholesky(x @ x.mT / n + torch.eye(n, device=device))
    syncer(device)()


def iters_total(iterations: dict | None) -> int:
    return int(sum((iterations or {}).values()))


def iters_text(iterations: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((iterations or {}).items()))


# ------------------------------------------------------------------------------ one method
class BenchedMethod:
    """One method's model, optimizer and measurements on one dataset. The optimizer is driven
    through the harness's interface (:class:`kfac_bench.optim.training.TrainingOptimizer`), alike
    for every method: a first-order one reports no curvature work and has no curvature layers, so
    its curvature measurements stay empty."""

    def __init__(self, name: str, ds: dict, bench: dict, device, seed: int, rank: int | None = None,
                 spatial: str | None = None, T_scale: int | str | None = None):
        self.name = name
        config = optimizer_config(name, bench, rank, spatial, T_scale)
        self.rank = get_method(name).rank_of(config)
        self.spatial = spatial                  # the treatment of a convolution's positions (None: config's)
        self.T_scale = T_scale                  # EKFAC's scaling schedule (None: config's)
        self.likelihood = get_likelihood(ds["likelihood"])
        self.model = build_autoencoder(ds, seed).to(device)
        self.opt = build_training_optimizer(config, self.model, self.likelihood.name, seed, record_timings=True)
        self.steps: list[dict] = []             # per timed step: total and phase seconds
        self.updates: list[dict] = []           # per curvature update: per-layer fit/inverse seconds
        self.solve: dict[int, list[float]] = {}  # layer -> seconds per solve (tight loop)
        self.bare: dict[int, list[float]] = {}   # layer -> seconds of bare products
        self.refit: list[dict] = []
        self.failure: str | None = None          # the error that took it out of the bench

    @property
    def base_key(self) -> str:
        """The method, with its rank where the rank is an option (``lanczos_k[3]``)."""
        return self.name if self.rank is None or get_method(self.name).rank_option is None \
            else f"{self.name}[{self.rank}]"

    @property
    def key(self) -> str:
        """:attr:`base_key`, with the treatment of positions and EKFAC's scaling schedule where the bench
        sets them (``kfac/exact``, ``ekfac/T_scale=T1``)."""
        key = self.base_key if self.spatial is None else f"{self.base_key}/{self.spatial}"
        return key if self.T_scale is None else f"{key}/T_scale={self.T_scale}"

    def force_update(self) -> None:
        """Make the next step a statistics + inverse update, through the optimizer's public request."""
        self.opt.request_curvature_update()

    # -- a training step ------------------------------------------------------------------
    def step(self, x, sync, slot) -> None:
        opt = self.opt
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = self.likelihood.batch_loss(self.model(x), x)
        loss.backward()
        report = opt.train_step(targets=x)
        sync()
        record = {"total": time.perf_counter() - t0, "slot": slot, **report.phases}
        if "statistics" in record:
            record["first"] = not self.updates
            self.updates.append({"first": record["first"], "fit": report.layer_phases.get("fit", {}),
                                 "inverse": report.layer_phases.get("layer_inverse", {}),
                                 "iterations": [dict(f.iterations) for f in report.fits]})
        if not math.isfinite(float(loss.detach())):
            raise ValueError(f"{self.name}: non-finite training loss during the bench; "
                             f"lower bench.lr or raise bench.damping")
        self.steps.append(record)

    # -- preconditioning: tight-loop solves and their bare products ---------------------------
    def _blocks(self):
        """(block index, its capture, its curvature estimate) of every curvature block, in the
        optimizer's order: a module that appears twice (a ConvTranspose2d's weight, then its bias)
        is its first capture, then its second (kfac_bench.curvature.capture)."""
        seen: dict[int, int] = {}
        for i, (layer, block) in enumerate(self.opt.curvature_layers()):
            part = seen[id(layer)] = seen.get(id(layer), -1) + 1
            yield i, captures_for(layer)[part], block

    def _layer_inputs(self):
        """(block index, its curvature estimate, the block's gradient ``[W | b]`` in its ``(d_g, d_a)``
        coordinates) of every block with an inverse (none for a first-order method)."""
        for i, capture, block in self._blocks():
            x = layer_gradient(capture)
            if block.inverse is None or x is None:
                continue
            yield i, block, x

    def time_bare(self, sync, target_s: float) -> None:
        """Right after a step: the bare products of that step's preconditioning, per layer, with the
        step's own gradients -- paired with the step's ``precondition`` phase."""
        if "precondition" not in self.steps[-1]:
            return
        total = 0.0
        for i, block, x in self._layer_inputs():
            t = time_call(block.bare_products(x), sync, target_s)
            self.bare.setdefault(i, []).append(t)
            total += t
        self.steps[-1]["bare"] = total

    def time_solves(self, sync, target_s: float) -> None:
        """The optimizer's own ``inverse.solve`` per layer in a tight loop (once per round)."""
        for i, block, x in self._layer_inputs():
            self.solve.setdefault(i, []).append(time_call(lambda: block.solve(x), sync, target_s))

    # -- factor estimation, warm and cold, on one steady-state operator -----------------------
    def refit_factors(self, x, sync, seed: int) -> None:
        """The operator of the optimizer's next update (``rho F_old_hat + (1 - rho) F_batch``),
        solved warm (the optimizer's stored vectors) and cold (``warm={}``); state untouched."""
        gen = torch.Generator(device=x.device).manual_seed(seed + 7)
        self.refit = []
        for curvature, batch, rho in self.opt.trial_statistics(x, gen):
            row = {}
            for kind in ("warm", "cold"):
                sync()
                t0 = time.perf_counter()
                fit = curvature.trial_fit(batch, rho, warm_start=kind == "warm")
                sync()
                row[kind] = (time.perf_counter() - t0, dict(fit.iterations), bool(fit.converged))
            self.refit.append(row)

    # -- summaries ----------------------------------------------------------------------------
    def summary(self, T1: int, T2: int) -> dict:
        regular = [s["total"] for s in self.steps if not is_update(s)]
        updates = [s for s in self.steps if is_update(s)]
        out = {"regular_step_ms": 1e3 * median(regular), "timed_steps": len(self.steps),
               "update_steps": len(updates)}
        if not updates:   # no curvature: the step is the regular step
            out["step_ms"] = out["regular_step_ms"]
            return out
        out.update(self._factor_summary(updates))
        ms = lambda xs: 1e3 * median(xs)  # noqa: E731
        out["update_step_ms"] = ms([s["total"] for s in updates])
        out["stats_ms"] = ms([s["statistics"] for s in updates if "statistics" in s])
        # EKFAC's scaling on its own schedule: inside the regular steps (their totals include it)
        scaling = [s["scaling"] for s in self.steps if "scaling" in s and not is_update(s)]
        if scaling:
            out["scaling_ms"] = ms(scaling)
        out["inverse_ms"] = ms([s["inverse"] for s in updates if "inverse" in s])
        out["precondition_ms"] = ms([s.get("precondition") for s in self.steps])
        curvature = out["stats_ms"] / T1 + out["factors_ms"] / T1 + out["inverse_ms"] / T2
        out["curvature_amortised_ms"] = curvature
        out["step_ms"] = out["regular_step_ms"] + curvature
        out["curvature_share"] = curvature / out["step_ms"]
        solve = [median(v) for v in self.solve.values()]
        bare = [median(v) for v in self.bare.values()]
        out["solve_ms"] = 1e3 * sum(solve) if solve else float("nan")
        out["bare_ms"] = 1e3 * sum(bare) if bare else float("nan")
        paired = [st["precondition"] / st["bare"] for st in self.steps if st.get("bare")]
        out["floor_ratio"] = median(paired)
        return out

    def _factor_summary(self, updates: list[dict]) -> dict:
        """Factor estimation: the first update, steady-state updates inside the step (the real
        thing), the warm and cold refits; ``factors_ms`` from the best of those available."""
        out = {}
        first = [s for s in updates if s.get("first")]
        later = [s for s in updates if not s.get("first") and "factors" in s]
        out["factors_first_ms"] = 1e3 * first[0]["factors"] if first else float("nan")
        first_u = [u for u in self.updates if u["first"]]
        later_u = [u for u in self.updates if not u["first"]]
        if first_u:
            out["iters_first"] = sum(iters_total(it) for it in first_u[0]["iterations"])
        if self.refit:
            out["factors_warm_refit_ms"] = 1e3 * sum(r["warm"][0] for r in self.refit)
            out["iters_warm_refit"] = sum(iters_total(r["warm"][1]) for r in self.refit)
            out["factors_cold_ms"] = 1e3 * sum(r["cold"][0] for r in self.refit)
            out["iters_cold"] = sum(iters_total(r["cold"][1]) for r in self.refit)
        if later:  # steady-state updates inside the step: the real thing
            out["factors_ms"], out["factors_source"] = 1e3 * median([s["factors"] for s in later]), "step"
            out["iters"] = median([sum(iters_total(it) for it in u["iterations"]) for u in later_u])
        elif self.refit:
            out["factors_ms"], out["factors_source"] = out["factors_warm_refit_ms"], "refit"
            out["iters"] = out["iters_warm_refit"]
        else:
            out["factors_ms"], out["factors_source"] = out["factors_first_ms"], "first"
            out["iters"] = out.get("iters_first", float("nan"))
        return out

    def layer_rows(self) -> list[dict]:
        """One row per curvature layer (none for a first-order method)."""
        first = next((u for u in self.updates if u["first"]), None)
        later = [u for u in self.updates if not u["first"]]
        inverse_times: dict[int, list[float]] = {}
        for u in self.updates:
            for i, t in u["inverse"].items():
                inverse_times.setdefault(i, []).append(t)
        return [self._layer_row(i, capture, block, first, later, inverse_times)
                for i, capture, block in self._blocks()]

    def _layer_row(self, i, capture, block, first, later, inverse_times) -> dict:
        d_g, d_a = capture.block_shape
        row = {"method": self.name, "spatial": self.spatial, "T_scale": self.T_scale, "layer": i,
               "capture": capture.kind,
               "d_g": d_g, "d_a": d_a, "rank": block.rank}
        if first is not None and i in first["fit"]:
            row["factors_first_ms"] = 1e3 * first["fit"][i]
            row["iters_first"] = iters_text(first["iterations"][i])
        steady = [u for u in later if i in u["fit"]]
        if steady:
            row["factors_ms"] = 1e3 * median([u["fit"][i] for u in steady])
            row["iters"] = iters_text(steady[-1]["iterations"][i])
        if i < len(self.refit):
            r = self.refit[i]
            row["factors_warm_refit_ms"], row["iters_warm_refit"] = 1e3 * r["warm"][0], iters_text(r["warm"][1])
            row["factors_cold_ms"], row["iters_cold"] = 1e3 * r["cold"][0], iters_text(r["cold"][1])
        if i in inverse_times:
            row["inverse_ms"] = 1e3 * median(inverse_times[i])
        if i in self.solve:
            row["solve_ms"] = 1e3 * median(self.solve[i])
            row["bare_ms"] = 1e3 * median(self.bare[i])
            row["solve_over_bare"] = row["solve_ms"] / row["bare_ms"]
        return row


def is_update(step: dict) -> bool:
    return any(k in step for k in ("statistics", "factors", "inverse"))
