"""Training runs: epochs of index-sliced mini-batches, evaluation, timing, metrics, checkpoints.

A run folder holds ``config.yaml`` (resolved) and ``fingerprint.json`` (the settings that decide the
result; :mod:`kfac_bench.runs.folder`), both written by the run that starts the folder,
``metrics.csv`` (one row per epoch, epoch 0 = the initial network), ``summary.json`` and
``checkpoint.pt`` (model, optimizer with its curvature state, RNG states and metrics so far, written
atomically after every epoch). Calling :func:`run_training` again on the same folder with matching
settings skips a finished run (status ``ok`` or ``diverged``), extends it when more epochs are
asked, and resumes an interrupted one; on CPU with the same seed the resumed run ends with the same
metrics as an uninterrupted one (only the times differ). Other settings are refused before anything
is trained (:class:`~kfac_bench.runs.folder.RunFolderMismatch`).

Loss convention: per-element means (mean over pixels and examples), the paper's; a classification
problem (``dataset.task: classification``) trains on its labels, and its rows add the accuracies.
``time_s`` is the cumulative training wall time, evaluation excluded.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from ..curvature.stats import get_likelihood
from ..data import DatasetError, generator_version, load_dataset, recorded_generator_version
from ..models import build_autoencoder
from ..optim import authors_code
from ..optim.factory import build_training_optimizer, validate_optimizer_config
from ..optim.training import TrainingOptimizer
from .folder import RunFolderError, RunFolderMismatch, check_folder, record_epochs, start_folder
from ..utils import (atomic_torch_save, atomic_write_json, atomic_write_text, cluster_job, git_commit, select_device,
                    synchronize)

log = logging.getLogger("kfac_bench.runs.train")

METRIC_COLUMNS = ["epoch", "iteration", "time_s", "train_loss", "val_loss", "train_loss_running",
                  "eval_time_s"]
ACCURACY_COLUMNS = ["train_accuracy", "val_accuracy"]   # classification problems only (after the others)
FINAL_STATUSES = ("ok", "diverged")


# On CUDA the host reads the training losses (running mean, divergence check) once every this many
# steps, and before every curvature update, instead of after every step: reading a device value
# waits for the whole queue, and small auto-encoders leave the GPU idle while the host waits.
# On CPU the reading costs nothing and happens every step, exactly as before.
CUDA_LOSS_CHECK_EVERY = 25


def loss_check_interval(device: torch.device) -> int:
    """Steps between two reads of the training losses by the host (see CUDA_LOSS_CHECK_EVERY)."""
    return CUDA_LOSS_CHECK_EVERY if device.type == "cuda" else 1


class _LossTracker:
    """The training losses of an epoch, kept on the device until :meth:`flush` reads them all at
    once (one host synchronisation): the running mean and the divergence check see exactly the
    values, in the order, that a per-step read would."""

    def __init__(self):
        self.pending: list[tuple[int, torch.Tensor, int]] = []   # (iteration, loss, batch size)
        self.running, self.seen, self.last = 0.0, 0, float("nan")

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, iteration: int, loss: torch.Tensor, n: int) -> None:
        self.pending.append((iteration, loss.detach(), n))

    def flush(self) -> int | None:
        """Read the pending losses; the iteration of the first non-finite one (those after it are
        dropped), or None."""
        if not self.pending:
            return None
        values = torch.stack([loss for _, loss, _ in self.pending]).tolist()
        pending, self.pending = self.pending, []
        for (iteration, _, n), value in zip(pending, values):
            if not math.isfinite(value):
                return iteration
            self.running += value * n
            self.seen += n
            self.last = value
        return None


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the fix."""


class CheckpointError(RunFolderError):
    """A checkpoint that cannot be read; the message names the file and the fix."""


