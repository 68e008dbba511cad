"""Figure 1 (paper section 4.1): Error 1 and Error 2 of each approximation against the training
iteration, one line per method, one row of two panels per layer -- per layer and spatial treatment
when the table has a ``spatial`` column (a convolution's methods fitted under ``independent`` and
``exact``, each measured against the exact block; a Linear layer's ``none`` adds nothing to its title).

Drawn with matplotlib's object API (``Figure`` + Agg canvas): no pyplot state, no backend switch,
safe inside a training process or a report run. Axes are linear as in the paper unless the methods
differ by more than ``AUTO_LOG_RATIO`` (largest value over the smallest method median), where a
linear axis would flatten every line but KFAC's onto zero: then every axis of the figure is
logarithmic (say ``logy=False`` to force linear). ``ymax`` clips a linear axis (the paper shows MNIST on ``[0, 1]``,
cutting KFAC's peaks).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..registry import METHODS, get_method, method_label
from .figures import save_figure
from .tables import wrap_title

METHOD_STYLE = {  # order, label (the registry's), colour, marker, line style (Lanczos dashed: it sits on Deflation)
    name: (get_method(name).label, colour, marker, line) for name, colour, marker, line in (
        ("kfac", "tab:red", "o", "-"),
        ("kpsvd", "tab:blue", "s", "-"),
        ("deflation", "tab:green", "^", "-"),
        ("lanczos", "tab:purple", "v", "--"),
        ("kfac_corrected", "tab:orange", "D", "-"),
    )
}


def method_style(name: str) -> tuple:
    """(label, colour, marker, line style): the table's, else the registry entry's colour and marker
    (a method added to the registry brings its own), else matplotlib's next colour."""
    if name in METHOD_STYLE:
        return METHOD_STYLE[name]
    entry = METHODS.get(name)
    return (method_label(name), entry.colour if entry else None, entry.marker if entry else ".", "-")


PANELS = [
    ("error_frobenius", "Error 1", r"$\|F-\hat F\|_F \,/\, \|F\|_F$"),
    ("error_spectrum", "Error 2", r"$\|\mathrm{spec}(F)-\mathrm{spec}(\hat F)\|_2 \,/\, \|\mathrm{spec}(F)\|_2$"),
]
REQUIRED = ["iteration", "layer", "method", "error_frobenius", "error_spectrum"]
AUTO_LOG_RATIO = 30.0
NO_SPATIAL = ("none", "nan", "")   # a spatial value that names no treatment (a Linear layer's)


def _panel_rows(df: pd.DataFrame) -> list[tuple[object, str | None, pd.DataFrame]]:
    """``(layer, treatment or None, rows)`` per row of panels: layers sorted, treatments in table order."""
    layers = sorted(df["layer"].unique(), key=lambda v: (str(type(v)), v))
    out = []
    for layer in layers:
        sub = df[df["layer"] == layer]
        if "spatial" not in sub.columns:
            out.append((layer, None, sub))
            continue
        spatial = sub["spatial"].astype(str)
        for treatment in dict.fromkeys(spatial):
            out.append((layer, None if treatment in NO_SPATIAL else treatment, sub[spatial == treatment]))
    return out


def _wants_log(series: list[pd.Series]) -> bool:
    medians = [float(v[v > 0].median()) for v in series if (v > 0).any()]
    if not medians:
        return False
    top = max(float(v.max()) for v in series if v.notna().any())
    return top / min(medians) > AUTO_LOG_RATIO


def _methods(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["method"].astype(str)))
    known = [m for m in METHOD_STYLE if m in present]
    return known + [m for m in present if m not in METHOD_STYLE]


def plot_figure1(df: pd.DataFrame, out_stem: str | Path, title: str, *, logy: bool | None = None,
                 ymax: float | None = None, formats: tuple[str, ...] = ("png", "pdf"),
                 dpi: int = 150) -> list[Path]:
    """Draw Figure 1 from a ``fisher_errors.csv`` table (at least the columns ``iteration, layer,
    method, error_frobenius, error_spectrum``) into ``<out_stem>.png`` and ``<out_stem>.pdf``;
    returns the paths written. ``title`` goes on top (callers say "GENERATED STAND-IN" there when
    the data are generated). ``logy``: True, False, or None (automatic, see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"Figure 1 needs the columns {REQUIRED}; missing {missing}")
    if df.empty:
        raise ValueError("Figure 1: the table is empty")
    out_stem = Path(out_stem)
    rows = _panel_rows(df)
    methods = _methods(df)
    fig = Figure(figsize=(11, 3.8 * len(rows) + 0.6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    panels = []  # (axes, layer, key, name, ylabel, [values]) -- drawn first, scaled together after
    for row, (layer, treatment, sub) in enumerate(rows):
        for col, (key, name, ylabel) in enumerate(PANELS):
            ax = axes[row][col]
            drawn = []
            for method in methods:
                line = sub[sub["method"].astype(str) == method].sort_values("iteration")
                values = pd.to_numeric(line[key], errors="coerce")
                if line.empty or values.isna().all():
                    continue
                label, color, marker, style = method_style(method)
                ax.plot(line["iteration"], values, label=label, color=color, lw=1.3, ls=style,
                        marker=marker if len(line) <= 60 else None, ms=3)
                drawn.append(values)
            if treatment and col == 0 and "optimal_rank1" in sub.columns and sub["optimal_rank1"].notna().any():
                # a convolution's floor: the best Kronecker product of the exact block
                best = sub.drop_duplicates("iteration").sort_values("iteration")
                ax.plot(best["iteration"], best["optimal_rank1"], "k:", lw=1, label="optimum, rank 1 (exact block)")
            ax.set_title(f"{name}, layer {layer}" + (f", fitted to {treatment}" if treatment else ""))
            ax.set_xlabel("iteration")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            panels.append((ax, drawn))
        axes[row][0].legend(fontsize=8, loc="best")
    # one scale for the whole figure, so the panels compare at a glance
    log_scale = logy if logy is not None else (ymax is None and any(_wants_log(d) for _, d in panels))
    for ax, _ in panels:
        if log_scale:
            ax.set_yscale("log")
        elif ymax is not None:
            ax.set_ylim(0, ymax)
        else:
            ax.set_ylim(bottom=0)
    fig.suptitle(wrap_title(title, 110), fontsize=11)
    return save_figure(fig, out_stem, formats, dpi)
