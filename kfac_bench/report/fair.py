"""The fair comparison: time to two targets per problem over the seeds, and AlgoPerf-style performance profiles.

Problems: one per dataset, the specification problem (``authors_code=[]``) with the largest budget
(training examples x epochs, :func:`_examples_seen`): the confirmation runs. A problem run with the
authors' code is a different algorithm, and a smaller problem of the same dataset (a tuning run of an
older profile) would count the dataset twice; both are left out, and the markdown names them.

Targets of a problem, from each method's *final loss*: the median, over the finished seeds of its best
configuration (:func:`.tables.select_best`), of each seed's final training loss (a diverged seed's is
infinite; a failed one has none):

* (a) Adam's final loss -- what a well-tuned Adam reaches at the end of the budget (not measured without a
  finished Adam run);
* (b) the median of the three lowest final losses of the methods on the problem -- a harder one.

For every problem, method and target: each seed of the best configuration (failed and diverged ones
included) gets the first epoch whose end-of-epoch training loss is <= the target and its cumulative
training seconds (:func:`.tables.reach`); median, minimum and maximum over the seeds, a seed that never
gets there counting as infinite.

Performance profile (Dolan & Moré 2002, as AlgoPerf uses it): with ``t[p, m]`` method m's median time
to the target on problem p, ``r[p, m] = t[p, m] / min_m' t[p, m']`` and, for each method,
``rho_m(tau) = fraction of problems with r[p, m] <= tau``, drawn as a step curve for tau in
[1, :data:`PROFILE_TAU_MAX`]; a method that never reaches the target (or has no finished run) on a
problem has r = infinity there. Four panels: each target, in seconds and in epochs.

Who gets there first (:func:`standing`, the README's row that is not a claim of the paper): for each
target and unit, the method(s) fastest on the most problems, with their seeds reaching over seeds run;
and, on target (b), on how many problems the paper's fastest Kronecker-factored method is ahead of the
fastest method not in the paper (EKFAC, SOAP, Shampoo, Muon, PSGD-Kron).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..registry import get_method, paper_method_names
from .ablation import SPECIFICATION, setting_class, setting_items
from .figures import save_figure
from .tables import markdown_table, mean_curve, method_label, method_rank, reach, wrap_title

PROFILE_TAU_MAX = 4.0
TARGETS = {"a": "Adam's final loss", "b": "the median of the best three"}
TARGET_DEFINITIONS = {
    "a": "Adam's final loss: the median (of an even count the upper middle value), over the seeds of Adam's "
         "best configuration, of each seed's final training loss",
    "b": "the median of the best three: the median of the three lowest final losses of the methods on the "
         "problem (a method's final loss: the median (upper), over the seeds of its best configuration, of each seed's "
         "final training loss)"}
REACHING = ("Epochs/seconds to a target: per seed of the best configuration (failed and diverged ones included), "
            "the first epoch whose end-of-epoch training loss is <= the target and the cumulative training "
            "seconds at it (evaluation excluded); median [min–max] over the seeds; ∞ = a seed never got there. "
            "A diverged seed's final loss counts as ∞, a failed one has none")
UNITS = {"seconds": "seconds_to_target_median", "epochs": "epochs_to_target_median"}
FAIR_COLUMNS = ["problem", "dataset", "dataset_source", "n_train", "epochs", "method", "target", "target_definition",
                "target_loss", "final_loss", "seeds", "seeds_reaching", "epochs_to_target_median",
                "epochs_to_target_min", "epochs_to_target_max", "seconds_to_target_median", "seconds_to_target_min",
                "seconds_to_target_max"]
PROBLEM_COLUMNS = ["setting", "dataset", "dataset_source", "label", "short", "n_train", "epochs", "examples",
                   "specification", "confirmation"]


# ------------------------------------------------------------------------------------------- problems
def _problem_label(problem: str, source) -> str:
    return f"{problem} (generated stand-in)" if source == "generated" else str(problem)


def _n_train(items: dict, dataset: str | None) -> int | None:
    """A problem's training examples: its setting's ``dataset.n_train``, else (a full-size run) its dataset
    config's (conf/dataset/<dataset>.yaml)."""
    n_train = items.get("dataset.n_train")
    if n_train is None and dataset is not None:
        from ..configs import dataset_config
        n_train = (dataset_config(dataset) or {}).get("n_train")
    try:
        return int(float(n_train))
    except (TypeError, ValueError):
        return None


