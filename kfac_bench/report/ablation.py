"""The ablation of the authors' code behaviours: from their code as run down to the specification.

A run's ``authors_code`` (``all``, a list of behaviour names, or ``[]`` = the paper's
specification; :mod:`kfac_bench.optim.authors_code`) is part of its *setting* in
:mod:`.results`. Here runs that differ ONLY by it -- same problem otherwise, same method, same
hyperparameters -- are lined up: for every such (problem, method, hyperparameters) with at least two
distinct behaviour sets, the sets are ordered from the most behaviours to the fewest, and each step
says which behaviours it removed relative to the previous one and what that changed in the
training loss (epoch-mean of the mini-batch losses, ``train_loss_running``, and the end-of-epoch
evaluated training loss) at epochs 5 and 10 and at the last epoch. Several seeds of a step: the
median per epoch.

The steps form one chain when each set is a subset of the previous; a set that does not fit (e.g. an
extra "all minus X" beside a chain that removed Y first) is listed after the chain as a
``combination`` row, its difference taken from the first step (the authors' code).

``all`` stands for the behaviours that act on the method (those with options for a curvature
method, for that first-order method, or for the model): :func:`relevant_behaviours`.

Also here, because the claims table uses them too: :func:`base_setting` (a setting without its
``authors_code``) and :func:`setting_class` (specification / authors' code / partial).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import pandas as pd

from .results import problems
from .figures import save_figure
from .tables import markdown_table, mean_curve, method_label, method_rank, wrap_title

# the epochs the ablation table reports (plus the last epoch of the runs when it is not one of them)
ABLATION_EPOCHS = (5, 10)
SPECIFICATION = "specification"
AUTHORS_CODE = "authors' code"
PARTIAL = "partial"
STEP_ALL = "authors' code (all)"


@lru_cache(maxsize=1)
def _authors_code():
    """kfac_bench.optim.authors_code (imported late: it pulls in torch); None if it cannot be imported."""
    try:
        from ..optim import authors_code
    except Exception:  # noqa: BLE001 - without it, 'all' is only recognised by name
        return None
    return authors_code


def _behaviours() -> dict:
    module = _authors_code()
    return dict(module.BEHAVIOURS) if module else {}


def relevant_behaviours(method: str) -> tuple[str, ...]:
    """The behaviours that change something for ``method``: what ``authors_code=all`` means for it."""
    module = _authors_code()
    return tuple(module.applicable(method)) if module else ()


def authors_behaviours(method: str) -> frozenset:
    """The behaviours of the setting called "the authors' code" for ``method``
    (:func:`kfac_bench.optim.authors_code.authors_setting`: all that act on it but those their
    published curves rule out, i.e. SGD and Adam without first_order_weight_decay)."""
    module = _authors_code()
    return frozenset(module.authors_setting(method)) if module else frozenset()


def behaviour_set(value, method: str) -> frozenset:
    """The behaviours a run's ``authors_code`` value switched on that act on ``method`` (``all`` ->
    :func:`relevant_behaviours`; unknown names from older runs are kept as they are)."""
    if value in (None, "", "none", [], ()):
        return frozenset()
    if value == "authors":   # results.canonical_authors_code: exactly the authors' setting
        return authors_behaviours(method) or frozenset({"authors"})
    if value == "all":
        return frozenset(relevant_behaviours(method)) or frozenset({"all"})
    names = [value] if isinstance(value, str) else list(value)
    relevant = set(relevant_behaviours(method))
    # a behaviour with no effect on the method (e.g. nesterov_sgd in a KFAC run) changes nothing
    return frozenset(n for n in names if not relevant or n in relevant or n not in _behaviours())


def setting_items(setting: str | None) -> dict:
    try:
        return json.loads(setting) if isinstance(setting, str) else {}
    except ValueError:
        return {}


def base_setting(setting: str | None) -> str:
    """The setting without ``authors_code``: the problem the specification and the authors' code share."""
    items = setting_items(setting)
    items.pop("authors_code", None)
    return json.dumps(items, sort_keys=True, default=str)


def authors_code_value(setting: str | None):
    return setting_items(setting).get("authors_code")


def setting_class(setting: str | None, method: str) -> str:
    """``specification`` (authors_code == []), ``authors' code`` (exactly the behaviours of
    :func:`authors_behaviours`: ``all`` for a curvature method, SGD and Adam without
    first_order_weight_decay) or ``partial`` (an ablation step, or SGD/Adam with every behaviour)."""
    value = authors_code_value(setting)
    found = behaviour_set(value, method)
    if not found:
        return SPECIFICATION
    authors = authors_behaviours(method)
    if not authors:                      # the behaviours table cannot be read: 'all' by name only
        return AUTHORS_CODE if value in ("all", "authors") else PARTIAL
    return AUTHORS_CODE if found == authors else PARTIAL


