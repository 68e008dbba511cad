"""`kfac-bench bench` on tiny random problems: the table's columns, its files, its validation.
Speed is never asserted (timings only have to exist and be finite)."""
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

import warm_process

from kfac_bench.studies import bench
from kfac_bench.studies.bench_method import BenchedMethod, median_ci
from kfac_bench.studies.bench_common import input_size, optimizer_config
from kfac_bench.studies.bench import COLUMNS, LAYER_COLUMNS, run_bench

REPO = Path(__file__).resolve().parents[1]
METHODS = ["sgd", "adam", "kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected", "ekfac"]
KRON = METHODS[2:]
TINY = [
    {"name": "tiny_bce", "layers": [12, 8, 3, 8, 12], "batch_size": 16, "likelihood": "bernoulli"},
    {"name": "tiny_mse", "layers": [10, 6, 10], "batch_size": 8, "likelihood": "gaussian"},
]


def tiny_cfg(**bench_options):
    options = {"datasets": TINY, "methods": METHODS, "steps": 2, "rounds": 2, "update_rounds": 2,
               "n_batches": 2, "product_target_ms": 0.5}
    options.update(bench_options)
    return {"seed": 0, "device": "cpu", "bench": options}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return run_bench(tiny_cfg(), out), out


def test_table_has_one_row_per_dataset_and_method(tiny_run):
    df, _ = tiny_run
    assert list(df.columns) == COLUMNS
    assert list(zip(df["dataset"], df["method"])) == [(d["name"], m) for d in TINY for m in METHODS]
    assert (df["batch_size"] == [d["batch_size"] for d in TINY for _ in METHODS]).all()
    assert (df["data"] == "random U[0,1]").all()
    assert (df["device"] == "cpu").all()


def test_every_measured_column_is_filled(tiny_run):
    df, _ = tiny_run
    for col in ("step_ms", "ratio_sgd", "regular_step_ms"):
        assert (df[col] > 0).all() and df[col].map(math.isfinite).all(), col
    assert (df.loc[df["method"] == "sgd", "ratio_sgd"] == 1.0).all()
    kron = df[df["method"].isin(KRON)]
    for col in ("update_step_ms", "stats_ms", "factors_ms", "factors_first_ms", "factors_warm_refit_ms",
                "factors_cold_ms", "inverse_ms", "curvature_amortised_ms", "curvature_share",
                "precondition_ms", "solve_ms", "bare_ms", "floor_ratio"):
        assert (kron[col] > 0).all() and kron[col].map(math.isfinite).all(), col
    # 2 rounds start with an update: the first (cold) one and one steady-state one inside the step
    assert (kron["update_steps"] == 2).all() and (kron["timed_steps"] == 4).all()
    assert (kron["factors_source"] == "step").all()
    # KFAC and EKFAC have no iterative solver; the SVD-based methods report operator applications
    no_solver = kron["method"].isin(["kfac", "ekfac"])
    assert (kron.loc[no_solver, "iters"] == 0).all()
    assert (kron.loc[~no_solver, "iters_cold"] > 0).all()
    first_order = df[df["method"].isin(["sgd", "adam"])]
    assert first_order["floor_ratio"].isna().all() and first_order["floor_ok"].isna().all()
    assert kron["floor_ok"].map(lambda v: isinstance(v, bool)).all()
    assert kron["curvature_ok"].map(lambda v: isinstance(v, bool)).all()
    lz = df[df["method"] == "lanczos"]
    assert lz["lanczos_vs_deflation"].map(math.isfinite).all()
    assert (lz["lanczos_vs_deflation_lo"] <= lz["lanczos_vs_deflation"]).all()
    assert (lz["lanczos_vs_deflation"] <= lz["lanczos_vs_deflation_hi"]).all()
    assert lz["lanczos_ok"].map(lambda v: isinstance(v, bool)).all()
    assert df.loc[df["method"] != "lanczos", "lanczos_ok"].isna().all()
    assert df["failure"].isna().all()


