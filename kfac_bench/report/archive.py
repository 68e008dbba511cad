"""The compact, committable record of finished runs: what a published verdict is recomputed from.

``archive_runs(results_dir, dest)`` copies, for every finished run (status ``ok``, ``diverged`` or ``failed``)
under ``results_dir``, the four files the report reads -- ``config.yaml``, ``fingerprint.json``,
``summary.json``, ``metrics.csv`` -- and of every Figure 1 study its errors, config and summary, to the
same relative folder under ``dest`` (checkpoints and logs stay behind). Paths of the machine that trained are rewritten on the way: the results folder becomes
``.`` (paths are relative to the results root), the data folder ``data``, the checkout ``.``; so no
archived file names a machine-local path and ``kfac-bench report results_dir=<dest>`` reads the archive
as it read the runs. Unfinished runs are skipped (they resume where they trained); a run already
archived is rewritten, so archiving again after more runs finished is safe.

    python scripts/archive_runs.py results/verdict docs/runs/verdict
"""
from __future__ import annotations

import json
from pathlib import Path

from ..utils import atomic_write_text
from .results import FINISHED

ARCHIVED_FILES = ("config.yaml", "fingerprint.json", "summary.json", "metrics.csv")
# a Figure 1 study (kfac-bench fisher): its errors, its configuration and its summary
FISHER_FILES = ("config.yaml", "summary.json", "fisher_errors.csv", "fisher_rank_errors.csv")
# a failed run (an exception, e.g. a solver that did not converge) is archived too: it is a result the
# report counts (runs ok / div / fail) and time to target reads as never, so a method that fails is seen
ARCHIVED_STATUSES = (*FINISHED, "failed")


def local_roots(results_dir: Path, data_dir: Path | None, checkout: Path | None) -> list[tuple[str, str]]:
    """(absolute prefix, replacement) pairs, longest prefix first, so nested folders are rewritten
    by their own rule."""
    pairs = [(results_dir, ".")]
    if data_dir is not None:
        pairs.append((data_dir, "data"))
    if checkout is not None:
        pairs.append((checkout, "."))
    out = [(str(Path(p).resolve()), r) for p, r in pairs]
    return sorted(out, key=lambda pr: -len(pr[0]))


def relative_text(text: str, roots: list[tuple[str, str]]) -> str:
    for prefix, replacement in roots:
        text = text.replace(prefix + "/", replacement + "/").replace(prefix, replacement)
    return text


def fisher_studies(results_dir: Path) -> list[Path]:
    return sorted(p.parent for p in Path(results_dir).rglob("fisher_errors.csv")
                  if (p.parent / "summary.json").is_file())


def finished_runs(results_dir: Path) -> list[Path]:
    runs = []
    for summary in sorted(Path(results_dir).rglob("summary.json")):
        try:
            status = json.loads(summary.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if status in ARCHIVED_STATUSES and all((summary.parent / f).is_file() for f in ARCHIVED_FILES):
            runs.append(summary.parent)
    return runs


def recorded_roots(run: Path) -> list[tuple[str, str]]:
    """The results and data folders a run's config.yaml records (absolute paths only)."""
    import yaml
    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    pairs = [(config.get("results_dir"), "."), (config.get("data_dir"), "data")]
    return [(str(p), r) for p, r in pairs if isinstance(p, str) and Path(p).is_absolute()]


def archive_runs(results_dir, dest, data_dir=None, checkout=None) -> list[Path]:
    """Copy the finished runs' compact files to ``dest``; returns the archived folders."""
    results_dir, dest = Path(results_dir).resolve(), Path(dest)
    base = local_roots(results_dir, Path(data_dir) if data_dir else None, Path(checkout) if checkout else None)
    written = []
    jobs = [(run, ARCHIVED_FILES) for run in finished_runs(results_dir)]
    jobs += [(study, FISHER_FILES) for study in fisher_studies(results_dir)]
    for run, names in jobs:
        roots = sorted(set(base + recorded_roots(run)), key=lambda pr: -len(pr[0]))
        target = dest / run.relative_to(results_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (run / name).is_file():
                atomic_write_text(target / name, relative_text((run / name).read_text(), roots))
        written.append(target)
    return written
