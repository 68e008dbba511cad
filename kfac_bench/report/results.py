"""Read a results root into pandas: every training run under it, whatever launched it.

A training run is a folder holding ``summary.json`` (with an ``optimizer`` entry) and/or
``metrics.csv`` (see :mod:`kfac_bench.runs.train`); its resolved ``config.yaml`` says what was run.
Nothing is rerun and nothing is written here.

:func:`load_results` returns ONE long table, a row per (run, epoch) with the run's columns repeated
on every row (a run with no metrics yet has a single row with ``epoch`` NaN); :func:`runs_table`
collapses it to one row per run.

Two keys group the runs:

* ``setting`` -- what defines the *problem*: the dataset entries of the config (name, source,
  sizes, generator, batch size, ...) and ``trainer.epochs``. Runs of different settings (say a CPU
  profile with 10 epochs on 5,000 images and the paper's 200 epochs) are never compared with each
  other: each setting is its own problem, labelled by the entries that tell it apart.
* ``config`` -- one configuration of one method: everything of the resolved config except the
  seed and the entries that cannot change a result (progress bar, device choice, folders,
  checkpoint/resume switches, the ``tuned`` table). Runs that differ only by their seed share it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..runs.folder import NOT_RESULT_KEYS, flatten

# the columns of metrics.csv (kfac_bench.runs.train.METRIC_COLUMNS; copied so that reading results does
# not import torch -- a test checks that they agree)
METRIC_COLUMNS = ["epoch", "iteration", "time_s", "train_loss", "val_loss", "train_loss_running",
                  "eval_time_s"]

# config entries that never change a result (the run-folder fingerprint's list), and the seed
IGNORED_CONFIG_KEYS = ("seed", *NOT_RESULT_KEYS)
# what defines the problem besides the dataset entries; the authors' code behaviours too, so that a
# run of their code (authors_code=all) is compared with the others run the same way and shown
# beside the specification's runs, never ranked against them
SETTING_KEYS = ("trainer.epochs", "authors_code")
FINISHED = ("ok", "diverged")
STATUSES = ("ok", "diverged", "failed", "incomplete")
SWEPT = ("lr", "damping", "kl_clip")   # the paper's grid


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_CONFIG_KEYS)


def _key(items: dict) -> str:
    return json.dumps(items, sort_keys=True, default=str)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> dict | None:
    from omegaconf import OmegaConf
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a damaged file makes the run unreadable, not the report
        return None


def flat_config(run_dir: Path) -> dict | None:
    """A run's ``config.yaml`` as ``{"a.b.c": value}`` (interpolations unresolved); None when it is
    missing or damaged."""
    cfg = _read_yaml(Path(run_dir) / "config.yaml")
    return None if cfg is None else flatten(cfg)


def _read_metrics(path: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    if "epoch" not in df.columns or "train_loss" not in df.columns:
        return None
    return df


def fisher_study_files(results_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(its fisher/ folder, its fisher_errors.csv)`` for every Figure 1 study under ``results_dir``:
    a profile's own ``fisher/`` or those of several profiles under one root (``docs/runs/<profile>/fisher/``)."""
    root = Path(results_dir)
    found = []
    for path in sorted(root.rglob("fisher_errors.csv")) if root.is_dir() else []:
        folder = next((p for p in path.parents if p.name == "fisher"), None)
        if folder is not None and root in (folder, *folder.parents):
            found.append((folder, path))
    return found


def profile_folders(folder: str | Path) -> list[Path]:
    """The results folders in ``folder``: itself when it is one profile's (it holds ``runs/``, or no
    subfolder does), else each subfolder holding ``runs/`` -- a root of several profiles such as
    ``docs/runs/`` (``verdict/``, ``fair/``), whose runs must not be pooled: two profiles can train the
    same problem at the same horizon with different configurations."""
    folder = Path(folder)
    if (folder / "runs").is_dir() or not folder.is_dir():
        return [folder]
    subfolders = [sub for sub in sorted(folder.iterdir()) if (sub / "runs").is_dir()]
    return subfolders or [folder]