def test_files_are_written(tiny_run):
    df, out = tiny_run
    csv = pd.read_csv(out / "bench.csv")
    assert list(csv.columns) == COLUMNS and len(csv) == len(df)
    layers = pd.read_csv(out / "bench_layers.csv")
    assert list(layers.columns) == LAYER_COLUMNS
    n_layers = sum(len(d["layers"]) - 1 for d in TINY)
    assert len(layers) == n_layers * len(KRON)
    assert set(layers["method"]) == set(KRON)
    assert (layers["bare_ms"] > 0).all() and (layers["inverse_ms"] > 0).all()
    assert set(layers.loc[layers["rank"] == 2, "method"]) == {"deflation", "lanczos", "kfac_corrected"}
    md = (out / "bench.md").read_text()
    assert md.startswith("# kfac-bench bench")
    for heading in ("## Summary", "## Targets", "## All columns", "## Per layer"):
        assert heading in md
    for d in TINY:
        for m in METHODS:
            assert f"| {d['name']} | {m} |" in md
    assert "random U[0,1]" in md
    assert (out / "bench.json").is_file()


def test_bench_uses_no_private_attribute_of_an_optimizer():
    """The bench talks to optimizers through their public interface: no ``._name`` read on an
    optimizer, its blocks or its approximation, and no method replaced or counter moved."""
    import re
    source = "".join(p.read_text() for p in (REPO / "kfac_bench" / "studies").glob("bench*.py"))
    assert not re.findall(r"\bopt\w*\._\w+", source)
    assert not re.findall(r"\.(?:method|blocks?|inverse)\._\w+", source)
    assert not re.search(r"\.steps\s*\+?=", source)
    assert not re.search(r"\.fit\s*=|damped_inverse\s*=", source)


def test_timing_callbacks_are_removed_after_the_run(tmp_path):
    from kfac_bench.optim.kronecker_optimizer import PhaseTimer
    seen = []
    real_init = PhaseTimer.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen.append(self)
    PhaseTimer.__init__ = spy
    try:
        run_bench(tiny_cfg(datasets=TINY[1:], methods=["kfac", "lanczos_k"], rounds=1, update_rounds=1,
                           refit=False), tmp_path)
    finally:
        PhaseTimer.__init__ = real_init
    assert seen and all(not timer.callbacks for timer in seen)


def test_a_method_that_fails_leaves_the_bench_and_the_others_are_timed(tmp_path, monkeypatch):
    """pytorch-optimizer's Shampoo fails on MNIST in a float32 SVD: its row says why, the others keep their
    timings; SGD's failure stops the bench (nothing to pair the others with)."""
    import torch
    real_step = BenchedMethod.step

    def step(self, x, sync, slot, failing="kpsvd"):
        if self.name == failing and slot[0] == 1:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_step(self, x, sync, slot)
    monkeypatch.setattr(BenchedMethod, "step", step)
    cfg = tiny_cfg(datasets=TINY[1:], methods=["kfac", "kpsvd", "lanczos"], rounds=2, update_rounds=1)
    df = run_bench(cfg, tmp_path).set_index("method")
    assert df.loc["kpsvd", "failure"] == "LinAlgError: linalg.svd: The algorithm failed to converge"
    assert math.isnan(df.loc["kpsvd", "step_ms"]) and pd.isna(df.loc["kpsvd", "floor_ok"])
    for method in ("sgd", "kfac", "lanczos"):
        assert pd.isna(df.loc[method, "failure"]) and df.loc[method, "step_ms"] > 0, method
    assert df.loc["lanczos", "timed_steps"] == 4          # both rounds, though kpsvd left in the second
    assert "- tiny_mse/kpsvd: FAILED, not timed: LinAlgError" in (tmp_path / "bench.md").read_text()
    monkeypatch.setattr(BenchedMethod, "step", lambda self, x, sync, slot: step(self, x, sync, slot, "sgd"))
    with pytest.raises(torch.linalg.LinAlgError):
        run_bench(cfg, tmp_path / "baseline")


