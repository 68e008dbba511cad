"""Best configurations, learning curves and the summary table (paper section 4.2).

Selection, as in the paper: for every problem (dataset and setting, see
:mod:`kfac_bench.report.results`) and method, the configuration with the lowest **final training
loss** wins. Diverged, failed and incomplete runs are excluded from the choice and counted. When a
configuration has several seeds, the choice uses the run of its smallest finished seed (the grid's
seed, normally 0), so adding seeds to the winner afterwards never changes the choice; the curves
and the numbers of the table are then the mean over all finished seeds of the winner.

Common target loss of a problem: the WORST (highest) final training loss among the methods' best
configurations (mean over seeds). Every method reaches it by its last epoch, so "epochs / seconds
to the target" is defined for all of them and compares how fast each gets to the level the
slowest one ends at. Reaching means: the first evaluated epoch whose (mean) training loss is <=
the target; seconds are the (mean) cumulative training time at that epoch (evaluation excluded).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ..registry import METHODS, method_names
from .results import SWEPT

METHOD_ORDER = method_names()                                   # kfac_bench/registry.py
METHOD_LABELS = {m.name: m.label for m in METHODS.values()}
DATASET_ORDER = ["curves", "mnist", "faces"]
# the paper's problem sizes (appendix D) and the authors' 200 epochs: what "reduced" is measured against
PAPER_SETTING = {"curves": {"n_train": 16000, "n_val": 4000}, "mnist": {"n_train": 50000, "n_val": 10000},
                 "faces": {"n_train": 82800, "n_val": 20700}}
PAPER_EPOCHS = 200
TARGET_MIN_SHARE = 0.5   # a method sets the common target once it removed half the best method's loss drop
TARGET_DEFINITION = ("common target = the worst final training loss among the methods' best configurations "
                     "on that problem that removed at least half of the largest loss drop (start minus final) of "
                     "any method there (a method that got barely better does not set it, and reaches it only if its "
                     "curve does); epochs/seconds to target = first epoch whose (mean) training loss is <= "
                     "the target, and the cumulative training time at that epoch (evaluation excluded)")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, str(method))


def method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), str(method))


def dataset_rank(dataset: str) -> tuple:
    return (DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER), str(dataset))


def _seed_key(seed) -> float:
    try:
        return float(seed)
    except (TypeError, ValueError):
        return math.inf


def select_best(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, method): the winning configuration and the counts behind the choice."""
    rows = []
    for (setting, method), group in runs.groupby(["setting", "method"], sort=False):
        counts = {f"runs_{s}": int((group["status"] == s).sum()) for s in ("ok", "diverged", "failed", "incomplete")}
        ok = group[group["status"] == "ok"].copy()
        ok = ok[np.isfinite(ok["final_train_loss"].astype(float))]
        row = {"setting": setting, "dataset": group["dataset"].iloc[0], "method": method,
               "configs_tried": int(group["config"].nunique()), **counts,
               "best_config": None, "best_run_dir": None, "seed_run_dirs": [], "every_seed_run_dirs": [],
               "selection_loss": math.nan}
        if not ok.empty:
            ok["_seed"] = ok["seed"].map(_seed_key)
            first = ok.sort_values(["_seed", "run_dir"]).groupby("config", sort=False).head(1)
            best = first.sort_values(["final_train_loss", "run_dir"]).iloc[0]
            seeds = ok[ok["config"] == best["config"]].sort_values(["_seed", "run_dir"])
            # every seed of the winner, failed or diverged too: the time to target counts them as seeds
            # (a seed that failed before the target never reached it), never drops them
            every = group[group["config"] == best["config"]].assign(_seed=lambda g: g["seed"].map(_seed_key))
            row.update(best_config=best["config"], best_run_dir=best["run_dir"],
                       seed_run_dirs=list(seeds["run_dir"]), selection_loss=float(best["final_train_loss"]),
                       every_seed_run_dirs=list(every.sort_values(["_seed", "run_dir"])["run_dir"]),
                       hyperparameters=best["hyperparameters"],
                       varied=_varied_hyperparameters(group))
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out["_m"] = out["method"].map(method_rank)
        out = out.sort_values(["setting", "_m"]).drop(columns="_m").reset_index(drop=True)
    return out


def _varied_hyperparameters(group: pd.DataFrame) -> list[str]:
    """Optimizer entries that differ between the configurations tried (the search space)."""
    parsed = [json.loads(h) for h in dict.fromkeys(group["hyperparameters"]) if isinstance(h, str)]
    keys = sorted({k for p in parsed for k in p})
    return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in parsed}) > 1]


