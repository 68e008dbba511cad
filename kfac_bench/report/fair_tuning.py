"""The fair comparison's tuning table: per problem and method, the trials, the extensions and where the winner sits.

Every method gets the same number of quasi-random trials from its registry search space
(:mod:`kfac_bench.reproduce.tuning`), all at seed :data:`TRIAL_SEED`, and a trials' winner on an edge of
the space is followed out of it by extensions. The report tells them apart by where their point lies: a
seed-0 run whose every dimension is within its range (a relative tolerance of :data:`INSIDE_TOLERANCE`:
the trials' values are rounded to 3 significant digits) or among its choices is a trial, any other
seed-0 run an extension. The edge flag is :func:`kfac_bench.search_space.edge_flag` on the trials' winner
(the lowest final training loss among the finished trials), the report's winner (:func:`.tables.select_best`,
which sees the extensions too) and the extensions with their statuses.
"""
from __future__ import annotations

import json
from collections import Counter

import pandas as pd

from ..search_space import RANGES, Choice, SearchSpace, edge_flag
from .tables import markdown_table, method_label, select_best

TRIAL_SEED = 0              # the tuning's seed: the winner's other seeds are confirmations, not trials
INSIDE_TOLERANCE = 1e-9
NO_SPACE = "no search space"
TUNING_COLUMNS = ["problem", "dataset", "method", "trials", "trials_ok", "trials_diverged", "trials_failed",
                  "extensions", "extensions_ok", "extensions_diverged", "extensions_failed", "winner", "edge"]


def _space(method: str) -> SearchSpace | None:
    from ..registry import search_space
    try:
        return search_space(method)
    except ValueError:
        return None


def _as_choice(value):
    return tuple(value) if isinstance(value, list) else value


def inside(space: SearchSpace, point: dict) -> bool:
    """Whether every dimension of ``space`` has its value in ``point`` within its range or among its choices."""
    for name, dimension in space.items():
        value = point.get(name)
        if value is None:
            return False
        if isinstance(dimension, Choice):
            if _as_choice(value) not in dimension.values:
                return False
        elif isinstance(dimension, RANGES):
            value = float(value)
            if not (dimension.low - INSIDE_TOLERANCE * abs(dimension.low) <= value
                    <= dimension.high + INSIDE_TOLERANCE * abs(dimension.high)):
                return False
    return True


def point_of(hyperparameters, space: SearchSpace) -> dict:
    """A run's point (its ``hyperparameters`` JSON: option -> value, no ``optimizer.`` prefix) in ``space``."""
    values = json.loads(hyperparameters) if isinstance(hyperparameters, str) else {}
    return {name: values.get(name) for name in space}


def _shown(value) -> str:
    if value is None:       # the run's config lacks the option (a run older than it): the library's default
        return "default"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_shown, value)) + "]"
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _point_text(point: dict) -> str:
    return ", ".join(f"{name}={_shown(value)}" for name, value in point.items()) or "–"


def _best_point(runs: pd.DataFrame, space: SearchSpace) -> dict | None:
    """The point of the winner among ``runs`` (one problem and method), chosen as the report chooses
    (:func:`.tables.select_best`); None without a finished run."""
    chosen = select_best(runs) if not runs.empty else runs
    chosen = chosen[chosen["best_config"].notna()] if not chosen.empty else chosen
    return None if chosen.empty else point_of(chosen.iloc[0]["hyperparameters"], space)


def _counts(runs: pd.DataFrame, prefix: str) -> dict:
    status = Counter(runs["status"])
    return {prefix: len(runs), **{f"{prefix}_{s}": status.get(s, 0) for s in ("ok", "diverged", "failed")}}


def _seed_zero(runs: pd.DataFrame) -> pd.DataFrame:
    def is_trial_seed(seed) -> bool:
        try:
            return float(seed) == TRIAL_SEED
        except (TypeError, ValueError):
            return False
    return runs[runs["seed"].map(is_trial_seed)]


