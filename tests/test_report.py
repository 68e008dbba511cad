"""`kfac-bench report`: reads every run under a results root, picks the best configuration per
(dataset, method) by final training loss (diverged / failed / incomplete runs excluded and counted,
extra seeds never change the choice), writes Figure 2, Figure 1 (when fisher studies exist) and the
summary table with the common-target columns. Synthetic run folders: no training here."""
import csv
import json
import math
import os
import pathlib
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import warm_process
import yaml

from kfac_bench.report import build_report
from kfac_bench.report.results import METRIC_COLUMNS, load_results, runs_table

EPOCHS = 4
FAST = {"formats": ["png"], "dpi": 30}   # rendering is most of a report's time; one test checks PDFs


def make_run(root: Path, dataset: str, method: str, name: str, *, status="ok", seed=0, hp=None,
             train=None, times=None, source="generated", epochs=EPOCHS, n_train=500, summary=True, config=True, batch_size=256):
    """A run folder as kfac_bench.runs.train writes it (config.yaml, metrics.csv, summary.json)."""
    hp = dict(hp or {"lr": 0.1})
    folder = root / "runs" / dataset / method / name
    folder.mkdir(parents=True)
    config = {"seed": seed, "device": "auto", "data_dir": "data", "results_dir": str(root),
              "trainer": {"epochs": epochs, "progress": False, "checkpoint": True, "resume": True},
              "dataset": {"name": dataset, "source": source, "n_train": n_train, "n_val": 100,
                          "batch_size": batch_size},
              "optimizer": {"name": method, **hp}}
    if config:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if train is not None:
        times = times or [0.5 * e for e in range(len(train))]
        with open(folder / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(METRIC_COLUMNS)
            for e, (loss, t) in enumerate(zip(train, times)):
                w.writerow([e, 2 * e, t, loss, loss + 0.01, "nan" if e == 0 else loss, 0.01])
    if summary:
        last = len(train) - 1 if train else 0
        s = {"status": status, "error": None if status == "ok" else "boom", "dataset": dataset,
             "dataset_source": source, "optimizer": method, "hyperparameters": {"name": method, **hp},
             "seed": seed, "epochs_requested": epochs, "epochs_completed": last,
             "final_train_loss": train[-1] if train else None, "final_val_loss": train[-1] + 0.01 if train else None,
             "total_time_s": times[-1] if train else None}
        (folder / "summary.json").write_text(json.dumps(s))
    return folder


def curve(start, end, n=EPOCHS + 1):
    return [start + (end - start) * i / (n - 1) for i in range(n)]


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    # SGD: lr 0.3 wins on seed 0 (0.20 < 0.21); its extra seeds are worse, and must not change the choice
    make_run(root, "curves", "sgd", "optimizer.lr=0.3", hp={"lr": 0.3}, train=curve(0.7, 0.20))
    make_run(root, "curves", "sgd", "optimizer.lr=0.3,seed=1", hp={"lr": 0.3}, seed=1, train=curve(0.7, 0.26))
    make_run(root, "curves", "sgd", "optimizer.lr=0.3,seed=2", hp={"lr": 0.3}, seed=2, train=curve(0.7, 0.24))
    make_run(root, "curves", "sgd", "optimizer.lr=0.1", hp={"lr": 0.1}, train=curve(0.7, 0.21))
    # KFAC: the diverged run had a lower loss before it blew up: it must not win; a failed run with no
    # metrics and an interrupted one (metrics, no summary) are counted
    kf = {"damping": 0.003, "kl_clip": 0.01}
    make_run(root, "curves", "kfac", "a", hp={"lr": 0.1, **kf}, train=[0.7, 0.3, 0.2, 0.15, 0.1])
    make_run(root, "curves", "kfac", "b", hp={"lr": 0.3, **kf}, status="diverged", train=[0.7, 0.05])
    make_run(root, "curves", "kfac", "c", hp={"lr": -1.0, **kf}, status="failed")
    make_run(root, "curves", "kfac", "d", hp={"lr": 0.03, **kf}, train=[0.7, 0.6], summary=False)
    make_run(root, "curves", "kfac", "e", hp={"lr": 0.01, **kf}, status="failed", config=False)  # no config.yaml
    # a method whose every run diverged
    make_run(root, "curves", "lanczos", "x", hp={"lr": 0.3, **kf}, status="diverged", train=[0.7, 0.5])
    # genuine MNIST
    make_run(root, "mnist", "adam", "default", hp={"lr": 0.001}, source="genuine", train=curve(0.4, 0.1))
    return root


def test_loads_one_table_of_every_run(results):
    long = load_results(results)
    runs = runs_table(long)
    assert len(runs) == 11
    assert set(runs["status"]) == {"ok", "diverged", "failed", "incomplete"}
    assert len(long) == 4 * 5 + 5 + 2 + 1 + 2 + 1 + 2 + 5   # rows per (run, epoch); a run without metrics: one row
    assert runs["setting"].nunique() == 2                     # the run without config.yaml joins CURVES
    assert runs["loadavg_1m_max"].isna().all()                # runs from before machine_load: none recorded
    summary_path = results / "runs" / "curves" / "kfac" / "a" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "machine_load": {"loadavg_1m_max": 3.1}}))
    runs = runs_table(load_results(results)).set_index("run")
    assert runs.loc["a", "loadavg_1m_max"] == 3.1


