"""The engine that applies the claims' rules (:mod:`.claims`): the verdict on a problem and over
the problems, the budget a rule is decided at, each claim judged per problem, horizon and setting, and
the verdict table (:func:`claims_table`, columns :data:`CLAIM_COLUMNS`).

It imports :mod:`.claims` and :mod:`.claim_inputs`; only the text (:mod:`.claims_text`) and the report
import it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .ablation import AUTHORS_CODE, SPECIFICATION
from .claim_inputs import FisherStudy, Outcome, Problem, collect_fisher_studies, collect_problems, published_problem
from .conclusion_claims import conclusion_rows
from .claims import (CUT_HORIZONS, DOES_NOT_HOLD, HOLDS, NOT_MEASURED, NOT_PUBLISHED, NOT_SHOWN_BY_PAPER,
                     NOT_TESTABLE_AT_BUDGET, PRODUCED_BY, Claim, paper_claims)

CLAIM_COLUMNS = ["id", "claim", "problem", "setting", "verdict", "budget", "published_at_budget", "published_full",
                 "key_number", "numbers", "published_numbers", "rule", "source"]
ALL_PROBLEMS = "all problems"


# ------------------------------------------------------------------------------------- verdicts
def _word(outcome: Outcome | None) -> str:
    if outcome is None or outcome.holds is None:
        return NOT_PUBLISHED
    return HOLDS if outcome.holds else DOES_NOT_HOLD


def problem_verdict(ours: Outcome, at_budget: Outcome | None, full: Outcome | None) -> str:
    """The verdict on one problem: ours decides only where the authors' own curves at our budget
    show the effect (see the docstring of :mod:`.claims`)."""
    if ours.holds is None:
        return NOT_MEASURED
    if at_budget is not None and at_budget.holds:
        return HOLDS if ours.holds else DOES_NOT_HOLD
    if full is not None and full.holds:
        return NOT_TESTABLE_AT_BUDGET
    if full is not None and full.holds is False:
        return NOT_SHOWN_BY_PAPER
    return NOT_TESTABLE_AT_BUDGET       # no published curve to judge by: nothing decides


def overall_verdict(verdicts: list[str]) -> str:
    """A claim's verdict under one setting from its problems' verdicts."""
    decided = [v for v in verdicts if v in (HOLDS, DOES_NOT_HOLD)]
    if decided:
        return HOLDS if all(v == HOLDS for v in decided) else DOES_NOT_HOLD
    for verdict in (NOT_TESTABLE_AT_BUDGET, NOT_SHOWN_BY_PAPER):
        if verdict in verdicts:
            return verdict
    return NOT_MEASURED


def problem_name(label: str) -> str:
    """The problem a row counts for in the summaries: its dataset, ``*`` for a generated stand-in. One
    problem per dataset, whatever its budgets (horizons, training examples) and profiles."""
    return label.split(" [")[0].split(" (")[0] + ("*" if "(generated stand-in)" in label else "")


def verdicts_by_problem(rows: Iterable[dict]) -> dict[str, str]:
    """Each problem's verdict (:func:`problem_name`) from its budgets' rows by :func:`overall_verdict`:
    decided if any budget is, holding if every decided budget holds; a problem none of whose budgets is
    measured is left out."""
    budgets: dict[str, list[str]] = {}
    for row in rows:
        budgets.setdefault(problem_name(row["problem"]), []).append(row["verdict"])
    verdicts = {name: overall_verdict(v) for name, v in budgets.items()}
    return {name: v for name, v in verdicts.items() if v != NOT_MEASURED}


def holds_count(by_problem: dict[str, str]) -> str:
    """``holds on k of n problems``, n = the decided problems (those the paper's own curves decide at our
    budget); empty when none is decided."""
    decided = [v for v in by_problem.values() if v in (HOLDS, DOES_NOT_HOLD)]
    return f"holds on {decided.count(HOLDS)} of {len(decided)} problems" if decided else ""


def _source(folders: list[str], problems: list[Problem], studies: list[FisherStudy] | None = None) -> str:
    parts = [f"results: {', '.join(folders)}"]
    if studies is not None:
        parts.append("fisher studies: " + (", ".join(s.path for s in studies) or "none"))
        return "; ".join(parts)
    parts.append("settings: specification = runs with authors_code=[]; authors' code = runs with every "
                 "behaviour of the method (authors_code=all); best configuration by final train loss, median "
                 "over its seeds")
    commands = list(dict.fromkeys(c for p in problems for c in p.commands))
    if commands:
        shown = commands[:2]
        parts.append("commands (summary.json) e.g. " + " ; ".join(f"`{c}`" for c in shown)
                     + (f" (+{len(commands) - len(shown)} more)" if len(commands) > len(shown) else ""))
    return "; ".join(parts)


def claims_table(folders: Iterable[str | Path], problems: list[Problem] | None = None,
                 studies: list[FisherStudy] | None = None) -> pd.DataFrame:
    """The verdict table (columns :data:`CLAIM_COLUMNS`) from the runs and fisher studies of ``folders``."""
    folders = [str(f) for f in folders]
    problems = collect_problems(folders) if problems is None else problems
    studies = collect_fisher_studies(folders) if studies is None else studies
    sources = {"fisher": _source(folders, [], studies), "runs": _source(folders, problems)}
    rows = []
    for claim in paper_claims():
        if claim.on == "fisher":
            rows.append(_fisher_row(claim, *claim.rule(studies), source=sources["fisher"]))
        else:
            rows.extend(judge(claim.id, claim.text, problems, claim.rule, claim.description, sources["runs"]))
    rows.extend(_with_overall_rows(conclusion_rows(folders)))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _with_overall_rows(judged: list[dict]) -> list[dict]:
    """The conclusion's rows on the authors' other networks (:mod:`.conclusion_claims`), each claim's rows of a
    setting followed by the row over them; a Figure 1 study's row stands alone."""
    out = []
    for key in dict.fromkeys((r["id"], r["setting"]) for r in judged):
        mine = [r for r in judged if (r["id"], r["setting"]) == key]
        out += mine
        if key[1] != "fisher study":
            out.append(_overall_row(key[0], mine[0]["claim"], key[1], mine, "", mine[0]["source"]))
    return out


