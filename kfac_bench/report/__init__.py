"""``kfac-bench report``: Figures 1-2 and the summary table from a results folder; reruns nothing.

Reads every training run under ``results_dir`` (:mod:`.results`), chooses the best configuration
per problem and method by final training loss (:mod:`.tables`), and writes into ``output_dir``:

* ``figure2.{png,pdf}`` (every problem, one row each) and ``figure2_<problem>.{png,pdf}``;
* ``figure1_<dataset>.{png,pdf}`` from the fisher studies under ``results_dir/fisher`` (drawn by
  :mod:`.figure1`; skipped with a message when there are none);
* ``summary.md`` / ``summary.csv``: best hyperparameters, final losses, time, epochs and seconds to
  the common target loss, per problem and method;
* ``fair.csv`` + ``tuning.csv`` + ``performance_profile.{png,pdf}`` + a section of ``summary.md``: on
  each dataset's largest specification problem, each seed's epochs and seconds to two targets (Adam's
  final loss, the median of the best three; median, min-max over seeds), the performance profiles, and
  the trials, extensions and edge flag of each method's tuning (:mod:`.fair`, :mod:`.fair_tuning`);
* ``ablation.csv`` + ``ablation.{png,pdf}`` + a section: runs that differ only by their
  ``authors_code``, ordered from the authors' code to the specification (:mod:`.ablation`);
* ``claims.csv``, ``claims.md`` + the section "Claims of the paper": a verdict per claim of the paper from rules
  in :mod:`.claims`, on ``results_dir`` and the folders of ``claims_from``;
* ``runs.csv``: every run found, one row each, with its status (ok / diverged / failed /
  incomplete) and configuration;
* with ``authors_overlay`` (default on): the authors' published curves drawn dashed beside ours in
  Figure 2, and ``authors_comparison.csv`` plus a section of ``summary.md``: ours vs theirs at
  epochs 1, 2, 5, 10, 20, 50, 100, 200 where both exist, with ratios (:mod:`.reference`).

Titles and headings say when data is a GENERATED stand-in and when a problem is reduced from the
paper's size (fewer training examples or epochs); ``note`` adds a line of the caller's own (the
reproduction script puts its profile there).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .results import load_results, problems, runs_table
from .tables import (CSV_COLUMNS, TARGET_DEFINITION, dataset_rank, problem_heading, select_best, source_note,
                     summary_table, terminal_table, to_markdown)

__all__ = ["build_report", "load_results", "runs_table", "select_best", "summary_table"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _relative(path, root: Path):
    if not isinstance(path, str):
        return path
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def _say(message: str) -> None:
    print(f"[report] {message}", flush=True)


def _fisher_figures(results_dir: Path, out_dir: Path, note: str | None, formats, dpi) -> list[Path]:
    """Figure 1 per fisher study found under ``results_dir`` (``.../fisher/<dataset>/...``)."""
    from .results import fisher_study_files
    studies = fisher_study_files(results_dir)
    if not studies:
        _say(f"Figure 1 skipped: no fisher study under {results_dir} (run `kfac-bench fisher dataset=curves` etc.)")
        return []
    try:
        from .figure1 import plot_figure1
    except ImportError as err:
        _say(f"Figure 1 skipped: kfac_bench.report.figure1 cannot be imported ({err})")
        return []
    by_dataset: dict[str, list[tuple[Path, Path]]] = {}
    for root, path in studies:
        rel = path.parent.relative_to(root)
        by_dataset.setdefault(rel.parts[0] if rel.parts else "unknown", []).append((root, path))
    paths: list[Path] = []
    for dataset in sorted(by_dataset, key=dataset_rank):
        several_profiles = len({root for root, _ in by_dataset[dataset]}) > 1
        for root, path in by_dataset[dataset]:
            folder = path.parent
            meta = {}
            try:
                meta = json.loads((folder / "summary.json").read_text())
            except (OSError, ValueError):
                pass
            source = meta.get("dataset_source")
            if source is None and (folder / "config.yaml").exists():
                try:
                    from omegaconf import OmegaConf
                    source = OmegaConf.select(OmegaConf.load(folder / "config.yaml"), "dataset.source")
                except Exception:  # noqa: BLE001 - provenance only
                    pass
            try:
                df = pd.read_csv(path)
            except (OSError, ValueError) as err:
                _say(f"Figure 1: cannot read {path} ({err}); skipped")
                continue
            stem = f"figure1_{dataset}"
            if len(by_dataset[dataset]) > 1:   # a study of each profile (docs/runs/<profile>/fisher/) named by it
                where = folder.relative_to(root / dataset)
                stem += "_" + _slug(f"{root.parent.name}_{where}" if several_profiles else str(where))
            title = meta.get("figure_title") or f"Figure 1: {str(dataset).upper()} ({source_note(source)})"
            if source == "generated" and "GENERATED" not in title.upper():
                title += f" ({source_note(source)})"
            title += f" · {note}" if note else ""
            try:
                written = plot_figure1(df, out_dir / stem, title, formats=formats, dpi=dpi)
            except Exception as err:  # noqa: BLE001 - one bad study must not stop the report
                _say(f"Figure 1 for {folder} failed: {type(err).__name__}: {err}")
                continue
            paths += [Path(p) for p in written or []]
            _say(f"Figure 1 ({dataset}) from {path}")
            from .rank import rank_figure_for_study   # error vs Kronecker rank and cost, when measured
            paths += rank_figure_for_study(folder, out_dir / f"{stem}_rank", title, results_dir, formats=formats, dpi=dpi)
    return paths


def build_report(cfg: Mapping) -> dict:
    """Build the report described in the module docstring; returns the paths and the summary table."""
    results_dir = Path(cfg.get("results_dir") or "results")
    out_dir = Path(cfg.get("output_dir") or results_dir / "report")
    note = cfg.get("note") or None
    formats = tuple(cfg.get("formats") or ("png", "pdf"))
    dpi = int(cfg.get("dpi") or 150)
    logy = bool(cfg.get("logy", True))
    overlay = bool(cfg.get("authors_overlay", True))
    if not results_dir.is_dir():
        raise ValueError(f"results_dir={results_dir} does not exist; train first (kfac-bench run ...) or point "
                         f"results_dir=... at a results folder")
    long = load_results(results_dir, exclude=[out_dir])
    runs = runs_table(long)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure1 = _fisher_figures(results_dir, out_dir, note, formats, dpi)
    if runs.empty:
        if figure1:
            _say(f"no training runs under {results_dir}: Figure 2 and the summary table skipped")
            return {"figures": figure1, "tables": [], "summary": pd.DataFrame()}
        raise ValueError(f"no training runs (summary.json / metrics.csv) and no fisher study under {results_dir}")

    runs.drop(columns=["setting", "config"]).to_csv(out_dir / "runs.csv", index=False)
    counts = runs["status"].value_counts().to_dict()
    _say(f"{len(runs)} runs under {results_dir}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                                               ("ok", "diverged", "failed", "incomplete")))
    probs = problems(runs)
    labels = dict(zip(probs["setting"], probs["label"]))
    selection = select_best(runs)
    table, curves = summary_table(long, runs, selection, labels)
    headings = _headings(probs, runs)
    csv_table = table[CSV_COLUMNS].copy()
    csv_table["best_run_dir"] = [_relative(p, results_dir) for p in csv_table["best_run_dir"]]
    csv_table.to_csv(out_dir / "summary.csv", index=False)
    markdown = to_markdown(table, headings, note)
    tables = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "runs.csv"]
    if overlay:
        from .reference import comparison_markdown, matched_epoch_table
        comparison = matched_epoch_table(table, curves)
        comparison.to_csv(out_dir / "authors_comparison.csv", index=False)
        settings = dict(zip(table["problem"], table["setting"]))
        markdown += "\n" + comparison_markdown(comparison, headings, settings)
        tables.append(out_dir / "authors_comparison.csv")
    extra_markdown, extra_tables, extra_figures = _verdict_sections(
        long, runs, selection, table, results_dir, out_dir, cfg, note, formats, dpi)
    markdown += extra_markdown
    tables += extra_tables
    (out_dir / "summary.md").write_text(markdown + "\n")

    figures = list(figure1) + extra_figures
    figures += _figure2_files(probs, curves, headings, runs, out_dir, note, formats, dpi, logy, overlay)
    _say_results(table, curves, tables, figures, out_dir)
    return {"figures": figures, "tables": tables, "summary": table, "output_dir": out_dir}


def _headings(probs: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """setting -> the heading of its problem (what the data is; the label when it is not the dataset)."""
    headings = {}
    for _, p in probs.iterrows():
        source = runs.loc[runs["setting"] == p["setting"], "dataset_source"].dropna()
        headings[p["setting"]] = problem_heading(p["dataset"], source.iloc[0] if len(source) else None, p["setting"])
        if p["label"] != p["dataset"]:
            headings[p["setting"]] = f"[{p['label']}] " + headings[p["setting"]]
    return headings


def _figure2_files(probs, curves: dict, headings: dict, runs: pd.DataFrame, out_dir: Path, note, formats, dpi,
                   logy: bool, overlay: bool) -> list[Path]:
    """Figure 2 per problem (``figure2_<problem>``) and every problem in one (``figure2``)."""
    from .figure2 import plot_figure2

    rows, references, figures = [], [], []
    ordered = sorted(probs.itertuples(index=False), key=lambda p: (dataset_rank(p.dataset), p.label))
    title = "Figure 2: optimization performance at the best configuration of each method" + (
        f" · {note}" if note else "")
    for p in ordered:
        problem_curves = {m: c for (s, m), c in curves.items() if s == p.setting}
        if not problem_curves:
            _say(f"{p.label}: no finished run, no Figure 2 panel")
            continue
        rows.append((headings[p.setting], problem_curves))
        references.append(_reference_row(p, problem_curves, runs) if overlay else None)
        figures += plot_figure2([rows[-1]], out_dir / f"figure2_{_slug(p.label)}", title, formats, dpi, logy,
                                references=references[-1:] if overlay else None)
    if rows:   # every problem in one figure, a row each, as in the paper
        figures += plot_figure2(rows, out_dir / "figure2", title, formats, dpi, logy,
                                references=references if overlay else None)
    return figures


def _say_results(table: pd.DataFrame, curves: dict, tables: list[Path], figures: list[Path], out_dir: Path) -> None:
    """The terminal's account: each method's best configuration, the files written, the summary table."""
    for _, r in table.iterrows():
        if r["seeds"]:
            hp = " ".join(f"{k}={r[k]:g}" for k in ("lr", "damping", "kl_clip")
                          if isinstance(r[k], (int, float)) and r[k] == r[k])
            _say(f"{r['problem']:<10} {r['method_label']:<15} best {hp}: final train {r['final_train_loss']:.6g} "
                 f"(seeds {r['seeds']}), "
                 f"{r['configs_tried']} configs, {r['runs_diverged']} diverged, {r['runs_failed']} failed")
        else:
            _say(f"{r['problem']:<10} {r['method_label']:<15} no finished run ({r['runs_diverged']} diverged, "
                 f"{r['runs_failed']} failed, {r['runs_incomplete']} incomplete)")
    _say(f"target loss: {TARGET_DEFINITION}")
    _say(f"wrote {', '.join(str(p) for p in tables)} and {len(figures)} figure files in {out_dir}")
    for line in terminal_table(table, curves):
        print(line, flush=True)
    figure2 = next((f for f in figures if f.name == "figure2.png"), None)
    if figure2 is not None:
        print(f"Figure 2: {figure2}", flush=True)


def _verdict_sections(long, runs, selection, table, results_dir: Path, out_dir: Path, cfg: Mapping, note, formats,
                      dpi) -> tuple[str, list[Path], list[Path]]:
    """The fair comparison, the ablation and the claims of the paper (summary.md sections, their CSV
    files and figures). Each part that fails says so and the report goes on."""
    markdown, tables, figures = "", [], []
    try:   # one problem per dataset at its confirmation budget: the fair table, the tuning table, the profile
        from .fair import fair_markdown, fair_table, plot_performance_profile, problem_budgets
        from .fair_tuning import tuning_markdown, tuning_table
        budgets = problem_budgets(runs)
        fair = fair_table(long, runs, selection, budgets)
        tuning = tuning_table(runs, selection, budgets)
        fair.drop(columns="setting").to_csv(out_dir / "fair.csv", index=False)
        tuning.to_csv(out_dir / "tuning.csv", index=False)
        tables += [out_dir / "fair.csv", out_dir / "tuning.csv"]
        markdown += "\n" + fair_markdown(fair, budgets) + "\n" + tuning_markdown(tuning)
        written = plot_performance_profile(fair, out_dir / "performance_profile", note, formats, dpi)
        if not written:
            _say("performance profile skipped: no problem run under the specification")
        figures += written
    except Exception as err:  # noqa: BLE001 - one part must not stop the report
        _say(f"fair comparison failed: {type(err).__name__}: {err}")
    try:
        from .ablation import ablation_markdown, ablation_table, plot_ablation
        ablation = ablation_table(long, runs)
        if not ablation.empty:
            ablation.to_csv(out_dir / "ablation.csv", index=False)
            tables.append(out_dir / "ablation.csv")
            figures += plot_ablation(ablation, out_dir / "ablation", note, formats, dpi)
        markdown += "\n" + ablation_markdown(ablation)
    except Exception as err:  # noqa: BLE001
        _say(f"ablation failed: {type(err).__name__}: {err}")
    if not cfg.get("claims", True):   # a demonstration's runs decide no claim
        return markdown, tables, figures
    try:
        from .claim_engine import ALL_PROBLEMS, claims_table
        from .claims_text import claims_markdown, claims_summary_markdown
        folders = [str(results_dir), *(str(f) for f in (cfg.get("claims_from") or []))]
        claims = claims_table(folders)
        claims.to_csv(out_dir / "claims.csv", index=False)
        tables.append(out_dir / "claims.csv")
        markdown += "\n" + claims_markdown(claims)
        # on their own too: the full table (docs/verdict/) and one row per claim (the README's block)
        (out_dir / "claims.md").write_text(claims_markdown(claims, heading="").strip() + "\n")
        (out_dir / "claims_summary.md").write_text(claims_summary_markdown(claims).strip() + "\n")
        tables += [out_dir / "claims.md", out_dir / "claims_summary.md"]
        for _, r in claims[claims["problem"] == ALL_PROBLEMS].iterrows():
            _say(f"claim {r['id']} ({r['setting']}): {r['verdict']}")
    except Exception as err:  # noqa: BLE001
        _say(f"claims table failed: {type(err).__name__}: {err}")
    return markdown, tables, figures


def _reference_row(problem, problem_curves: dict, runs: pd.DataFrame):
    """The authors' curves for one Figure 2 row (None when they have none for its dataset)."""
    from .reference import compares, figure_note, reference_row
    last = max(float(c["epoch"].max()) for c in problem_curves.values() if not c.empty)
    source = runs.loc[runs["setting"] == problem.setting, "dataset_source"].dropna()
    note = compares(problem.dataset, source.iloc[0] if len(source) else None, problem.setting)
    row = reference_row(problem.dataset, problem_curves, last, figure_note(note))
    return row if row.curves else None
