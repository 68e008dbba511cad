"""Run folders that cannot lie: a folder is reused (skipped, extended, resumed) only by the settings
that made it; other settings are refused before training with the differing keys named, in a single
run and in a sweep; old folders without a fingerprint are read as before; a damaged checkpoint is
named with its fix and loses nothing."""
import json
import logging
import os
from pathlib import Path

import pytest

import warm_process
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
TINY = ["dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100", "trainer.progress=false"]
RUN_FILES = ("config.yaml", "fingerprint.json", "metrics.csv", "summary.json", "checkpoint.pt")


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def config(tmp_path, *overrides, epochs=1):
    from hydra import compose, initialize_config_dir
    import kfac_bench.cli  # noqa: F401  (registers the run-name resolver)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"trainer.epochs={epochs}", f"data_dir={tmp_path / 'data'}",
                                           f"results_dir={tmp_path / 'results'}", "device=cpu", *TINY, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def snapshot(run_dir: Path) -> dict:
    return {name: (run_dir / name).read_bytes() for name in RUN_FILES if (run_dir / name).exists()}


def test_other_settings_are_refused_with_the_keys_named_and_nothing_changes(tmp_path):
    from kfac_bench.runs.folder import RunFolderMismatch
    from kfac_bench.runs.train import run_training
    run = tmp_path / "X"
    assert run_training(config(tmp_path, "optimizer.lr=0.1"), run)["status"] == "ok"
    assert {p.name for p in run.iterdir()} >= set(RUN_FILES)
    before = snapshot(run)
    with pytest.raises(RunFolderMismatch) as info:
        run_training(config(tmp_path, "optimizer.lr=0.01", "dataset.generator.seed=7"), run)
    text = str(info.value)
    assert [k for k, _, _ in info.value.differences] == ["dataset.generator.seed", "optimizer.lr"]
    assert "optimizer.lr" in text and "0.1 (folder)" in text and "0.01 (now)" in text
    assert "dataset.generator.seed" in text and "1234 (folder)" in text and "7 (now)" in text
    for way_out in ("hydra.run.dir=", "trainer.resume=false", "trainer.epochs"):
        assert way_out in text
    assert snapshot(run) == before            # config.yaml still says lr 0.1: the run that made it

    # an interrupted run (no summary yet) is not resumed with other settings either
    (run / "summary.json").unlink()
    before = snapshot(run)
    with pytest.raises(RunFolderMismatch, match="optimizer.momentum"):
        run_training(config(tmp_path, "optimizer.lr=0.1", "optimizer.momentum=0.5"), run)
    assert snapshot(run) == before


def test_settings_that_cannot_change_a_result_still_match(tmp_path, caplog):
    from kfac_bench.runs.train import run_training
    run = tmp_path / "X"
    first = run_training(config(tmp_path), run)
    with caplog.at_level("INFO", logger="kfac_bench.runs.train"):
        again = run_training(config(tmp_path, "trainer.progress=true", "threads=1", "trainer.keep_checkpoint=true",
                                    f"data_dir={tmp_path / 'data'}"), run)
    assert "already holds a finished run" in caplog.text
    assert again["finished"] == first["finished"]


def test_extension_and_resume_still_work_and_config_records_the_epochs(tmp_path, caplog):
    from kfac_bench.runs.folder import read_fingerprint
    from kfac_bench.runs.train import run_training
    run = tmp_path / "X"
    run_training(config(tmp_path, "optimizer=kfac", "optimizer.T1=3", "optimizer.T2=3", epochs=1), run)
    fingerprint = read_fingerprint(run)
    with caplog.at_level("INFO", logger="kfac_bench.runs.train"):
        extended = run_training(config(tmp_path, "optimizer=kfac", "optimizer.T1=3", "optimizer.T2=3", epochs=3), run)
    assert "from the end of epoch 1" in caplog.text
    assert extended["status"] == "ok" and extended["epochs_completed"] == 3
    assert read_fingerprint(run) == fingerprint                       # written once
    assert OmegaConf.load(run / "config.yaml").trainer.epochs == 3    # what the folder now holds
    assert OmegaConf.load(run / "config.yaml").optimizer.T1 == 3


