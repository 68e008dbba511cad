"""The text of the verdict table: :func:`claims_markdown` (the full table and the rules, summary.md's
section and ``docs/verdict/claims.md``) and :func:`claims_summary_markdown` (one row per claim, the
README's block).

It imports :mod:`.claim_engine`, :mod:`.claims` and :mod:`.claim_inputs`; nothing of the claims imports it.
"""
from __future__ import annotations

import re

import pandas as pd

from .claim_engine import ALL_PROBLEMS, AUTHORS_NAME, OVERALL_RULE
from .claim_inputs import _int
from .claims import DOES_NOT_HOLD, HOLDS, NOT_MEASURED
from .tables import markdown_table


def _cell(text, limit: int = 200) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _overall(table: pd.DataFrame, cid: str, setting: str) -> str:
    hit = table[(table["id"] == cid) & (table["problem"] == ALL_PROBLEMS) & (table["setting"] == setting)]
    return hit["verdict"].iloc[0] if len(hit) else ""


def _short(label: str) -> str:
    """A problem's dataset for a compact cell, ``*`` for a generated stand-in (the cell says the budget)."""
    return label.split(" [")[0].split(" (")[0] + ("*" if "(generated stand-in)" in label else "")


def _seeds(budget: str) -> int:
    found = re.search(r"(\d+) seeds?$", str(budget))
    return int(found.group(1)) if found else 0


def _epochs(budget: str) -> int:
    return _int(str(budget).split(" ")[0]) or 0


def _profile(label: str) -> str:
    return label.rsplit(" [", 1)[-1].rstrip("]")


def _key_cell(row, several_profiles: bool) -> str:
    """``curves* 200 ep., 3 seeds: worst ratio 1.2`` (the profile named where several are read)."""
    seeds = _seeds(row["budget"])
    where = _short(row["problem"]) + (f" [{_profile(row['problem'])}]" if several_profiles else "")
    return f"{where} {_epochs(row['budget'])} ep., {seeds} seed{'s' if seeds != 1 else ''}: {row['key_number']}"


def _key_rows(spec: pd.DataFrame) -> list:
    """One row per dataset (its problems differ in horizon, a profile's seeds 1-2 running shorter than
    seed 0 (``conf/profile/verdict.yaml``), and in profile): the one that decides, so a failing decided
    problem first, else the decided one with the most seeds, else the one with the most seeds."""
    def rank(row):
        decided = row["verdict"] in (HOLDS, DOES_NOT_HOLD)
        return decided, row["verdict"] == DOES_NOT_HOLD, _seeds(row["budget"]), _epochs(row["budget"])
    groups: dict = {}
    for _, row in spec.iterrows():
        groups.setdefault(_short(row["problem"]), []).append(row)
    return [max(rows, key=rank) for rows in groups.values()]


def claims_summary_markdown(table: pd.DataFrame) -> str:
    """One row per claim: the verdict under the specification and the authors' code, what the paper's own
    curves show at our budgets, one key number per problem (the README's verdict block)."""
    header = ["id", "claim", "specification", "authors' code", "paper's own curves at our budget", "key number (spec.)"]
    rows = [_summary_cells(table, cid, group) for cid, group in table.groupby("id", sort=False)]
    return "\n".join([markdown_table(header, rows), "", "\\* generated stand-in data (docs/data.md)"])


def _summary_cells(table: pd.DataFrame, cid: str, group: pd.DataFrame) -> list[str]:
    """A claim's row of the summary: its overall verdicts, the paper's curves, a key number per problem."""
    claim = group["claim"].iloc[0]
    if (group["setting"] == "fisher study").all():
        return [cid, _cell(claim), group["verdict"].iloc[0], "–", "not published (Figure 1 is a picture)", "–"]
    spec = group[(group["setting"] == "specification") & (group["problem"] != ALL_PROBLEMS)]
    spec = spec[spec["verdict"] != NOT_MEASURED]      # problems whose runs lack a method say nothing here
    chosen = _key_rows(spec)
    shown = sum(r["published_at_budget"] == HOLDS for r in chosen)
    paper = f"holds on {shown} of {len(chosen)} problems" if chosen else "–"
    several = spec["problem"].map(_profile).nunique() > 1          # a root of profiles: say whose number
    keys = "; ".join(_key_cell(r, several) for r in chosen if r["key_number"])
    return [cid, _cell(claim), _overall(table, cid, "specification"), _overall(table, cid, AUTHORS_NAME), paper,
            _cell(keys or "–")]


def claims_markdown(table: pd.DataFrame, note: str | None = None, heading: str = "# Claims of the paper") -> str:
    """The verdict table as Markdown (summary.md's section; ``docs/verdict/``): the verdicts at a glance,
    every problem's row (no cell over 200 characters), then the rules; the numbers are in claims.csv."""
    lines = [heading, ""] if heading else []
    if note:
        lines += [f"**{note}**", ""]
    lines += ["Each verdict comes from the rule below and its thresholds (module-level constants of "
              "`kfac_bench/report/claims.py`), judged per problem against the authors' own published curves cut "
              "to the same budget; 'specification' = runs with `authors_code=[]`, 'authors\' code' = "
              "`authors_code=all` (SGD and Adam without `first_order_weight_decay`). The numbers behind every "
              "row are in claims.csv.", "", claims_summary_markdown(table), ""]
    columns = ("id", "problem", "setting", "verdict", "budget", "published_at_budget", "published_full", "key_number")
    rows = [[_cell(r[c]) for c in columns] for _, r in table.iterrows()
            if r["problem"] != ALL_PROBLEMS or r["setting"] == "fisher study"]
    lines.append(markdown_table(["id", "problem", "setting", "verdict", "budget", "paper's curves at budget",
                                 "at 200 epochs", "key number"], rows))
    lines += ["", "Rules:", ""]
    for cid, group in table.groupby("id", sort=False):
        lines.append(f"- **{cid}** {group['rule'].iloc[0]}")
    lines += ["", f"- **over the problems**: {OVERALL_RULE}"]
    return "\n".join(lines + [""])
