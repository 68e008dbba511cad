"""The fair comparison: time to the common target per seed, and an AlgoPerf-style performance profile.

For every problem and method, the best configuration (:func:`.tables.select_best`) and ALL its
seeds: each seed's epochs and seconds to the problem's common target loss (the definition of
:data:`.tables.TARGET_DEFINITION`, the same target as summary.md), then the median, minimum and
maximum over the seeds. A seed that never gets to the target counts as infinite.

Performance profile (Dolan & Moré 2002, as AlgoPerf uses it): with ``t[p, m]`` method m's median
time to the target on problem p, ``r[p, m] = t[p, m] / min_m' t[p, m']`` and, for each method,
``rho_m(tau) = fraction of problems with r[p, m] <= tau``, drawn as a step curve for tau in
[1, :data:`PROFILE_TAU_MAX`]; a method that never reaches the target (or has no finished run) on a
problem has r = infinity there. One panel for seconds, one for epochs. Only the problems run under
the specification (``authors_code=[]``) enter the profile: a problem run with the authors' code is
a different algorithm, not a competitor on the same footing.

Where the paper's methods stand against the others (:func:`standing`, the README's row that is not a
claim of the paper): on each dataset's largest-budget specification problem (training examples x
epochs: the `fair` profile's confirmation runs), the paper's fastest Kronecker-factored method to the
common target against the fastest method not in the paper (EKFAC, SOAP, Shampoo, Muon, PSGD-Kron),
median seconds and median epochs over the seeds.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..registry import get_method, paper_method_names
from .ablation import SPECIFICATION, setting_class, setting_items
from .figures import save_figure
from .tables import markdown_table, mean_curve, method_label, method_rank, reach, wrap_title

PROFILE_TAU_MAX = 4.0
FAIR_COLUMNS = ["problem", "dataset", "dataset_source", "method", "setting_class", "seeds", "target_loss",
                "seeds_reaching", "epochs_to_target_median", "epochs_to_target_min", "epochs_to_target_max",
                "seconds_to_target_median", "seconds_to_target_min", "seconds_to_target_max"]


def _problem_label(problem: str, source) -> str:
    return f"{problem} (generated stand-in)" if source == "generated" else str(problem)


def time_to_target_table(long: pd.DataFrame, table: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, method): the seeds' epochs and seconds to the common target (median, min, max)."""
    seeds = {(r["setting"], r["method"]): list(r["every_seed_run_dirs"]) for _, r in selection.iterrows()}
    rows = []
    for _, r in table.iterrows():
        run_dirs = seeds.get((r["setting"], r["method"]), [])
        target = float(r["target_loss"]) if r["target_loss"] == r["target_loss"] else math.nan
        epochs, seconds = [], []
        for run_dir in run_dirs:
            e, s = reach(mean_curve(long, [run_dir]), target)
            epochs.append(e if e == e else math.inf)
            seconds.append(s if s == s else math.inf)
        row = {"problem": _problem_label(r["problem"], r["dataset_source"]), "dataset": r["dataset"],
               "dataset_source": r["dataset_source"], "method": r["method"],
               "setting_class": setting_class(r["setting"], r["method"]), "seeds": len(run_dirs),
               "target_loss": target, "seeds_reaching": int(sum(math.isfinite(e) for e in epochs)),
               "setting": r["setting"]}
        for name, values in (("epochs", epochs), ("seconds", seconds)):
            arr = np.array(values, dtype=float)
            row[f"{name}_to_target_median"] = float(np.median(arr)) if arr.size else math.inf
            row[f"{name}_to_target_min"] = float(arr.min()) if arr.size else math.inf
            row[f"{name}_to_target_max"] = float(arr.max()) if arr.size else math.inf
        rows.append(row)
    return pd.DataFrame(rows, columns=[*FAIR_COLUMNS, "setting"])


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


def fair_markdown(fair: pd.DataFrame) -> str:
    lines = ["# Fair comparison: time to the common target over the seeds of the best configuration", "",
             "Per problem and method: the best configuration's seeds (failed and diverged ones included), each seed's first epoch whose end-of-epoch "
             "training loss is <= the problem's common target (summary.md's target) and its cumulative training "
             "seconds; median [min–max] over the seeds; ∞ = a seed never got there. The performance profile "
             "(performance_profile.png) reads the medians.", ""]
    if fair is None or fair.empty:
        return "\n".join(lines + ["No finished runs.", ""])
    head = ["problem", "method", "setting", "seeds (reaching)", "target", "epochs to target", "seconds to target"]
    rows = [[r["problem"], method_label(r["method"]), r["setting_class"], f"{r['seeds']} ({r['seeds_reaching']})",
             _g(r["target_loss"]),
             f"{_g(r['epochs_to_target_median'])} [{_g(r['epochs_to_target_min'])}–{_g(r['epochs_to_target_max'])}]",
             f"{_g(r['seconds_to_target_median'], 1)} [{_g(r['seconds_to_target_min'], 1)}–"
             f"{_g(r['seconds_to_target_max'], 1)}]"]
            for _, r in fair.iterrows()]
    return "\n".join(lines + [markdown_table(head, rows, right_from=3), ""])


def _g(v, digits=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{digits}f}" if digits is not None else f"{v:.5g}"


def profile_inputs(fair: pd.DataFrame, column: str) -> pd.DataFrame:
    """problems x methods of ``column`` (the medians), specification problems only."""
    spec = fair[fair["setting_class"] == SPECIFICATION]
    if spec.empty:
        return pd.DataFrame()
    table = spec.pivot_table(index="problem", columns="method", values=column, aggfunc="first")
    return table.reindex(columns=sorted(table.columns, key=method_rank))