def find_run_dirs(root: Path, exclude: list[Path] = ()) -> list[Path]:
    """Folders under ``root`` that hold a training run (fisher-study folders are not runs)."""
    root = Path(root)
    excluded = [Path(p).resolve() for p in exclude]
    found = set()
    for name in ("summary.json", "metrics.csv"):
        for path in root.rglob(name):
            folder = path.parent
            if (folder / "fisher_errors.csv").exists() or any(p in folder.resolve().parents or p == folder.resolve()
                                                              for p in excluded):
                continue
            found.add(folder)
    runs = []
    for folder in sorted(found):
        summary = _read_json(folder / "summary.json") if (folder / "summary.json").exists() else None
        if summary is not None and "optimizer" not in summary:
            continue   # some other tool's summary
        if summary is None and not (folder / "metrics.csv").exists():
            continue
        runs.append(folder)
    return runs


def read_run(folder: Path) -> tuple[dict, pd.DataFrame | None]:
    """One run: its run-level record and its metrics (None when it has none)."""
    folder = Path(folder)
    summary = _read_json(folder / "summary.json") or {}
    config = _read_yaml(folder / "config.yaml") if (folder / "config.yaml").exists() else None
    metrics = _read_metrics(folder / "metrics.csv") if (folder / "metrics.csv").exists() else None
    flat = flatten(config) if config else {}
    if not flat:   # no config.yaml (e.g. an interpolation error): rebuild what the summary knows
        flat = {"dataset.name": summary.get("dataset"), "optimizer.name": summary.get("optimizer"),
                "seed": summary.get("seed")}
        flat.update({f"optimizer.{k}": v for k, v in (summary.get("hyperparameters") or {}).items()})
    status = summary.get("status") or "incomplete"
    if status not in STATUSES:
        status = "incomplete"
    # a problem config's folder names it (mnist_conv: MNIST data, not the paper's MNIST auto-encoder)
    dataset = flat.get("dataset.folder") or summary.get("dataset") or flat.get("dataset.name")
    method = summary.get("optimizer") or flat.get("optimizer.name")
    source = summary.get("dataset_source") or flat.get("dataset.source")
    config_items = {k: v for k, v in flat.items() if not _ignored(k)}
    setting_items = {k: v for k, v in config_items.items()
                     if (k.startswith("dataset.") or k in SETTING_KEYS)}
    if config is not None and not setting_items.get("authors_code"):
        setting_items.pop("authors_code", None)   # [] = the specification, as in runs from before the option
    elif "authors_code" in setting_items:
        setting_items["authors_code"] = canonical_authors_code(setting_items["authors_code"], method)
    hyper = {k[len("optimizer."):]: v for k, v in config_items.items() if k.startswith("optimizer.")
             and k != "optimizer.name"}
    last = metrics.iloc[-1] if metrics is not None and len(metrics) else None
    record = {
        "run_dir": str(folder),
        "run": folder.name,
        "dataset": dataset,
        "dataset_source": source,
        "method": method,
        "status": status,
        "error": summary.get("error"),
        "seed": summary.get("seed", flat.get("seed")),
        "epochs_requested": summary.get("epochs_requested", flat.get("trainer.epochs")),
        "epochs_completed": summary.get("epochs_completed", None if last is None else int(last["epoch"])),
        "final_train_loss": summary.get("final_train_loss", math.nan if last is None else float(last["train_loss"])),
        "final_val_loss": summary.get("final_val_loss", math.nan if last is None else float(last["val_loss"])),
        "total_time_s": summary.get("total_time_s", math.nan if last is None else float(last["time_s"])),
        "device": summary.get("device"),
        # the machine's busiest epoch end: per-second numbers compare only runs that shared it alike
        "loadavg_1m_max": (summary.get("machine_load") or {}).get("loadavg_1m_max"),
        "git_commit": summary.get("git_commit"),
        "setting": _key(setting_items) if config else None,   # filled in by load_results
        "config": _key(config_items),
        "hyperparameters": _key(hyper),
    }
    for name in SWEPT:
        record[f"hp_{name}"] = hyper.get(name)
    return record, metrics