def with_base(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus ``base_setting``, ``setting_class`` and ``base_label`` (the problem's label,
    "(generated stand-in)" added for generated data)."""
    runs = runs.copy()
    if runs.empty:
        for c in ("base_setting", "setting_class", "base_label"):
            runs[c] = []
        return runs
    runs["base_setting"] = [base_setting(s) for s in runs["setting"]]
    runs["setting_class"] = [setting_class(s, m) for s, m in zip(runs["setting"], runs["method"])]
    probs = problems(runs.assign(setting=runs["base_setting"]))
    labels = dict(zip(probs["setting"], probs["label"]))
    generated = set(runs.loc[runs["dataset_source"] == "generated", "base_setting"])
    runs["base_label"] = [labels.get(b, str(d)) + (" (generated stand-in)" if b in generated else "")
                          for b, d in zip(runs["base_setting"], runs["dataset"])]
    return runs


# ------------------------------------------------------------------------------------------ chains
def order_steps(sets: list[frozenset]) -> tuple[list[frozenset], list[frozenset]]:
    """(chain, combinations): the sets from the most behaviours to the fewest, each a subset of the
    previous; the sets that do not fit the chain come after it."""
    ordered = sorted(set(sets), key=lambda s: (-len(s), sorted(s)))
    chain, extra = [], []
    for s in ordered:
        if not chain or s <= chain[-1]:
            chain.append(s)
        else:
            extra.append(s)
    return chain, extra


def _label(removed: frozenset) -> str:
    return " ".join(f"− {n}" for n in sorted(removed))


def _at(curve: pd.DataFrame, epoch: int, column: str) -> float:
    if curve is None or curve.empty or column not in curve:
        return math.nan
    hit = curve.loc[curve["epoch"] == epoch, column]
    return float(hit.iloc[0]) if len(hit) else math.nan


def ablation_table(long: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per step of every chain (and every combination); see the module docstring."""
    ok = runs[(runs["status"] == "ok") & np.isfinite(runs["final_train_loss"].astype(float))]
    ok = with_base(ok)
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(behaviours=[behaviour_set(authors_code_value(s), m) for s, m in zip(ok["setting"], ok["method"])])
    rows = []
    for (base, method, hyper), group in ok.groupby(["base_setting", "method", "hyperparameters"], sort=False):
        sets = list(dict.fromkeys(group["behaviours"]))
        if len(sets) < 2:
            continue
        chain, extra = order_steps(sets)
        curves = {s: mean_curve(long, list(group.loc[group["behaviours"] == s, "run_dir"])) for s in sets}
        last = int(min(c["epoch"].max() for c in curves.values() if not c.empty))
        epochs = [e for e in ABLATION_EPOCHS] + ([last] if last not in ABLATION_EPOCHS else [])
        common = {"problem": group["base_label"].iloc[0], "dataset": group["dataset"].iloc[0],
                  "dataset_source": group["dataset_source"].iloc[0], "method": method,
                  "method_label": method_label(method), "hyperparameters": _short_hyper(hyper),
                  "last_epoch": last}

        def values(s):
            c = curves[s]
            out = {}
            for e in epochs:
                tag = "last" if e == last and e not in ABLATION_EPOCHS else f"epoch{e}"
                out[f"running_loss_{tag}"] = _at(c, e, "running_median")
                out[f"train_loss_{tag}"] = _at(c, e, "train_median")
            if last in ABLATION_EPOCHS:   # the last epoch is one of the reported ones: the same values
                out["running_loss_last"] = _at(c, last, "running_median")
                out["train_loss_last"] = _at(c, last, "train_median")
            return out

        def row(kind, index, s, label, reference):
            mine = values(s)
            diffs = {f"delta_{k}": (v - reference[k]) if reference is not None else math.nan
                     for k, v in mine.items()}
            sub = group[group["behaviours"] == s]
            return {**common, "kind": kind, "step_index": index, "step": label,
                    "behaviours": "+".join(sorted(s)) or "[]", "seeds": int(len(sub)), **mine, **diffs,
                    "run_dirs": ";".join(sub["run_dir"])}

        previous = None
        for i, s in enumerate(chain):
            if i == 0:
                label = SPECIFICATION if not s else (STEP_ALL if s >= set(relevant_behaviours(method))
                                                     else "authors' code: " + "+".join(sorted(s)))
            elif not s and i == 1 and chain[0] >= set(relevant_behaviours(method)):
                label = f"− all ({SPECIFICATION})"   # one step from the authors' code to the specification
            else:
                label = _label(chain[i - 1] - s) + (f" ({SPECIFICATION})" if not s else "")
            rows.append(row("chain", i, s, label, previous))
            previous = values(s)
        top = values(chain[0])
        for j, s in enumerate(extra):
            label = "combination: all " + _label(chain[0] - s) + (
                (" + " + "+".join(sorted(s - chain[0]))) if s - chain[0] else "")
            rows.append(row("combination", len(chain) + j, s, label, top))
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_m"] = out["method"].map(method_rank)
    out = out.sort_values(["problem", "_m", "hyperparameters", "step_index"], kind="stable").drop(columns="_m")
    return out.reset_index(drop=True)


def _short_hyper(hyper: str) -> str:
    items = setting_items(hyper)
    return ", ".join(f"{k}={items[k]}" for k in ("lr", "damping", "kl_clip") if k in items) or "default"


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.5g}"


