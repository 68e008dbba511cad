"""Resumable runs: a run interrupted after epoch 1 of 3 and resumed ends with exactly the metrics of
an uninterrupted run (CPU, same seed; only the time columns differ), for SGD, KFAC, Deflation,
Lanczos, Lanczos rank k and EKFAC (with T1 = T2 = 3 so that curvature updates happen after the interruption), and for a real
SIGKILL through the command line."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import warm_process
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
TINY = ["dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100", "trainer.progress=false"]
SAME = ["epoch", "iteration", "train_loss", "val_loss", "train_loss_running"]   # all but the times


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def config(tmp_path, method, epochs, extra=(), sizes=TINY):
    from hydra import compose, initialize_config_dir
    import kfac_bench.cli  # noqa: F401  (registers the run-name resolver)
    overrides = [f"optimizer={method}", f"trainer.epochs={epochs}", f"data_dir={tmp_path / 'data'}",
                 f"results_dir={tmp_path / 'results'}", "device=cpu", *sizes, *extra]
    if method not in ("sgd", "adam") and not any(o.startswith("optimizer.T1") for o in extra):
        overrides += ["optimizer.T1=3", "optimizer.T2=3"]   # 2 steps per epoch: updates at steps 0 and 3
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def metrics(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


# KPSVD and KFAC-corrected share their state handling with Deflation and KFAC (same optimizer class,
# same power-SVD warm starts); Adam's state is torch's own
@pytest.mark.parametrize("method", ["sgd", "kfac", "deflation", "lanczos", "lanczos_k", "ekfac"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, method, caplog):
    from kfac_bench.runs.train import run_training
    straight = run_training(config(tmp_path, method, 3), tmp_path / "straight")
    assert straight["status"] == "ok" and straight["epochs_completed"] == 3

    # the state a run killed during epoch 2 leaves: checkpoint.pt and metrics.csv of epoch 1, no summary
    first = run_training(config(tmp_path, method, 1), tmp_path / "resumed")
    assert first["epochs_completed"] == 1
    (tmp_path / "resumed" / "summary.json").unlink()
    with caplog.at_level("INFO", logger="kfac_bench.runs.train"):
        resumed = run_training(config(tmp_path, method, 3), tmp_path / "resumed")
    assert "resuming" in caplog.text and "from the end of epoch 1" in caplog.text
    assert resumed["status"] == "ok" and resumed["epochs_completed"] == 3
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [r["epoch"] for r in b] == ["0", "1", "2", "3"]
    assert [{k: r[k] for k in SAME} for r in a] == [{k: r[k] for k in SAME} for r in b]
    assert resumed["final_train_loss"] == straight["final_train_loss"]
    assert resumed["iterations"] == straight["iterations"] == 6
    # the machine's load at every epoch end, the resumed run's first epoch included (kept in the checkpoint)
    for summary in (straight, resumed):
        load = summary["machine_load"]
        assert load["epochs_sampled"] == 3 and load["cpus"] >= 1 and load["torch_threads"] >= 1
        assert 0 <= load["loadavg_1m_mean"] <= load["loadavg_1m_max"]


def test_a_run_killed_before_its_first_checkpoint_starts_again_from_the_initial_network(tmp_path):
    """Killed during epoch 1: the folder holds config.yaml, fingerprint.json and metrics.csv's row 0 but no
    checkpoint. The rerun starts afresh and its metrics.csv keeps row 0 (the initial network), equal
    to an uninterrupted run's."""
    from kfac_bench.runs.train import run_training
    straight = run_training(config(tmp_path, "kfac", 2), tmp_path / "straight")
    run_training(config(tmp_path, "kfac", 1), tmp_path / "killed")
    killed = tmp_path / "killed"
    (killed / "summary.json").unlink()
    (killed / "checkpoint.pt").unlink(missing_ok=True)
    rows = (killed / "metrics.csv").read_text().splitlines(keepends=True)
    (killed / "metrics.csv").write_text("".join(rows[:2]))             # the header and row 0
    rerun = run_training(config(tmp_path, "kfac", 2), killed)
    assert rerun["status"] == "ok" and rerun["epochs_completed"] == 2
    a, b = metrics(tmp_path / "straight"), metrics(killed)
    assert [r["epoch"] for r in b] == ["0", "1", "2"]
    assert [{k: r[k] for k in SAME} for r in a] == [{k: r[k] for k in SAME} for r in b]
    assert rerun["final_train_loss"] == straight["final_train_loss"]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes(tmp_path):
    """A real interruption: SIGKILL as soon as the first checkpoint exists, then the same command."""
    sizes = ["dataset.generator.n_images=2000", "dataset.n_train=1500", "dataset.n_val=500", "trainer.progress=false"]
    env = {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "kfac_bench.cli", "run", "optimizer=kfac", "optimizer.T1=4", "optimizer.T2=4",
            "trainer.epochs=3", "device=cpu", *sizes]
    killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(base + [f"hydra.run.dir={killed_dir}"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (killed_dir / "summary.json").exists():
        pytest.skip("the run finished before it could be killed (machine too fast for this test)")
    assert (killed_dir / "checkpoint.pt").exists()
    done = len(metrics(killed_dir)) - 1
    assert 1 <= done < 3
    # the killed run's record of holding the folder stays, its operating-system lock does not
    assert json.loads((killed_dir / ".lock.holder").read_text())["pid"] == proc.pid
    again = warm_process.run("kfac-bench", *base[3:], f"hydra.run.dir={killed_dir}", env=env, cwd=tmp_path,
                             timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"from the end of epoch {done}" in again.stdout + again.stderr
    from kfac_bench.runs.train import run_training   # the uninterrupted run, in this process (also one thread)
    cfg = config(tmp_path, "kfac", 3, ["optimizer.T1=4", "optimizer.T2=4"], sizes=sizes)
    run_training(cfg, straight_dir)
    a, b = metrics(straight_dir), metrics(killed_dir)
    assert [{k: r[k] for k in SAME} for r in a] == [{k: r[k] for k in SAME} for r in b]
    assert json.loads((killed_dir / "summary.json").read_text())["status"] == "ok"
