"""Figure 2 of the paper: optimization performance of the methods at their best configuration.

Per problem (a row of four panels, as in the paper): training loss vs epoch, training loss vs time,
validation loss vs epoch, validation loss vs time. One line per method; where the best
configuration has several seeds, the line is the mean over seeds and the band spans their minimum
and maximum (the time axis is the mean cumulative training time, evaluation excluded). Epoch 0 is
the initial network; its loss is the same for every method and far above the rest, so the y axis
stops a little above the highest loss after the first epoch (the lines start off the top), which
keeps the differences between the methods readable. The y axes are logarithmic.

Plots go through matplotlib's object API (``Figure`` + Agg canvas): no pyplot state, no display.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import method_label, method_rank, wrap_title

COLORS = {"sgd": "#7f7f7f", "adam": "#bcbd22", "kfac": "#1f77b4", "kpsvd": "#2ca02c", "deflation": "#d62728",
          "lanczos": "#9467bd", "kfac_corrected": "#ff7f0e"}
STYLES = {"sgd": ":", "adam": ":", "kfac": "--"}
PANELS = [("epoch", "train", "training loss vs epoch"), ("time_mean", "train", "training loss vs time"),
          ("epoch", "val", "validation loss vs epoch"), ("time_mean", "val", "validation loss vs time")]


def _fit_y(ax, curves: dict[str, pd.DataFrame], which: str, logy: bool) -> None:
    """y range of the losses after epoch 0 (band included); epoch 0 may run off the top."""
    import numpy as np
    values = [c.loc[c["epoch"] >= 1, col].to_numpy(float) for c in curves.values() if not c.empty
              for col in (f"{which}_mean", f"{which}_min", f"{which}_max") if col in c]
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


def _draw_row(axes, curves: dict[str, pd.DataFrame], logy: bool) -> None:
    for ax, (xcol, which, title) in zip(axes, PANELS):
        for method in sorted(curves, key=method_rank):
            curve = curves[method]
            if curve.empty:
                continue
            n = int(curve["n_seeds"].min())
            label = method_label(method) + (f" ({n} seeds)" if n > 1 else "")
            color = COLORS.get(method)
            ax.plot(curve[xcol], curve[f"{which}_mean"], STYLES.get(method, "-"), color=color, lw=1.5, label=label)
            if n > 1:
                ax.fill_between(curve[xcol], curve[f"{which}_min"], curve[f"{which}_max"], color=color,
                                alpha=0.2, lw=0)
        _fit_y(ax, curves, which, logy)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch" if xcol == "epoch" else "training time (s)", fontsize=8)
        ax.set_ylabel(f"{'training' if which == 'train' else 'validation'} loss", fontsize=8)
        if logy:
            ax.set_yscale("log")
        ax.tick_params(which="both", labelsize=7)
        ax.grid(True, which="both", alpha=0.25, lw=0.5)


def plot_figure2(rows: list[tuple[str, dict[str, pd.DataFrame]]], out_stem: str | Path, title: str,
                 formats=("png", "pdf"), dpi: int = 150, logy: bool = True) -> list[Path]:
    """``rows``: ``(heading, {method: mean curve})`` per problem (see
    :func:`kfac_bench.report.tables.mean_curve`). Writes ``out_stem.<fmt>`` and returns the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    n = max(len(rows), 1)
    title = wrap_title(title, 150)
    row_h, bottom_h = 3.0, 0.45                # inches: one row of panels, the x labels
    top_h = 0.62 + 0.22 * (title.count("\n") + 1)   # the (wrapped) title above the row heading
    height = n * (row_h + 0.55) + top_h + bottom_h
    fig = Figure(figsize=(17, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 4, squeeze=False)
    fig.subplots_adjust(left=0.045, right=0.99, top=1 - top_h / height, bottom=bottom_h / height,
                        wspace=0.22, hspace=0.55 / row_h + 0.25)
    for r, (heading, curves) in enumerate(rows):
        _draw_row(axes[r], curves, logy)
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
        if handles:
            axes[r, -1].legend(handles, labels, fontsize=7, loc="upper right", framealpha=0.8)
    fig.suptitle(title, fontsize=11, fontweight="bold", y=1 - 0.12 / height, va="top")
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_stem.with_name(f"{out_stem.name}.{fmt}")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
