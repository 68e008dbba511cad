"""Error against Kronecker rank, and against measured cost per step: the frontier the paper's
conclusion points at ("increasing the rank does improve the quality of approximation. One can go
further in this direction if there is no prohibitive extra cost").

Inputs: a ``fisher_rank_errors.csv`` of ``kfac-bench fisher`` (Error 1, Error 2 and the optimum
``sqrt(sum_{i>k} sigma_i^2) / ||F||_F`` per evaluation point, layer and rank) and, for the cost
panel, ``bench.csv`` tables of ``kfac-bench bench`` with ``lanczos_k`` rows (``bench.ranks``) on the
same dataset: the amortised step over KFAC's (``ratio_kfac``), else over SGD's (``ratio_sgd``).

Drawn with matplotlib's object API (no pyplot state), like :mod:`.figure1`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..registry import method_label
from .figures import save_figure
from .tables import wrap_title

REQUIRED = ["layer", "rank", "error_frobenius", "error_spectrum"]
RANK_METHOD = "lanczos_k"


def rank_means(rank_df: pd.DataFrame) -> pd.DataFrame:
    """Means over evaluation points per (layer, rank) of Error 1, Error 2 and the optimum."""
    missing = [c for c in REQUIRED if c not in rank_df.columns]
    if missing:
        raise ValueError(f"the error-vs-rank table needs the columns {REQUIRED}; missing {missing}")
    cols = [c for c in ("error_frobenius", "error_spectrum", "error_frobenius_optimal", "seconds")
            if c in rank_df.columns]
    return rank_df.groupby(["layer", "rank"], as_index=False)[cols].mean()


def rank_costs(bench_df: pd.DataFrame, dataset: str) -> tuple[dict[int, float], str]:
    """``{rank: cost per step}`` of ``lanczos_k`` on ``dataset`` from a bench table, and the unit
    (``"x KFAC"`` or ``"x SGD"``); empty when the table has no such rows."""
    if bench_df is None or bench_df.empty or "rank" not in bench_df.columns:
        return {}, ""
    sub = bench_df[(bench_df["method"] == RANK_METHOD) & (bench_df["dataset"] == dataset)]
    for col, unit in (("ratio_kfac", "x KFAC"), ("ratio_sgd", "x SGD")):
        if col in sub.columns and sub[col].notna().any():
            got = sub.dropna(subset=[col, "rank"])
            return {int(r): float(v) for r, v in zip(got["rank"], got[col])}, unit
    return {}, ""


def plot_error_vs_rank(rank_df: pd.DataFrame, out_stem: str | Path, title: str, *,
                       costs: dict[int, float] | None = None, cost_unit: str = "",
                       formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Error 1 (with the optimum) and Error 2 against the rank, one row per layer, plus Error 1 and
    Error 2 against the cost per step when ``costs`` (rank -> cost) is given; returns the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    means = rank_means(rank_df)
    if means.empty:
        raise ValueError("error vs rank: the table is empty")
    layers = sorted(means["layer"].unique())
    ncols = 2 if not costs else 3
    fig = Figure(figsize=(4.6 * ncols, 3.8 * len(layers) + 0.6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(layers), ncols, squeeze=False)
    for row, layer in enumerate(layers):
        sub = means[means["layer"] == layer].sort_values("rank")
        ax = axes[row][0]
        ax.plot(sub["rank"], sub["error_frobenius"], "o-", label=method_label(RANK_METHOD))
        if "error_frobenius_optimal" in sub and sub["error_frobenius_optimal"].notna().any():
            ax.plot(sub["rank"], sub["error_frobenius_optimal"], "k--", lw=1,
                    label=r"optimum $\sqrt{\sum_{i>k}\sigma_i^2}/\|F\|$")
        ax.set_title(f"Error 1, layer {layer}")
        ax.set_ylabel(r"$\|F-\hat F\|_F \,/\, \|F\|_F$")
        ax2 = axes[row][1]
        ax2.plot(sub["rank"], sub["error_spectrum"], "s-", color="tab:purple")
        ax2.set_title(f"Error 2, layer {layer}")
        ax2.set_ylabel(r"$\|\mathrm{spec}(F)-\mathrm{spec}(\hat F)\| \,/\, \|\mathrm{spec}(F)\|$")
        for a in (ax, ax2):
            a.set_xlabel("Kronecker rank k")
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
            a.set_yscale("log")
            a.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        if costs:
            ax3 = axes[row][2]
            known = sub[sub["rank"].isin(list(costs))]
            x = [costs[int(r)] for r in known["rank"]]
            ax3.plot(x, known["error_frobenius"], "o-", label="Error 1")
            ax3.plot(x, known["error_spectrum"], "s-", color="tab:purple", label="Error 2")
            for xi, yi, r in zip(x, known["error_frobenius"], known["rank"]):
                ax3.annotate(f"k={int(r)}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax3.set_xlabel(f"cost per training step ({cost_unit}, kfac-bench bench)")
            ax3.set_title(f"error vs cost, layer {layer}")
            ax3.set_yscale("log")
            ax3.grid(True, alpha=0.3)
            ax3.legend(fontsize=8)
    fig.suptitle(wrap_title(title, 110), fontsize=11)
    return save_figure(fig, out_stem, formats, dpi)


def _bench_tables(results_dir: Path) -> pd.DataFrame:
    """Every ``bench.csv`` under ``results_dir/bench`` with lanczos_k rows, the newest last."""
    root = Path(results_dir) / "bench"
    found = sorted(root.rglob("bench.csv"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    tables = []
    for path in found:
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError):
            continue
        if "rank" in df.columns and (df["method"] == RANK_METHOD).any():
            tables.append(df)
    if not tables:
        return pd.DataFrame()
    # a newer measurement of the same (dataset, rank) replaces an older one
    df = pd.concat(tables, ignore_index=True)
    return df.drop_duplicates(["dataset", "method", "rank"], keep="last")


def rank_figure_for_study(folder: Path, out_stem: Path, title: str, results_dir: Path, *,
                          formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """The error-vs-rank figure of one fisher study folder (nothing when it has no
    ``fisher_rank_errors.csv``), with the cost panel when a bench of ``lanczos_k`` on its dataset
    exists under ``results_dir/bench``."""
    path = Path(folder) / "fisher_rank_errors.csv"
    if not path.is_file():
        return []
    rank_df = pd.read_csv(path)
    if rank_df.empty:
        return []
    try:
        dataset = Path(folder).relative_to(Path(results_dir) / "fisher").parts[0]
    except ValueError:   # not a study of results_dir: no bench to pair it with
        dataset = ""
    try:
        costs, unit = rank_costs(_bench_tables(results_dir), dataset)
        written = plot_error_vs_rank(rank_df, out_stem, f"{title} -- error vs Kronecker rank", costs=costs,
                                     cost_unit=unit, formats=formats, dpi=dpi)
    except Exception as err:  # noqa: BLE001 - one bad study must not stop the report
        print(f"[report] error vs rank for {folder} failed: {type(err).__name__}: {err}", flush=True)
        return []
    print(f"[report] error vs rank ({dataset}) from {path}" + (f", costs {unit} from the bench" if costs else
                                                               ", no lanczos_k bench for the cost panel"), flush=True)
    return written


__all__ = ["plot_error_vs_rank", "rank_costs", "rank_figure_for_study", "rank_means"]
