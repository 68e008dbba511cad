"""One process per run folder, readable files, honest sweep exit codes.

* a second ``kfac-bench run`` on a folder that a running one holds is refused at once (exit 2, the
  folder, the holder's pid and host named) and writes nothing; the first finishes unharmed;
* a holder killed with kill -9 never blocks the rerun, which resumes to the uninterrupted result;
* a sweep with a refused or failed job exits non-zero once the others have run, naming the job; a
  diverged job is a result (exit 0);
* run-folder files are written atomically yet with the umask's mode (0644 under umask 022).
"""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import warm_process

from test_run_folder import RUN_FILES, ROOT, TINY, config  # noqa: E402,F401  (one composed-config helper)

SAME = ["epoch", "iteration", "train_loss", "val_loss", "train_loss_running"]   # all but the times


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def files(folder: Path) -> dict:
    """Every file of the folder with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def env_for(tmp_path):
    return {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "KFAC_BENCH_RESULTS": str(tmp_path / "results"),
            "OMP_NUM_THREADS": "1"}


def command(*args):
    return [sys.executable, "-m", "kfac_bench.cli", *args, "threads=1", "device=cpu"]


def start(tmp_path, *args):
    return subprocess.Popen(command(*args), env=env_for(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run(tmp_path, *args):
    return warm_process.run("kfac-bench", *args, "threads=1", "device=cpu", env=env_for(tmp_path), cwd=tmp_path,
                            timeout=300)


def wait_for(path: Path, proc, seconds=120):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if not path.exists():
        raise AssertionError(f"{path} never appeared (exit {proc.poll()})"
                             + (f": {proc.stderr.read()}" if proc.poll() is not None else ""))


# ------------------------------------------------------------------------------------ in process
def test_a_held_folder_is_refused_and_the_lock_files_are_no_part_of_the_run(tmp_path):
    from kfac_bench.runs.folder import HOLDER_FILE, LOCK_FILE, RunFolderBusy, hold_folder
    from kfac_bench.runs.train import _holds_run
    folder = tmp_path / "X"
    with hold_folder(folder):
        holder = json.loads((folder / HOLDER_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        before = files(folder)
        with pytest.raises(RunFolderBusy) as info:   # another lock on the same file: refused, not waited for
            with hold_folder(folder):
                pass
        assert files(folder) == before
        first_line = str(info.value).splitlines()[0]
        for part in (str(folder), f"pid {os.getpid()}", f"host {socket.gethostname()}"):
            assert part in first_line
        assert "hydra.run.dir=" in str(info.value)
        assert not _holds_run(folder, None)           # a folder with only its lock files holds no run
    assert (folder / LOCK_FILE).exists() and not (folder / HOLDER_FILE).exists()
    with hold_folder(folder):                         # released: the next command gets it
        pass


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"])
def test_run_files_are_written_with_the_umask_mode(tmp_path, umask, mode):
    from kfac_bench.runs.train import run_training
    old = os.umask(umask)
    try:
        run_training(config(tmp_path), tmp_path / "X")
    finally:
        os.umask(old)
    for name in RUN_FILES:
        assert (tmp_path / "X" / name).stat().st_mode & 0o777 == mode, name


# ------------------------------------------------------------------------------ two real processes
@pytest.mark.slow
def test_second_process_on_a_running_folder_is_refused_and_the_first_finishes(tmp_path):
    folder = tmp_path / "X"
    args = ["run", "trainer.epochs=2", *TINY, f"hydra.run.dir={folder}"]
    first = start(tmp_path, *args)
    try:
        wait_for(folder / ".lock.holder", first)
        first.send_signal(signal.SIGSTOP)     # holds the lock, whatever the machine's speed
        before = files(folder)
        second = run(tmp_path, *args)
        assert files(folder) == before        # nothing written or touched, its own log included
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    assert (f"kfac-bench: error: run folder {folder} is in use by another kfac-bench process "
            f"(pid {first.pid} on host {socket.gethostname()}") in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert json.loads((folder / "summary.json").read_text())["status"] == "ok"
    assert [r["epoch"] for r in csv.DictReader(open(folder / "metrics.csv"))] == ["0", "1", "2"]
    assert not (folder / ".lock.holder").exists()   # released at its end


@pytest.mark.slow
def test_a_holder_killed_with_kill_9_does_not_block_the_rerun_which_resumes_exactly(tmp_path):
    from kfac_bench.runs.train import run_training
    folder = tmp_path / "X"
    args = ["run", "optimizer=kfac", "optimizer.T1=3", "optimizer.T2=3", "trainer.epochs=3", *TINY,
            f"hydra.run.dir={folder}"]
    killed = start(tmp_path, *args)
    wait_for(folder / "checkpoint.pt", killed)       # the first epoch is written and the lock is held
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    if (folder / "summary.json").exists():
        pytest.skip("the run finished before it could be killed (machine too fast for this test)")
    assert json.loads((folder / ".lock.holder").read_text())["pid"] == killed.pid   # its record stays ...
    again = run(tmp_path, *args)                                                    # ... but not its lock
    assert again.returncode == 0, again.stderr
    assert "from the end of epoch" in again.stdout + again.stderr
    assert json.loads((folder / "summary.json").read_text())["status"] == "ok"
    straight = tmp_path / "straight"
    run_training(config(tmp_path, "optimizer=kfac", "optimizer.T1=3", "optimizer.T2=3", epochs=3), straight)
    a, b = ([{k: r[k] for k in SAME} for r in csv.DictReader(open(f / "metrics.csv"))] for f in (straight, folder))
    assert a == b and len(b) == 4


# ------------------------------------------------------------------------------ sweeps' exit codes
def sweep_folder(tmp_path, lr):
    return (tmp_path / "results" / "runs" / "curves" / "sgd"
            / ",".join(sorted([*TINY[:3], f"optimizer.lr={lr}", "trainer.epochs=2"])))


@pytest.mark.slow
def test_sweep_with_a_refused_job_runs_the_others_then_exits_non_zero_naming_it(tmp_path):
    from kfac_bench.runs.folder import hold_folder
    held = sweep_folder(tmp_path, 0.1)
    with hold_folder(held):                  # this test's process holds the lr=0.1 folder
        proc = run(tmp_path, "run", "-m", "optimizer.lr=0.1,0.3", "trainer.epochs=2", *TINY)
        assert not any((held / name).exists() for name in RUN_FILES)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((sweep_folder(tmp_path, 0.3) / "summary.json").read_text())["status"] == "ok"
    summary = proc.stderr[proc.stderr.index("jobs of the sweep failed"):]
    assert "1 of 2 jobs of the sweep failed or were refused" in proc.stderr
    assert "job 0 refused: optimizer.lr=0.1" in summary and f"folder {held}" in summary
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in summary
    assert "optimizer.lr=0.3" not in summary
    assert not list((tmp_path / "results" / "runs").glob(".kfac-bench-outcomes-*"))   # cleaned up


@pytest.mark.slow
def test_sweep_with_a_failed_and_a_diverged_job(tmp_path):
    proc = run(tmp_path, "run", "-m", "optimizer.lr=1e6,0.1", "trainer.epochs=2", *TINY)
    assert proc.returncode == 0, proc.stderr                  # diverged is a result
    assert json.loads((sweep_folder(tmp_path, 1000000.0) / "summary.json").read_text())["status"] == "diverged"
    proc = run(tmp_path, "run", "-m", "optimizer.lr=-1,0.1", "trainer.epochs=2", *TINY)
    assert proc.returncode == 1                               # the lr=0.1 job is skipped: finished above
    summary = proc.stderr[proc.stderr.index("1 of 2 jobs of the sweep failed or were refused"):]
    assert "job 0 failed: optimizer.lr=-1" in summary
    assert "optimizer.lr must be" in summary          # why: the first line of its message