def test_variable_rank_method_is_timed_at_every_requested_rank(tmp_path):
    df = run_bench(tiny_cfg(datasets=TINY[:1], methods=["kfac", "lanczos", "lanczos_k"], ranks=[1, 2, 3],
                            rounds=1, update_rounds=1, refit=False), tmp_path)
    assert list(zip(df["method"], df["rank"].fillna(0).astype(int))) == [
        ("sgd", 0), ("kfac", 1), ("lanczos", 2), ("lanczos_k", 1), ("lanczos_k", 2), ("lanczos_k", 3)]
    kron = df[df["method"] != "sgd"]
    for col in ("step_ms", "ratio_kfac", "solve_ms", "bare_ms", "inverse_ms"):
        assert (kron[col] > 0).all() and kron[col].map(math.isfinite).all(), col
    assert float(df.loc[df["method"] == "kfac", "ratio_kfac"].iloc[0]) == 1.0
    layers = pd.read_csv(tmp_path / "bench_layers.csv")
    assert set(layers.loc[layers["method"] == "lanczos_k", "rank"]) == {1, 2, 3}


CONV = {"name": "tiny_conv", "model": {"kind": "conv_autoencoder", "image_shape": [1, 8, 8], "channels": [2, 3],
                                       "kernel_size": 3}, "batch_size": 8, "likelihood": "bernoulli"}
TREATMENTS = ["independent", "reduce", "exact", "banded"]


def test_a_cnn_is_benched_under_every_treatment_with_its_cost_ratios(tmp_path):
    """Issue 32: the bench on a convolutional auto-encoder (Conv2d, ConvTranspose2d and its bias block),
    every curvature method once per treatment of positions, each with its costs over independent's."""
    methods = ["kfac", "lanczos", "kfac_corrected"]
    df = run_bench(tiny_cfg(datasets=[CONV], methods=methods, spatial=TREATMENTS, rounds=2, update_rounds=2,
                            refit=False), tmp_path)
    assert list(zip(df["method"], df["spatial"].fillna("-"))) == [("sgd", "-")] + [
        (m, t) for m in methods for t in TREATMENTS]
    kron = df[df["method"] != "sgd"]
    for col in ("step_ms", "stats_ms", "factors_ms", "inverse_ms", "bare_ms", "solve_ms", "floor_ratio",
                "stats_vs_independent", "stats_factors_vs_independent", "curvature_vs_independent",
                "step_vs_independent", "ratio_kfac"):
        assert (kron[col] > 0).all() and kron[col].map(math.isfinite).all(), col
    independent = kron[kron["spatial"] == "independent"]
    assert (independent["stats_vs_independent"] == 1.0).all() and (independent["step_vs_independent"] == 1.0).all()
    assert df.loc[df["method"] == "sgd", "stats_vs_independent"].isna().all()
    assert (kron.loc[kron["method"] == "kfac", "ratio_kfac"] == 1.0).all()   # KFAC under the same treatment
    layers = pd.read_csv(tmp_path / "bench_layers.csv")
    assert list(layers.columns) == LAYER_COLUMNS
    # per method and treatment: 2 Conv2d blocks, 2 ConvTranspose2d weight blocks and their 2 bias blocks
    one = layers[(layers["method"] == "kfac") & (layers["spatial"] == "exact")]
    assert list(one["capture"]) == ["conv2d", "conv2d", "conv_transpose2d", "conv_transpose2d_bias",
                                    "conv_transpose2d", "conv_transpose2d_bias"]
    assert list(zip(one["d_g"], one["d_a"])) == [(2, 10), (3, 19), (3, 18), (2, 1), (2, 9), (1, 1)]
    assert (layers["bare_ms"] > 0).all() and (layers["solve_ms"] > 0).all()
    md = (tmp_path / "bench.md").read_text()
    assert "stats_vs_independent" in md and "| tiny_conv | lanczos | 2 | exact |" in md


def test_the_treatments_are_ignored_without_a_weight_sharing_layer(tmp_path):
    df = run_bench(tiny_cfg(datasets=TINY[1:], methods=["kfac"], spatial=["independent", "exact"], rounds=1,
                            update_rounds=1, refit=False), tmp_path)
    assert list(df["method"]) == ["sgd", "kfac"] and df["spatial"].isna().all()


def test_sgd_baseline_is_added(tmp_path):
    cfg = tiny_cfg(datasets=TINY[1:], methods=["kfac"], rounds=1, update_rounds=1, refit=False)
    df = run_bench(cfg, tmp_path)
    assert list(df["method"]) == ["sgd", "kfac"]
    # without refit and without a steady-state update the factors come from the first update
    assert df.loc[1, "factors_source"] == "first"


