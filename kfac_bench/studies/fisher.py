"""Figure 1 (paper section 4.1): how close each approximation is to the exact Fisher block of a layer.

``kfac-bench fisher dataset=mnist`` trains the auto-encoder with an independent optimizer (Adam,
lr 1e-3, as the paper reports) and, at each evaluation iteration, from that iteration's mini-batch
only (no moving average):

1. one extra forward/backward with targets sampled from the model gives the layer's statistics
   (``collect_statistics``), i.e. the exact Monte-Carlo Fisher block ``F`` of the batch;
2. every method (``fisher.methods``: optimizer config names; default every curvature method of the
   registry but the variable-rank one) fits its estimate to the same statistics; the power-SVD /
   Lanczos solvers are warm-started from their result at the previous evaluation point (paper
   section 4), one warm dict per (method, layer, treatment);
3. :func:`kfac_bench.curvature.metrics.fisher_error` measures Error 1 and Error 2 through the
   ``m x m`` Gram route (``F`` is never formed; the cost table is in that module).

Layers (``fisher.layer``: an index, a list, ``all``, or ``auto``, the default: the paper's layer 5 for
an MLP, all for a network with convolutions) are the model's preconditioned layers in module order,
one per module (:mod:`kfac_bench.studies.fisher_layers`): the MLP auto-encoders' ``nn.Linear``
layers, numbered as always; the CNN auto-encoder's (``dataset=mnist_conv``) two ``nn.Conv2d`` and two
``nn.ConvTranspose2d`` weights, layers 1-4 (a ConvTranspose2d's bias is an exact block of its own,
fitted exactly by every method: left out). Convolutional layers (issue 32): how much of KFAC's error
comes from its spatial assumptions, how much from the Kronecker structure. Their per-position
statistics are captured once per point; the reference is always the EXACT block (every pair of
positions, ``spatial_block(abar, g, "exact")``); every method is fitted to the block of each treatment
of ``fisher.spatial`` (default ``[independent, exact]``; also ``reduce``, ``banded`` with
``fisher.spatial_radius``) and measured against the exact block. Under ``independent`` (KFC) every
method fits the block that assumes spatially uncorrelated derivatives; under ``exact`` the true one
(KFAC's factors are KFC's under both, so its rows agree). The rank-1 optimum of the exact block
(``optimal_rank1``, Theorem 3.1 over symmetric factors) is the part of KFAC's error no Kronecker
product removes; ``summary.json``'s ``spatial`` says, per conv layer and treatment, the means per
method and that decomposition (computed from the rows).

Error against Kronecker rank (the paper's conclusion, "increasing the rank does improve the quality
of approximation"): with ``fisher.ranks = K`` (default 5; 0 switches it off) the same blocks are also
fitted by ``lanczos_k`` at every rank ``k = 1..K`` (one warm dict per rank, layer and treatment), with Error 1,
Error 2 and the optimum ``sqrt(sum_{i>k} sigma_i^2) / ||F||_F`` from the exact singular values of
``Z(F)`` (``fisher.optimal``), into ``fisher_rank_errors.csv``.

The statistics are taken at the parameters *before* the update of iteration ``k`` (1-based), on
the mini-batch of iteration ``k``; then Adam steps. When ``fisher.max_points`` cuts the schedule,
training stops after the last evaluation point (nothing after it is measured).

Outputs in the run folder:

* ``fisher_errors.csv``: one row per (evaluation point, layer, method, treatment): ``iteration, layer,
  method, spatial`` (the treatment the method was fitted to; ``none`` for a Linear layer), ``epoch,
  error_frobenius, error_spectrum, error_frobenius_optimal`` (Error 1 of the best Kronecker
  approximation of the method's rank, from the exact singular values of ``Z(F)``; NaN for ranks
  with ``fisher.optimal=false`` and for an estimate that is not a Kronecker sum, EKFAC),
  ``seconds`` (the method's fit),
  ``iterations`` (solver operator-application pairs, all solvers of the method together),
  ``iterations_power_1 / _power_2 / _lanczos``, ``converged``, ``sigma1, sigma2`` (singular values
  the method's solvers found for its first and second SVD-based term: KPSVD sigma1; Deflation and
  Lanczos sigma1, sigma2; KFAC-corrected sigma2 = that of its correction; NaN otherwise),
  ``metric_seconds`` (Error 1 + Error 2 of this method), ``spectrum_seconds``,
  ``spectrum_solver``, ``spectrum_iterations``, ``spectrum_converged``, ``reference_seconds`` (the
  Gram work shared by the methods at this point), ``stats_seconds``, ``point_seconds`` (the whole
  evaluation point), ``fisher_norm``, ``approx_norm``, ``train_loss`` (the batch loss), ``m`` (rows of
  the block fitted: ``N T`` under ``independent``), ``d_a``, ``d_g``, ``optimal_rank1``,
  ``optimal_rank2`` (Theorem 3.1's optima of the exact block, whatever the method);
* ``fisher_rank_errors.csv``: one row per (evaluation point, layer, treatment, rank): ``iteration,
  epoch, layer, rank, method, spatial, error_frobenius, error_spectrum, error_frobenius_optimal,
  seconds, iterations, converged, metric_seconds, train_loss``;
* ``figure1.png`` / ``figure1.pdf`` (:func:`kfac_bench.report.figure1.plot_figure1`: a row of panels
  per layer and treatment) and ``figure1_rank.png`` / ``.pdf``
  (:func:`kfac_bench.report.rank.plot_error_vs_rank`; a conv layer's rows are "<layer> (<treatment>)");
* ``summary.json`` (provenance, per-method means, median seconds per evaluation point, the paper's
  claim checked -- over the Linear layers and the conv layers under the first treatment of
  ``fisher.spatial`` --, ``spatial``: per conv layer and treatment) and ``config.yaml``.
"""
from __future__ import annotations

