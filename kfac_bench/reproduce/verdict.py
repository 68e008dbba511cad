"""The published verdict: ``docs/verdict/`` and the README's verdict block, recomputed from the compact
run files committed under ``docs/runs/`` (:mod:`kfac_bench.report.archive`) and nothing else.

    python scripts/publish_verdict.py            # archive results/verdict, then recompute and publish
    python scripts/publish_verdict.py --results results/fair    # the tuned comparison: docs/runs/fair, docs/fair

``kfac-bench report results_dir=docs/runs output_dir=DIR`` writes the same ``DIR/claims.csv`` (a test
checks the committed one against the committed runs).
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd

from ..report.results import FINISHED
from .common import README_CLAIMS, README_LINE_LIMIT, replace_block

RUNS_ROOT = "docs/runs"
FAIR_FOLDER = "fair"          # the tuned comparison's runs under RUNS_ROOT
FAIR_DIR = "docs/fair"        # its report (`kfac-bench report results_dir=docs/runs/fair output_dir=docs/fair`)
VERDICT_DIR = "docs/verdict"


def runs_by_status(runs_root: Path) -> dict[str, Counter]:
    """Runs per profile folder under ``runs_root`` and status."""
    counts: dict[str, Counter] = {}
    for summary in sorted(Path(runs_root).rglob("summary.json")):
        profile = summary.relative_to(runs_root).parts[0]
        counts.setdefault(profile, Counter())[json.loads(summary.read_text()).get("status")] += 1
    return counts


def standing_row(runs_root: Path) -> str:
    """The summary row that is not a claim of the paper: who reaches the tuned comparison's two targets first
    (``<runs_root>/fair/``, :func:`.fair.standing`), within README_LINE_LIMIT characters."""
    from ..report.fair import fair_comparison, standing
    folder = Path(runs_root) / FAIR_FOLDER
    fair = fair_comparison(folder) if folder.is_dir() else pd.DataFrame()
    # what the targets are and the per-problem detail are in docs/fair/summary.md: the row stays short
    claim = "*Not a claim of the paper:* first to (a) Adam's final loss, (b) the best three's median (`fair`)"
    verdict, _ = standing(fair)
    cells = ["–", claim, verdict, "–", "–", "{key}"]
    room = README_LINE_LIMIT - len(_row(cells).replace("{key}", ""))
    cells[-1] = standing(fair, width=min(room, 200))[1]
    return _row(cells)


def _row(cells) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _with_row(summary_markdown: str, row: str) -> str:
    """``summary_markdown`` with ``row`` appended to its table (after the table's last line)."""
    lines = summary_markdown.strip().splitlines()
    last = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines) - 1)
    return "\n".join(lines[:last + 1] + [row] + lines[last + 1:])


def readme_block(summary_markdown: str, counts: dict[str, int], planned: dict[str, int],
                 extra_row: str | None = None, failed: dict[str, int] | None = None) -> list[str]:
    if extra_row:
        summary_markdown = _with_row(summary_markdown, extra_row)
    failed = failed or {}
    runs = ", ".join(f"{name}: {n}" + (f" of {planned[name]} planned" if name in planned else "")
                     + (f" (and {failed[name]} failed)" if failed.get(name) else "")
                     for name, n in sorted(counts.items()))
    # one sentence over three lines of one paragraph: the line with the counts grows with the profiles
    return [f"_Computed by `python scripts/publish_verdict.py` (= `kfac-bench report results_dir={RUNS_ROOT}`)",
            f"from the finished runs committed under `{RUNS_ROOT}/` ({runs});",
            f"per problem, budget and rule: [{VERDICT_DIR}/claims.md]({VERDICT_DIR}/claims.md)._", "",
            summary_markdown.strip()]


def publish_verdict(planned: dict[str, int] | None = None, readme: Path | None = None) -> Path:
    """Recompute ``docs/verdict/`` from ``docs/runs/`` of the checkout in the working directory (relative
    paths, so the published files name no machine folder) and refresh the README block."""
    from ..report import build_report
    root = Path.cwd()
    out = root / VERDICT_DIR
    for folder in (VERDICT_DIR, FAIR_DIR):      # every file in them is generated: none left from an older run set
        shutil.rmtree(root / folder, ignore_errors=True)
    build_report({"results_dir": RUNS_ROOT, "output_dir": VERDICT_DIR, "formats": ["png"], "dpi": 72,
                  "note": "the runs committed under docs/runs/"})
    if (root / RUNS_ROOT / FAIR_FOLDER).is_dir():   # the tuned comparison's own tables and performance profile
        build_report({"results_dir": f"{RUNS_ROOT}/{FAIR_FOLDER}", "output_dir": FAIR_DIR, "formats": ["png"],
                      "dpi": 72, "claims": False, "note": f"the fair profile's runs committed under {RUNS_ROOT}/fair/"})
    readme = readme or root / "README.md"
    if readme.exists():
        by_status = runs_by_status(root / RUNS_ROOT)
        finished = {profile: k for profile, n in by_status.items() if (k := sum(n[s] for s in FINISHED))}
        failed = {profile: n["failed"] for profile, n in by_status.items()}
        block = readme_block((out / "claims_summary.md").read_text(), finished, planned or {},
                             standing_row(root / RUNS_ROOT), failed)
        updated = replace_block(readme.read_text(), README_CLAIMS, block)
        if updated is not None:
            readme.write_text(updated)
    return out