def test_metric_columns_match_the_trainer():
    from kfac_bench.runs.train import METRIC_COLUMNS as TRAIN_COLUMNS
    assert METRIC_COLUMNS == TRAIN_COLUMNS


def test_report_selects_counts_and_writes(results, monkeypatch):
    from kfac_bench.report import figure2
    calls = []
    original = figure2.plot_figure2
    monkeypatch.setattr(figure2, "plot_figure2", lambda rows, stem, title, *a, **k:
                        calls.append((rows, Path(stem), title)) or original(rows, stem, title, *a, **k))
    out = build_report({"results_dir": str(results), "output_dir": str(results / "report"), "note": "TEST NOTE"})
    table = out["summary"].set_index(["dataset", "method"])

    sgd = table.loc[("curves", "sgd")]
    assert sgd["lr"] == 0.3 and sgd["seeds"] == 3 and sgd["configs_tried"] == 2
    assert sgd["final_train_loss"] == pytest.approx((0.20 + 0.26 + 0.24) / 3)   # mean over the winner's seeds
    kfac = table.loc[("curves", "kfac")]
    assert kfac["lr"] == 0.1 and kfac["damping"] == 0.003 and kfac["kl_clip"] == 0.01
    assert (kfac["runs_ok"], kfac["runs_diverged"], kfac["runs_failed"], kfac["runs_incomplete"]) == (1, 1, 2, 1)
    assert kfac["final_train_loss"] == pytest.approx(0.1)
    lanczos = table.loc[("curves", "lanczos")]
    assert lanczos["seeds"] == 0 and lanczos["runs_diverged"] == 1 and math.isnan(lanczos["final_train_loss"])

    # common target = the worst of the best finals (SGD's mean); KFAC gets there at epoch 2
    target = (0.20 + 0.26 + 0.24) / 3
    assert kfac["target_loss"] == pytest.approx(target) and sgd["target_loss"] == pytest.approx(target)
    assert kfac["epochs_to_target"] == 2 and kfac["seconds_to_target"] == pytest.approx(1.0)
    assert sgd["epochs_to_target"] == EPOCHS
    assert table.loc[("mnist", "adam"), "epochs_to_target"] == EPOCHS   # alone: its own final loss

    report = results / "report"
    for name in ("summary.md", "summary.csv", "runs.csv", "figure2.png", "figure2.pdf", "figure2_curves.png",
                 "figure2_curves.pdf", "figure2_mnist.png", "figure2_mnist.pdf"):
        assert (report / name).stat().st_size > 0, name
    md = (report / "summary.md").read_text()
    assert "CURVES (GENERATED stand-in" in md and "MNIST (genuine data)" in md and "TEST NOTE" in md
    assert "REDUCED" in md and "common target" in md.lower()
    rows = list(csv.DictReader(open(report / "summary.csv")))
    assert {(r["dataset"], r["method"]) for r in rows} == {("curves", "sgd"), ("curves", "kfac"),
                                                           ("curves", "lanczos"), ("mnist", "adam")}
    assert len(list(csv.DictReader(open(report / "runs.csv")))) == 11
    # the figures say what the data is: per-problem rows and the combined one
    headings = [h for rows_, _, _ in calls for h, _ in rows_]
    assert any("CURVES (GENERATED stand-in" in h for h in headings)
    assert any("MNIST (genuine data)" in h for h in headings)
    assert all("TEST NOTE" in title for _, _, title in calls)
    combined = [c for c in calls if c[1].name == "figure2"][0]
    assert len(combined[0]) == 2   # one row per dataset
    curves = combined[0][0][1]
    assert set(curves) == {"sgd", "kfac"} and int(curves["sgd"]["n_seeds"].min()) == 3   # mean + band