import logging
import math
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..curvature import SPATIAL_TREATMENTS, get_likelihood
from ..registry import APPROXIMATIONS, METHODS, make_approximation, paper_method_names
from ..curvature.metrics import DENSE_MAX, SPECTRUM_POWERS, SPECTRUM_RTOL
from ..data import load_dataset
from ..models import build_autoencoder
from ..utils import atomic_write_json, atomic_write_text, configure_cpu_eigensolvers, git_commit, select_device
from .fisher_layers import (EXACT, INDEPENDENT, NO_SPATIAL, RANK_METHOD, describe, evaluate_point, has_positions,
                            spatial_table, study_captures, summarize_spatial)

log = logging.getLogger("kfac_bench.fisher")

REQUIRED_COLUMNS = ["iteration", "layer", "method", "error_frobenius", "error_spectrum"]
COLUMNS = REQUIRED_COLUMNS[:3] + ["spatial", "epoch"] + REQUIRED_COLUMNS[3:] + [
    "error_frobenius_optimal", "seconds", "iterations", "iterations_power_1", "iterations_power_2",
    "iterations_lanczos", "converged", "sigma1", "sigma2", "metric_seconds", "spectrum_seconds",
    "spectrum_solver", "spectrum_iterations", "spectrum_converged", "reference_seconds",
    "stats_seconds", "point_seconds", "fisher_norm", "approx_norm", "train_loss", "m", "d_a", "d_g",
    "optimal_rank1", "optimal_rank2"]
RANK_COLUMNS = ["iteration", "epoch", "layer", "rank", "method", "spatial", "error_frobenius", "error_spectrum",
                "error_frobenius_optimal", "seconds", "iterations", "converged", "metric_seconds", "train_loss"]
# the subjects of the paper's Figure 1 claim ("Deflation best, all below KFAC"), checked by summarize()
CLAIM_REFERENCE, CLAIMED_BEST = "kfac", "deflation"
TIE_RTOL = 1e-4  # means within this relative margin of the lowest count as the best
AUTO_LAYER, PAPER_LAYER = "auto", 5   # fisher.layer=auto: the paper's layer 5 (an MLP), else all


