"""Figure 2 of the paper: optimization performance of the methods at their best configuration.

Per problem (a row of four panels, as in the paper): training loss vs epoch, training loss vs time,
validation loss vs epoch, validation loss vs time. One line per method; where the best
configuration has several seeds, the line is the median over seeds and the band spans their minimum
and maximum (the time axis is the median cumulative training time, evaluation excluded). Epoch 0 is
the initial network; its loss is the same for every method and far above the rest, so the y axis
stops a little above the highest loss after the first epoch (the lines start off the top), which
keeps the differences between the methods readable. The y axes are logarithmic.

With the authors' curves (``references``, see :mod:`kfac_bench.report.reference`) a row gets a
fifth panel first, the epoch mean of the mini-batch training losses (``train_loss_running``: what
the authors stored as their training loss), and the panels on an epoch axis whose quantity the
authors stored (that one and the validation loss) carry their curve of each method drawn, dashed,
in the method's colour, cut to the epochs the harness ran. Our lines are then all solid, so that
dashed always means the authors'. The time panels never carry it: the authors' seconds are wall
time on their A100 with data loading and evaluation, not comparable with the harness's training
seconds.

Plots go through matplotlib's object API (``Figure`` + Agg canvas): no pyplot state, no display.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..registry import METHODS
from .figures import save_figure
from .tables import method_label, method_rank, wrap_title

# One colour per method compared side by side (the fair profile's thirteen: no two share one) and a line style
# per kind: the first-order baselines dotted, KFAC (the reference) dashed, the paper's other methods solid, the
# methods not in the paper dash-dotted. Lanczos rank k (never beside the other twelve) shares Lanczos' colour,
# not its style. A test checks that every registry method has its own (colour, style) pair.
COLORS = {"sgd": "#7f7f7f", "adam": "#bcbd22", "kfac": "#1f77b4", "kpsvd": "#2ca02c", "deflation": "#d62728",
          "lanczos": "#9467bd", "kfac_corrected": "#ff7f0e", "lanczos_k": "#9467bd", "ekfac": "#8c564b",
          "soap": "#e377c2", "shampoo": "#17becf", "scalable_shampoo": "#0b4f6c", "muon": "#000000",
          "kron": "#7b4173"}
STYLES = {"sgd": ":", "adam": ":", "kfac": "--", "lanczos_k": "-.", "ekfac": "-.", "soap": "-.", "shampoo": "-.",
          "scalable_shampoo": "-.", "muon": "-.", "kron": "-."}


def method_colour(name: str) -> str | None:
    """The table's colour, else the registry entry's (a method added there brings its own)."""
    entry = METHODS.get(name)
    return COLORS.get(name) or (entry.colour if entry else None)


def method_style(name: str) -> str:
    """The method's line style (:data:`STYLES`; solid for the others)."""
    return STYLES.get(name, "-")


PANELS = [("epoch", "train", "training loss vs epoch"), ("time_mean", "train", "training loss vs time"),
          ("epoch", "val", "validation loss vs epoch"), ("time_mean", "val", "validation loss vs time")]
RUNNING_PANEL = ("epoch", "running", "epoch-mean training loss vs epoch")
# our quantity in a panel -> the authors' column holding the same quantity (epoch axes only)
AUTHORS_COLUMN = {"running": "train_loss", "val": "val_loss"}
AUTHORS_STYLE = dict(ls=(0, (4, 2)), lw=1.2, alpha=0.85)
AUTHORS_SUFFIX = " (authors')"