def tuning_row(runs: pd.DataFrame, method: str, winner_hyperparameters) -> dict:
    """The counts, the winner and the edge flag of one (problem, method)'s seed-0 ``runs``."""
    space = _space(method)
    if space is None:
        return {**_counts(runs, "trials"), **_counts(runs.iloc[0:0], "extensions"), "winner": "–", "edge": NO_SPACE}
    is_inside = runs["hyperparameters"].map(lambda h: inside(space, point_of(h, space))).astype(bool)
    trials, extensions = runs[is_inside], runs[~is_inside]
    winner = point_of(winner_hyperparameters, space) if isinstance(winner_hyperparameters, str) else None
    trials_winner = _best_point(trials, space)
    if winner is None or trials_winner is None:
        flag = "no finished trial" if trials_winner is None else "no finished run"
    else:
        flag = edge_flag(space, trials_winner, winner,
                         [(point_of(h, space), s) for h, s in zip(extensions["hyperparameters"], extensions["status"])])
    return {**_counts(trials, "trials"), **_counts(extensions, "extensions"),
            "winner": _point_text(winner) if winner else "–", "edge": flag}


def tuning_table(runs: pd.DataFrame, selection: pd.DataFrame, budgets: pd.DataFrame) -> pd.DataFrame:
    """:data:`TUNING_COLUMNS`: a row per confirmation problem (``budgets``: :func:`.fair.problem_budgets`)
    and method."""
    rows = []
    for p in budgets[budgets["confirmation"]].itertuples(index=False):
        for _, sel in selection[selection["setting"] == p.setting].iterrows():
            mine = _seed_zero(runs[(runs["setting"] == p.setting) & (runs["method"] == sel["method"])])
            rows.append({"problem": p.short, "dataset": p.dataset, "method": sel["method"],
                         **tuning_row(mine, sel["method"], sel.get("hyperparameters"))})
    return pd.DataFrame(rows, columns=TUNING_COLUMNS)


def trials_line(tuning: pd.DataFrame) -> str:
    """``12 trials for every method on every problem``, or per problem which methods differ from the most
    common count."""
    counted = tuning[tuning["edge"] != NO_SPACE]
    if counted.empty:
        return "No trials."
    if counted["trials"].nunique() == 1:
        return f"{_trials(counted['trials'].iloc[0])} for every method on every problem."
    parts = []
    for problem, group in counted.groupby("problem", sort=False):
        usual = int(group["trials"].mode().max())
        odd = group[group["trials"] != usual]
        parts.append(f"{problem}: {_trials(usual)}" + (" for every method" if odd.empty else ", but " + ", ".join(
            f"{method_label(m)} {int(k)}" for m, k in zip(odd["method"], odd["trials"]))))
    return "Trials differ between methods or problems: " + "; ".join(parts) + "."


def _trials(n) -> str:
    return f"{int(n)} trial{'' if int(n) == 1 else 's'}"


def tuning_markdown(tuning: pd.DataFrame) -> str:
    """The section "Tuning" (under the fair comparison's)."""
    lines = ["## Tuning", "",
             f"Trials: the seed-{TRIAL_SEED} runs whose point lies inside the method's search space "
             "(kfac_bench/registry.py); "
             "extensions: the seed-0 runs outside it (the tuning follows a winner on an edge out of the space). "
             "Winner: the best configuration of the tables above. Edge: where the trials' winner sat and what the "
             "extensions found.", ""]
    if tuning is None or tuning.empty:
        return "\n".join(lines + ["No runs.", ""])
    lines += [f"**{trials_line(tuning)}**", ""]
    head = ["problem", "method", "trials (ok / div. / failed)", "extensions (ok / div. / failed)", "winner", "edge"]
    rows = [[r["problem"], method_label(r["method"]),
             f"{r['trials']} ({r['trials_ok']} / {r['trials_diverged']} / {r['trials_failed']})",
             f"{r['extensions']} ({r['extensions_ok']} / {r['extensions_diverged']} / {r['extensions_failed']})",
             r["winner"], r["edge"]] for _, r in tuning.iterrows()]
    return "\n".join(lines + [markdown_table(head, rows), ""])