def mean_curve(long: pd.DataFrame, run_dirs: list[str]) -> pd.DataFrame:
    """Mean, median, min and max over seeds, per epoch, of the losses and the cumulative training time.
    Only the epochs every seed has are kept. ``train_*`` is the loss of the training set at the end
    of the epoch, ``running_*`` the mean of the epoch's mini-batch losses (``train_loss_running``;
    NaN at epoch 0 and for runs written before the column existed)."""
    parts = long[long["run_dir"].isin(run_dirs)].dropna(subset=["epoch"])
    if parts.empty:
        return pd.DataFrame(columns=["epoch", "n_seeds"])
    if "train_loss_running" not in parts:
        parts = parts.assign(train_loss_running=math.nan)
    common = set.intersection(*(set(g["epoch"].astype(int)) for _, g in parts.groupby("run_dir")))
    parts = parts[parts["epoch"].astype(int).isin(common)]
    agg = parts.groupby(parts["epoch"].astype(int)).agg(
        train_mean=("train_loss", "mean"), train_min=("train_loss", "min"), train_max=("train_loss", "max"),
        train_median=("train_loss", "median"),
        val_mean=("val_loss", "mean"), val_min=("val_loss", "min"), val_max=("val_loss", "max"),
        val_median=("val_loss", "median"),
        running_mean=("train_loss_running", "mean"), running_min=("train_loss_running", "min"),
        running_max=("train_loss_running", "max"), running_median=("train_loss_running", "median"),
        time_mean=("time_s", "mean"), time_median=("time_s", "median"), n_seeds=("run_dir", "nunique"))
    return agg.reset_index().rename(columns={"index": "epoch"})


def reach(curve: pd.DataFrame, target: float) -> tuple[float, float]:
    """(epoch, seconds) at which the mean training loss first gets to ``target`` (NaN if never)."""
    if curve.empty or not math.isfinite(target):
        return math.nan, math.nan
    hit = curve[curve["train_mean"] <= target * (1 + 1e-12)]
    if hit.empty:
        return math.nan, math.nan
    first = hit.iloc[0]
    return float(first["epoch"]), float(first["time_mean"])


def common_target(group: pd.DataFrame, curves: dict, setting: str) -> float:
    """The problem's common target: the worst final training loss among the methods that learned, i.e.
    removed at least :data:`TARGET_MIN_SHARE` of the largest loss drop (start at epoch 0 minus final) of
    any method on the problem -- the convergence test of Moré & Wild (2009) with tau = 1 - that share. A
    method that got barely better than its start does not set the target (it would make every method
    'reach' it in the first epoch: pytorch-optimizer's Shampoo and PSGD-Kron at some learning rates); it
    reaches the target only where its own curve gets there."""
    finals_and_drops = []
    for _, r in group.iterrows():
        curve = curves.get((setting, r["method"]))
        final = float(r["final_train_loss"])
        if curve is not None and not curve.empty and math.isfinite(final):
            finals_and_drops.append((final, float(curve["train_mean"].iloc[0]) - final))
    best = max((drop for _, drop in finals_and_drops), default=math.nan)
    if not best > 0:
        return math.nan
    return max(final for final, drop in finals_and_drops if drop >= TARGET_MIN_SHARE * best)


