"""K concurrent runs per device (issue 15, kfac_bench/runs/concurrency.py): the choice from free memory
and a measured scaling, the measurement itself (on CPU, tiny runs), and `--jobs auto` in the
reproduction script."""
import json
import os
from pathlib import Path

import pytest

import warm_process

from kfac_bench.runs.concurrency import GIB, choose_jobs, jobs_from_scaling, main, measure_scaling

ROOT = Path(__file__).resolve().parent.parent
# throughput that saturates at 8: 16 adds almost nothing
SCALING = {1: 60.0, 2: 118.0, 4: 220.0, 8: 300.0, 16: 305.0}


def test_jobs_from_scaling_takes_the_knee_not_the_maximum():
    assert jobs_from_scaling(SCALING, 0.05) == 8
    assert jobs_from_scaling(SCALING, 0.0) == 16
    assert jobs_from_scaling({1: 100.0, 2: 90.0}, 0.05) == 1    # concurrency that only hurts


def test_choose_jobs_is_bounded_by_memory_and_by_the_scaling():
    cfg = {"scaling": SCALING, "per_run_gib": 2.0, "headroom": 0.1}
    assert choose_jobs("cuda", cfg, free_bytes=100 * GIB) == 8             # the scaling's knee
    assert choose_jobs("cuda", cfg, free_bytes=10 * GIB) == 4              # 9 GiB usable / 2 GiB
    assert choose_jobs("cuda", cfg, free_bytes=1 * GIB) == 1               # never 0
    said = []
    assert choose_jobs("cuda", {"per_run_gib": 1.0, "default": 6}, free_bytes=100 * GIB, log=said.append) == 6
    assert "no measured scaling" in said[0]
    assert choose_jobs("cuda", {"scaling": SCALING, "max_jobs": 3}, free_bytes=100 * GIB) == 3


def test_choose_jobs_reads_a_scaling_file(tmp_path):
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps({"runs_per_hour": {str(k): v for k, v in SCALING.items()}}))
    assert choose_jobs("cuda", {"scaling": str(path)}, free_bytes=100 * GIB) == 8
    with pytest.raises(ValueError, match="does not exist"):
        choose_jobs("cuda", {"scaling": str(tmp_path / "missing.json")}, free_bytes=GIB)


def test_choose_jobs_on_a_cpu_is_one_run_per_core():
    assert choose_jobs("cpu") == (os.cpu_count() or 1)


@pytest.mark.parametrize("cfg,match", [({"per_run": 2}, "unknown key"), ({"per_run_gib": -1}, "per_run_gib"),
                                       ({"headroom": 1.5}, "headroom"), ({"default": 0}, "default"),
                                       ({"scaling": {1: -3}}, "runs per hour > 0")])
def test_bad_concurrency_settings_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        choose_jobs("cuda", cfg, free_bytes=10 * GIB)


def test_measure_scaling_runs_k_concurrent_runs(tmp_path):
    overrides = ["dataset=curves", "optimizer=sgd", "trainer.epochs=1", "device=cpu", "threads=1",
                 f"data_dir={tmp_path / 'data'}", "dataset.generator.n_images=300", "dataset.n_train=200",
                 "dataset.n_val=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = measure_scaling([1, 2], overrides, tmp_path / "scaling", env=env, log=lambda m: None)
    assert sorted(result["runs_per_hour"]) == [1, 2] and all(v > 0 for v in result["runs_per_hour"].values())
    summaries = sorted((tmp_path / "scaling").glob("k*/run*/summary.json"))
    assert len(summaries) == 3
    assert all(json.loads(p.read_text())["status"] == "ok" for p in summaries)
    with pytest.raises(RuntimeError, match="K=1: run 0: exit"):
        measure_scaling([1], ["optimizer=nonexistent", "device=cpu"], tmp_path / "bad", env=env, log=lambda m: None)


def test_cli_choose_prints_k(tmp_path, capsys):
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps({"runs_per_hour": SCALING}))
    assert main(["choose", "--device", "cpu", "--scaling", str(path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(os.cpu_count() or 1)
    assert main(["choose", "--scaling", str(tmp_path / "missing.json")]) == 2


def test_reproduce_with_jobs_auto_plans_k_runs_per_gpu(tmp_path):
    proc = warm_process.run("reproduce_paper.py", "--profile", "gpu", "--device", "cuda", "--dry-run", "--datasets",
                            "curves", "--results-dir", tmp_path / "results", "--data-dir", tmp_path / "data",
                            cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "jobs auto: 8 concurrent runs on cuda" in proc.stdout     # the profile's default until measured
    assert "hydra/launcher=joblib hydra.launcher.n_jobs=8" in proc.stdout