def cut_at(problem: Problem, horizon: int) -> Problem:
    """``problem``'s curves up to ``horizon`` epochs (the same runs, a shorter budget)."""
    return replace(problem, curves={m: c[c["epoch"] <= horizon] for m, c in problem.curves.items()},
                   horizon=horizon)


def decisive_budget(problem: Problem, rule_fn) -> tuple[Problem, Outcome]:
    """The budget a rule is judged at on ``problem``: the runs' own horizon where the paper's curves
    show the effect there, else the largest of :data:`.claims.CUT_HORIZONS` below it where they do (a
    verdict at the shortest horizon that decides), else the runs' own; with the rule on the published
    curves."""
    at_budget = rule_fn(published_problem(problem, full=False))
    if at_budget.holds or not problem.horizon:
        return problem, at_budget
    for horizon in sorted((h for h in CUT_HORIZONS if h < problem.horizon), reverse=True):
        cut = cut_at(problem, horizon)
        published = rule_fn(published_problem(cut, full=False))
        if published.holds:
            return cut, published
    return problem, at_budget


def _fisher_row(claim: Claim, verdict: str, numbers: str, budget: str, source: str) -> dict:
    """The one row of a Figure 1 claim (the paper publishes Figure 1 as a picture: nothing to compare);
    ``budget`` names the studies that decided it."""
    return {"id": claim.id, "claim": claim.text, "problem": ALL_PROBLEMS, "setting": "fisher study",
            "verdict": verdict, "budget": budget, "published_at_budget": NOT_PUBLISHED, "published_full": NOT_PUBLISHED,
            "key_number": "", "numbers": numbers, "published_numbers": "", "rule": claim.description,
            "source": source}


AUTHORS_NAME = "authors' code"
SETTINGS = ((SPECIFICATION, "specification"), (AUTHORS_CODE, AUTHORS_NAME))


def judge(cid: str, claim: str, problems: list[Problem], rule_fn, rule: str, source: str) -> list[dict]:
    """The rows of one Figure 2 / Table 1 / conclusion claim: one per (problem, horizon, setting), the
    rule on our runs, on the authors' curves at our budget and at 200 epochs; then one row per
    setting over all problems (:func:`overall_verdict`)."""
    rows = []
    for cls, name in SETTINGS:
        mine = sorted((p for p in problems if p.setting_class == cls), key=lambda p: (p.label, p.horizon or 0))
        judged = [_problem_row(cid, claim, problem, name, rule_fn, rule, source) for problem in mine]
        missing = "" if mine else f"no runs: produced by {PRODUCED_BY[cls]}"
        rows += judged + [_overall_row(cid, claim, name, judged, missing, source)]
    return rows


def _problem_row(cid: str, claim: str, problem: Problem, setting: str, rule_fn, rule: str, source: str) -> dict:
    """The row of one problem and horizon, judged at its decisive budget (:func:`decisive_budget`)."""
    problem, at_budget = decisive_budget(problem, rule_fn)
    ours, full = rule_fn(problem), rule_fn(published_problem(problem, full=True))
    return {"id": cid, "claim": claim, "problem": problem.label, "setting": setting,
            "verdict": problem_verdict(ours, at_budget, full), "budget": problem.budget(),
            "published_at_budget": _word(at_budget), "published_full": _word(full), "key_number": ours.key,
            "numbers": ours.numbers, "published_numbers": f"at budget: {at_budget.numbers} || full: {full.numbers}",
            "rule": rule, "source": source}


def _overall_row(cid: str, claim: str, setting: str, judged: list[dict], numbers: str, source: str) -> dict:
    """The row over all problems of a setting: the verdict (:func:`overall_verdict`), on how many problems
    it holds (:func:`holds_count`), and every problem it aggregates with its budget."""
    return {"id": cid, "claim": claim, "problem": ALL_PROBLEMS, "setting": setting,
            "verdict": overall_verdict([r["verdict"] for r in judged]),
            "budget": "; ".join(f"{r['problem']}: {r['budget']}" for r in judged),
            "published_at_budget": "", "published_full": "", "key_number": holds_count(verdicts_by_problem(judged)),
            "numbers": numbers, "published_numbers": "", "rule": OVERALL_RULE, "source": source}


OVERALL_RULE = ("over the problems: holds if every decided problem (holds / does not hold) holds, does not hold if "
                "any decided problem fails; otherwise not testable at this budget if any problem says so, else not "
                "shown by the paper's own curves if any says so, else not measured. Counted beside it (the key "
                "number; in the summary's verdict cells where the decided problems disagree): on how many problems "
                "it holds, of those decided. One problem = one dataset (* = generated stand-in), whatever its "
                "budgets and profiles, as the summary's column of the paper's own curves counts them: decided if "
                "any of its budgets is decided (the paper's own curves show the effect there), holding if every "
                "decided budget holds")