def summary_table(long: pd.DataFrame, runs: pd.DataFrame, selection: pd.DataFrame,
                  labels: dict[str, str]) -> tuple[pd.DataFrame, dict[tuple[str, str], pd.DataFrame]]:
    """The summary rows (one per problem and method) and the best curves by (setting, method)."""
    curves: dict[tuple[str, str], pd.DataFrame] = {}
    rows = []
    for _, sel in selection.iterrows():
        has_best = isinstance(sel["best_config"], str)
        curve = mean_curve(long, sel["seed_run_dirs"]) if has_best else pd.DataFrame()
        if not curve.empty:
            curves[(sel["setting"], sel["method"])] = curve
        best = runs[runs["run_dir"].isin(sel["seed_run_dirs"])] if has_best else runs.iloc[0:0]
        hyper = json.loads(sel["hyperparameters"]) if has_best else {}
        n_seeds = len(best)
        source = runs.loc[runs["setting"] == sel["setting"], "dataset_source"].dropna()
        row = {
            "dataset": sel["dataset"], "problem": labels.get(sel["setting"], sel["dataset"]),
            "dataset_source": source.iloc[0] if len(source) else None,
            "method": sel["method"], "method_label": method_label(sel["method"]),
            **{k: hyper.get(k) for k in SWEPT},
            "other_varied": ", ".join(f"{k}={hyper.get(k)}" for k in sel.get("varied") or []
                                      if k not in SWEPT) if has_best else "",
            "configs_tried": sel["configs_tried"],
            **{k: sel[k] for k in ("runs_ok", "runs_diverged", "runs_failed", "runs_incomplete")},
            "seeds": n_seeds,
            "final_train_loss": float(best["final_train_loss"].mean()) if n_seeds else math.nan,
            "final_train_loss_std": float(best["final_train_loss"].std(ddof=0)) if n_seeds else math.nan,
            "final_val_loss": float(best["final_val_loss"].mean()) if n_seeds else math.nan,
            "total_time_s": float(best["total_time_s"].mean()) if n_seeds else math.nan,
            "epochs": float(best["epochs_completed"].mean()) if n_seeds else math.nan,
            "target_loss": math.nan, "epochs_to_target": math.nan, "seconds_to_target": math.nan,
            "best_run_dir": sel["best_run_dir"] if has_best else None, "setting": sel["setting"],
        }
        if not curve.empty:   # the mean curve's last point is what the figure shows
            row["final_train_loss"] = float(curve["train_mean"].iloc[-1])
            row["final_val_loss"] = float(curve["val_mean"].iloc[-1])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table, curves
    for setting, group in table.groupby("setting", sort=False):
        target = common_target(group, curves, setting)
        if not math.isfinite(target):
            continue
        for idx, r in group.iterrows():
            curve = curves.get((setting, r["method"]))
            epoch, seconds = reach(curve, target) if curve is not None else (math.nan, math.nan)
            table.loc[idx, ["target_loss", "epochs_to_target", "seconds_to_target"]] = [target, epoch, seconds]
    table["_d"] = table["dataset"].map(dataset_rank)
    table["_m"] = table["method"].map(method_rank)
    table = table.sort_values(["_d", "problem", "_m"]).drop(columns=["_d", "_m"]).reset_index(drop=True)
    return table, curves


def matched_epochs(last: int) -> list[int]:
    """The epochs a short table compares methods at: a quarter, half and all of the run."""
    return sorted({max(1, round(last * f)) for f in (0.25, 0.5, 1.0)})


def terminal_table(table: pd.DataFrame, curves: dict[tuple[str, str], pd.DataFrame]) -> list[str]:
    """A short plain-text table per problem: training loss at matched epochs and seconds per epoch
    (training only, the mean over the best configuration's seeds), lowest final loss marked."""
    lines = []
    for setting, group in table.groupby("setting", sort=False):
        shown = {r["method_label"]: curves[(setting, r["method"])] for _, r in group.iterrows()
                 if (setting, r["method"]) in curves}
        if not shown:
            continue
        last = int(min(c["epoch"].max() for c in shown.values()))
        epochs = [e for e in matched_epochs(last) if all(e in set(c["epoch"]) for c in shown.values())]
        finals = {m: float(c.loc[c["epoch"] == last, "train_mean"].iloc[0]) for m, c in shown.items()}
        best = min(finals, key=finals.get)
        lines.append(f"{group['problem'].iloc[0]}: training loss at epoch " + ", ".join(map(str, epochs)))
        lines.append(f"  {'method':<16}" + "".join(f"{'epoch ' + str(e):>13}" for e in epochs) + f"{'s/epoch':>10}")
        for method, c in shown.items():
            at = dict(zip(c["epoch"], c["train_mean"]))
            per_epoch = float(c.loc[c["epoch"] == last, "time_mean"].iloc[0]) / last
            mark = "  <- lowest" if method == best else ""
            lines.append(f"  {method:<16}" + "".join(f"{at[e]:>13.5f}" for e in epochs) + f"{per_epoch:>10.2f}"
                         + mark)
    return lines