def load_results(root: str | Path, exclude: list[Path] = ()) -> pd.DataFrame:
    """Every run under ``root`` as one long table (a row per run and epoch). Under a root of several
    profiles' folders (:func:`profile_folders`), a run's setting names its profile (``profile``), so
    that the same problem trained by two profiles makes two problems, never one pool."""
    folders = find_run_dirs(Path(root), exclude)
    read = [read_run(folder) for folder in folders]
    if profile_folders(root) != [Path(root)]:
        for folder, (record, _) in zip(folders, read):
            if record["setting"] is not None:
                items = json.loads(record["setting"])
                items["profile"] = folder.relative_to(root).parts[0]
                record["setting"] = _key(items)
    # a run without config.yaml (it failed before writing one) counts with its dataset's main setting
    common: dict[str, str] = {}
    for record, _ in read:
        if record["setting"] is not None:
            common.setdefault(record["dataset"], [])
            common[record["dataset"]].append(record["setting"])
    common = {d: max(sorted(set(v)), key=v.count) for d, v in common.items()}
    frames = []
    for record, metrics in read:
        if record["setting"] is None:
            record["setting"] = common.get(record["dataset"], _key({"dataset.name": record["dataset"]}))
        if metrics is None or metrics.empty:
            metrics = pd.DataFrame({c: [math.nan] for c in METRIC_COLUMNS})
        metrics = metrics.copy()
        for key, value in record.items():
            metrics[key] = [value] * len(metrics)
        frames.append(metrics)
    if not frames:
        return pd.DataFrame(columns=[*METRIC_COLUMNS, "run_dir", "dataset", "method", "status"])
    return pd.concat(frames, ignore_index=True)


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the run-level columns of :func:`load_results`)."""
    if df.empty:
        return df.copy()
    run_cols = [c for c in df.columns if c not in METRIC_COLUMNS]
    return df.drop_duplicates("run_dir")[run_cols].sort_values("run_dir").reset_index(drop=True)


def problems(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per problem (dataset, setting) with a short label: the dataset's name, plus the
    setting entries that differ from the dataset's other settings when there are several."""
    rows = []
    for dataset, group in runs.groupby("dataset", sort=False):
        settings = list(dict.fromkeys(group["setting"]))
        parsed = [json.loads(s) for s in settings]
        differing = sorted({k for p in parsed for k in p if len({_key(q.get(k)) for q in parsed}) > 1})
        for setting, items in zip(settings, parsed):
            label = str(dataset) if len(settings) == 1 else (
                f"{dataset} [" + ", ".join(_entry_label(k, items.get(k)) for k in differing) + "]")
            rows.append({"dataset": dataset, "setting": setting, "label": label})
    return pd.DataFrame(rows, columns=["dataset", "setting", "label"])


def canonical_authors_code(value, method):
    """``"authors"`` when a run's behaviours are exactly what "the authors' code" means for its method
    (:func:`kfac_bench.optim.authors_code.authors_setting`: ``all`` for a curvature method, SGD and
    Adam without first_order_weight_decay), so that those runs share one setting -- one problem in
    the figures and tables -- whatever list they were given as; other values unchanged."""
    if value in (None, "", "none", [], ()):
        return value
    try:
        from ..optim import authors_code
    except Exception:  # noqa: BLE001 - without the behaviours table, values stay as given
        return value
    acting = authors_code.applicable(method) if method else []
    if not acting:
        return value
    names = acting if value == "all" else ([value] if isinstance(value, str) else list(value))
    found = {n for n in names if n in acting or n not in authors_code.BEHAVIOURS}
    return "authors" if found == set(authors_code.authors_setting(method)) else value


def _entry_label(key: str, value) -> str:
    if key == "authors_code":
        if not value:
            return "specification"
        if value == "authors":
            return "authors' code"
        return "authors' code (all)" if value == "all" else "authors' code: " + "+".join(map(str, value))
    return f"{key.split('.', 1)[-1]}={value}"
