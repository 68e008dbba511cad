"""``kfac-bench bench``: what each method costs per training step, and against its matrix products.

The paper (appendix C, Table 1) claims that KPSVD, Deflation, Lanczos and KFAC-corrected cost the
same order as KFAC. This module measures it, in one process, for SGD, Adam and the five Kronecker
methods at the paper's batch sizes (the dataset configs' ``batch_size``) and ``T1 = T2 = 100``:

* **the amortised training step**, reported as a ratio to the SGD step. One step is
  ``zero_grad; forward; loss; backward; opt.step()``. For a Kronecker method the cost of a window of
  ``T`` steps that contains one curvature update is ``(T - 1) x regular step + update step``; its
  mean is estimated from its parts:
  ``step = median regular step + (statistics + factors) / T1 + inverse / T2``
  (a literal ``T``-step window per method and dataset would take an hour on a CPU; the parts are
  the same code paths, timed by the optimizer itself).
* **the curvature work, by phase** (the optimizer's own ``record_timings`` timer): statistics (the
  extra forward/backward with sampled targets), factor estimation (power SVD / Lanczos, with their
  operator-application counts), inverses, preconditioning. Factor estimation is reported three
  ways: ``factors_first`` (the optimizer's first update: batch operator only, cold start),
  ``factors`` (a steady-state update inside the step: the operator ``rho F_old + (1 - rho) F_batch``,
  warm-started) and, on one further steady-state operator, ``factors_warm_refit`` against
  ``factors_cold`` (the same operator, every solver started from the identity). Every method is
  driven through the harness's one optimizer interface
  (:class:`kfac_bench.optim.training.TrainingOptimizer`): each step's report gives its phases and
  per-layer fit and inverse times (with ``record_timings``) and its fits; the bench asks for an
  update with ``request_curvature_update()``, reads the layers' curvature estimates through
  ``curvature_layers()`` and the operator of the next update through ``trial_statistics()`` --
  never an optimizer's private attribute, and never a branch on the kind of optimizer (a
  first-order one reports no curvature work and has no curvature layers).
* **the floor**: the bare matrix products a preconditioning step needs, with the cached inverses'
  own tensors (same shapes, dtype, device) and the layer's real gradient, as each inverse states
  them (``bare_products``): rank-1 methods 2 products per layer ``G^-1 X A^-1``, rank-2 methods 4
  products ``K2 ((K2^T X K1) o D) K1^T`` (the Hadamard product with ``D`` is not a matrix product
  and is left out of the floor), Kronecker rank ``k > 2`` one conjugate-gradient iteration (the
  preconditioner's 4 and ``2 k`` for the damped sum; a solve takes several), timed right after every
  step with that step's gradients. ``floor_ratio`` = median over steps of the step's
  preconditioning phase / its bare products. ``solve`` is the optimizer's own ``inverse.solve`` in
  a tight loop: ``precondition / solve`` is what the step adds around the solves (gradient
  concatenation, KL clipping, Python), ``solve / bare`` what the solve adds around the products
  (allocations, the Hadamard product).

Interleaving: every method keeps its own model and optimizer for the whole run. A round is
``steps`` slots; in each slot every method takes one step on the same batch, in an order rotated
every round, so machine drift and other processes' load hit every method alike. Ratios are paired
by slot (a method's step over SGD's step of the same slot) before the median is taken; every
reported time is a median. The first ``update_rounds`` rounds begin with a curvature update of
every Kronecker method (the first of them is the optimizer's first update).

Targets (issue 6), evaluated per method and dataset: preconditioning within ``targets.floor_ratio``
(1.25) of its bare products; amortised curvature estimation (statistics + factors + inverses) below
``targets.curvature_share`` (10 %) of the amortised step; Lanczos no slower than Deflation per
amortised step.

Data: ``bench.data=random`` (default) uses inputs drawn uniformly in [0, 1] with the dataset's
shape (the auto-encoder target is the input); timing does not depend on the pixels, though solver
iteration counts may differ somewhat from real data. ``bench.data=dataset`` uses the first
batches of the real training split (``kfac_bench.data.load_dataset``).

Methods: ``bench.methods`` names entries of :mod:`kfac_bench.registry` (``all``: every one); a
method whose Kronecker rank is an option (``lanczos_k``) is timed at each rank of ``bench.ranks``
(null: its config's rank), one row per rank (column ``rank``). ``ratio_kfac`` is the amortised step
over KFAC's (when KFAC is benched).

Convolutions (issue 32): every block is reached through its capture
(:mod:`kfac_bench.curvature.capture`: its gradient in the block's ``(d_g, d_a)`` coordinates and its
shape), so a CNN (``dataset=mnist_conv``) is benched like an MLP. ``bench.spatial`` (a list of
treatments of a convolution's positions, :mod:`kfac_bench.curvature.spatial`) times each curvature
method once per treatment, in the same interleaved rounds (column ``spatial``); ``stats_vs_independent``,
``stats_factors_vs_independent``, ``curvature_vs_independent`` and ``step_vs_independent`` are a row's
costs over the same method's under ``independent``. Ignored on a model without convolutions.

EKFAC's scaling schedule (issue 33): ``bench.T_scale`` (a list of ``optimizer.T_scale`` values, e.g.
``[1, T1]``) times EKFAC once per value, in the same interleaved rounds (column ``T_scale``; null: its
config's). The per-step scaling (its own statistics pass and the projection on the eigenbasis) is part
of EKFAC's regular step, shown alone as ``scaling_ms`` (median of the regular steps' ``scaling`` phase);
``T_scale=T1`` (the schedule before issue 33) has none and re-estimates the scaling in its update.

Outputs in ``out_dir``: ``bench.csv`` and ``bench.md`` (one row per dataset, method and rank),
``bench_layers.csv`` (per-layer profile of every Kronecker method), ``bench.json`` (the settings
and the environment). All times are milliseconds.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from .bench_common import bench_batches, markdown_table
from .bench_method import BenchedMethod, is_update, median, median_ci, syncer, warm_up_linalg
from ..configs import config_dir
from ..curvature.capture import captures_for
from ..curvature.spatial import SPATIAL_TREATMENTS
from ..models import build_autoencoder
from ..registry import first_order_method_names, get_method, method_names
from ..utils import atomic_write_text, git_commit, select_device

log = logging.getLogger("kfac_bench.studies.bench")

# The subjects of the bench's comparisons (what its columns are ratios to), not of how a method is driven:
BASELINE = "sgd"                             # ratio_sgd; always benched
REFERENCE = "kfac"                           # ratio_kfac, when benched
LANCZOS_VS_DEFLATION = ("lanczos", "deflation")   # issue 6's target: Lanczos no slower than Deflation

DEFAULTS: dict = {
    "datasets": ["curves", "mnist", "faces"],
    "methods": "all",         # registry names, or all (kfac_bench.registry)
    "ranks": None,            # ranks of a variable-rank method (lanczos_k); None: its config's
    "spatial": None,          # treatments of a convolution's positions, one row each per curvature method
                              # (on a model with a weight-sharing layer); None: the configs' (independent)
    "T_scale": None,          # EKFAC's scaling schedules (optimizer.T_scale), one row each; None: its config's
    "steps": 4,               # slots per round: every method takes one step per slot
    "rounds": 3,              # rounds (order rotated every round; medians over all of them)
    "T1": 100,
    "T2": 100,
    "lr": 0.01,               # every method (timing barely depends on it)
    "damping": 0.001,         # Kronecker methods; KL clipping stays as in conf/optimizer
    "optimizer_overrides": {},  # method -> {key: value}, applied last
    "data": "random",         # random | dataset
    "n_batches": 4,           # distinct batches cycled through
    "update_rounds": 2,       # the first this-many rounds begin with a curvature update of every
                              # Kronecker method (round 1: its first, cold; later ones: steady state)
    "refit": True,            # time warm and cold starts on one steady-state operator, per layer
    "threads": 1,             # torch.set_num_threads for the run; None keeps torch's default
    "product_target_ms": 20.0,  # each product timing block repeats the call to last about this long
    "targets": {"floor_ratio": 1.25, "curvature_share": 0.10},
}

COLUMNS = [
    "dataset", "method", "rank", "spatial", "T_scale", "batch_size", "data", "device",
    "step_ms", "ratio_sgd", "ratio_kfac", "regular_step_ms", "update_step_ms",
    "stats_ms", "scaling_ms", "factors_ms", "factors_source", "iters", "factors_first_ms", "iters_first",
    "factors_warm_refit_ms", "iters_warm_refit", "factors_cold_ms", "iters_cold", "inverse_ms",
    "curvature_amortised_ms", "curvature_share",
    "precondition_ms", "solve_ms", "bare_ms", "floor_ratio",
    "floor_ok", "curvature_ok", "lanczos_vs_deflation", "lanczos_vs_deflation_lo", "lanczos_vs_deflation_hi",
    "lanczos_vs_deflation_curvature", "lanczos_ok",
    "timed_steps", "update_steps",
    # the same method under spatial=independent (same dataset, same run): statistics phase, its
    # statistics + factor phases (exact's per-example gradients are formed at the first product, in
    # the factor phase), the amortised curvature work and the amortised step
    "stats_vs_independent", "stats_factors_vs_independent", "curvature_vs_independent", "step_vs_independent",
    "failure",            # the error that stopped a method (its other columns empty); the others go on
]

LAYER_COLUMNS = [
    "dataset", "method", "spatial", "T_scale", "layer", "capture", "d_g", "d_a", "rank",
    "factors_first_ms", "iters_first", "factors_ms", "iters", "factors_warm_refit_ms", "iters_warm_refit",
    "factors_cold_ms", "iters_cold", "inverse_ms", "solve_ms", "bare_ms", "solve_over_bare",
]


# ----------------------------------------------------------------------------------- settings
def _bench_settings(cfg: dict) -> dict:
    bench = copy.deepcopy(DEFAULTS)
    user = dict(cfg.get("bench") or {})
    targets = {**bench["targets"], **(user.pop("targets", None) or {})}
    bench.update(user)
    bench["targets"] = targets
    known = method_names()
    methods = known if bench["methods"] == "all" else list(bench["methods"])
    for m in methods:
        if m not in known:
            raise ValueError(f"bench.methods: unknown method {m!r}; choose among {known} (or all)")
    if len(set(methods)) != len(methods):
        raise ValueError(f"bench.methods lists a method twice: {methods}")
    if BASELINE not in methods:
        log.info("bench: adding %s, the baseline of every ratio", BASELINE)
        methods.insert(0, BASELINE)
    bench["methods"] = methods
    ranks = bench["ranks"]
    if ranks is not None:
        ranks = [ranks] if isinstance(ranks, int) and not isinstance(ranks, bool) else list(ranks)
        if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
            raise ValueError(f"bench.ranks must be null or a list of integers >= 1, got {bench['ranks']!r}")
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"bench.ranks lists a rank twice: {ranks}")
        bench["ranks"] = ranks
    for key, low in (("steps", 2), ("rounds", 1), ("T1", 1), ("T2", 1), ("n_batches", 1), ("update_rounds", 1)):
        v = bench[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"bench.{key} must be an integer >= {low}, got {v!r}")
    if bench["update_rounds"] > bench["rounds"]:
        raise ValueError(f"bench.update_rounds ({bench['update_rounds']}) exceeds bench.rounds ({bench['rounds']})")
    bench["spatial"] = _spatial_setting(bench["spatial"])
    bench["T_scale"] = _scaling_setting(bench["T_scale"])
    th = bench["threads"]
    if th is not None and (not isinstance(th, int) or th < 1):
        raise ValueError(f"bench.threads must be null or an integer >= 1, got {th!r}")
    if bench["data"] not in ("random", "dataset"):
        raise ValueError(f"bench.data must be 'random' or 'dataset', got {bench['data']!r}")
    if not bench["datasets"]:
        raise ValueError("bench.datasets is empty")
    return bench


def _spatial_setting(spatial) -> list[str] | None:
    if spatial is None:
        return None
    spatial = [spatial] if isinstance(spatial, str) else list(spatial)
    unknown = [t for t in spatial if t not in SPATIAL_TREATMENTS]
    if not spatial or unknown or len(set(spatial)) != len(spatial):
        raise ValueError(f"bench.spatial must be null or a list of distinct treatments among "
                         f"{list(SPATIAL_TREATMENTS)}, got {spatial!r}")
    return spatial


def _scaling_setting(schedules) -> list | None:
    """``bench.T_scale``: null, or distinct ``optimizer.T_scale`` values (integers >= 1 or ``T1``)."""
    if schedules is None:
        return None
    schedules = list(schedules) if isinstance(schedules, (list, tuple)) else [schedules]
    valid = [s for s in schedules if s == "T1" or isinstance(s, int) and not isinstance(s, bool) and s >= 1]
    if not schedules or len(valid) != len(schedules) or len(set(schedules)) != len(schedules):
        raise ValueError(f"bench.T_scale must be null or a list of distinct EKFAC scaling schedules (integers >= 1 "
                         f"or T1), got {schedules!r}")
    return schedules


def _dataset_config(entry) -> dict:
    """A dataset name (``conf/dataset/<name>.yaml``) or an inline mapping with at least ``name``,
    ``layers``, ``batch_size`` and ``likelihood``."""
    if isinstance(entry, str):
        path = config_dir() / "dataset" / f"{entry}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in (config_dir() / "dataset").glob("*.yaml"))
            raise ValueError(f"bench.datasets: unknown dataset {entry!r}; choose among {names}")
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    ds = dict(entry)
    missing = [k for k in ("name", "batch_size", "likelihood") if k not in ds]
    if "layers" not in ds and "image_shape" not in (ds.get("model") or {}):
        missing.append("layers")
    if missing:
        raise ValueError(f"bench.datasets: an inline dataset needs {missing} (a convolutional model: "
                         f"model.image_shape instead of layers)")
    return ds


def _bench_entries(bench: dict, ds: dict | None = None, seed: int = 0) -> list[tuple]:
    """(method, rank, spatial, T_scale) to time: one per method, one per ``bench.ranks`` entry for a method
    whose rank is an option (rank None: the config's), each curvature method once per ``bench.spatial``
    treatment where the dataset's model has a weight-sharing layer (spatial None: the config's), EKFAC once
    per ``bench.T_scale`` schedule (None: its config's)."""
    treatments = bench.get("spatial")
    if treatments and ds is not None and not _has_spatial_layers(ds, seed):
        log.info("bench %s: no weight-sharing layer, bench.spatial ignored", ds["name"])
        treatments = None
    entries = []
    for m in bench["methods"]:
        entry = get_method(m)
        ranks = bench["ranks"] if entry.rank_option is not None and bench["ranks"] else [None]
        spatial = treatments if entry.is_curvature and treatments else [None]
        schedules = bench["T_scale"] if bench.get("T_scale") and entry.takes("T_scale") else [None]
        entries += [(m, r, t, s) for t in spatial for r in ranks for s in schedules]
    return entries


def _has_spatial_layers(ds: dict, seed: int) -> bool:
    """Whether the dataset's model has a layer whose statistics take a treatment of positions."""
    model = build_autoencoder(ds, seed)
    return any(c.treatment in SPATIAL_TREATMENTS for m in model.modules() for c in captures_for(m))


# ------------------------------------------------------------------------------ one dataset
def _bench_dataset(ds: dict, bench: dict, cfg: dict, device) -> tuple[list[dict], list[dict]]:
    seed = int(cfg.get("seed", 0))
    sync = syncer(device)
    batches, data_label = bench_batches(ds, bench, cfg.get("data_dir", "data"), device, seed)
    methods = [BenchedMethod(m, ds, bench, device, seed, rank, spatial, T_scale)
               for m, rank, spatial, T_scale in _bench_entries(bench, ds, seed)]
    target_s = float(bench["product_target_ms"]) / 1e3
    # Warm-up, untimed: one forward/backward of every model (allocator, autograd), no update.
    for m in methods:
        loss = m.likelihood.batch_loss(m.model(batches[0]), batches[0])
        loss.backward()
        m.model.zero_grad(set_to_none=True)
    sync()
    rounds, steps = int(bench["rounds"]), int(bench["steps"])
    t_start = time.perf_counter()
    for r in range(rounds):
        # Interleaved step by step: in every slot each method takes one step on the same batch, in
        # an order rotated every round; paired ratios (same slot) cancel the machine's drift.
        live = [m for m in methods if m.failure is None]
        order = live[r % len(live):] + live[:r % len(live)]
        if r < int(bench["update_rounds"]):
            for m in order:
                m.force_update()
        for k in range(steps):
            x = batches[(r * steps + k) % len(batches)]
            for m in order:
                if _measure(m, ds, m.step, x, sync, (r, k)):
                    _measure(m, ds, m.time_bare, sync, target_s)
        for m in order:
            if _measure(m, ds, m.time_solves, sync, target_s) and r == rounds - 1 and bench["refit"]:
                _measure(m, ds, m.refit_factors, batches[(r * steps + steps) % len(batches)], sync, seed)
        log.info("bench %s: round %d/%d done (%.0f s)", ds["name"], r + 1, rounds, time.perf_counter() - t_start)
    T1, T2 = int(bench["T1"]), int(bench["T2"])
    rows, layer_rows = [], []
    sgd = next(m for m in methods if m.name == BASELINE)
    sgd_slot = {st["slot"]: st["total"] for st in sgd.steps}
    sgd_ms = 1e3 * median(list(sgd_slot.values()))
    for m in methods:
        row = {"dataset": ds["name"], "method": m.name, "rank": m.rank, "spatial": m.spatial, "T_scale": m.T_scale,
               "batch_size": int(ds["batch_size"]),
               "data": data_label, "device": str(device)}
        if m.failure is not None:
            rows.append({**row, "failure": m.failure})
        else:
            rows.append({**row, **_paired_summary(m, T1, T2, sgd_slot, sgd_ms)})
            layer_rows += [{"dataset": ds["name"], **lr_} for lr_ in m.layer_rows()]
        m.opt.close()
    _comparisons(methods, rows, seed)
    _treatment_ratios(methods, rows)
    for row in rows:
        row.pop("_paired", None)
    return rows, layer_rows


def _comparisons(methods: list["BenchedMethod"], rows: list[dict], seed: int) -> None:
    """``ratio_kfac`` and Lanczos against Deflation, within each treatment of positions (a
    first-order method, which has none, against KFAC under the first treatment)."""
    live = [(m, row) for m, row in zip(methods, rows) if m.failure is None]
    treatments = list(dict.fromkeys(m.spatial for m, _ in live if m.spatial is not None)) or [None]
    for t in treatments:
        by_name = {m.base_key: row for m, row in live if m.spatial == t}
        if REFERENCE in by_name:
            for m, row in zip(methods, rows):
                if m.spatial == t or (m.spatial is None and t == treatments[0]):
                    row["ratio_kfac"] = row.get("step_ms", float("nan")) / by_name[REFERENCE]["step_ms"]
        if set(LANCZOS_VS_DEFLATION) <= set(by_name):
            _lanczos_vs_deflation(*(by_name[m] for m in LANCZOS_VS_DEFLATION), seed)


def _lanczos_vs_deflation(lz: dict, de: dict, seed: int) -> None:
    common = sorted(set(lz["_paired"]) & set(de["_paired"]))
    ratios = [lz["_paired"][c] / de["_paired"][c] for c in common]
    lo, hi = median_ci(ratios, seed)

    def amortised(regular: float) -> float:
        # The paired regular-step ratio on Deflation's regular step, plus each method's own
        # amortised curvature work.
        return ((regular * de["regular_step_ms"] + lz["curvature_amortised_ms"])
                / (de["regular_step_ms"] + de["curvature_amortised_ms"]))
    lz["lanczos_vs_deflation"] = amortised(median(ratios))
    lz["lanczos_vs_deflation_lo"], lz["lanczos_vs_deflation_hi"] = amortised(lo), amortised(hi)
    lz["lanczos_vs_deflation_curvature"] = lz["curvature_amortised_ms"] / de["curvature_amortised_ms"]


def _treatment_ratios(methods: list["BenchedMethod"], rows: list[dict]) -> None:
    """Each row's costs over the same method's (and rank's) under ``spatial=independent``, measured in
    the same interleaved rounds."""
    def ident(m):
        return m.name, m.rank, m.T_scale
    base = {ident(m): row for m, row in zip(methods, rows) if m.spatial == "independent" and m.failure is None}
    for m, row in zip(methods, rows):
        ref = base.get(ident(m))
        if m.spatial is None or ref is None or m.failure is not None:
            continue
        row["stats_vs_independent"] = row["stats_ms"] / ref["stats_ms"]
        row["stats_factors_vs_independent"] = ((row["stats_ms"] + row["factors_ms"])
                                               / (ref["stats_ms"] + ref["factors_ms"]))
        row["curvature_vs_independent"] = row["curvature_amortised_ms"] / ref["curvature_amortised_ms"]
        row["step_vs_independent"] = row["step_ms"] / ref["step_ms"]


def _paired_summary(m: "BenchedMethod", T1: int, T2: int, sgd_slot: dict, sgd_ms: float) -> dict:
    """``m``'s summary with its ratio to SGD: paired slot by slot, plus the amortised curvature work
    against SGD's median step."""
    s = m.summary(T1, T2)
    paired = [st["total"] / sgd_slot[st["slot"]] for st in m.steps if not is_update(st) and st["slot"] in sgd_slot]
    s["ratio_sgd"] = median(paired) + s.get("curvature_amortised_ms", 0.0) / sgd_ms
    s["_paired"] = {st["slot"]: st["total"] for st in m.steps if not is_update(st)}
    return s


def _measure(m: "BenchedMethod", ds: dict, measurement, *args) -> bool:
    """One measurement of ``m``, skipped once it failed. A method other than the baseline that raises
    (pytorch-optimizer's Shampoo: a float32 SVD that does not converge) is recorded as failed and leaves the
    bench; the others go on, so one method's breakdown does not lose every other method's timing."""
    if m.failure is not None:
        return False
    try:
        measurement(*args)
        return True
    except Exception as err:  # noqa: BLE001 - any error of one method's step; the baseline's is fatal
        if m.name == BASELINE:
            raise
        m.failure = f"{type(err).__name__.lstrip('_')}: {err}"   # torch's LinAlgError is named _LinAlgError
        log.warning("bench %s: %s failed and leaves the bench (its row says why): %s", ds["name"], m.key, m.failure)
        return False


def _evaluate_targets(df: pd.DataFrame, targets: dict) -> pd.DataFrame:
    kron = ~df["method"].isin(first_order_method_names()) & df["failure"].isna()
    df["floor_ok"] = None
    df["curvature_ok"] = None
    df["lanczos_ok"] = None
    df.loc[kron, "floor_ok"] = df.loc[kron, "floor_ratio"] <= targets["floor_ratio"]
    df.loc[kron, "curvature_ok"] = df.loc[kron, "curvature_share"] < targets["curvature_share"]
    lz = df["method"] == LANCZOS_VS_DEFLATION[0]
    df.loc[lz, "lanczos_ok"] = df.loc[lz, "lanczos_vs_deflation"].map(
        lambda v: None if pd.isna(v) else bool(v <= 1.0))
    return df


# ------------------------------------------------------------------------------------ output
SUMMARY_COLUMNS = ["dataset", "method", "rank", "spatial", "T_scale", "step_ms", "ratio_sgd", "ratio_kfac",
                   "regular_step_ms", "stats_ms", "scaling_ms",
                   "factors_ms", "iters", "factors_cold_ms", "iters_cold", "inverse_ms",
                   "curvature_share", "precondition_ms", "bare_ms", "floor_ratio", "floor_ok",
                   "curvature_ok", "lanczos_ok", "stats_vs_independent", "curvature_vs_independent"]


def _label(row) -> str:
    spatial, schedule = row.get("spatial"), row.get("T_scale")
    return (f"{row['dataset']}/{row['method']}" + (f"/{spatial}" if isinstance(spatial, str) else "")
            + (f"/T_scale={schedule}" if schedule is not None and not pd.isna(schedule) else ""))


def _targets_text(df: pd.DataFrame, targets: dict) -> str:
    lines = [f"- {_label(row)}: FAILED, not timed: {row['failure']}"
             for _, row in df[df["failure"].notna()].iterrows()]
    kron = df[~df["method"].isin(first_order_method_names()) & df["failure"].isna()]
    for _, row in kron.iterrows():
        misses = []
        if row["floor_ok"] is False:
            misses.append(f"preconditioning {row['floor_ratio']:.3f}x its bare products (target <= "
                          f"{targets['floor_ratio']})")
        if row["curvature_ok"] is False:
            misses.append(f"curvature {100 * row['curvature_share']:.1f}% of the step (target < "
                          f"{100 * targets['curvature_share']:.0f}%)")
        if row["lanczos_ok"] is False:
            lo, hi = row["lanczos_vs_deflation_lo"], row["lanczos_vs_deflation_hi"]
            tie = "; the interval contains 1: a tie within the noise" if lo <= 1.0 <= hi else ""
            misses.append(f"Lanczos step {row['lanczos_vs_deflation']:.3f}x Deflation's (95% CI of the "
                          f"regular-step noise [{lo:.3f}, {hi:.3f}]{tie}; curvature work alone "
                          f"{row['lanczos_vs_deflation_curvature']:.3f}x)")
        if misses:
            lines.append(f"- {_label(row)}: MISS " + "; ".join(misses))
    return "\n".join(lines) if lines else "- every target met"


def _write_outputs(df: pd.DataFrame, layers: pd.DataFrame, meta: dict, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "bench.csv", df.to_csv(index=False))
    atomic_write_text(out_dir / "bench_layers.csv", layers.to_csv(index=False))
    atomic_write_text(out_dir / "bench.json", json.dumps(meta, indent=2, default=str) + "\n")
    b = meta["bench"]
    md = io.StringIO()
    md.write("# kfac-bench bench\n\n")
    md.write(f"Device {meta['device']} ({meta['device_name']}), torch {meta['torch_version']}, "
             f"threads {meta['threads']}; data: {meta['data']}; T1 = {b['T1']}, T2 = {b['T2']}; "
             f"{b['rounds']} rounds x {b['steps']} steps per method, interleaved; load average "
             f"{meta['loadavg_start']} -> {meta['loadavg_end']}; wall time {meta['wall_s']:.0f} s. "
             f"Times in ms, medians. `step_ms` = median regular step + (stats + factors)/T1 + "
             f"inverse/T2; `ratio_sgd` = the median slot-paired ratio of the regular step to SGD's step + the amortised curvature over SGD's step; `curvature_share` = the amortised curvature "
             f"part of step_ms; `floor_ratio` = precondition / bare products. `iters`: operator "
             f"applications (Z v and Z^T u pairs) summed over layers. factors: steady-state updates "
             f"(factors_source: step = inside the optimizer's step, refit = warm refit); factors_first: "
             f"the first update (cold, batch only); factors_warm_refit / factors_cold: one steady-state "
             f"operator solved warm and cold. See docs/bench.md.\n\n")
    md.write("## Summary\n\n" + markdown_table(df, SUMMARY_COLUMNS) + "\n\n")
    md.write("## Targets\n\n" + _targets_text(df, b["targets"]) + "\n\n")
    md.write("## All columns\n\n" + markdown_table(df, COLUMNS) + "\n\n")
    md.write("## Per layer\n\n" + markdown_table(layers, LAYER_COLUMNS) + "\n")
    atomic_write_text(out_dir / "bench.md", md.getvalue())
    return md.getvalue()


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# -------------------------------------------------------------------------------------- entry
def run_bench(cfg: dict, out_dir: Path) -> pd.DataFrame:
    """Run the benchmark described by ``cfg`` (the resolved conf/bench.yaml) into ``out_dir``;
    returns the summary table (one row per dataset and method)."""
    out_dir = Path(out_dir)
    bench = _bench_settings(cfg)
    datasets = [_dataset_config(d) for d in bench["datasets"]]
    device = select_device(cfg.get("device", "auto"))
    if bench.get("peers"):   # bench.peers=[asdl]: the peer comparison alone (kfac_bench/studies/bench_peers.py)
        from .bench_peers import run_peers
        return run_peers(datasets, bench, cfg, device, out_dir)
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    # Subnormal floats make CPU matrix products 100x slower (as in train.py).
    torch.set_flush_denormal(True)
    threads_before = torch.get_num_threads()
    if bench["threads"] is not None:
        torch.set_num_threads(int(bench["threads"]))
    started = datetime.now(timezone.utc)
    load_start = _loadavg()
    t0 = time.perf_counter()
    rows, layer_rows = [], []
    try:
        threads = torch.get_num_threads()
        warm_up_linalg(device)
        for ds in datasets:
            log.info("bench %s: batch %d, model %s, methods %s, spatial %s", ds["name"], ds["batch_size"],
                     ds.get("model") or ds.get("layers"), bench["methods"], bench["spatial"] or "config's")
            r, lr_ = _bench_dataset(ds, bench, cfg, device)
            rows += r
            layer_rows += lr_
    finally:
        torch.set_num_threads(threads_before)
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = float("nan")
    df = _evaluate_targets(df[COLUMNS].copy(), bench["targets"])
    layers = pd.DataFrame(layer_rows)
    for c in LAYER_COLUMNS:
        if c not in layers.columns:
            layers[c] = float("nan")
    layers = layers[LAYER_COLUMNS]
    meta = {
        "bench": bench, "seed": seed, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": threads, "torch_version": torch.__version__,
        "data": rows[0]["data"] if rows else bench["data"], "git_commit": git_commit(),
        "started": started.isoformat(timespec="seconds"), "loadavg_start": load_start,
        "loadavg_end": _loadavg(), "wall_s": time.perf_counter() - t0, "command": " ".join(sys.argv),
    }
    _write_outputs(df, layers, meta, out_dir)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        shown = df[[c for c in SUMMARY_COLUMNS]].copy()
        print(f"kfac-bench bench: {meta['device']}, data {meta['data']}, T1={bench['T1']} T2={bench['T2']}, "
              f"{meta['wall_s']:.0f} s (ms, medians; ratio_sgd = amortised step / SGD step, paired by slot)")
        print(markdown_table(shown, SUMMARY_COLUMNS))
        print("targets:\n" + _targets_text(df, bench["targets"]))
        print(f"written: {out_dir / 'bench.csv'}, {out_dir / 'bench.md'}, {out_dir / 'bench_layers.csv'}")
    return df


__all__ = ["run_bench", "DEFAULTS", "COLUMNS", "LAYER_COLUMNS", "markdown_table"]