def test_settings_are_separate_problems(tmp_path):
    root = tmp_path / "r"
    make_run(root, "curves", "sgd", "e4", hp={"lr": 0.3}, train=curve(0.7, 0.2))
    make_run(root, "curves", "sgd", "e2", hp={"lr": 0.3}, epochs=2, train=curve(0.7, 0.3, 3))
    out = build_report({"results_dir": str(root), **FAST})
    assert sorted(out["summary"]["problem"]) == ["curves [epochs=2]", "curves [epochs=4]"]
    assert (root / "report" / "figure2_curves_epochs_2.png").exists()


def test_figure1_is_drawn_from_fisher_studies(results, monkeypatch, capsys):
    fisher = results / "fisher" / "curves" / "default"
    fisher.mkdir(parents=True)
    (fisher / "config.yaml").write_text(yaml.safe_dump({"dataset": {"name": "curves", "source": "generated"}}))
    rows = [{"iteration": i, "layer": 5, "method": m, "error_frobenius": 0.1 * i, "error_spectrum": 0.2}
            for i in range(3) for m in ("kfac", "kpsvd")]
    with open(fisher / "fisher_errors.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    seen = []

    def plot_figure1(df, out_stem, title, formats=("png", "pdf"), dpi=150):
        seen.append((df, Path(out_stem), title))
        path = Path(out_stem).with_suffix(".png")
        path.write_bytes(b"png")
        return [path]

    fake = types.ModuleType("kfac_bench.report.figure1")
    fake.plot_figure1 = plot_figure1
    monkeypatch.setitem(sys.modules, "kfac_bench.report.figure1", fake)
    out = build_report({"results_dir": str(results), "output_dir": str(results / "report"), **FAST})
    (df, stem, title), = seen
    assert list(df.columns) == ["iteration", "layer", "method", "error_frobenius", "error_spectrum"]
    assert stem == results / "report" / "figure1_curves" and "GENERATED" in title
    assert results / "report" / "figure1_curves.png" in out["figures"]


def test_without_fisher_studies_figure1_is_skipped_with_a_message(results, capsys):
    build_report({"results_dir": str(results), **FAST})
    assert "Figure 1 skipped" in capsys.readouterr().out


def test_real_figure1_module_if_present(results):
    pytest.importorskip("kfac_bench.report.figure1")
    fisher = results / "fisher" / "curves" / "default"
    fisher.mkdir(parents=True)
    rows = [{"iteration": i, "layer": 5, "method": m, "error_frobenius": 0.1 + 0.01 * i, "error_spectrum": 0.2}
            for i in range(4) for m in ("kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected")]
    with open(fisher / "fisher_errors.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = build_report({"results_dir": str(results), **FAST})
    assert any(p.name.startswith("figure1_curves") for p in out["figures"])


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "KFAC_BENCH_RESULTS"}
    return warm_process.run("kfac-bench", "report", *args, cwd=cwd, env=env, timeout=300)


def test_cli_report_and_its_errors(results, tmp_path):
    proc = _cli(f"results_dir={results}", "note='CPU profile: reduced, 2 epochs'", "formats=[png]", "dpi=30",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (results / "report" / "figure2.png").exists()
    assert "CPU profile: reduced, 2 epochs" in (results / "report" / "summary.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli(f"results_dir={empty}", cwd=tmp_path)
    assert proc.returncode == 2 and "no training runs" in proc.stderr


# ------------------------------------------------------------------ the authors' curves (overlay)
def _authors(dataset, method):
    from kfac_bench.reference import authors_curve
    return authors_curve(dataset, method).set_index("epoch")


def test_matched_epoch_table_ratios_missing_epochs_and_stand_in(tmp_path):
    root = tmp_path / "r"
    # genuine MNIST, 5 epochs: epochs 1, 2, 5 of the table exist, 10 and beyond do not
    kfac_train = [0.7, 0.30, 0.20, 0.16, 0.14, 0.12]
    make_run(root, "mnist", "kfac", "a", hp={"lr": 0.01, "damping": 1e-4}, source="genuine", epochs=5,
             n_train=50000, batch_size=512, train=kfac_train)
    make_run(root, "mnist", "adam", "a", hp={"lr": 0.001}, source="genuine", epochs=5, n_train=50000,
             batch_size=512, train=curve(0.7, 0.1, 6))
    # generated CURVES: only the ordering compares
    make_run(root, "curves", "deflation", "a", hp={"lr": 0.1, "damping": 0.1}, source="generated", epochs=2,
             n_train=16000, train=[0.7, 0.4, 0.3])
    out = build_report({"results_dir": str(root), **FAST})
    assert root / "report" / "authors_comparison.csv" in out["tables"]
    cmp = pd.read_csv(root / "report" / "authors_comparison.csv")
    kfac = cmp[(cmp["dataset"] == "mnist") & (cmp["method"] == "kfac")].set_index("epoch")
    assert list(kfac.index) == [1, 2, 5]                          # where both exist, nothing else
    theirs = _authors("mnist", "kfac")
    for epoch in (1, 2, 5):
        ours_running, ours_val = kfac_train[epoch], kfac_train[epoch] + 0.01   # make_run: running = loss, val = +0.01
        assert kfac.at[epoch, "ours_train_loss_running"] == pytest.approx(ours_running)
        assert kfac.at[epoch, "authors_train_loss"] == pytest.approx(theirs.at[epoch, "train_loss"])
        assert kfac.at[epoch, "train_ratio"] == pytest.approx(ours_running / theirs.at[epoch, "train_loss"])
        assert kfac.at[epoch, "val_ratio"] == pytest.approx(ours_val / theirs.at[epoch, "val_loss"])
    assert set(cmp.loc[cmp["dataset"] == "mnist", "compares"]) == {"values"}
    stand_in = cmp[cmp["dataset"] == "curves"]
    assert list(stand_in["epoch"]) == [1, 2] and set(stand_in["method"]) == {"deflation"}
    assert stand_in["compares"].str.startswith("ordering only").all()
    md = (root / "report" / "summary.md").read_text()
    section = md[md.index("# Ours vs the authors'"):]
    assert "**Compares: ordering only" in section and "Compares: values" in section
    cell = f"{kfac_train[5]:.4g} / {theirs.at[5, 'train_loss']:.4g} ({kfac_train[5] / theirs.at[5, 'train_loss']:.2f})"
    assert cell in section and "epoch 10" not in section


def test_reduced_problem_is_said(tmp_path):
    from kfac_bench.report.reference import compares
    setting = json.dumps({"dataset.n_train": 5000, "dataset.batch_size": 256})
    note = compares("mnist", "genuine", setting, authors_batch=512)
    assert note.startswith("values (") and "n_train 5000 of 50000" in note and "batch size 256, theirs 512" in note


def test_figure2_draws_the_authors_curves_dashed_in_the_method_colour():
    from matplotlib.colors import to_hex
    from kfac_bench.report.figure2 import AUTHORS_SUFFIX, COLORS, draw_figure2
    from kfac_bench.report.reference import reference_row
    ours = {m: pd.DataFrame({"epoch": [0, 1, 2, 3], "n_seeds": 1, "time_mean": [0.0, 1.0, 2.0, 3.0],
                             **{f"{q}_{s}": [0.7, 0.3, 0.2, 0.15] for q in ("train", "val", "running")
                                for s in ("mean", "min", "max")}})
            for m in ("kfac", "deflation")}
    fig = draw_figure2([("MNIST (genuine data)", ours)], "Figure 2", references=[reference_row("mnist", ours, 3)])
    axes = fig.axes
    assert len(axes) == 5
    for panel, ax in enumerate(axes):
        dashed = [l for l in ax.get_lines() if l.get_label().endswith(AUTHORS_SUFFIX)]
        if panel in (0, 3):    # epoch-mean training loss and validation loss vs epoch
            assert sorted(l.get_label() for l in dashed) == ["Deflation (authors')", "KFAC (authors')"]
            for line in dashed:
                method = "kfac" if line.get_label().startswith("KFAC") else "deflation"
                theirs = _authors("mnist", method)
                assert line.get_linestyle() == "--" and to_hex(line.get_color()) == COLORS[method]
                assert list(line.get_xdata()) == [1, 2, 3]          # cut to the epochs we ran
                column = "train_loss" if panel == 0 else "val_loss"
                assert np.allclose(line.get_ydata(), theirs.loc[[1, 2, 3], column])
            ours_lines = [l for l in ax.get_lines() if l not in dashed]
            assert len(ours_lines) == 2 and all(l.get_linestyle() == "-" for l in ours_lines)
        else:                  # full-pass training loss (not their quantity) and the time axes
            assert not dashed
    legend = axes[-1].get_legend()
    assert "authors' published (dashed)" in [t.get_text() for t in legend.get_texts()]


def test_overlay_can_be_switched_off_and_is_documented_on(results):
    out = build_report({"results_dir": str(results), "authors_overlay": False, **FAST})
    assert not (results / "report" / "authors_comparison.csv").exists()
    assert "Ours vs the authors'" not in (results / "report" / "summary.md").read_text()
    assert all(p.name != "authors_comparison.csv" for p in out["tables"])
    conf = yaml.safe_load((pathlib.Path(__file__).resolve().parents[1] / "conf" / "report.yaml").read_text())
    assert conf["authors_overlay"] is True


def test_terminal_table_shows_matched_epochs_and_seconds_per_epoch():
    import pandas as pd

    from kfac_bench.report.tables import matched_epochs, terminal_table
    assert matched_epochs(20) == [5, 10, 20] and matched_epochs(2) == [1, 2]

    def curve(losses, seconds):
        return pd.DataFrame({"epoch": range(1, len(losses) + 1), "train_mean": losses,
                             "time_mean": [seconds * e for e in range(1, len(losses) + 1)]})
    table = pd.DataFrame({"setting": ["c", "c"], "problem": ["curves", "curves"], "method": ["sgd", "kfac"],
                          "method_label": ["SGD", "KFAC"]})
    curves = {("c", "sgd"): curve([0.5, 0.4, 0.3, 0.2], 1.0), ("c", "kfac"): curve([0.4, 0.2, 0.1, 0.05], 3.0)}
    lines = terminal_table(table, curves)
    assert lines[0] == "curves: training loss at epoch 1, 2, 4"
    sgd = next(line for line in lines if line.strip().startswith("SGD")).split()
    kfac = next(line for line in lines if line.strip().startswith("KFAC")).split()
    assert sgd[1:5] == ["0.50000", "0.40000", "0.20000", "1.00"] and "lowest" not in " ".join(sgd)
    assert kfac[1:5] == ["0.40000", "0.20000", "0.05000", "3.00"] and kfac[-1] == "lowest"
