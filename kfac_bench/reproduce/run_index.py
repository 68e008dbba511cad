"""What is done already: the finished runs of a results folder (``RunIndex``), the Figure 1 studies,
and the winner of a grid among its finished runs."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from .profiles import parse_value


def _flat_config(run_dir: Path) -> dict | None:
    from kfac_bench.report.results import flat_config
    return flat_config(run_dir)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def matches(flat: dict, overrides: dict) -> bool:
    for key, text in overrides.items():
        if key.startswith(("hydra", "+sweep", "sweep")) or key in ("results_dir", "data_dir", "device",
                                                                    "trainer.keep_checkpoint"):
            continue
        want = parse_value(text)
        have = flat.get(key.lstrip("+"), None if want is None else object())
        if not _same(have, want):
            return False
    return True


class RunIndex:
    """The finished runs under ``results/runs/<dataset>/<method>/`` (status, config)."""

    def __init__(self, results_dir: Path):
        self.root = results_dir / "runs"
        self.cache: dict[tuple[str, str], list[tuple[dict, str]]] = {}

    def refresh(self, dataset: str, method: str) -> None:
        self.cache.pop((dataset, method), None)

    def runs(self, dataset: str, method: str) -> list[tuple[dict, str]]:
        key = (dataset, method)
        if key not in self.cache:
            found = []
            folder = self.root / dataset / method
            for summary_path in sorted(folder.glob("*/summary.json")) if folder.is_dir() else []:
                try:
                    summary = json.loads(summary_path.read_text())
                except (OSError, ValueError):
                    continue
                flat = _flat_config(summary_path.parent)
                if flat is not None:
                    found.append((flat, summary.get("status"), folder_override_keys(summary_path.parent.name)))
            self.cache[key] = found
        return self.cache[key]

    def finished(self, dataset: str, method: str, overrides: dict) -> bool:
        full = {"seed": "0", **overrides}
        named = {_folder_key(k) for k in full}
        # a run on another version of a generated stand-in is not this run (kfac-bench run refuses
        # its folder): config.yaml records the version since version 2, genuine data record none
        version = stand_in_version(dataset, overrides)
        # a run launched with an override the query leaves at its default is another run: matching the
        # named values alone took the 5k tuning run of a winner (seed 0, 5 epochs) for its full-size
        # confirmation, which then never trained
        return any(status in ("ok", "diverged") and matches(flat, full) and keys <= named
                   and flat.get("dataset.generator_version") == version
                   for flat, status, keys in self.runs(dataset, method))


def _folder_key(override_key: str) -> str:
    """An override's key as a run folder's name writes it (:func:`kfac_bench.cli._run_name`)."""
    return override_key.replace("/", "_").replace("+", "")


def folder_override_keys(folder_name: str) -> set[str]:
    """The override keys a run folder's name records (Hydra's ``override_dirname``, ``key=value`` joined by
    commas; a comma inside a list value starts no key; ``default``: none)."""
    return {part.split("=", 1)[0] for part in folder_name.split(",") if "=" in part}


@functools.lru_cache(maxsize=None)
def _dataset_config(dataset: str) -> dict | None:
    """conf/dataset/<dataset>.yaml's dataset part, read once per plan (every run the plan checks asks)."""
    from kfac_bench.configs import dataset_config
    return dataset_config(dataset)


def stand_in_version(dataset: str, overrides: dict) -> int | None:
    """The generator version this code builds for ``dataset`` with ``overrides`` (None: genuine)."""
    from kfac_bench.data import generator_version
    cfg = dict(_dataset_config(dataset) or {"name": dataset})   # a problem's config names its data (mnist_mlp: mnist)
    source = overrides.get("dataset.source")
    if source is not None:
        cfg["source"] = parse_value(source)
    elif "source" not in cfg:
        cfg["source"] = None
    return generator_version(cfg)


def _best_selection(results_dir: Path, dataset: str, method: str, overrides: list[str]):
    """(the report's selection row of the winner of (dataset, method) among the runs under ``overrides``,
    those runs), or None."""
    from kfac_bench.report.results import load_results, runs_table
    from kfac_bench.report.tables import select_best
    folder = results_dir / "runs" / dataset / method
    if not folder.is_dir():
        return None
    runs = runs_table(load_results(folder))
    if runs.empty:
        return None
    fixed = dict(kv.split("=", 1) for kv in overrides)
    keep = [matches(_flat_config(Path(d)) or {}, fixed) for d in runs["run_dir"]]
    runs = runs[keep]
    if runs.empty:
        return None
    sel = select_best(runs)
    sel = sel[sel["best_config"].notna()]
    return None if sel.empty else (sel.iloc[0], runs)


def select_best_hyperparameters(results_dir: Path, dataset: str, method: str, overrides: list[str],
                                keys: list[str]) -> dict | None:
    """The winner of one (dataset, method) among this profile's runs, chosen as the report does."""
    found = _best_selection(results_dir, dataset, method, overrides)
    if found is None:
        return None
    best = found[0]
    hyper = json.loads(best["hyperparameters"])
    return {k: hyper.get(k.split(".", 1)[1]) for k in keys} | {"_loss": best["selection_loss"]}


def winner_seed_losses(results_dir: Path, dataset: str, method: str, overrides: list[str]) -> dict[int, float]:
    """Seed -> the final training loss of that seed of the winner of (dataset, method) (a diverged or
    failed seed: inf); {} without a winner."""
    found = _best_selection(results_dir, dataset, method, overrides)
    if found is None:
        return {}
    best, runs = found
    runs = runs.set_index("run_dir")
    out = {}
    for run_dir in best["every_seed_run_dirs"]:
        loss = float(runs.at[run_dir, "final_train_loss"])
        out[int(runs.at[run_dir, "seed"] or 0)] = loss if math.isfinite(loss) else math.inf
    return out


def fisher_done(results_dir: Path, dataset: str, overrides: list[str]) -> bool:
    root = results_dir / "fisher" / dataset
    fixed = dict(kv.split("=", 1) for kv in overrides)
    for path in root.rglob("fisher_errors.csv") if root.is_dir() else []:
        summary = path.parent / "summary.json"   # written last: a study without it did not finish
        try:
            if json.loads(summary.read_text()).get("status", "ok") not in ("ok", None):
                continue
        except (OSError, ValueError):
            continue
        flat = _flat_config(path.parent) if (path.parent / "config.yaml").exists() else {}
        if not fixed or matches(flat or {}, fixed):
            return True
    return False