def test_resume_false_replaces_the_run_only_after_validation(tmp_path):
    from kfac_bench.runs.folder import read_fingerprint
    from kfac_bench.runs.train import ConfigError, run_training
    run = tmp_path / "X"
    run_training(config(tmp_path, "optimizer.lr=0.1"), run)
    before = snapshot(run)
    with pytest.raises(ConfigError, match="optimizer.lr"):       # bad input deletes nothing
        run_training(config(tmp_path, "optimizer.lr=-1", "trainer.resume=false"), run)
    assert snapshot(run) == before
    replaced = run_training(config(tmp_path, "optimizer.lr=0.01", "trainer.resume=false"), run)
    assert replaced["status"] == "ok"
    assert read_fingerprint(run)["settings"]["optimizer.lr"] == 0.01
    assert OmegaConf.load(run / "config.yaml").optimizer.lr == 0.01
    assert json.loads((run / "summary.json").read_text())["hyperparameters"]["lr"] == 0.01


def test_old_folder_without_fingerprint_is_read_as_before_with_a_warning(tmp_path, caplog):
    from kfac_bench.runs.train import run_training
    run = tmp_path / "X"
    first = run_training(config(tmp_path), run)
    (run / "fingerprint.json").unlink()
    with caplog.at_level(logging.INFO, logger="kfac_bench.runs.train"):
        again = run_training(config(tmp_path, "optimizer.lr=0.05"), run)   # cannot be checked: skipped
    assert "has no fingerprint.json" in caplog.text and "already holds a finished run" in caplog.text
    assert again["finished"] == first["finished"]
    assert not (run / "fingerprint.json").exists()       # nothing claims settings that were never checked


