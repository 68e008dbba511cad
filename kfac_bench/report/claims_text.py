"""The text of the verdict table: :func:`claims_markdown` (the full table and the rules, summary.md's
section and ``docs/verdict/claims.md``) and :func:`claims_summary_markdown` (one row per claim, the
README's block).

It imports :mod:`.claim_engine`, :mod:`.claims` and :mod:`.claim_inputs`; nothing of the claims imports it.
"""
from __future__ import annotations

import re

import pandas as pd

from .claim_engine import ALL_PROBLEMS, AUTHORS_NAME, OVERALL_RULE, holds_count, problem_name, verdicts_by_problem
from .claim_inputs import _int
from .claims import DOES_NOT_HOLD, HOLDS, NOT_MEASURED, NOT_PUBLISHED
from .tables import markdown_table


def _cell(text, limit: int = 200) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _overall(table: pd.DataFrame, cid: str, setting: str) -> str:
    hit = table[(table["id"] == cid) & (table["problem"] == ALL_PROBLEMS) & (table["setting"] == setting)]
    return hit["verdict"].iloc[0] if len(hit) else ""


def _per_problem(group: pd.DataFrame, setting: str) -> pd.DataFrame:
    """A claim's rows of one setting, one per problem and budget."""
    return group[(group["setting"] == setting) & (group["problem"] != ALL_PROBLEMS)]


def _verdict_cell(table: pd.DataFrame, cid: str, group: pd.DataFrame, setting: str) -> str:
    """The verdict over the problems, and on how many it holds where the decided problems disagree:
    ``does not hold (holds on 2 of 3 problems)`` (:func:`.claim_engine.holds_count`)."""
    overall = _overall(table, cid, setting)
    by_problem = verdicts_by_problem(r for _, r in _per_problem(group, setting).iterrows())
    decided = {v for v in by_problem.values() if v in (HOLDS, DOES_NOT_HOLD)}
    return f"{overall} ({holds_count(by_problem)})" if len(decided) > 1 else overall


def _papers_cell(by_problem: dict[str, str]) -> str:
    """On how many problems the paper's own curves show the effect at our budget: the decided ones."""
    decided = [v for v in by_problem.values() if v in (HOLDS, DOES_NOT_HOLD)]
    return f"holds on {len(decided)} of {len(by_problem)} problems" if by_problem else "–"


def _seeds(budget: str) -> int:
    found = re.search(r"(\d+) seeds?$", str(budget))
    return int(found.group(1)) if found else 0


def _epochs(budget: str) -> int:
    return _int(str(budget).split(" ")[0]) or 0


def _profile(label: str) -> str:
    return label.rsplit(" [", 1)[-1].rstrip("]")


def _where(row, several_profiles: bool) -> str:
    """``curves* 200 ep., 3 seeds`` (the profile named where several are read)."""
    seeds = _seeds(row["budget"])
    where = problem_name(row["problem"]) + (f" [{_profile(row['problem'])}]" if several_profiles else "")
    return f"{where} {_epochs(row['budget'])} ep., {seeds} seed{'s' if seeds != 1 else ''}"


def _key_value(key: str) -> float:
    """The number a key number states, the last in its text (``worst ratio 1.8``, ``KPSVD/KFAC within 1 ±
    0.0279``, ``largest ×2.67 of KFAC's s/epoch``): the larger, the further from the claim, in every rule."""
    found = re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", str(key))
    return float(found[-1]) if found else float("-inf")


def _key_rows(spec: pd.DataFrame) -> list:
    """One row per problem (:func:`.claim_engine.problem_name`; its budgets differ in horizon, a profile's
    seeds 1-2 running shorter than seed 0 (``conf/profile/verdict.yaml``), and in profile): the one that
    decides, so a failing decided budget first, else the decided one with the most seeds, else the one
    with the most seeds."""
    def rank(row):
        decided = row["verdict"] in (HOLDS, DOES_NOT_HOLD)
        return decided, row["verdict"] == DOES_NOT_HOLD, _seeds(row["budget"]), _epochs(row["budget"])
    groups: dict = {}
    for _, row in spec.iterrows():
        groups.setdefault(problem_name(row["problem"]), []).append(row)
    return [max(rows, key=rank) for rows in groups.values()]


def _key_cell(chosen: list, several_profiles: bool, compact: bool) -> str:
    """Every problem's key number (``curves* 200 ep., 3 seeds: worst ratio 1.2; ...``), or, ``compact``, the
    one furthest from the claim and where (``worst ratio 1.2 (curves* 200 ep., 3 seeds)``)."""
    keyed = [r for r in chosen if r["key_number"]]
    if not keyed:
        return "–"
    if compact:
        worst = max(keyed, key=lambda r: _key_value(r["key_number"]))
        return f"{worst['key_number']} ({_where(worst, several_profiles)})"
    return "; ".join(f"{_where(r, several_profiles)}: {r['key_number']}" for r in keyed)


def claims_summary_markdown(table: pd.DataFrame, compact: bool = True) -> str:
    """One row per claim: the verdict under the specification and the authors' code, what the paper's own
    curves show at our budgets, the key number of the problem furthest from the claim (``compact``: the
    README's block, its lines short) or of every problem (docs/verdict/claims.md)."""
    key = "key number (spec., the worst problem)" if compact else "key number per problem (spec.)"
    header = ["id", "claim", "specification", "authors' code", "paper's own curves at our budget", key]
    rows = [_summary_cells(table, cid, group, compact) for cid, group in table.groupby("id", sort=False)]
    return "\n".join([markdown_table(header, rows), "", "\\* generated stand-in data (docs/data.md)"])


def _summary_cells(table: pd.DataFrame, cid: str, group: pd.DataFrame, compact: bool) -> list[str]:
    """A claim's row of the summary: its overall verdicts (with the count where the problems disagree), the
    paper's curves, the key number(s)."""
    claim = group["claim"].iloc[0]
    if (group["setting"] == "fisher study").all():
        return [cid, _cell(claim), group["verdict"].iloc[0], "–", "not published (Figure 1 is a picture)", "–"]
    spec = _per_problem(group, "specification")
    spec = spec[spec["verdict"] != NOT_MEASURED]      # problems whose runs lack a method say nothing here
    several = spec["problem"].map(_profile).nunique() > 1          # a root of profiles: say whose number
    paper = _papers_cell(verdicts_by_problem(r for _, r in spec.iterrows()))
    if len(spec) and (spec["published_at_budget"] == NOT_PUBLISHED).all():   # the conclusion's other networks
        paper = "not published (no curves for these networks)"
    return [cid, _cell(claim), _verdict_cell(table, cid, group, "specification"),
            _verdict_cell(table, cid, group, AUTHORS_NAME), paper, _cell(_key_cell(_key_rows(spec), several, compact))]


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
              "row are in claims.csv.", "", claims_summary_markdown(table, compact=False), ""]
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
