"""The Figure 1 study end to end on a tiny generated CURVES problem: the table, the figure, the
summary, the schedule, the layer choice, and the command line."""
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

import warm_process

from kfac_bench.studies.fisher import REQUIRED_COLUMNS, evaluation_schedule, resolve_layers, run_fisher_study

ROOT = Path(__file__).resolve().parent.parent
TINY_LAYERS = [784, 40, 20, 12, 9, 6, 4, 6, 9, 12, 20, 40, 784]   # layer 5: 9 -> 6 (d_a 10, d_g 6)
METHODS = ["kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected", "ekfac"]   # fisher.methods: all


def tiny_cfg(tmp_path, **fisher):
    conf = yaml.safe_load((ROOT / "conf" / "fisher.yaml").read_text())
    dataset = yaml.safe_load((ROOT / "conf" / "dataset" / "curves.yaml").read_text())
    dataset.update(layers=TINY_LAYERS, batch_size=50, n_train=500, n_val=100)
    dataset["generator"]["n_images"] = 600
    cfg = {"seed": 0, "device": "cpu", "data_dir": str(tmp_path / "data"), "dataset": dataset,
           "fisher": {**conf["fisher"], "points": 4, **fisher}, "adam": dict(conf["adam"]),
           "trainer": {"epochs": 1, "progress": False}}
    return cfg


def test_study_writes_table_figure_and_summary(tmp_path):
    out = tmp_path / "run"
    df = run_fisher_study(tiny_cfg(tmp_path), out)
    table = pd.read_csv(out / "fisher_errors.csv")
    assert set(REQUIRED_COLUMNS) <= set(table.columns)
    for col in ("epoch", "seconds", "iterations", "sigma1", "sigma2", "metric_seconds", "error_frobenius_optimal"):
        assert col in table.columns
    assert len(table) == len(df) == 4 * len(METHODS)
    assert sorted(table["iteration"].unique()) == [1, 4, 7, 10]   # 10 iterations, 4 points spread evenly
    assert list(table["method"].unique()) == METHODS and set(table["layer"]) == {5}
    assert (table["spatial"] == "none").all()          # a Linear layer: one block, fitted and measured (fisher.layer=auto)
    assert table[["error_frobenius", "error_spectrum"]].notna().all().all()
    assert (table["m"] == 50).all() and (table["d_a"] == 10).all() and (table["d_g"] == 6).all()
    for suffix in ("png", "pdf"):
        assert (out / f"figure1.{suffix}").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset_source"] == "generated" and "GENERATED STAND-IN" in summary["figure_title"]
    assert summary["points"] == 4 and summary["median_seconds_per_point"] > 0
    assert set(summary["methods"]) == set(METHODS)
    # the paper's claim is checked among the paper's methods; EKFAC's fraction below KFAC is reported
    claim = summary["paper_claim"]["error_frobenius"]
    assert "ekfac" not in claim["best_methods"] and claim["fraction_of_points_below_kfac"]["ekfac"] == 1.0
    # the theorems hold at every point (float32 statistics, solver tolerance 1e-6)
    for _, point in table.groupby("iteration"):
        e1 = point.set_index("method")["error_frobenius"]
        e2 = point.set_index("method")["error_spectrum"]
        opt = point.set_index("method")["error_frobenius_optimal"]
        assert e1["kpsvd"] <= e1["kfac"] + 1e-4
        assert e1["deflation"] <= e1["kpsvd"] + 1e-4 and e1["lanczos"] <= e1["kpsvd"] + 1e-4
        assert e1["kfac_corrected"] <= e1["kfac"] + 1e-4
        # EKFAC in KFAC's eigenbasis of the same batch: never above KFAC (the projection identity)
        assert e1["ekfac"] <= e1["kfac"] * (1 + 1e-5)
        norms = point.set_index("method")["approx_norm"]
        assert e1["ekfac"] ** 2 == pytest.approx(1 - (norms["ekfac"] / point["fisher_norm"].iloc[0]) ** 2, abs=1e-5)
        assert math.isnan(opt["ekfac"])       # not a Kronecker sum: no Theorem 3.1 optimum
        assert (e2 <= e1 + 1e-6).all()                                      # Hoffman-Wielandt
        for m in ("kpsvd", "deflation", "lanczos"):
            assert opt[m] - 1e-6 <= e1[m] <= opt[m] + 1e-3                  # Theorem 3.1
    # SVD methods report their singular values; KFAC none
    kfac = table[table["method"] == "kfac"]
    assert kfac["sigma1"].isna().all() and (table[table["method"] == "deflation"]["sigma2"] > 0).all()