def validate_config(cfg: Mapping) -> None:
    trainer, dataset = cfg["trainer"], cfg["dataset"]
    epochs = trainer.get("epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"trainer.epochs must be an integer >= 1, got {epochs!r} (e.g. trainer.epochs=10)")
    bs = dataset.get("batch_size")
    if not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"dataset.batch_size must be an integer >= 1, got {bs!r} (e.g. dataset.batch_size=256)")
    try:
        validate_optimizer_config(cfg["optimizer"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        get_likelihood(dataset.get("likelihood"))
    except ValueError as err:
        raise ConfigError(f"dataset.likelihood: {err}") from None
    if (dataset.get("task") == "classification") != (dataset.get("likelihood") == "categorical"):
        raise ConfigError(f"dataset.likelihood={dataset.get('likelihood')!r} with dataset.task="
                          f"{dataset.get('task', 'autoencoder')!r}: a classification problem (labels as targets) "
                          f"takes likelihood=categorical, and only it does")
    try:
        authors_code.behaviour_names(cfg.get("authors_code"))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def read_summary(run_dir: Path) -> dict | None:
    import json
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    columns = METRIC_COLUMNS + [c for c in ACCURACY_COLUMNS if rows and c in rows[0]]
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def evaluate(model, data: torch.Tensor, likelihood, batch_size: int = 4096) -> float:
    """Per-element mean loss over a whole split (an auto-encoder: the inputs are the targets)."""
    return evaluate_split(model, data, likelihood, batch_size)[0]


@torch.no_grad()
def evaluate_split(model, data: torch.Tensor, likelihood, batch_size: int = 4096,
                   targets: torch.Tensor | None = None) -> tuple[float, float | None]:
    """``(loss, accuracy)`` over a whole split in eval mode: the per-element mean loss against ``targets``
    (a classifier's labels: the mean cross-entropy per example, and the fraction of arg-max predictions
    that are right) or, ``targets=None``, against the inputs (accuracy None)."""
    was_training = model.training
    model.eval()
    total, count, hits = 0.0, 0, 0
    for start in range(0, data.shape[0], batch_size):
        x = data[start:start + batch_size]
        y = x if targets is None else targets[start:start + batch_size]
        z = model(x)
        nll = likelihood.elementwise_nll(z, y)
        total += float(nll.sum(dtype=torch.float64))
        count += nll.numel()
        if targets is not None:
            hits += int((z.argmax(dim=1) == y).sum())
    model.train(was_training)
    return total / max(count, 1), (None if targets is None else hits / max(data.shape[0], 1))


def _evaluation(run) -> dict:
    """The epoch row's losses (and a classifier's accuracies) on both splits."""
    data = run.data
    train_loss, train_acc = evaluate_split(run.model, data.train, run.likelihood, targets=data.train_targets)
    val_loss, val_acc = evaluate_split(run.model, data.val, run.likelihood, targets=data.val_targets)
    row = dict(train_loss=train_loss, val_loss=val_loss)
    if data.train_targets is not None:
        row.update(train_accuracy=train_acc, val_accuracy=val_acc)
    return row



def _solver_summary(counts: dict[str, list[int]]) -> dict:
    out = {}
    for key, values in counts.items():
        if values:
            s = sorted(values)
            out[key] = {"mean": sum(s) / len(s), "median": s[len(s) // 2], "max": s[-1], "n": len(s)}
    return out


def _holds_run(run_dir: Path, summary: dict | None) -> bool:
    """Whether the folder holds (part of) a run: a finished summary, a checkpoint or metrics. A folder
    with only a failed validation's config and summary holds nothing to reuse."""
    return ((summary is not None and summary.get("status") in FINAL_STATUSES)
            or (run_dir / "checkpoint.pt").exists() or (run_dir / "metrics.csv").exists())


CHECKPOINT_KEYS = ("epoch", "iteration", "time_s", "metrics", "model", "optimizer", "shuffle_rng", "torch_rng")


def load_checkpoint(path: Path, device: torch.device, finished: bool = False) -> dict:
    """``checkpoint.pt`` as written by :func:`run_training`; :class:`CheckpointError` (naming the file
    and the fix) when it is truncated, damaged or not one of ours. Reading changes nothing.
    ``finished``: the folder holds a finished run that this command would extend."""
    if finished:
        fix = (f"Nothing of the run is deleted: the finished run's metrics.csv and summary.json are kept, but "
               f"without its checkpoint it cannot be extended. Restore a good copy of {path.name} to extend it, "
               f"or train the longer run from its start with trainer.resume=false hydra.run.dir={path.parent} "
               f"(this replaces the folder's run) or in another folder.")
    else:
        fix = (f"Nothing of the run is deleted: its metrics.csv and the file stay as they are. Restore a good "
               f"copy of {path.name} to resume the run, or delete {path} and rerun the same command to train "
               f"it again from its start (trainer.resume=false hydra.run.dir={path.parent} does the same).")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises OSError, EOFError, RuntimeError, UnpicklingError...
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}): it is truncated "
                              f"or damaged (a copy cut short, a full disk?). {fix}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, Mapping) or k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a kfac-bench training checkpoint (missing {missing}). {fix}")
    return ckpt


def with_data_version(cfg: Mapping) -> Mapping:
    """``cfg`` with ``dataset.generator_version``, the version of the generated stand-in this code
    builds, so that it is part of the run folder's fingerprint and config.yaml: a folder whose run
    was made on another version of the data is neither skipped nor resumed. Genuine data get no
    entry (their folders' fingerprints stay as they were). A config that already names another
    version (a config.yaml of an older run) is refused."""
    try:
        current = generator_version(cfg["dataset"])
    except (DatasetError, KeyError, TypeError):
        return cfg   # an invalid dataset config: validation and the loader report it
    if current is None:
        return cfg
    stated = cfg["dataset"].get("generator_version")
    if stated is not None and stated != current:
        raise ConfigError(
            f"dataset.generator_version={stated}, but this code generates version {current} of the "
            f"{cfg['dataset'].get('name')} stand-in (older versions cannot be rebuilt); drop the "
            f"setting (it is filled in automatically)")
    return {**cfg, "dataset": {**cfg["dataset"], "generator_version": current}}


def _check_unfingerprinted_data_version(run_dir: Path, previous: dict | None, cfg: Mapping) -> None:
    """A folder started before fingerprints existed: its summary says which stand-in it was made on
    (RunFolderMismatch when that is not the version this code generates)."""
    made_with = recorded_generator_version(previous or {})
    current = cfg["dataset"].get("generator_version")
    if (previous or {}).get("dataset_source") == "generated" and made_with is not None and current is not None \
            and made_with != current:
        raise RunFolderMismatch(run_dir, [("dataset.generator_version", made_with, current)])


@dataclass
class _Run:
    """One training run under way: what it trains and where it stands (what a checkpoint holds)."""

    cfg: Mapping
    run_dir: Path
    device: torch.device
    seed: int
    data: object
    likelihood: object
    behaviours: list
    optimizer_cfg: dict
    model: torch.nn.Module
    optimizer: TrainingOptimizer
    shuffle: torch.Generator
    epochs: int
    batch_size: int
    started: str
    rows: list[dict] = field(default_factory=list)
    iteration: int = 0
    train_time: float = 0.0
    first_epoch: int = 1
    solver_counts: dict[str, list[int]] = field(default_factory=dict)
    load_1m: list[float] = field(default_factory=list)   # the machine's 1-minute load average at each epoch end
    status: str = "ok"
    error: str | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"


def run_training(cfg: Mapping, run_dir: str | Path) -> dict:
    """Train one configuration into ``run_dir``; returns the summary (also written to disk).

    The steps: settle the folder (skip a finished run, else validate and start or continue it),
    set torch up, build the run (data, model, optimizer), restore a checkpoint or evaluate the
    initial network, train epoch by epoch (each one evaluated, recorded and checkpointed), write the
    summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = with_data_version(cfg)
    previous = read_summary(run_dir)
    continuing, skip = _settle_folder(cfg, run_dir, previous)
    if skip:
        return previous
    seed, device = _set_up_torch(cfg)
    resume = bool(cfg["trainer"].get("resume", True))
    checkpoint_path = run_dir / "checkpoint.pt"
    # read before the data are loaded: a damaged checkpoint is reported at once
    ckpt = (load_checkpoint(checkpoint_path, device, finished=bool(previous and previous.get("status") == "ok"))
            if resume and checkpoint_path.exists() else None)
    run = _build_run(cfg, run_dir, device, seed)
    if ckpt is not None:
        _restore(run, ckpt)
    if continuing:
        record_epochs(run_dir, run.epochs)   # an extension, or a resume with another target
    if ckpt is None:
        # a new run, or one killed before its first checkpoint: it starts again from the initial network
        _record_initial_network(run)
    run.model.train()
    for epoch in range(run.first_epoch, run.epochs + 1):
        running = _train_epoch(run, epoch)
        if run.status != "ok" or not _end_epoch(run, epoch, running):
            log.error("run diverged: %s; metrics up to epoch %d are kept", run.error, epoch - 1)
            break
    run.optimizer.close()
    summary = _summary(run)
    atomic_write_json(run_dir / "summary.json", summary)
    if run.status in FINAL_STATUSES and not cfg["trainer"].get("keep_checkpoint", True):
        checkpoint_path.unlink(missing_ok=True)   # after summary.json: an interruption loses nothing
    return summary


def _settle_folder(cfg: Mapping, run_dir: Path, previous: dict | None) -> tuple[bool, bool]:
    """Validate the settings and start the folder or check it against them; returns
    ``(continuing, skip)``: whether the folder's run is extended or resumed, and whether it is a
    finished run to leave as it is (its summary is the result)."""
    trainer = cfg["trainer"]
    resume = bool(trainer.get("resume", True))
    checkpoint_path = run_dir / "checkpoint.pt"
    continuing = resume and _holds_run(run_dir, previous)
    if continuing:
        # skip, extend or resume -- only what these very settings produced (raises RunFolderMismatch)
        if not check_folder(run_dir, cfg):
            _check_unfingerprinted_data_version(run_dir, previous, cfg)
            log.warning("run folder %s has no fingerprint.json (it was started before kfac-bench recorded one): "
                        "its settings cannot be checked against this command's; it is read as before "
                        "(skipped when finished, resumed when interrupted)", run_dir)
        extend = (previous is not None and previous.get("status") == "ok" and checkpoint_path.exists()
                  and int(previous.get("epochs_completed", 0)) < int(trainer.get("epochs", 0) or 0))
        if previous and previous.get("status") in FINAL_STATUSES and not extend:
            # (a finished run asked for more epochs than it has, in the same folder, is extended instead)
            log.info("run folder %s already holds a finished run (status %s); skipping. "
                     "Use a new hydra.run.dir or trainer.resume=false to train again.", run_dir, previous["status"])
            if previous["status"] == "ok" and int(previous.get("epochs_completed", 0)) < int(trainer.get("epochs", 0) or 0):
                log.warning("%s has no checkpoint.pt (trainer.keep_checkpoint=false?), so its %s epochs cannot be "
                            "extended to %s", run_dir, previous.get("epochs_completed"), trainer.get("epochs"))
            return continuing, True
        validate_config(cfg)
    elif _holds_run(run_dir, previous):
        validate_config(cfg)          # trainer.resume=false: bad input must not delete the earlier run
        start_folder(run_dir, cfg)
    else:
        start_folder(run_dir, cfg)    # a new folder: config.yaml even for a run that fails validation
        validate_config(cfg)
    return continuing, False


def _set_up_torch(cfg: Mapping) -> tuple[int, torch.device]:
    """The seed and the device; threads, torch's seed and the denormal flush set."""
    seed = int(cfg.get("seed", 0))
    device = select_device(cfg.get("device", "auto"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(seed)
    # Subnormal floats make CPU matrix products 100x slower once ReLU activations get tiny;
    # flushing them to zero changes nothing measurable in the losses.
    torch.set_flush_denormal(True)
    return seed, device


def _build_run(cfg: Mapping, run_dir: Path, device: torch.device, seed: int) -> _Run:
    """The data, the model and its optimizer (as the loop drives it), the shuffling generator."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = load_dataset(cfg["dataset"], cfg.get("data_dir", "data"), device=device, log=log.info)
    likelihood = get_likelihood(cfg["dataset"]["likelihood"])
    behaviours = authors_code.behaviour_names(cfg.get("authors_code"))
    for line in authors_code.describe(behaviours):
        log.info("authors' code behaviour on: %s", line)
    optimizer_cfg = authors_code.expand(cfg["optimizer"], behaviours)
    model = build_autoencoder(cfg["dataset"], seed, **authors_code.model_options(behaviours)).to(device)
    optimizer = build_training_optimizer(optimizer_cfg, model, likelihood.name, seed)
    return _Run(cfg=cfg, run_dir=run_dir, device=device, seed=seed, data=data, likelihood=likelihood,
                behaviours=behaviours, optimizer_cfg=optimizer_cfg, model=model, optimizer=optimizer,
                shuffle=torch.Generator().manual_seed(seed), epochs=int(cfg["trainer"]["epochs"]),
                batch_size=int(cfg["dataset"]["batch_size"]), started=started)


def _restore(run: _Run, ckpt: dict) -> None:
    """Model, optimizer, generators and metrics from a checkpoint."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.shuffle.set_state(ckpt["shuffle_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if run.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    run.rows, run.iteration, run.train_time = ckpt["metrics"], ckpt["iteration"], ckpt["time_s"]
    run.solver_counts = ckpt.get("solver_counts", {})
    run.load_1m = list(ckpt.get("load_1m", []))
    run.first_epoch = ckpt["epoch"] + 1
    log.info("resuming %s from the end of epoch %d", run.run_dir, ckpt["epoch"])


def _record_initial_network(run: _Run) -> None:
    """Row 0 of metrics.csv: the initial network's losses."""
    t0 = time.perf_counter()
    row = dict(epoch=0, iteration=0, time_s=0.0, **_evaluation(run), train_loss_running=float("nan"))
    run.rows.append({**row, "eval_time_s": time.perf_counter() - t0})
    _write_metrics(run.run_dir, run.rows)


def _diverged(run: _Run, bad: int, epoch: int) -> None:
    run.status, run.error = "diverged", f"non-finite training loss at iteration {bad} (epoch {epoch})"
    run.iteration = bad - 1


def _train_epoch(run: _Run, epoch: int) -> float:
    """One epoch of steps (``run.status`` becomes ``diverged`` at a non-finite loss); returns the
    running mean of its training losses."""
    optimizer, device, bs = run.optimizer, run.device, run.batch_size
    n_train, labels = run.data.train.shape[0], run.data.train_targets
    perm = torch.randperm(n_train, generator=run.shuffle).to(device)
    losses = _LossTracker()
    check_every = loss_check_interval(device)
    synchronize(device)
    t0 = time.perf_counter()
    bar = tqdm(range(math.ceil(n_train / bs)), desc=f"epoch {epoch}/{run.epochs}", leave=False,
               disable=not run.cfg["trainer"].get("progress", True), dynamic_ncols=True, file=sys.stderr)
    for b in bar:
        x = run.data.train.index_select(0, perm[b * bs:(b + 1) * bs])
        # the targets: an auto-encoder's inputs, a classifier's labels
        y = x if labels is None else labels.index_select(0, perm[b * bs:(b + 1) * bs])
        optimizer.zero_grad(set_to_none=True)
        loss = run.likelihood.batch_loss(run.model(x), y)
        losses.add(run.iteration + 1, loss, x.shape[0])
        # a curvature update never sees a diverged model: the losses are read before it
        if len(losses) >= check_every or optimizer.curvature_due():
            bad = losses.flush()
            if bad is not None:
                _diverged(run, bad, epoch)
                break
            if check_every > 1 or b % 10 == 0:
                bar.set_postfix(loss=f"{losses.last:.5f}", refresh=False)
        loss.backward()
        report = optimizer.train_step(targets=y)
        for fit in report.fits:
            for key, value in fit.iterations.items():
                run.solver_counts.setdefault(key, []).append(int(value))
        run.iteration += 1
    if run.status == "ok":
        bad = losses.flush()          # the epoch's last steps
        if bad is not None:
            _diverged(run, bad, epoch)
    synchronize(device)
    run.train_time += time.perf_counter() - t0
    bar.close()
    return losses.running / max(losses.seen, 1)


def _end_epoch(run: _Run, epoch: int, running: float) -> bool:
    """Evaluate the epoch's network, record it and checkpoint the run; False (``run.status``
    ``diverged``) when an evaluation loss is not finite."""
    t0 = time.perf_counter()
    row = dict(epoch=epoch, iteration=run.iteration, time_s=run.train_time, **_evaluation(run),
               train_loss_running=running, eval_time_s=0.0)
    row["eval_time_s"] = time.perf_counter() - t0
    if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
        run.status, run.error = "diverged", f"non-finite evaluation loss after epoch {epoch}"
        return False
    run.rows.append(row)
    run.load_1m += _load_1m()
    _write_metrics(run.run_dir, run.rows)
    log.info("epoch %d/%d  train %.6f  val %.6f  time %.1fs", epoch, run.epochs, row["train_loss"],
             row["val_loss"], run.train_time)
    if run.cfg["trainer"].get("checkpoint", True):
        atomic_torch_save({
            "epoch": epoch, "iteration": run.iteration, "time_s": run.train_time, "metrics": run.rows,
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "shuffle_rng": run.shuffle.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else None,
            "solver_counts": run.solver_counts, "load_1m": run.load_1m,
        }, run.checkpoint_path)
    return True


def _load_1m() -> list[float]:
    """The machine's 1-minute load average now ([] where the OS has none)."""
    try:
        return [os.getloadavg()[0]]
    except (AttributeError, OSError):
        return []


def _load_summary(load_1m: list[float]) -> dict:
    """What else the machine ran while this run trained: its seconds are only comparable with runs that
    shared it alike (two one-thread runs on 2 cores: a load near 2; a third process pushes it to 3)."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "epochs_sampled": len(load_1m),
            "loadavg_1m_mean": sum(load_1m) / len(load_1m) if load_1m else None,
            "loadavg_1m_max": max(load_1m, default=None)}


def _summary(run: _Run) -> dict:
    """summary.json of the run (in a SLURM job also its ``cluster`` entry: ids, node, requeues)."""
    cfg, data, device, last = run.cfg, run.data, run.device, run.rows[-1]
    cluster = cluster_job()
    return {
        "status": run.status,
        "error": run.error,
        "dataset": cfg["dataset"]["name"],
        "dataset_source": data.source,
        "dataset_description": data.description,
        "dataset_details": data.details,
        "dataset_generator_version": data.details.get("generator_version"),  # None: genuine data
        "optimizer": cfg["optimizer"]["name"],
        "hyperparameters": run.optimizer_cfg,
        "authors_code": run.behaviours,
        "seed": run.seed,
        "epochs_requested": run.epochs,
        "epochs_completed": int(last["epoch"]),
        "iterations": run.iteration,
        "final_train_loss": last["train_loss"],
        "final_val_loss": last["val_loss"],
        "best_val_loss": min(r["val_loss"] for r in run.rows),
        "total_time_s": run.train_time,
        "seconds_per_epoch": run.train_time / max(int(last["epoch"]), 1),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "solver_iterations": _solver_summary(run.solver_counts),
        "machine_load": _load_summary(run.load_1m),
        "curvature_updates_skipped": run.optimizer.skipped_updates,
        # which layers got curvature blocks (path, type, shapes, block, treatment) and which parameters took
        # the plain step; [] for a first-order optimizer (kfac_bench/optim/layers.py)
        "curvature_layers": run.optimizer.layer_report,
        "started": run.started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        **({"cluster": cluster} if cluster else {}),
        **_classification_summary(run),
    }


def _classification_summary(run: _Run) -> dict:
    """A classifier's summary entries (none for an auto-encoder: its summary is as it was)."""
    if run.data.train_targets is None:
        return {}
    last = run.rows[-1]
    return {"task": "classification", "data": run.data.details.get("data"),
            "dataset_stand_in": run.data.source == "generated",
            "final_train_accuracy": last["train_accuracy"], "final_val_accuracy": last["val_accuracy"],
            "best_val_accuracy": max(r["val_accuracy"] for r in run.rows)}


def write_failure(run_dir: Path, cfg: Mapping, err: BaseException) -> dict:
    """Record a run that could not finish (bad data, crash) without losing earlier files: a folder
    that holds a finished run keeps its summary (the error is in the log)."""
    summary = read_summary(run_dir) or {}
    if summary.get("status") in FINAL_STATUSES:
        log.error("%s keeps the summary of its finished run (status %s); this command's error: %s: %s",
                  run_dir, summary["status"], type(err).__name__, err)
        return summary
    summary.update({
        "status": "failed", "error": f"{type(err).__name__}: {err}",
        "dataset": cfg.get("dataset", {}).get("name"), "optimizer": cfg.get("optimizer", {}).get("name"),
        "hyperparameters": dict(cfg.get("optimizer", {})), "seed": cfg.get("seed"),
        "git_commit": git_commit(), "command": " ".join(sys.argv),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    cluster = cluster_job()
    if cluster:
        summary["cluster"] = cluster
    atomic_write_json(Path(run_dir) / "summary.json", summary)
    return summary


__all__ = ["run_training", "write_failure", "validate_config", "load_checkpoint", "ConfigError", "CheckpointError",
           "DatasetError", "RunFolderError", "RunFolderMismatch", "evaluate", "evaluate_split", "read_summary",
           "METRIC_COLUMNS", "ACCURACY_COLUMNS"]