def _fmt_delta(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f" ({v:+.3g})"


def ablation_markdown(table: pd.DataFrame) -> str:
    """The ablation section of summary.md."""
    lines = ["# Ablation: the authors' code behaviours, removed one step at a time", ""]
    if table is None or table.empty:
        return "\n".join(lines + ["No (problem, method, hyperparameters) has runs of two or more authors_code "
                                  "settings: nothing to ablate.", ""])
    lines += ["Each row: the runs at the same problem, method and hyperparameters whose `authors_code` lists "
              "the behaviours in its row; *step* names the behaviours removed relative to the row above "
              "(combination rows: relative to the first row). Losses: median over seeds; *epoch-mean* = "
              "mean of the epoch's mini-batch losses (`train_loss_running`), *final* = the training set "
              "evaluated at the end of the epoch; in brackets the change from the row above "
              "(combinations: from the first row).", ""]
    for (problem, method, hyper), group in table.groupby(["problem", "method_label", "hyperparameters"], sort=False):
        last = int(group["last_epoch"].iloc[0])
        tags = [f"epoch{e}" for e in ABLATION_EPOCHS if e <= last] + ([] if last in ABLATION_EPOCHS else ["last"])
        lines += [f"## {problem} · {method} · {hyper} (last epoch {last})", ""]
        head = ["step", "behaviours on", "seeds"]
        for t in tags:
            name = f"epoch {last} (last)" if t == "last" else t.replace("epoch", "epoch ")
            head += [f"{name} epoch-mean", f"{name} final"]
        rows = [[r["step"], r["behaviours"], str(r["seeds"])]
                + [_fmt(r.get(f"{q}_loss_{t}")) + _fmt_delta(r.get(f"delta_{q}_loss_{t}"))
                   for t in tags for q in ("running", "train")]
                for _, r in group.iterrows()]
        lines += [markdown_table(head, rows, right_from=2), ""]
    return "\n".join(lines)


def plot_ablation(table: pd.DataFrame, out_stem, note: str | None = None, formats=("png",), dpi: int = 150):
    """``ablation.<fmt>``: per (problem, method, hyperparameters) a panel of the last-epoch training
    loss (final, and the epoch mean dashed) along the steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(table.groupby(["problem", "method", "hyperparameters"], sort=False))
    if not groups:
        return []
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.9 * nrows + 0.9), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, ((problem, method, hyper), g) in zip(axes.flat, groups):
        x = np.arange(len(g))
        ax.plot(x, g["train_loss_last"], "o-", label="final (evaluated) train loss")
        if g["running_loss_last"].notna().any():
            ax.plot(x, g["running_loss_last"], "s--", label="epoch-mean train loss")
        ax.set_xticks(x)
        ax.set_xticklabels([s.replace(" − ", "\n− ") for s in g["step"]], rotation=35, ha="right", fontsize=6)
        ax.set_title(f"{method_label(method)} · {problem}\n{hyper}", fontsize=8)
        ax.set_ylabel(f"train loss at epoch {int(g['last_epoch'].iloc[0])}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    title = ("Ablation: last-epoch training loss along the steps from the authors' code (all behaviours) to "
             "the specification (authors_code=[])") + (f" · {note}" if note else "")
    fig.suptitle(wrap_title(title, 120), fontsize=10)
    return save_figure(fig, out_stem, formats, dpi)
