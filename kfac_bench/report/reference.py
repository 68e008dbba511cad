"""The harness's runs beside the authors' published curves (:mod:`kfac_bench.reference`).

Two products of ``kfac-bench report`` (option ``authors_overlay``, on by default):

* the overlay data for Figure 2 (:func:`reference_row`): per problem, the authors' curve of every
  method the report draws, cut to the epochs the harness ran;
* the matched-epoch table (:func:`matched_epoch_table`): ours vs theirs at epochs
  ``MATCH_EPOCHS`` where both exist, with ratios ours / theirs, for the same quantities: the
  epoch mean of the mini-batch training losses (our ``train_loss_running``, their ``train_loss``)
  and the validation loss at the end of the epoch (``val_loss`` in both).

The authors' ``time_s`` is never compared: it is wall time on their A100 from before the data was
loaded, evaluation included, while the harness's ``time_s`` is training time on whatever device
ran it, evaluation excluded.

What a comparison can say depends on the run's data and size, and every row says it
(``compares``): their curves are on the genuine files, so on a GENERATED stand-in only the
ordering of the methods compares; a run with fewer training examples or another batch size than
theirs takes a different number of steps per epoch.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from .tables import PAPER_SETTING, dataset_rank, markdown_table, method_label, method_rank

MATCH_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200)
# (our column in mean_curve, the authors' column, what both are)
QUANTITIES = [("running_mean", "train_loss", "training loss (epoch mean of mini-batch losses)"),
              ("val_mean", "val_loss", "validation loss (end of epoch)")]
COMPARISON_COLUMNS = ["dataset", "problem", "dataset_source", "method", "method_label", "epoch",
                      "ours_train_loss_running", "authors_train_loss", "train_ratio",
                      "ours_val_loss", "authors_val_loss", "val_ratio", "compares"]
STAND_IN_NOTE = "ordering only: GENERATED stand-in data, the authors' curves are on the genuine file"


@dataclass
class ReferenceRow:
    """The authors' curves of one Figure 2 row, by method (epoch, train_loss, val_loss)."""
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    note: str = ""          # said in the panel titles, e.g. that only the ordering compares


def _authors() -> tuple[pd.DataFrame, pd.DataFrame]:
    from kfac_bench.reference import load_authors_curves, load_authors_hyperparameters
    return load_authors_curves(), load_authors_hyperparameters()


def compares(dataset: str, source: str | None, setting: str | None, authors_batch: int | None = None) -> str:
    """What a comparison of this problem's curves with the authors' can say."""
    if source == "generated":
        return STAND_IN_NOTE
    items = json.loads(setting) if setting else {}
    caveats = []
    if source != "genuine":
        caveats.append("data source unknown")
    n_train, paper = items.get("dataset.n_train"), PAPER_SETTING.get(dataset, {}).get("n_train")
    if isinstance(n_train, (int, float)) and paper and n_train < paper:
        caveats.append(f"REDUCED: n_train {n_train} of {paper}, fewer steps per epoch")
    batch = items.get("dataset.batch_size")
    if authors_batch and isinstance(batch, (int, float)) and batch != authors_batch:
        caveats.append(f"batch size {batch}, theirs {authors_batch}")
    return "values" + (" (" + "; ".join(caveats) + ")" if caveats else "")


def figure_note(note: str) -> str:
    """The short form of :func:`compares` for a panel title."""
    if note == STAND_IN_NOTE:
        return "genuine data: only the ordering compares"
    return "" if note == "values" else "caveats in summary.md"


def _authors_batch(hyper: pd.DataFrame, dataset: str, method: str) -> int | None:
    row = hyper[(hyper["dataset"] == dataset) & (hyper["method"] == method)]
    return int(row["batch_size"].iloc[0]) if len(row) and "batch_size" in row else None


def reference_row(dataset: str, methods, last_epoch: float, note: str = "") -> ReferenceRow:
    """The authors' curves of ``methods`` on ``dataset`` up to ``last_epoch`` (the harness's last)."""
    curves, _ = _authors()
    part = curves[(curves["dataset"] == dataset) & (curves["epoch"] <= last_epoch)]
    return ReferenceRow({m: g.sort_values("epoch").reset_index(drop=True)
                         for m, g in part.groupby("method") if m in set(methods)}, note)


