"""Shared by the stages: the checkout (``ROOT``), the console line (``say``), durations, and the blocks
of README.md and the results page that ``--publish-docs`` replaces."""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path


def _root() -> Path:
    """The checkout this package sits in (commands run there, README.md and docs/ are its own), or the
    working directory for an installed package."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "README.md").is_file() and (checkout / "conf").is_dir() else Path.cwd()


ROOT = _root()


README_TABLE = ("<!-- reproduce:table:start -->", "<!-- reproduce:table:end -->")
README_CLAIMS = ("<!-- claims:start -->", "<!-- claims:end -->")
README_LINE_LIMIT = 300      # the longest line a generated README block may have: longer ones do not read in a diff


def readme_markers(readme_text: str, profile: str) -> tuple[str, str]:
    """The block of the results page (docs/results.md; ``--results-page``) a profile's --publish-docs replaces:
    its own (``<!-- reproduce:table:<profile>:start -->``) when the page has one, else the shared one."""
    own = (f"<!-- reproduce:table:{profile}:start -->", f"<!-- reproduce:table:{profile}:end -->")
    return own if own[0] in readme_text and own[1] in readme_text else README_TABLE


def runs_span(results_dir: Path) -> str:
    """", its N runs trained from <first start> to <last end> (<duration>)" from the runs' summary.json
    (``started`` / ``finished``): the wall time of the runs a (possibly report-only) command publishes."""
    times = []
    for path in (results_dir / "runs").rglob("summary.json") if (results_dir / "runs").is_dir() else []:
        try:
            summary = json.loads(path.read_text())
            times.append((datetime.fromisoformat(summary["started"]), datetime.fromisoformat(summary["finished"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not times:
        return ""
    first, last = min(t[0] for t in times), max(t[1] for t in times)
    return (f"; its {len(times)} runs trained from {first.isoformat(timespec='minutes')} to "
            f"{last.isoformat(timespec='minutes')} ({fmt_duration((last - first).total_seconds())})")


def readme_sections(summary: str, wanted: list[str] | None) -> list[str]:
    """The lines of summary.md's top-level sections (``# Title``) whose titles start with one of
    ``wanted`` (a profile's ``readme_sections``; None: every section): the results page shows what the
    profile is for, the rest stays in docs/figures/<profile>/summary.md."""
    lines, keep = [], wanted is None
    for line in summary.splitlines():
        if line.startswith("# "):
            keep = wanted is None or any(line[2:].startswith(w) for w in wanted)
        if keep:
            lines.append(line)
    return lines


def replace_block(text: str, markers: tuple[str, str], lines: list[str]) -> str | None:
    """``text`` with everything between the markers (included) replaced by ``lines`` framed by them;
    None when the markers are missing or out of order."""
    start, end = markers
    if start not in text or end not in text or text.index(start) > text.index(end):
        return None
    return text[:text.index(start)] + "\n".join([start, *lines, end]) + text[text.index(end) + len(end):]


def say(message: str = "") -> None:
    print(f"[reproduce] {message}" if message else "", flush=True)


def _plain(text: str) -> str:
    """A note that fits in a double-quoted Hydra string."""
    return text.replace('"', "").replace("\\", "/").replace("'", "")


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