def _positive_int(value, field: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be an integer >= 1, got {value!r} (e.g. {example})")
    return value


def resolve_layers(spec, n_layers: int) -> list[int]:
    """``fisher.layer``: a 1-based index of the model's preconditioned layers in module order
    (:func:`~kfac_bench.studies.fisher_layers.study_captures`; the MLPs' ``nn.Linear`` layers), a list
    of them, or ``all``."""
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return list(range(1, n_layers + 1))
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    layers = []
    for item in items:
        try:
            layer = int(item)
        except (TypeError, ValueError):
            layer = None
        if layer is None or isinstance(item, bool) or not 1 <= layer <= n_layers or str(item).strip() != str(layer):
            raise ValueError(f"fisher.layer must be 1..{n_layers} (the n-th preconditioned layer in module order, "
                             f"1-based), a list of them, all or auto; got {spec!r} (e.g. fisher.layer=5)")
        layers.append(layer)
    return sorted(set(layers))


def _default_layer(spec, captures: list):
    """``fisher.layer=auto``: the paper's layer 5 for an MLP, every layer of a network with weight-sharing
    layers (the CNN auto-encoder has four)."""
    if isinstance(spec, str) and spec.strip().lower() == AUTO_LAYER:
        return "all" if any(has_positions(c) for c in captures) else PAPER_LAYER
    return spec


def evaluation_schedule(total_iterations: int, every: int | None, points: int | None,
                        max_points: int | None) -> list[int]:
    """1-based iterations at which the block is measured: ``1, 1 + every, ...`` with ``every``;
    otherwise ``points`` iterations spread evenly from the first to the last. ``max_points`` keeps
    the first ones."""
    if every is not None:
        schedule = list(range(1, total_iterations + 1, every))
    else:
        count = min(points, total_iterations)
        if count == 1:
            schedule = [1]
        else:
            step = (total_iterations - 1) / (count - 1)
            schedule = sorted({1 + round(i * step) for i in range(count)})
    return schedule[:max_points] if max_points is not None else schedule


def _validate(cfg: Mapping) -> dict:
    fisher = cfg.get("fisher")
    if not isinstance(fisher, Mapping):
        raise ValueError("the fisher config group is missing (conf/fisher.yaml)")
    methods = fisher.get("methods") or []
    if methods == "all":   # a method whose rank is an option (lanczos_k) is measured by fisher.ranks
        methods = [m.name for m in METHODS.values() if m.is_curvature and m.rank_option is None]
    methods = paper_method_names(curvature_only=True) if methods == "paper" else list(methods)
    if not methods:
        raise ValueError("fisher.methods is empty; e.g. fisher.methods=[kfac,kpsvd,deflation,lanczos,kfac_corrected]")
    unknown = [m for m in methods if m not in APPROXIMATIONS]
    if unknown:
        raise ValueError(f"fisher.methods: unknown {unknown}; choose from {sorted(APPROXIMATIONS)}")
    every = fisher.get("every")
    if every is not None:
        every = _positive_int(every, "fisher.every", "fisher.every=10")
    points = _positive_int(fisher.get("points", 50), "fisher.points", "fisher.points=50") if every is None else None
    max_points = fisher.get("max_points")
    if max_points is not None:
        max_points = _positive_int(max_points, "fisher.max_points", "fisher.max_points=3")
    epochs = _positive_int((cfg.get("trainer") or {}).get("epochs"), "trainer.epochs", "trainer.epochs=2")
    batch = _positive_int(cfg["dataset"].get("batch_size"), "dataset.batch_size", "dataset.batch_size=256")
    lr = float((cfg.get("adam") or {}).get("lr", 1e-3))
    if not lr > 0:
        raise ValueError(f"adam.lr must be > 0, got {lr}")
    solver = str(fisher.get("spectrum_solver", "auto"))
    if solver not in ("auto", "dense", "subspace"):
        raise ValueError(f"fisher.spectrum_solver must be auto, dense or subspace, got {solver!r}")
    get_likelihood(cfg["dataset"].get("likelihood"))
    ranks = fisher.get("ranks", 5)
    ranks = 0 if ranks is None else ranks
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 0:
        raise ValueError(f"fisher.ranks must be an integer >= 0 (the largest Kronecker rank; 0 = none), got {ranks!r}")
    return dict(methods=list(dict.fromkeys(methods)), every=every, points=points, max_points=max_points,
                epochs=epochs, batch_size=batch, lr=lr, solver=solver, ranks=ranks, **_spatial_options(fisher))


def _spatial_options(fisher: Mapping) -> dict:
    """``fisher.spatial`` (the treatments the methods of a weight-sharing layer are fitted to; a name or
    a list, default ``[independent, exact]``) and ``fisher.spatial_radius`` (``banded``'s band; null =
    the layer's ``min(kernel) - 1``)."""
    spatial = fisher.get("spatial", [INDEPENDENT, EXACT])
    spatial = [spatial] if isinstance(spatial, str) else list(spatial or [])
    if not spatial or any(t not in SPATIAL_TREATMENTS for t in spatial):
        raise ValueError(f"fisher.spatial must be a non-empty list of {list(SPATIAL_TREATMENTS)}, got "
                         f"{fisher.get('spatial')!r} (e.g. fisher.spatial=[independent,exact])")
    radius = fisher.get("spatial_radius")
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, int) or radius < 0):
        raise ValueError(f"fisher.spatial_radius must be an integer >= 0 or null, got {radius!r}")
    return dict(spatial=list(dict.fromkeys(spatial)), spatial_radius=radius)