def plot_performance_profile(fair: pd.DataFrame, out_stem, note: str | None = None, formats=("png",),
                             dpi: int = 150) -> list[Path]:
    """performance_profile.<fmt>: seconds and epochs panels (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .figure2 import STYLES, method_colour
    panels = [("seconds_to_target_median", "time to target in seconds"),
              ("epochs_to_target_median", "time to target in epochs")]
    inputs = [(profile_inputs(fair, col), name) for col, name in panels]
    if all(t.empty for t, _ in inputs):
        return []
    fig = Figure(figsize=(11, 4.6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    taus = np.linspace(1.0, PROFILE_TAU_MAX, 601)
    for ax, (times, name) in zip(axes, inputs):
        if times.empty:
            ax.set_visible(False)
            continue
        ratios = performance_ratios(times)
        for method in ratios.columns:
            rho = [profile_fraction(ratios, method, t) for t in taus]
            ax.step(taus, rho, where="post", color=method_colour(method), ls=STYLES.get(method, "-"), lw=1.6,
                    label=method_label(method))
        ax.set_xlim(1.0, PROFILE_TAU_MAX)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("τ (time / best method's time on the problem)")
        ax.set_ylabel("fraction of problems within τ of the best")
        problems_ = ", ".join(str(p) for p in times.index)
        ax.set_title(wrap_title(f"{name} · {len(times)} problems: {problems_}", 70), fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    title = ("Performance profile: time to the common target loss (median over seeds, specification runs; "
             "never reached = ∞)") + (f" · {note}" if note else "")
    fig.suptitle(wrap_title(title, 110), fontsize=10)
    return save_figure(fig, out_stem, formats, dpi)


def fair_comparison(results_dir) -> pd.DataFrame:
    """The time-to-target table (with its ``setting`` column) of the runs under one results folder."""
    from .results import load_results, problems, runs_table
    from .tables import select_best, summary_table
    long = load_results(results_dir, exclude=[Path(results_dir) / "report"])
    runs = runs_table(long)
    if runs.empty:
        return pd.DataFrame(columns=[*FAIR_COLUMNS, "setting"])
    probs = problems(runs)
    selection = select_best(runs)
    table, _ = summary_table(long, runs, selection, dict(zip(probs["setting"], probs["label"])))
    return time_to_target_table(long, table, selection)


def _examples_seen(setting: str) -> float:
    items = setting_items(setting)
    try:
        return float(items.get("dataset.n_train") or 0) * float(items.get("trainer.epochs") or 0)
    except (TypeError, ValueError):
        return 0.0


def _in_paper(method: str) -> bool | None:
    try:
        entry = get_method(method)
    except ValueError:
        return None
    return entry.in_paper


def standing(fair: pd.DataFrame) -> tuple[str, str]:
    """(verdict cell, key-number cell) of the README's row on the paper's methods against the methods
    not in the paper (see the module docstring); ``not measured`` without such a comparison. The verdict
    counts the problems per second and per epoch; the key, short as the README's cells are, gives the
    seconds on the problem where the paper's fastest is furthest behind (every method's median epochs and
    seconds to the target are in the report's fair table, ``docs/fair/summary.md``)."""
    spec = fair[(fair["setting_class"] == SPECIFICATION)] if not fair.empty else fair
    paper = set(paper_method_names(curvature_only=True))
    seconds = "seconds_to_target_median"
    ahead = {"seconds": 0, "epochs": 0}
    keys, compared = [], []         # keys: (our best seconds / their best seconds, key text) per problem
    for _, group in (spec.groupby("dataset", sort=False) if not spec.empty else []):
        seen = group["setting"].map(_examples_seen)
        group = group[seen == seen.max()]
        ours = group[group["method"].isin(paper)]
        others = group[group["method"].map(_in_paper) == False]   # noqa: E712 - None = unknown method
        if ours.empty or others.empty:
            continue
        compared.append(_short_problem(group.iloc[0]))
        for unit, column in (("seconds", seconds), ("epochs", "epochs_to_target_median")):
            ahead[unit] += int(ours[column].min() < others[column].min())
        best_ours, best_other = ours.loc[ours[seconds].idxmin()], others.loc[others[seconds].idxmin()]
        behind = best_ours[seconds] / best_other[seconds]
        keys.append((behind if behind == behind else -math.inf,
                     f"{method_label(best_ours['method'])} {_time(best_ours[seconds], '{:.0f} s')} vs "
                     f"{method_label(best_other['method'])} {_time(best_other[seconds], '{:.0f} s')} ({compared[-1]})"))
    if not compared:
        return "not measured (no finished `fair` profile run of both kinds)", "–"
    return (f"paper's fastest first on {ahead['seconds']} of {len(compared)} problems per second, "
            f"{ahead['epochs']} of {len(compared)} per epoch"), max(keys, key=lambda k: k[0])[1]


def _short_problem(row) -> str:
    """``curves* 30 ep.``: the dataset (* = generated stand-in) and the epochs of its setting."""
    epochs = setting_items(row["setting"]).get("trainer.epochs")
    star = "*" if row["dataset_source"] == "generated" else ""
    return f"{row['dataset']}{star}" + (f" {epochs} ep." if epochs is not None else "")


def _time(value: float, fmt: str) -> str:
    return "never" if not math.isfinite(value) else fmt.format(value)