def matched_epoch_table(table: pd.DataFrame, curves: dict[tuple[str, str], pd.DataFrame],
                        epochs=MATCH_EPOCHS) -> pd.DataFrame:
    """One row per (problem, method, epoch in ``epochs``) where both the best configuration's
    mean curve (``curves`` of :func:`kfac_bench.report.tables.summary_table`) and the authors' curve
    have that epoch. ``table``: the summary rows (problem, dataset_source, setting)."""
    authors, hyper = _authors()
    rows = []
    for _, r in table.iterrows():
        ours = curves.get((r["setting"], r["method"]))
        theirs = authors[(authors["dataset"] == r["dataset"]) & (authors["method"] == r["method"])]
        if ours is None or ours.empty or theirs.empty:
            continue
        note = compares(r["dataset"], r["dataset_source"], r["setting"], _authors_batch(hyper, r["dataset"], r["method"]))
        ours = ours.set_index(ours["epoch"].astype(int))
        theirs = theirs.set_index(theirs["epoch"].astype(int))
        for epoch in epochs:
            if epoch not in ours.index or epoch not in theirs.index:
                continue
            row = {"dataset": r["dataset"], "problem": r["problem"], "dataset_source": r["dataset_source"],
                   "method": r["method"], "method_label": method_label(r["method"]), "epoch": epoch,
                   "compares": note}
            for (our_col, their_col, _), name in zip(QUANTITIES, ("train", "val")):
                mine = float(ours.at[epoch, our_col]) if our_col in ours else math.nan
                other = float(theirs.at[epoch, their_col])
                row[f"ours_{'train_loss_running' if name == 'train' else 'val_loss'}"] = mine
                row[f"authors_{their_col}"] = other
                row[f"{name}_ratio"] = mine / other if other and math.isfinite(mine) else math.nan
            rows.append(row)
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if not out.empty:
        out = out.assign(_d=out["dataset"].map(dataset_rank), _m=out["method"].map(method_rank))
        out = out.sort_values(["_d", "problem", "_m", "epoch"]).drop(columns=["_d", "_m"]).reset_index(drop=True)
    return out


def _cell(ours: float, theirs: float, ratio: float) -> str:
    if not math.isfinite(ours):
        return f"– / {theirs:.4g}"
    return f"{ours:.4g} / {theirs:.4g} ({ratio:.2f})"


def comparison_markdown(comparison: pd.DataFrame, headings: dict[str, str], settings: dict[str, str]) -> str:
    """The matched-epoch tables of summary.md: per problem and quantity, a row per method and a
    column per epoch, each cell ``ours / theirs (ours/theirs)``. ``settings``: problem -> setting key
    (for ``headings``)."""
    from kfac_bench.reference import load_provenance
    commit = load_provenance().get("commit", "?")[:7]
    lines = ["# Ours vs the authors' published curves (matched epochs)", "",
             f"The authors' curves: `Abdoulaye-Koroko/natural-gradients` at {commit}, their result files "
             f"(kfac_bench/reference/), genuine data, the paper's problem sizes, 200 epochs. Cells: ours / theirs "
             f"(ratio ours/theirs) at each epoch both have; ours is the best configuration's mean over its seeds. "
             f"Training loss = mean of the epoch's mini-batch losses (our `train_loss_running`); validation loss "
             f"at the end of the epoch. Their wall times (A100) are not compared.", ""]
    if comparison.empty:
        return "\n".join(lines + ["No (problem, method) of this report has an authors' curve at a matched epoch.", ""])
    for problem, group in comparison.groupby("problem", sort=False):
        heading = headings.get(settings.get(problem), problem)
        notes = list(dict.fromkeys(group["compares"]))
        lines += [f"## {heading}", ""]
        lines += [f"**Compares: {n}**" if n != "values" else "Compares: values" for n in notes] + [""]
        epochs = sorted(set(group["epoch"]))
        for our_col, their_col, ratio, title in (("ours_train_loss_running", "authors_train_loss", "train_ratio",
                                                  QUANTITIES[0][2]),
                                                 ("ours_val_loss", "authors_val_loss", "val_ratio", QUANTITIES[1][2])):
            lines += [f"{title[0].upper()}{title[1:]}:", ""]
            rows = []
            for method, m in group.groupby("method", sort=False):
                by_epoch = m.set_index("epoch")
                rows.append([method_label(method)] + [
                    _cell(by_epoch.at[e, our_col], by_epoch.at[e, their_col], by_epoch.at[e, ratio])
                    if e in by_epoch.index else "–" for e in epochs])
            lines += [markdown_table(["Method", *(f"epoch {e}" for e in epochs)], rows, right_from=1), ""]
    return "\n".join(lines)