# ----------------------------------------------------------------------------------------- writing
def _fmt(value, kind: str = "g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "loss":
        return f"{value:.6g}"
    if kind == "int":
        return f"{int(round(value))}"
    if kind == "time":
        return f"{value:.1f}"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def to_markdown(table: pd.DataFrame, headings: dict[str, str], note: str | None = None) -> str:
    """One Markdown table per problem, under a heading that says what the data is."""
    lines = ["# Summary: best configuration per method (paper section 4.2)", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines += [f"Selection: lowest final training loss over the configurations tried (diverged, failed and "
              f"incomplete runs excluded and counted). Losses are per-element means, averaged over the "
              f"seeds of the best configuration. {TARGET_DEFINITION[0].upper()}{TARGET_DEFINITION[1:]}.", ""]
    cols = ["Method", "lr", "damping", "kl_clip", "configs", "runs ok / div / fail / inc", "seeds",
            "final train loss", "final val loss", "time (s)", "target", "epochs to target", "s to target"]
    for setting, group in table.groupby("setting", sort=False):
        lines += [f"## {headings.get(setting, group['problem'].iloc[0])}", ""]
        lines += [markdown_table(cols, [_summary_cells(r) for _, r in group.iterrows()], right_from=1), ""]
    return "\n".join(lines)


def _summary_cells(r) -> list[str]:
    """One method's row of a problem's summary table."""
    name = r["method_label"] + (f" ({r['other_varied']})" if r["other_varied"] else "")
    return [name, _fmt(r["lr"]), _fmt(r["damping"]), _fmt(r["kl_clip"]), _fmt(r["configs_tried"], "int"),
            f"{r['runs_ok']} / {r['runs_diverged']} / {r['runs_failed']} / {r['runs_incomplete']}",
            _fmt(r["seeds"], "int"),
            _fmt(r["final_train_loss"], "loss") + (f" ± {r['final_train_loss_std']:.2g}" if r["seeds"] > 1 else ""),
            _fmt(r["final_val_loss"], "loss"), _fmt(r["total_time_s"], "time"),
            _fmt(r["target_loss"], "loss"), _fmt(r["epochs_to_target"], "int"),
            _fmt(r["seconds_to_target"], "time")]


def markdown_table(header: list[str], rows, right_from: int | None = None) -> str:
    """A Markdown table: the header, the rule (columns from ``right_from`` on right-aligned -- the
    numbers; None: every column left-aligned) and one line per row of cells (strings). The one
    table writer of the report, the bench and the Figure 1 study."""
    rule = ["---" if right_from is None or i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


CSV_COLUMNS = ["dataset", "problem", "dataset_source", "method", "lr", "damping", "kl_clip", "other_varied",
               "configs_tried", "runs_ok", "runs_diverged", "runs_failed", "runs_incomplete", "seeds",
               "final_train_loss", "final_train_loss_std", "final_val_loss", "total_time_s", "epochs",
               "target_loss", "epochs_to_target", "seconds_to_target", "best_run_dir"]


def wrap_title(title: str, width: int) -> str:
    """A figure title broken into lines of at most ``width`` characters, at its " · " separators
    first (the parts: what the figure is, the data, the profile note), then at spaces."""
    import textwrap
    lines = []
    for part in title.split(" · "):
        lines += textwrap.wrap(part, width) or [""]
    return "\n".join(lines)


def source_note(source: str | None) -> str:
    if source == "generated":
        return "GENERATED stand-in data, not the paper's file"
    if source == "genuine":
        return "genuine data"
    return "data source unknown"


def problem_heading(dataset: str, source: str | None, setting: str) -> str:
    """``CURVES (GENERATED stand-in ...) · n_train 16000, n_val 4000, 10 epochs · REDUCED: ...``"""
    items = json.loads(setting) if setting else {}
    n_train, n_val = items.get("dataset.n_train"), items.get("dataset.n_val")
    epochs = items.get("trainer.epochs")
    parts = [f"{str(dataset).upper()} ({source_note(source)})"]
    size = ", ".join(x for x in (f"n_train {n_train}" if n_train is not None else "",
                                 f"n_val {n_val}" if n_val is not None else "",
                                 f"{epochs} epochs" if epochs is not None else "") if x)
    if size:
        parts.append(size)
    paper = PAPER_SETTING.get(dataset, {})
    reduced = []
    for key in ("n_train", "n_val"):
        value = items.get(f"dataset.{key}")
        if paper.get(key) and isinstance(value, (int, float)) and value < paper[key]:
            reduced.append(f"{key} {value} of {paper[key]}")
    if isinstance(epochs, (int, float)) and epochs < PAPER_EPOCHS:
        reduced.append(f"{epochs} of the authors' {PAPER_EPOCHS} epochs")
    if reduced:
        parts.append("REDUCED: " + ", ".join(reduced))
    return " · ".join(parts)