def _examples_seen(setting: str, dataset: str | None = None) -> float:
    """Training examples x epochs of a problem."""
    items = setting_items(setting)
    try:
        return float(_n_train(items, dataset) or 0) * float(items.get("trainer.epochs") or 0)
    except (TypeError, ValueError):
        return 0.0


def _short_label(dataset, source, items: dict) -> str:
    """``curves* 16000 x 30 ep.`` (* = generated stand-in; the profile's name under a root of several)."""
    star = "*" if source == "generated" else ""
    profile = f" [{items['profile']}]" if items.get("profile") else ""
    budget = f" {_n_train(items, dataset) or '?'} x {items.get('trainer.epochs', '?')} ep."
    return f"{dataset}{star}{profile}{budget}"


def problem_budgets(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per problem (setting) of ``runs`` (:data:`PROBLEM_COLUMNS`); ``confirmation`` marks, per
    dataset (and profile, under a root of several), the specification problem with the largest budget."""
    from .results import problems
    rows = []
    for p in problems(runs).itertuples(index=False):
        group = runs[runs["setting"] == p.setting]
        source = group["dataset_source"].dropna()
        source = source.iloc[0] if len(source) else None
        items = setting_items(p.setting)
        rows.append({"setting": p.setting, "dataset": p.dataset, "dataset_source": source,
                     "label": _problem_label(p.label, source), "short": _short_label(p.dataset, source, items),
                     "n_train": _n_train(items, p.dataset), "epochs": items.get("trainer.epochs"),
                     "examples": _examples_seen(p.setting, p.dataset), "runs": len(group),
                     "specification": all(setting_class(p.setting, m) == SPECIFICATION for m in group["method"]),
                     "_key": (p.dataset, items.get("profile"))})
    table = pd.DataFrame(rows, columns=[*PROBLEM_COLUMNS, "runs", "_key"])
    table["confirmation"] = False
    spec = table[table["specification"]]
    for _, group in spec.groupby("_key", sort=False):
        # the largest budget; a tie (another batch size, say) goes to the problem with the most runs
        chosen = group.sort_values(["examples", "runs", "setting"], ascending=[False, False, True]).index[0]
        table.loc[chosen, "confirmation"] = True
    return table.drop(columns=["runs", "_key"])


# -------------------------------------------------------------------------------------------- targets
def _seed_finals(runs: pd.DataFrame, run_dirs: list[str]) -> list[float]:
    """Each finished seed's final training loss (a diverged one: inf; failed and incomplete ones left out)."""
    seeds = runs[runs["run_dir"].isin(run_dirs)]
    finals = []
    for status, loss in zip(seeds["status"], seeds["final_train_loss"]):
        if status == "diverged":
            finals.append(math.inf)
        elif status == "ok":
            loss = float(loss) if loss is not None else math.nan
            finals.append(loss if loss == loss else math.inf)
    return finals


def final_losses(runs: pd.DataFrame, selection: pd.DataFrame, setting: str) -> dict[str, float]:
    """method -> its final loss on the problem (the median over its best configuration's finished seeds;
    NaN without a finished run)."""
    out = {}
    for _, sel in selection[selection["setting"] == setting].iterrows():
        finals = _seed_finals(runs, list(sel["every_seed_run_dirs"])) if isinstance(sel["best_config"], str) else []
        out[sel["method"]] = upper_median(finals) if finals else math.nan
    return out


def upper_median(values: list[float]) -> float:
    """The median of an odd count; of an even count the upper of the two middle values, so that at least
    half of the seeds reach a target set by it (the mean of the middle two may be reached by one seed of two)."""
    return float(sorted(values)[len(values) // 2])


def problem_targets(finals: dict[str, float]) -> dict[str, float]:
    """{"a": Adam's final loss, "b": the median of the three lowest finals} (NaN where not measured)."""
    adam = finals.get("adam", math.nan)
    lowest = sorted(v for v in finals.values() if math.isfinite(v))[:3]
    return {"a": adam if math.isfinite(adam) else math.nan, "b": float(np.median(lowest)) if lowest else math.nan}


def _spread(values: list[float], prefix: str) -> dict[str, float]:
    arr = np.array(values, dtype=float)
    if not arr.size:
        return {f"{prefix}_median": math.inf, f"{prefix}_min": math.inf, f"{prefix}_max": math.inf}
    return {f"{prefix}_median": float(np.median(arr)), f"{prefix}_min": float(arr.min()),
            f"{prefix}_max": float(arr.max())}


def _times_to(curves: list[pd.DataFrame], target: float) -> dict:
    """Seeds reaching and the spread of the epochs and seconds to ``target`` (NaN: not measured)."""
    if not math.isfinite(target):
        return {"seeds_reaching": math.nan, **{f"{u}_to_target_{s}": math.nan for u in UNITS
                                               for s in ("median", "min", "max")}}
    hits = [reach(c, target) for c in curves]
    epochs = [e if e == e else math.inf for e, _ in hits]
    seconds = [s if s == s else math.inf for _, s in hits]
    return {"seeds_reaching": int(sum(math.isfinite(e) for e in epochs)), **_spread(epochs, "epochs_to_target"),
            **_spread(seconds, "seconds_to_target")}


def fair_table(long: pd.DataFrame, runs: pd.DataFrame, selection: pd.DataFrame,
               budgets: pd.DataFrame | None = None) -> pd.DataFrame:
    """:data:`FAIR_COLUMNS` (+ ``setting``): a row per confirmation problem, method and target (long format)."""
    budgets = problem_budgets(runs) if budgets is None else budgets
    rows = []
    for p in budgets[budgets["confirmation"]].itertuples(index=False):
        finals = final_losses(runs, selection, p.setting)
        targets = problem_targets(finals)
        for _, sel in selection[selection["setting"] == p.setting].iterrows():   # in the registry's order
            run_dirs = list(sel["every_seed_run_dirs"])
            curves = [mean_curve(long, [d]) for d in run_dirs]
            for target, value in targets.items():
                rows.append({"problem": p.short, "dataset": p.dataset, "dataset_source": p.dataset_source,
                             "n_train": p.n_train, "epochs": p.epochs, "method": sel["method"], "target": target,
                             "target_definition": TARGET_DEFINITIONS[target], "target_loss": value,
                             "final_loss": finals.get(sel["method"], math.nan), "seeds": len(run_dirs),
                             **_times_to(curves, value), "setting": p.setting})
    return pd.DataFrame(rows, columns=[*FAIR_COLUMNS, "setting"])


def fair_comparison(results_dir) -> pd.DataFrame:
    """The fair table (with its ``setting`` column) of the runs under one results folder."""
    from .results import load_results, runs_table
    from .tables import select_best
    long = load_results(results_dir, exclude=[Path(results_dir) / "report"])
    runs = runs_table(long)
    if runs.empty:
        return pd.DataFrame(columns=[*FAIR_COLUMNS, "setting"])
    return fair_table(long, runs, select_best(runs))


# ---------------------------------------------------------------------------------- performance profile
def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """``times``: problems x methods (inf or NaN = never reached). Ratios to each problem's best;
    a problem that no method solves gives inf for all."""
    times = times.astype(float).fillna(math.inf)
    best = times.min(axis=1)
    ratios = times.div(best.where(np.isfinite(best) & (best > 0)), axis=0)
    # a best time of 0 (reached at epoch 0) makes every method that also reached it at 0 ratio 1
    zero = best == 0
    if zero.any():
        ratios.loc[zero] = np.where(times.loc[zero] == 0, 1.0, math.inf)
    return ratios.fillna(math.inf)


def profile_fraction(ratios: pd.DataFrame, method: str, tau: float) -> float:
    """rho_method(tau): the fraction of problems on which ``method`` is within a factor tau of the best."""
    if method not in ratios or ratios.empty:
        return 0.0
    return float((ratios[method] <= tau * (1 + 1e-12)).mean())


def profile_inputs(fair: pd.DataFrame, target: str, column: str) -> pd.DataFrame:
    """problems x methods of ``column`` (the medians) for ``target``, the problems where it is measured."""
    rows = fair[(fair["target"] == target) & np.isfinite(fair["target_loss"].astype(float))] if not fair.empty else fair
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index="problem", columns="method", values=column, aggfunc="first")
    return table.reindex(columns=sorted(table.columns, key=method_rank))


def _draw_profile(ax, times: pd.DataFrame, taus) -> None:
    from .figure2 import method_colour, method_style
    ratios = performance_ratios(times)
    for method in ratios.columns:
        rho = [profile_fraction(ratios, method, t) for t in taus]
        ax.step(taus, rho, where="post", color=method_colour(method), ls=method_style(method), lw=1.6,
                label=method_label(method))
    ax.set_xlim(1.0, PROFILE_TAU_MAX)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (time / best method's time on the problem)")
    ax.set_ylabel("fraction of problems within τ of the best")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="lower right", ncol=2)


def plot_performance_profile(fair: pd.DataFrame, out_stem, note: str | None = None, formats=("png",),
                             dpi: int = 150) -> list[Path]:
    """performance_profile.<fmt>: target (a) and (b), each in seconds and in epochs (module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(t, unit) for t in TARGETS for unit in UNITS]
    inputs = [profile_inputs(fair, t, UNITS[unit]) for t, unit in panels]
    if all(t.empty for t in inputs):
        return []
    fig = Figure(figsize=(12, 9.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    taus = np.linspace(1.0, PROFILE_TAU_MAX, 601)
    for ax, (target, unit), times in zip(fig.subplots(2, 2).ravel(), panels, inputs):
        if times.empty:
            ax.set_visible(False)
            continue
        _draw_profile(ax, times, taus)
        listed = ", ".join(times.index)
        count = f"{len(times)} problem{'s' if len(times) != 1 else ''}"
        ax.set_title(wrap_title(f"({target}) {TARGETS[target]}, time in {unit} · {count}: {listed}",
                                75), fontsize=8)
    title = ("Performance profiles: time to (a) Adam's final loss and (b) the median of the best three "
             "(median over seeds; one problem per dataset, its confirmation budget; never reached = ∞)")
    fig.suptitle(wrap_title(title + (f" · {note}" if note else ""), 110), fontsize=10)
    return save_figure(fig, out_stem, formats, dpi)


# --------------------------------------------------------------------------------------------- markdown
def _g(v, digits=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{digits}f}" if digits is not None else f"{v:.5g}"


def _spread_text(r, unit: str, digits=None) -> str:
    return (f"{_g(r[f'{unit}_to_target_median'], digits)} [{_g(r[f'{unit}_to_target_min'], digits)}–"
            f"{_g(r[f'{unit}_to_target_max'], digits)}]")


def _target_rows(rows: pd.DataFrame) -> list[list[str]]:
    out = []
    for _, r in rows.iterrows():
        measured = math.isfinite(float(r["target_loss"]))
        out.append([r["problem"], method_label(r["method"]),
                    f"{r['seeds']} ({int(r['seeds_reaching'])})" if measured else f"{r['seeds']}", _g(r["final_loss"]),
                    _g(r["target_loss"]) if measured else "not measured",
                    _spread_text(r, "epochs") if measured else "not measured",
                    _spread_text(r, "seconds", 1) if measured else "not measured"])
    return out


def _fastest(rows: pd.DataFrame, column: str) -> tuple[list[str], float]:
    """The methods with the lowest finite ``column`` among ``rows`` (one problem and target), and that value."""
    values = rows[column].astype(float)
    best = values.min() if len(values) else math.inf
    if not math.isfinite(best):
        return [], math.inf
    return list(rows.loc[values == best, "method"]), float(best)


def _first_cell(rows: pd.DataFrame, unit: str) -> str:
    methods, best = _fastest(rows, UNITS[unit])
    if not methods:
        return "none reaches it"
    seeds = rows.set_index("method")
    shown = _g(best, 1) + " s" if unit == "seconds" else f"{_g(best)} ep."
    return ", ".join(f"{method_label(m)} ({int(seeds.loc[m, 'seeds_reaching'])}/{seeds.loc[m, 'seeds']} seeds)"
                     for m in methods) + f": {shown}"


def first_to_target_rows(fair: pd.DataFrame) -> list[list[str]]:
    """Per problem and target: the value and who gets there first, per second and per epoch."""
    out = []
    for (problem, target), rows in fair.groupby(["problem", "target"], sort=False):
        value = float(rows["target_loss"].iloc[0])
        if not math.isfinite(value):
            out.append([problem, f"({target}) not measured", "–", "–"])
            continue
        out.append([problem, f"({target}) {_g(value)}", _first_cell(rows, "seconds"), _first_cell(rows, "epochs")])
    return out


def _problems_paragraph(budgets: pd.DataFrame | None) -> list[str]:
    if budgets is None or budgets.empty:
        return []
    chosen = budgets[budgets["confirmation"]]
    left = budgets[~budgets["confirmation"]]
    text = ("Problems: one per dataset, the specification problem with the largest budget (training examples x "
            "epochs: the confirmation runs): " + ", ".join(chosen["short"]) + " (* = generated stand-in data).")
    if not left.empty:
        why = ["a smaller budget" if r["specification"] else "the authors' code" for _, r in left.iterrows()]
        text += " Left out of these tables and of the performance profile: " + "; ".join(
            f"{r['label']} ({w})" for (_, r), w in zip(left.iterrows(), why)) + "."
    return [text, ""]


def fair_markdown(fair: pd.DataFrame, budgets: pd.DataFrame | None = None) -> str:
    lines = ["# Fair comparison: time to two targets over the seeds of the best configuration", ""]
    lines += _problems_paragraph(budgets)
    lines += [f"Target (a), {TARGET_DEFINITIONS['a']}. Target (b), {TARGET_DEFINITIONS['b']}. {REACHING}. "
              "The performance profile (performance_profile.png) reads the medians.", ""]
    if fair is None or fair.empty:
        return "\n".join(lines + ["No finished runs.", ""])
    lines += ["## First to each target", "",
              "Per problem and target, the method(s) with the lowest median time and their seeds reaching the target "
              "over the seeds run. The README's row counts, per target and unit, the problems each method is first "
              "on (`SOAP 2/3 (9/9 seeds)`: first on 2 of 3 problems, 9 of its 9 seeds on them reaching the target).",
              "", markdown_table(["problem", "target", "first per second", "first per epoch"],
                                 first_to_target_rows(fair)), ""]
    head = ["problem", "method", "seeds (reaching)", "final loss", "target", "epochs to target", "seconds to target"]
    for target, name in TARGETS.items():
        lines += [f"## Target ({target}): {name}", "",
                  markdown_table(head, _target_rows(fair[fair["target"] == target]), right_from=2), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- standing
def _in_paper(method: str) -> bool | None:
    try:
        entry = get_method(method)
    except ValueError:
        return None
    return entry.in_paper


def _measured(fair: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows of ``target`` on the problems where it is measured."""
    if fair.empty:
        return pd.DataFrame(columns=FAIR_COLUMNS)
    return fair[(fair["target"] == target) & np.isfinite(fair["target_loss"].astype(float))]


def leaders(fair: pd.DataFrame, target: str, unit: str) -> tuple[list[tuple[str, int, int, int]], int]:
    """([(method, problems where it is first, its seeds reaching, its seeds run)] of the methods first on the
    most problems, the number of problems with ``target`` measured); ties on a problem count for each."""
    rows = _measured(fair, target)
    wins: dict[str, int] = {}
    for _, group in rows.groupby("problem", sort=False):
        for method in _fastest(group, UNITS[unit])[0]:
            wins[method] = wins.get(method, 0) + 1
    top = max(wins.values(), default=0)
    best = sorted((m for m, k in wins.items() if k == top), key=method_rank)
    out = [(m, top, int(rows.loc[rows["method"] == m, "seeds_reaching"].sum()),
            int(rows.loc[rows["method"] == m, "seeds"].sum())) for m in best]
    return out, int(rows["problem"].nunique())


def _leaders_text(found: list, n: int, show: int, seeds: bool) -> str:
    if not found:
        return "none"
    parts = [f"{method_label(m)} {k}/{n}" + (f" ({r}/{s})" if seeds else "") for m, k, r, s in found[:show]]
    return " and ".join(parts) + (f" +{len(found) - show}" if len(found) > show else "")


def _target_key(found: dict, target: str, show: int, seeds: bool) -> str:
    """``(a) s: SOAP 2/3 (9/9), ep.: Muon 3/3 (9/9)``; ``(a) s, ep.: SOAP ...`` when the same lead both."""
    per_unit = {u: _leaders_text(*found[(target, u)], show, seeds) for u in UNITS}
    if per_unit["seconds"] == per_unit["epochs"]:
        return f"({target}) s, ep.: {per_unit['seconds']}"
    return f"({target}) s: {per_unit['seconds']}, ep.: {per_unit['epochs']}"


def standing_key(fair: pd.DataFrame, width: int = 200) -> str:
    """``(a) s: SOAP 2/3 (9/9 seeds), ep.: Muon 3/3 (9/9); (b) ...``: per target and unit, the method(s) first
    on the most problems (k/n problems) and their seeds reaching over seeds run; shortened to ``width``
    (one leader and the number of the others tied, then no seeds, then cut)."""
    found = {(t, u): leaders(fair, t, u) for t in TARGETS for u in UNITS}
    text = ""
    for show, seeds in ((2, True), (1, True), (1, False)):
        text = "; ".join(_target_key(found, t, show, seeds) for t in TARGETS if found[(t, "seconds")][1])
        text = re.sub(r"\((\d+/\d+)\)", r"(\1 seeds)", text, count=1)   # the first count says what they count
        if len(text) <= width:
            return text or "–"
    return text[:width - 1] + "…"


def paper_ahead(fair: pd.DataFrame, target: str = "b") -> tuple[dict[str, int], int]:
    """Per unit, on how many problems the paper's fastest Kronecker-factored method gets to ``target``
    before the fastest method not in the paper; and the number of problems with both kinds."""
    paper = set(paper_method_names(curvature_only=True))
    ahead, compared = {unit: 0 for unit in UNITS}, 0
    rows = _measured(fair, target)
    for _, group in rows.groupby("problem", sort=False):
        ours = group[group["method"].isin(paper)]
        others = group[group["method"].map(_in_paper) == False]   # noqa: E712 - None = unknown method
        if ours.empty or others.empty:
            continue
        compared += 1
        for unit, column in UNITS.items():
            ahead[unit] += int(ours[column].min() < others[column].min())
    return ahead, compared


def standing(fair: pd.DataFrame, width: int = 200) -> tuple[str, str]:
    """(verdict cell, key-number cell) of the README's row on who reaches the targets first (module
    docstring); ``not measured`` without a finished `fair` run of both kinds."""
    ahead, compared = paper_ahead(fair)
    if not compared:
        return "not measured (no finished `fair` profile run of both kinds)", "–"
    verdict = (f"(b) paper's fastest first on {ahead['seconds']} of {compared} per second, "
               f"{ahead['epochs']} of {compared} per epoch")
    return verdict, standing_key(fair, width)
