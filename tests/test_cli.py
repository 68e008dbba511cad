"""The command line: a one-epoch CURVES run writes its run folder; bad input is rejected before
training with a message naming the field; a diverging run keeps its metrics."""
import csv
import json
import os
from pathlib import Path

import pytest

import warm_process

TINY = ["dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100", "trainer.progress=false"]


def kfac_bench(*args, tmp_path: Path, check=True):
    env = {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "KFAC_BENCH_RESULTS": str(tmp_path / "results")}
    proc = warm_process.run("kfac-bench", *args, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_keep_checkpoint_false_deletes_it_at_the_end_and_names_the_same_folder(tmp_path):
    kfac_bench("run", "trainer.epochs=1", "trainer.keep_checkpoint=false", *TINY, tmp_path=tmp_path)
    (run,) = (tmp_path / "results" / "runs" / "curves" / "sgd").iterdir()
    assert not (run / "checkpoint.pt").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    again = kfac_bench("run", "trainer.epochs=1", *TINY, tmp_path=tmp_path)   # the same run: skipped
    assert [run] == list((tmp_path / "results" / "runs" / "curves" / "sgd").iterdir())
    assert "already holds a finished run" in again.stdout + again.stderr


def test_one_epoch_curves_run_writes_the_run_folder(tmp_path):
    kfac_bench("run", "trainer.epochs=1", *TINY, tmp_path=tmp_path)
    runs = list((tmp_path / "results" / "runs" / "curves" / "sgd").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoint.pt"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for col in ("epoch", "iteration", "time_s", "train_loss", "val_loss"):
        assert col in rows[0]
    assert int(rows[1]["iteration"]) == 2  # 500 examples in batches of 256
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["dataset_source"] == "generated"
    assert "GENERATED STAND-IN" in summary["dataset_description"]
    for key in ("final_train_loss", "final_val_loss", "total_time_s", "device", "git_commit"):
        assert key in summary
    assert summary["final_train_loss"] == pytest.approx(float(rows[1]["train_loss"]))
    cfg = (run / "config.yaml").read_text()
    assert "source: generated" in cfg


def test_one_epoch_ekfac_run_ends_ok(tmp_path):
    """EKFAC from the command line (issue 21): its registry entry and conf/optimizer/ekfac.yaml, with
    statistics and basis refreshed at both steps (T1 = T2 = 1)."""
    proc = kfac_bench("run", "optimizer=ekfac", "dataset=curves", "trainer.epochs=1", "optimizer.T1=1",
                      "optimizer.T2=1", *TINY, tmp_path=tmp_path)
    (run,) = (tmp_path / "results" / "runs" / "curves" / "ekfac").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert summary["status"] == "ok" and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "status ok" in (proc.stdout + proc.stderr).strip().splitlines()[-1]


def test_same_seed_repeats_bit_for_bit_and_a_rerun_skips(tmp_path):
    kfac_bench("run", "trainer.epochs=1", "optimizer=kfac", *TINY, tmp_path=tmp_path)
    (run,) = (tmp_path / "results" / "runs" / "curves" / "kfac").iterdir()
    assert run.name.startswith("dataset.generator.n_images=600")  # folder = the overrides
    first = [(r["train_loss"], r["val_loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    again = kfac_bench("run", "trainer.epochs=1", "optimizer=kfac", *TINY, tmp_path=tmp_path)
    assert "skipping" in again.stdout + again.stderr
    kfac_bench("run", "trainer.epochs=1", "optimizer=kfac", "trainer.resume=false", *TINY, tmp_path=tmp_path)
    (run2,) = [p for p in (tmp_path / "results" / "runs" / "curves" / "kfac").iterdir() if p != run]
    assert "trainer.resume=false" in run2.name
    second = [(r["train_loss"], r["val_loss"]) for r in csv.DictReader(open(run2 / "metrics.csv"))]
    assert first == second


@pytest.mark.parametrize("override,field", [
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("dataset.batch_size=0", "dataset.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
])
def test_invalid_values_are_rejected_before_training(override, field, tmp_path):
    proc = kfac_bench("run", override, *TINY, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    assert field in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "results").rglob("metrics.csv"))  # nothing trained


def test_curvature_hyperparameters_are_validated_too(tmp_path):
    proc = kfac_bench("run", "optimizer=lanczos", "optimizer.damping=-1", *TINY, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "optimizer.damping" in proc.stderr


@pytest.mark.parametrize("group,bad", [("dataset", "cifar"), ("optimizer", "lbfgs")])
def test_unknown_choices_list_the_valid_ones(group, bad, tmp_path):
    proc = kfac_bench("run", f"{group}={bad}", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Available options" in text
    for valid in (["curves", "faces", "mnist"] if group == "dataset" else ["adam", "kfac", "lanczos", "sgd"]):
        assert valid in text


def test_diverging_run_is_recorded_not_raised(tmp_path):
    proc = kfac_bench("run", "trainer.epochs=3", "optimizer.lr=1e6", *TINY, tmp_path=tmp_path, check=False)
    assert "Traceback" not in proc.stderr
    run = next((tmp_path / "results" / "runs" / "curves" / "sgd").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "non-finite" in summary["error"]
    assert (run / "metrics.csv").exists()


def test_faces_runs_with_no_olivetti_setting(tmp_path):
    """A fresh machine: no KFAC_BENCH_OLIVETTI, no path -- the shipped Olivetti faces are used."""
    env_backup = os.environ.pop("KFAC_BENCH_OLIVETTI", None)
    try:
        kfac_bench("run", "dataset=faces", "dataset.generator.n_images=300", "dataset.n_train=200",
                   "dataset.n_val=50", "dataset.batch_size=100", "trainer.epochs=1", "trainer.progress=false",
                   "threads=1", tmp_path=tmp_path)
    finally:
        if env_backup is not None:
            os.environ["KFAC_BENCH_OLIVETTI"] = env_backup
    (summary,) = (tmp_path / "results" / "runs" / "faces").rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "ok"


def test_help_and_unknown_verb(tmp_path):
    assert "verbs:" in kfac_bench("--help", tmp_path=tmp_path).stdout
    assert "--version" in kfac_bench("--help", tmp_path=tmp_path).stdout
    proc = kfac_bench("frobnicate", tmp_path=tmp_path, check=False)
    assert proc.returncode == 2 and "unknown verb" in proc.stderr


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag, tmp_path):
    from importlib.metadata import version
    proc = kfac_bench(flag, tmp_path=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == f"kfac-bench {version('kfac-bench')}\n"