@pytest.mark.parametrize("options,match", [
    ({"methods": ["sgd", "newton"]}, "unknown method"),
    ({"datasets": ["cifar"]}, "unknown dataset"),
    ({"steps": 1}, "bench.steps"),
    ({"rounds": 1, "update_rounds": 2}, "update_rounds"),
    ({"data": "imagenet"}, "bench.data"),
    ({"threads": 0}, "bench.threads"),
    ({"datasets": [{"name": "x", "layers": [4, 4]}]}, "inline dataset"),
    ({"spatial": ["independent", "diagonal"]}, "bench.spatial"),
    ({"spatial": ["exact", "exact"]}, "bench.spatial"),
])
def test_invalid_settings_are_rejected(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        run_bench(tiny_cfg(**options), tmp_path)


def test_optimizer_config_comes_from_conf_with_the_bench_settings():
    settings = bench._bench_settings(tiny_cfg(T1=7, T2=9, lr=0.5, damping=0.25))
    kfac = optimizer_config("lanczos", settings)
    assert kfac["name"] == "lanczos" and kfac["lr"] == 0.5 and kfac["damping"] == 0.25
    assert kfac["T1"] == 7 and kfac["T2"] == 9
    assert kfac["kl_clip"] == pytest.approx(1e-2)  # KL clipping stays active, as in training
    assert "tuned" not in kfac
    adam = optimizer_config("adam", settings)
    assert adam["lr"] == 0.5 and "damping" not in adam
    over = bench._bench_settings(tiny_cfg(optimizer_overrides={"lanczos": {"krylov_dim": 4}}))
    assert optimizer_config("lanczos", over)["krylov_dim"] == 4


def test_median_interval_is_seeded_and_brackets_the_median():
    xs = [1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.3]
    lo, hi = median_ci(xs, seed=3)
    assert (lo, hi) == median_ci(xs, seed=3)
    assert lo <= 1.05 <= hi and min(xs) <= lo and hi <= max(xs)
    assert all(math.isnan(v) for v in median_ci([1.0]))


def test_dataset_names_load_the_paper_batch_sizes():
    assert bench._dataset_config("curves")["batch_size"] == 256
    assert bench._dataset_config("mnist")["batch_size"] == 512
    assert bench._dataset_config("faces")["batch_size"] == 1024
    assert bench._dataset_config("mnist_conv")["batch_size"] == 512
    assert input_size(bench._dataset_config("mnist_conv")) == 784 == input_size(bench._dataset_config("mnist"))
    assert optimizer_config("kfac", bench._bench_settings(tiny_cfg()), spatial="exact")["spatial"] == "exact"
    assert "spatial" not in optimizer_config("sgd", bench._bench_settings(tiny_cfg()), spatial="exact")


@pytest.mark.slow
def test_cli_writes_the_table_into_the_run_folder(tmp_path):
    out = tmp_path / "run"
    dataset = "{name:tiny,layers:[10,6,10],batch_size:8,likelihood:bernoulli}"
    cmd = [sys.executable, "-m", "kfac_bench.cli", "bench", f"bench.datasets=[{dataset}]",
           "bench.methods=[sgd,kfac,lanczos]", "bench.steps=2", "bench.rounds=1", "bench.update_rounds=1",
           "bench.product_target_ms=0.5", "device=cpu", f"hydra.run.dir={out}"]
    proc = warm_process.run("kfac-bench", *cmd[3:], cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| tiny | lanczos |" in proc.stdout
    for name in ("bench.csv", "bench.md", "bench_layers.csv", "bench.json"):
        assert (out / name).is_file(), name
    assert list(pd.read_csv(out / "bench.csv")["method"]) == ["sgd", "kfac", "lanczos"]


def test_cli_rejects_bad_settings_with_exit_code_2(tmp_path):
    cmd = [sys.executable, "-m", "kfac_bench.cli", "bench", "bench.methods=[newton]", "device=cpu",
           f"hydra.run.dir={tmp_path}"]
    proc = warm_process.run("kfac-bench", *cmd[3:], cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert "unknown method" in proc.stderr