def _fit_y(ax, curves: dict[str, pd.DataFrame], which: str, logy: bool, reference=None) -> None:
    """y range of the losses after epoch 0 (band and the authors' curves included); epoch 0 may
    run off the top."""
    import numpy as np
    values = [c.loc[c["epoch"] >= 1, col].to_numpy(float) for c in curves.values() if not c.empty
              for col in (f"{which}_mean", f"{which}_min", f"{which}_max") if col in c]
    values += [c[AUTHORS_COLUMN[which]].to_numpy(float) for c in (reference or {}).values()]
    values = np.concatenate(values) if values else np.array([])
    values = values[np.isfinite(values) & ((values > 0) if logy else True)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if logy:
        pad = (hi / lo) ** 0.06 if hi > lo else 1.05
        ax.set_ylim(lo / pad, hi * pad)
    else:
        pad = 0.06 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-12
        ax.set_ylim(lo - pad, hi + pad)


def _draw_row(axes, curves: dict[str, pd.DataFrame], logy: bool, reference=None) -> None:
    panels = [RUNNING_PANEL, *PANELS] if reference is not None else PANELS
    for ax, (xcol, which, title) in zip(axes, panels):
        for method in sorted(curves, key=method_rank):
            curve = curves[method]
            if curve.empty or f"{which}_mean" not in curve:
                continue
            n = int(curve["n_seeds"].min())
            label = method_label(method) + (f" ({n} seeds)" if n > 1 else "")
            color = method_colour(method)
            style = "-" if reference is not None else method_style(method)
            # the median over seeds (robust to one odd seed; equal to the run itself for one seed), on
            # the median cumulative time; curves of tables written before medians existed: the mean
            stat = "median" if f"{which}_median" in curve else "mean"
            x = curve["time_median"] if xcol == "time_mean" and "time_median" in curve else curve[xcol]
            ax.plot(x, curve[f"{which}_{stat}"], style, color=color, lw=1.5, label=label)
            if n > 1:
                ax.fill_between(x, curve[f"{which}_min"], curve[f"{which}_max"], color=color,
                                alpha=0.2, lw=0)
        theirs = reference.curves if reference is not None and xcol == "epoch" and which in AUTHORS_COLUMN else {}
        for method in sorted(theirs, key=method_rank):
            ax.plot(theirs[method]["epoch"], theirs[method][AUTHORS_COLUMN[which]], color=method_colour(method),
                    label=method_label(method) + AUTHORS_SUFFIX, **AUTHORS_STYLE)
        _fit_y(ax, curves, which, logy, theirs)
        if theirs:
            title += "\ndashed: authors' published" + (f" ({reference.note})" if reference.note else "")
        ax.set_title(title, fontsize=9 if not theirs else 8)
        ax.set_xlabel("epoch" if xcol == "epoch" else "training time (s)", fontsize=8)
        ax.set_ylabel({"train": "training loss", "running": "epoch-mean training loss"}.get(which, "validation loss"),
                      fontsize=8)
        if logy:
            ax.set_yscale("log")
        ax.tick_params(which="both", labelsize=7)
        ax.grid(True, which="both", alpha=0.25, lw=0.5)


def plot_figure2(rows: list[tuple[str, dict[str, pd.DataFrame]]], out_stem: str | Path, title: str,
                 formats=("png", "pdf"), dpi: int = 150, logy: bool = True, references=None) -> list[Path]:
    """``rows``: ``(heading, {method: mean curve})`` per problem (see
    :func:`kfac_bench.report.tables.mean_curve`); ``references``: None (no overlay) or, per row, a
    :class:`kfac_bench.report.reference.ReferenceRow`. Writes ``out_stem.<fmt>``, returns the paths."""
    fig = draw_figure2(rows, title, logy, references)
    return save_figure(fig, out_stem, formats, dpi)


def draw_figure2(rows: list[tuple[str, dict[str, pd.DataFrame]]], title: str, logy: bool = True,
                 references=None):
    """The :class:`matplotlib.figure.Figure` that :func:`plot_figure2` saves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    n = max(len(rows), 1)
    references = list(references) if references is not None else [None] * len(rows)
    n_panels = 5 if any(ref is not None for ref in references) else 4
    title = wrap_title(title, 150)
    row_h, bottom_h = 3.0, 0.45                # inches: one row of panels, the x labels
    top_h = 0.62 + 0.22 * (title.count("\n") + 1)   # the (wrapped) title above the row heading
    height = n * (row_h + 0.55) + top_h + bottom_h
    fig = Figure(figsize=(17 * n_panels / 4, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, n_panels, squeeze=False)
    fig.subplots_adjust(left=0.045 * 4 / n_panels, right=0.99, top=1 - top_h / height, bottom=bottom_h / height,
                        wspace=0.22, hspace=0.55 / row_h + 0.25)
    for r, ((heading, curves), reference) in enumerate(zip(rows, references)):
        if reference is None and n_panels == 5:
            axes[r, -1].set_visible(False)
        _draw_row(axes[r], curves, logy, reference)
        for ax in axes[r] if logy else ():
            lo, hi = ax.get_ylim()
            if lo > 0 and hi / lo < 20:   # less than about a decade: label a few minor ticks
                ax.yaxis.set_minor_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
                ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
            else:
                ax.yaxis.set_minor_formatter(NullFormatter())
        box = axes[r, 0].get_position()
        fig.text(0.5, box.y1 + 0.33 / height, heading, ha="center", va="bottom", fontsize=9.5)
        handles, labels = axes[r, 0].get_legend_handles_labels()
        ours = [(h, lab) for h, lab in zip(handles, labels) if not lab.endswith(AUTHORS_SUFFIX)]
        if len(ours) < len(handles):   # one entry for all the authors' lines: the colours say which
            ours.append((Line2D([], [], color="black", **AUTHORS_STYLE), "authors' published (dashed)"))
        if ours:
            legend_ax = axes[r, -1] if axes[r, -1].get_visible() else axes[r, -2]
            legend_ax.legend(*zip(*ours), fontsize=7, loc="upper right", framealpha=0.8)
    fig.suptitle(title, fontsize=11, fontweight="bold", y=1 - 0.12 / height, va="top")
    return fig
