"""Helpers of the SLURM tests (tests/cluster/test_slurm.py)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# ten times the TINY lists of tests/test_cli.py: about a second an epoch with KFAC on one core
SMALL = ["dataset.generator.n_images=6000", "dataset.n_train=5000", "dataset.n_val=500"]


def cli_env(data_dir, results: Path | None = None) -> dict:
    env = {**os.environ, "KFAC_BENCH_DATA": str(data_dir), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    if results is not None:
        env["KFAC_BENCH_RESULTS"] = str(results)
    else:
        env.pop("KFAC_BENCH_RESULTS", None)
    return env


def kfac_bench(*args, data_dir, results, cwd, timeout=600, background=False):
    """``python -m kfac_bench.cli ARGS`` with this interpreter (the SLURM jobs run submitit's pickled task
    with the Python that submitted it: here the checkout's venv)."""
    cmd = [sys.executable, "-m", "kfac_bench.cli", *args]
    env = cli_env(data_dir, results)
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def sacct(*job_ids) -> list[dict]:
    """sacct's records of the jobs (every run of a requeued job: --duplicates), job steps left out."""
    cmd = ["sacct", "--duplicates", "--parsable2", "--noheader", "-o", "JobID,State,NodeList,Start,End"]
    for job in job_ids:
        cmd += ["-j", str(job)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(["job", "state", "node", "start", "end"], line.split("|"))) for line in out.splitlines()]
    return [r for r in rows if "." not in r["job"]]


def wait_until(predicate, timeout, what, step=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def report(test: str, text: str) -> None:
    """A line for the closing summary that slurm_cluster.sh prints after the tests."""
    print(f"{test}: {text}")
    folder = os.environ.get("KFAC_BENCH_SLURM_DIR")
    if folder:
        with open(Path(folder) / "report.txt", "a") as f:
            f.write(f"  {test}: {text}\n")


def summaries(results: Path) -> dict[str, dict]:
    return {p.parent.relative_to(results / "runs").as_posix(): json.loads(p.read_text())
            for p in sorted((results / "runs").rglob("summary.json"))}