def test_damaged_fingerprint_is_named(tmp_path):
    from kfac_bench.runs.folder import RunFolderError
    from kfac_bench.runs.train import run_training
    run = tmp_path / "X"
    run_training(config(tmp_path), run)
    (run / "fingerprint.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="fingerprint.json cannot be read") as info:
        run_training(config(tmp_path), run)
    assert "trainer.resume=false" in str(info.value)


@pytest.mark.parametrize("finished", [False, True])
def test_truncated_checkpoint_names_the_file_and_the_fix_and_keeps_the_run(tmp_path, finished):
    from kfac_bench.runs.train import CheckpointError, run_training
    run = tmp_path / "X"
    run_training(config(tmp_path, epochs=1), run)
    if not finished:
        (run / "summary.json").unlink()                 # interrupted: the checkpoint would be resumed
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    before = snapshot(run)
    with pytest.raises(CheckpointError) as info:
        run_training(config(tmp_path, epochs=2), run)   # resume / extend
    text = str(info.value)
    assert str(run / "checkpoint.pt") in text and "cannot be read" in text
    assert "trainer.resume=false" in text
    if not finished:
        assert f"delete {run / 'checkpoint.pt'}" in text
    else:
        assert "cannot be extended" in text
    assert snapshot(run) == before


# ------------------------------------------------------------------------------ through the CLI
def kfac_bench(*args, tmp_path: Path, check=True):
    env = {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "KFAC_BENCH_RESULTS": str(tmp_path / "results"),
           "OMP_NUM_THREADS": "1"}
    proc = warm_process.run("kfac-bench", *args, "threads=1", env=env, timeout=600, cwd=tmp_path)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_cli_refuses_a_mismatch_and_a_damaged_checkpoint_with_their_messages(tmp_path):
    run = tmp_path / "X"
    kfac_bench("run", "optimizer.lr=0.1", "trainer.epochs=1", *TINY, f"hydra.run.dir={run}", tmp_path=tmp_path)
    before = snapshot(run)
    proc = kfac_bench("run", "optimizer.lr=0.01", "trainer.epochs=1", *TINY, f"hydra.run.dir={run}",
                      tmp_path=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"kfac-bench: error: run folder {run} holds a run made with other settings" in proc.stderr
    assert "optimizer.lr  0.1 (folder)  ->  0.01 (now)" in proc.stderr
    assert snapshot(run) == before
    assert not (run / ".hydra").exists()           # no copy of the refused command's config in the folder
    (refusal,) = [json.loads(line) for line in (run / "refused.jsonl").read_text().splitlines()]
    assert refusal["differences"] == {"optimizer.lr": {"folder": 0.1, "now": 0.01}}

    (run / "summary.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"\x80\x02truncated")
    proc = kfac_bench("run", "optimizer.lr=0.1", "trainer.epochs=2", *TINY, f"hydra.run.dir={run}",
                      tmp_path=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"kfac-bench: error: checkpoint {run / 'checkpoint.pt'} cannot be read" in proc.stderr
    assert "trainer.resume=false" in proc.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert (run / "metrics.csv").read_bytes() == before["metrics.csv"]


@pytest.mark.slow
def test_sweep_job_with_a_mismatch_fails_alone(tmp_path):
    """A sweep whose lr=0.1 folder already holds a run made with another seed: that job is refused
    (and recorded as refused), the finished lr=0.3 job is skipped, the new lr=0.03 job runs; the
    sweep then exits 1 naming the refused job."""
    sweep = ["optimizer.lr=0.1,0.3,0.03", "trainer.epochs=1", *TINY[:3]]
    runs = tmp_path / "results" / "runs" / "curves" / "sgd"

    def folder(lr):
        return runs / ",".join(sorted([*TINY[:3], f"optimizer.lr={lr}", "trainer.epochs=1"]))
    kfac_bench("run", "optimizer.lr=0.1", "trainer.epochs=1", "seed=5", *TINY, f"hydra.run.dir='{folder(0.1)}'",
               tmp_path=tmp_path)
    kfac_bench("run", "optimizer.lr=0.3", "trainer.epochs=1", *TINY, tmp_path=tmp_path)
    assert folder(0.3).is_dir()
    before = {lr: snapshot(folder(lr)) for lr in (0.1, 0.3)}
    proc = kfac_bench("run", "-m", *sweep, tmp_path=tmp_path, check=False)
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log
    assert proc.returncode == 1                     # once the other jobs have run, the refusal is named
    assert "job 0 refused: optimizer.lr=0.1" in proc.stderr
    assert f"run folder {folder(0.1)} holds a run made with other settings" in log
    assert "seed  5 (folder)  ->  0 (now)" in log
    assert log.count("already holds a finished run") == 1                  # lr 0.3
    assert {lr: snapshot(folder(lr)) for lr in (0.1, 0.3)} == before
    (refusal,) = [json.loads(line) for line in (folder(0.1) / "refused.jsonl").read_text().splitlines()]
    assert refusal["differences"] == {"seed": {"folder": 5, "now": 0}}
    assert json.loads((folder(0.03) / "summary.json").read_text())["status"] == "ok"
    assert json.loads((folder(0.03) / "fingerprint.json").read_text())["settings"]["optimizer.lr"] == 0.03


def test_report_and_fingerprint_agree_on_what_cannot_change_a_result():
    from kfac_bench.report.results import IGNORED_CONFIG_KEYS
    from kfac_bench.runs.folder import NOT_RESULT_KEYS
    assert set(IGNORED_CONFIG_KEYS) == {"seed", *NOT_RESULT_KEYS}
    # the folder names exclude the same (plus the group names, which the folder path carries)
    names = OmegaConf.load(ROOT / "conf" / "config.yaml").hydra.job.config.override_dirname.exclude_keys
    assert {"trainer.progress", "trainer.keep_checkpoint", "device", "threads", "data_dir", "results_dir"} <= set(names)
    assert set(names) - {"dataset", "optimizer", "sweep", "profile", "hydra.launcher", "hydra/launcher"} <= set(NOT_RESULT_KEYS)