def test_period_max_points_layers_and_spectrum_limit(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, every=3, max_points=2, layer=[4, 5], spectrum_max_n=60,
                   methods=["kfac", "deflation"])
    df = run_fisher_study(cfg, out)
    assert sorted(df["iteration"].unique()) == [1, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations_trained"] == 4          # training stops after the last point
    by = df.set_index(["layer", "method", "iteration"]).sort_index()
    # layer 4: 12 -> 9, n = 117 > 60: no rank-2 spectrum there; layer 5: n = 60
    assert by.loc[(4, "deflation"), "error_spectrum"].isna().all()
    assert by.loc[(4, "kfac"), "error_spectrum"].notna().all()
    assert by.loc[(5, "deflation"), "error_spectrum"].notna().all()


def test_schedule_and_layer_choice():
    assert evaluation_schedule(10, None, 4, None) == [1, 4, 7, 10]
    assert evaluation_schedule(10, 3, None, None) == [1, 4, 7, 10]
    assert evaluation_schedule(126, None, 50, None)[:3] == [1, 4, 6] and len(evaluation_schedule(126, None, 50, None)) == 50
    assert evaluation_schedule(3, None, 50, None) == [1, 2, 3]
    assert evaluation_schedule(100, 1, None, 3) == [1, 2, 3]
    assert resolve_layers(5, 12) == [5] and resolve_layers("all", 3) == [1, 2, 3] and resolve_layers([2, 1], 3) == [1, 2]
    for bad in (0, 13, "five", 2.5, True):
        with pytest.raises(ValueError, match="fisher.layer"):
            resolve_layers(bad, 12)


@pytest.mark.parametrize("change,message", [
    ({"fisher": {"methods": ["kfac", "nope"]}}, "fisher.methods"),
    ({"fisher": {"every": 0}}, "fisher.every"),
    ({"trainer": {"epochs": 0}}, "trainer.epochs"),
    ({"fisher": {"spectrum_solver": "magic"}}, "spectrum_solver"),
])
def test_invalid_configuration_is_reported(tmp_path, change, message):
    cfg = tiny_cfg(tmp_path)
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value}
    with pytest.raises(ValueError, match=message):
        run_fisher_study(cfg, tmp_path / "run")


def test_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KFAC_BENCH_RESULTS", "KFAC_BENCH_DATA")}
    layers = "[" + ",".join(map(str, TINY_LAYERS)) + "]"
    args = ["fisher", "dataset=curves", f"dataset.layers={layers}",
            "dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100", "dataset.batch_size=100",
            "fisher.points=2", "trainer.epochs=1", "trainer.progress=false",
            f"data_dir={tmp_path / 'data'}", f"results_dir={tmp_path / 'results'}"]
    # a problem config's folder names its studies' folder, as its runs' (mnist_conv: MNIST data, another network)
    proc = warm_process.run("kfac-bench", *args, "+dataset.folder=curves_tiny", cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = list((tmp_path / "results" / "fisher" / "curves_tiny").rglob("fisher_errors.csv"))
    assert len(found) == 1 and (found[0].parent / "figure1.png").exists()
    assert "trainer.progress" not in found[0].parent.name and "dataset.batch_size=100" in found[0].parent.name
    assert "median" in proc.stdout + proc.stderr
    bad = warm_process.run("kfac-bench", *args[:2], "fisher.layer=99", f"data_dir={tmp_path / 'data'}",
                           f"results_dir={tmp_path / 'results'}", *args[2:6], cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode == 2 and "fisher.layer" in bad.stderr


def test_plot_figure1_layers_unknown_methods_nan_and_dotted_stem(tmp_path):
    from kfac_bench.report.figure1 import plot_figure1
    rows = [{"iteration": i, "layer": layer, "method": m, "error_frobenius": 0.1 * (1 + i) * (10 if m == "kfac" else 1),
             "error_spectrum": float("nan") if m == "mine" else 0.01 * (1 + i)}
            for i in range(5) for layer in (4, 5) for m in ("kfac", "deflation", "mine")]
    stem = tmp_path / "out" / "figure1_curves_adam.lr=0.001"
    paths = plot_figure1(pd.DataFrame(rows), stem, "title (GENERATED STAND-IN)")
    assert [p.name for p in paths] == ["figure1_curves_adam.lr=0.001.png", "figure1_curves_adam.lr=0.001.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="error_spectrum"):
        plot_figure1(pd.DataFrame(rows).drop(columns="error_spectrum"), stem, "t")