def _write_rank_csv(out_dir: Path, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=RANK_COLUMNS)
    atomic_write_text(out_dir / "fisher_rank_errors.csv", df.to_csv(index=False))
    return df


def _write_csv(out_dir: Path, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    atomic_write_text(out_dir / "fisher_errors.csv", df.to_csv(index=False))
    return df


def summarize_ranks(rank_df: pd.DataFrame) -> dict:
    """Per rank: means of Error 1, Error 2, the optimum and the fit seconds (string keys, JSON)."""
    out = {}
    for rank, sub in rank_df.groupby("rank"):
        out[str(int(rank))] = {
            "error_frobenius_mean": float(sub["error_frobenius"].mean()),
            "error_spectrum_mean": float(sub["error_spectrum"].mean()),
            "error_frobenius_optimal_mean": float(sub["error_frobenius_optimal"].mean()),
            "seconds_median": float(sub["seconds"].median()),
            "iterations_median": float(sub["iterations"].median()),
        }
    return out


def rank_table(summary_ranks: dict) -> str:
    """The error-vs-rank table (markdown)."""
    lines = ["| rank | Error 1 mean | optimum mean | Error 2 mean | fit s (median) | Lanczos it (median) |",
             "|---|---|---|---|---|---|"]
    for rank, v in summary_ranks.items():
        lines.append(f"| {rank} | {v['error_frobenius_mean']:.6f} | {v['error_frobenius_optimal_mean']:.6f} | "
                     f"{v['error_spectrum_mean']:.6f} | {v['seconds_median']:.4f} | {v['iterations_median']:.0f} |")
    return "\n".join(lines)


def summarize(df: pd.DataFrame) -> dict:
    """Per-method means and the paper's claim ("Deflation best, all below KFAC") checked on ``df``
    among the paper's methods; the fraction of points below KFAC for every method."""
    out: dict = {"methods": {}}
    if df.empty:
        return out
    per_point = df.drop_duplicates(["iteration"])["point_seconds"]
    out["points"] = int(df["iteration"].nunique())
    out["median_seconds_per_point"] = float(per_point.median())
    for method, sub in df.groupby("method", sort=False):
        out["methods"][method] = {
            "error_frobenius_mean": float(sub["error_frobenius"].mean()),
            "error_spectrum_mean": float(sub["error_spectrum"].mean()),
            "error_frobenius_median": float(sub["error_frobenius"].median()),
            "error_spectrum_median": float(sub["error_spectrum"].median()),
            "seconds_median": float(sub["seconds"].median()),
            "metric_seconds_median": float(sub["metric_seconds"].median()),
            "iterations_median": float(sub["iterations"].median()),
        }
    claim = {}
    paper = set(paper_method_names(curvature_only=True))
    for col in ("error_frobenius", "error_spectrum"):
        # the claim is about the paper's methods: another one measured beside them (EKFAC) is not a
        # contender for "Deflation best" (its fraction of points below KFAC is reported all the same)
        means = {m: v[f"{col}_mean"] for m, v in out["methods"].items()
                 if m in paper and not math.isnan(v[f"{col}_mean"])}
        entry: dict = {"best_methods": []}
        if means:
            low = min(means.values())
            # Deflation and Lanczos reach the same optimum: equal to ~1e-6, so compare with a margin
            entry["best_methods"] = sorted(m for m, v in means.items() if v <= low * (1 + TIE_RTOL))
            entry["deflation_best"] = CLAIMED_BEST in entry["best_methods"]
        if CLAIM_REFERENCE in means:
            wide = df.pivot_table(index=["iteration", "layer"], columns="method", values=col)
            entry["fraction_of_points_below_kfac"] = {
                m: float((wide[m] < wide[CLAIM_REFERENCE]).mean()) for m in wide.columns if m != CLAIM_REFERENCE}
            entry["all_means_below_kfac"] = all(v < means[CLAIM_REFERENCE] for m, v in means.items()
                                                if m != CLAIM_REFERENCE)
        claim[col] = entry
    out["paper_claim"] = claim
    return out


def _summary_table(summary: dict) -> str:
    lines = [f"{'method':15s} {'Error 1 mean':>13s} {'Error 2 mean':>13s} {'fit s (med)':>12s} "
             f"{'metric s (med)':>15s} {'solver it (med)':>16s}"]
    for method, v in summary["methods"].items():
        lines.append(f"{method:15s} {v['error_frobenius_mean']:13.6f} {v['error_spectrum_mean']:13.6f} "
                     f"{v['seconds_median']:12.4f} {v['metric_seconds_median']:15.4f} {v['iterations_median']:16.1f}")
    return "\n".join(lines)


@dataclass
class _Study:
    """A Figure 1 study under way: the settings, the network trained by Adam, the methods measured."""

    cfg: Mapping
    out_dir: Path
    opts: dict
    seed: int
    device: torch.device
    data: object
    likelihood: object
    model: nn.Module
    captures: list                                   # the model's preconditioned layers (study_captures)
    layers: list[int]
    point_args: dict = field(default_factory=dict)   # evaluate_point's settings and methods
    rows: list[dict] = field(default_factory=list)
    rank_rows: list[dict] = field(default_factory=list)
    iteration: int = 0


def run_fisher_study(cfg: Mapping, out_dir: str | Path) -> pd.DataFrame:
    """Run the Figure 1 study described by ``cfg`` (the resolved plain dict of conf/fisher.yaml)
    into ``out_dir``; returns the table also written to ``fisher_errors.csv``.

    The steps: validate and set up (torch, the data, the network, the methods), train with Adam
    and measure every method at the scheduled iterations, publish (figures, summary, log)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = _validate(cfg)
    try:
        import yaml
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(dict(cfg), sort_keys=False))
    except Exception:  # noqa: BLE001 - provenance only
        pass
    configure_cpu_eigensolvers()   # the error metrics' eigensolvers: threads from OMP_WAIT_POLICY
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    study = _set_up(cfg, out_dir, opts)
    schedule, title = _plan(study)
    t_start = time.perf_counter()
    _train_and_measure(study, schedule)
    total_s = time.perf_counter() - t_start
    df = _write_csv(out_dir, study.rows)
    _publish(study, df, schedule, title, started, total_s)
    return df


def _set_up(cfg: Mapping, out_dir: Path, opts: dict) -> _Study:
    """Torch settings, the data, the network and the methods (with their warm-start stores)."""
    fisher = cfg["fisher"]
    seed = int(cfg.get("seed", 0))
    device = select_device(cfg.get("device", "auto"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # subnormals make CPU products ~100x slower (see train.py)
    data = load_dataset(cfg["dataset"], cfg.get("data_dir", "data"), device=device, log=log.info)
    likelihood = get_likelihood(cfg["dataset"]["likelihood"])
    model = build_autoencoder(cfg["dataset"], seed).to(device)
    captures = study_captures(model, opts["spatial_radius"])
    layers = resolve_layers(_default_layer(fisher.get("layer", AUTO_LAYER), captures), len(captures))
    # the blocks each layer's methods are fitted to: the treatments for a weight-sharing layer, else its one block
    fitted = [(layer, t) for layer in layers
              for t in (opts["spatial"] if has_positions(captures[layer - 1]) else [NO_SPATIAL])]
    solver_opts = dict(tol=float(fisher.get("tol", 1e-6)), max_iter=int(fisher.get("max_iter", 1000)),
                       krylov_dim=int(fisher.get("krylov_dim", 6)), max_restarts=int(fisher.get("max_restarts", 100)))
    approximations = {name: make_approximation(name, **solver_opts) for name in opts["methods"]}
    rank_approximations = {k: make_approximation(RANK_METHOD, k=k, **solver_opts) for k in range(1, opts["ranks"] + 1)}
    point_args = dict(
        likelihood=likelihood, sampler=torch.Generator(device=device).manual_seed(seed + 1),
        reduction=str(fisher.get("reduction", "mean")), approximations=approximations,
        fit_warm={(name, layer, t): {} for name in approximations for layer, t in fitted},
        spectrum=bool(fisher.get("spectrum", True)), spectrum_max_n=fisher.get("spectrum_max_n"),
        spectrum_opts=dict(solver=opts["solver"], rtol=float(fisher.get("spectrum_rtol", SPECTRUM_RTOL)),
                           dense_max=int(fisher.get("dense_max", DENSE_MAX)),
                           powers=int(fisher.get("spectrum_powers", SPECTRUM_POWERS))),
        optimal=bool(fisher.get("optimal", True)), device=device, rank_approximations=rank_approximations,
        rank_warm={(k, layer, t): {} for k in rank_approximations for layer, t in fitted},
        treatments=opts["spatial"])
    return _Study(cfg=cfg, out_dir=out_dir, opts=opts, seed=seed, device=device, data=data, likelihood=likelihood,
                  model=model, captures=captures, layers=layers, point_args=point_args)


def _plan(study: _Study) -> tuple[list[int], str]:
    """The evaluation schedule and the figure title (logged, with the layers whose rank-2 spectrum
    is skipped)."""
    opts, data, layers = study.opts, study.data, study.layers
    n_batches = math.ceil(data.train.shape[0] / opts["batch_size"])
    schedule = evaluation_schedule(opts["epochs"] * n_batches, opts["every"], opts["points"], opts["max_points"])
    title = (f"Figure 1: {str(data.name).upper()} layer {', '.join(map(str, layers))}, "
             f"Adam lr {opts['lr']:g}, batch {opts['batch_size']}")
    spatial = [layer for layer in layers if has_positions(study.captures[layer - 1])]
    if spatial:
        title += f"; conv layers fitted to {' / '.join(opts['spatial'])}, measured against the exact block"
    if data.source == "generated":
        title += f" (GENERATED STAND-IN data, generator v{data.details.get('generator_version')})"
    log.info("fisher study: %s, layer(s) %s (of %d), methods %s; %d evaluation points over %d iterations "
             "(%d epochs of %d)", data.description, layers, len(study.captures), ", ".join(opts["methods"]),
             len(schedule), schedule[-1], opts["epochs"], n_batches)
    if spatial:
        log.info("weight-sharing layer(s) %s: every method fitted under spatial = %s, each measured against the "
                 "exact block", spatial, ", ".join(opts["spatial"]))
    spectrum_max_n = study.point_args["spectrum_max_n"]
    for layer in layers:
        d_g, d_a = study.captures[layer - 1].block_shape
        n = d_g * d_a
        log.info("layer %d: %s", layer, describe(study.captures[layer - 1]))
        if study.point_args["spectrum"] and spectrum_max_n is not None and n > int(spectrum_max_n):
            log.warning("layer %d: n = %d > fisher.spectrum_max_n = %s: Error 2 of the rank-2 methods is "
                        "not computed (NaN) there", layer, n, spectrum_max_n)
    return schedule, title


def _train_and_measure(study: _Study, schedule: list[int]) -> None:
    """Adam on the auto-encoder; at each scheduled iteration, after the backward and before the
    step, every method on that batch's statistics (rows written as they come)."""
    opts, data, model, device = study.opts, study.data, study.model, study.device
    adam = torch.optim.Adam(model.parameters(), lr=opts["lr"])
    shuffle = torch.Generator().manual_seed(study.seed)
    batch_size, n_train = opts["batch_size"], data.train.shape[0]
    n_batches = math.ceil(n_train / batch_size)
    todo, last = set(schedule), schedule[-1]
    bar = tqdm(total=last, desc="fisher", disable=not (study.cfg.get("trainer") or {}).get("progress", True),
               dynamic_ncols=True, file=sys.stderr)
    model.train()
    for epoch in range(1, opts["epochs"] + 1):
        perm = torch.randperm(n_train, generator=shuffle).to(device)
        for b in range(n_batches):
            study.iteration += 1
            batch = perm[b * batch_size:(b + 1) * batch_size]
            x = data.train[batch]
            # Adam's targets: an auto-encoder's inputs, a classifier's labels (the Fisher's are sampled)
            y = x if data.train_targets is None else data.train_targets[batch]
            adam.zero_grad(set_to_none=True)
            loss = study.likelihood.batch_loss(model(x), y)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise ValueError(f"non-finite training loss at iteration {study.iteration}; lower adam.lr")
            loss.backward()
            if study.iteration in todo:
                seconds = _measure_point(study, x, epoch, loss_value)
                bar.set_postfix(point_s=f"{seconds:.1f}")
            adam.step()
            bar.update(1)
            if study.iteration >= last:
                bar.close()
                return
    bar.close()


def _measure_point(study: _Study, x: torch.Tensor, epoch: int, loss_value: float) -> float:
    """Every method at one evaluation point, its rows added and written; the point's seconds."""
    point_rows, point_rank_rows = evaluate_point(study.model, study.captures, study.layers, x, **study.point_args)
    for r in point_rows + point_rank_rows:
        r.update(iteration=study.iteration, epoch=epoch, train_loss=loss_value)
    study.rows += point_rows
    study.rank_rows += point_rank_rows
    _write_csv(study.out_dir, study.rows)
    if study.rank_rows:
        _write_rank_csv(study.out_dir, study.rank_rows)
    return point_rows[0]["point_seconds"]


def _primary(df: pd.DataFrame, treatments: list[str]) -> pd.DataFrame:
    """The rows of the per-method summary and the paper's claim: every Linear layer's and each
    weight-sharing layer's under the first treatment of ``fisher.spatial`` (the other treatments are
    summarised per layer, :func:`~kfac_bench.studies.fisher_layers.summarize_spatial`)."""
    return df[df["spatial"].astype(str).isin([NO_SPATIAL, treatments[0]])]


def _rank_figure_rows(rank_df: pd.DataFrame) -> pd.DataFrame:
    """The error-vs-rank figure draws one row per ``layer``: a weight-sharing layer's rows become
    ``"<layer> (<treatment>)"``, one row per treatment."""
    spatial = rank_df["spatial"].astype(str)
    if (spatial == NO_SPATIAL).all():
        return rank_df
    out = rank_df.copy()
    out["layer"] = [str(layer) if t == NO_SPATIAL else f"{layer} ({t})" for layer, t in zip(out["layer"], spatial)]
    return out


def _publish(study: _Study, df: pd.DataFrame, schedule: list[int], title: str, started: str, total_s: float) -> None:
    """Figures, summary.json and the log's tables."""
    from ..report.figure1 import plot_figure1
    out_dir, opts, data, device = study.out_dir, study.opts, study.data, study.device
    figures = plot_figure1(df, out_dir / "figure1", title)
    summary = summarize(_primary(df, opts["spatial"]))
    if study.rank_rows:
        from ..report.rank import plot_error_vs_rank
        rank_df = _write_rank_csv(out_dir, study.rank_rows)
        summary["ranks"] = summarize_ranks(_primary(rank_df, opts["spatial"]))
        figures += plot_error_vs_rank(_rank_figure_rows(rank_df), out_dir / "figure1_rank",
                                      title + " -- error vs Kronecker rank")
    described = {str(layer): describe(study.captures[layer - 1]) for layer in study.layers}
    if (df["spatial"].astype(str) != NO_SPATIAL).any():
        summary["spatial"] = summarize_spatial(df, CLAIM_REFERENCE)
    summary.update({
        "dataset": data.name, "dataset_source": data.source, "dataset_description": data.description,
        "dataset_details": data.details, "dataset_generator_version": data.details.get("generator_version"),
        "layers": study.layers, "layer_descriptions": described, "spatial_treatments": opts["spatial"],
        "evaluation_iterations": schedule, "iterations_trained": study.iteration, "epochs": opts["epochs"],
        "batch_size": opts["batch_size"], "adam_lr": opts["lr"], "seed": study.seed, "total_time_s": total_s,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_version": torch.__version__, "git_commit": git_commit(), "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "figures": [str(p) for p in figures], "figure_title": title,
    })
    atomic_write_json(out_dir / "summary.json", summary)
    _log_summary(summary, figures, total_s, described)
    log.info("run folder %s", out_dir)


def _log_summary(summary: dict, figures: list, total_s: float, described: dict) -> None:
    """The log's tables: the per-method means, error vs rank, the paper's claim, the conv layers."""
    log.info("Figure 1 study done: %d evaluation points, median %.2f s per point (%.1f s in all); %s\n%s",
             summary.get("points", 0), summary.get("median_seconds_per_point", float("nan")), total_s,
             ", ".join(str(p) for p in figures), _summary_table(summary))
    if "ranks" in summary:
        log.info("Error vs Kronecker rank (%s, means over %d points; optimum = sqrt(sum_{i>k} sigma_i^2)/||F||):\n%s",
                 RANK_METHOD, summary.get("points", 0), rank_table(summary["ranks"]))
    for col, name in (("error_frobenius", "Error 1"), ("error_spectrum", "Error 2")):
        claim = summary["paper_claim"].get(col, {})
        log.info("%s: lowest mean %s; every mean below KFAC's: %s; fraction of points below KFAC: %s", name,
                 " = ".join(claim.get("best_methods", [])), claim.get("all_means_below_kfac"),
                 {m: round(v, 3) for m, v in claim.get("fraction_of_points_below_kfac", {}).items()})
    if "spatial" in summary:
        log.info("Weight-sharing layers, per spatial treatment (the tables above: layers under %s):\n%s",
                 summary["spatial_treatments"][0], spatial_table(summary["spatial"], described, CLAIM_REFERENCE))
