"""The SLURM path on a real (one-node) SLURM: `make test-cluster` starts it (tests/cluster/slurm_cluster.sh)
and runs these; elsewhere they skip. Each test prints what it did (job ids, requeues), and
slurm_cluster.sh repeats those lines at the end.

* a submitit_slurm sweep of two configurations: one job array, both run folders ok, the SLURM ids in
  the summaries and in sacct;
* a job stopped at its time limit (timeout_min=1) is requeued by submitit (max_num_timeout) and
  resumes from its checkpoint to the metrics of an uninterrupted run, bit for bit;
* scripts/reproduce_paper.py --profile smoke --launcher submitit_slurm: every run through SLURM, the
  report written;
* a sweep relaunched while the first is running trains no job twice: the copy of the running job
  is refused (that sweep exits 1 naming it), the finished one skipped, the first sweep ends ok.
"""
import csv
import os
import re
import socket
import sys

import pytest

from slurm_helpers import ROOT, SMALL, cli_env, kfac_bench, report, sacct, summaries, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.environ.get("KFAC_BENCH_SLURM") != "1",
                       reason="needs the one-node SLURM that `make test-cluster` starts (KFAC_BENCH_SLURM=1)"),
]

TINY = ["dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100"]
COMMON = ["threads=1", "trainer.progress=false"]
SLURM = ["hydra/launcher=submitit_slurm"]
# every column but the times
SAME_COLUMNS = ["epoch", "iteration", "train_loss", "val_loss", "train_loss_running"]


def folder_name(overrides):
    return ",".join(sorted(o for o in overrides if not o.startswith(("threads", "trainer.progress", "hydra",
                                                                        "optimizer=", "dataset="))))


def output(proc) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"


def metrics(path):
    with open(path) as f:
        return [{k: row[k] for k in SAME_COLUMNS} for row in csv.DictReader(f)]


def array_id(summary) -> str:
    """The SLURM job of a run as sacct names it: <array>_<task> for a task of an array; a sweep of one
    configuration is submitted as a plain job."""
    job = summary["cluster"]
    return f"{job['array_job_id']}_{job['array_task_id']}" if job.get("array_job_id") else job["job_id"]


def test_sweep_of_two_configurations_is_one_job_array(tmp_path, data_dir):
    results = tmp_path / "results"
    proc = kfac_bench("run", "-m", *SLURM, "optimizer=sgd,kfac", "trainer.epochs=2", *TINY, *COMMON,
                      "hydra.launcher.timeout_min=10", data_dir=data_dir, results=results, cwd=tmp_path)
    assert proc.returncode == 0, output(proc)
    name = folder_name(["trainer.epochs=2", *TINY])
    runs = summaries(results)
    assert set(runs) == {f"curves/sgd/{name}", f"curves/kfac/{name}"}
    assert {s["status"] for s in runs.values()} == {"ok"} and {s["epochs_completed"] for s in runs.values()} == {2}
    jobs = {s["optimizer"]: s["cluster"] for s in runs.values()}
    assert jobs["sgd"]["array_job_id"] == jobs["kfac"]["array_job_id"]          # one array
    assert {jobs["sgd"]["array_task_id"], jobs["kfac"]["array_task_id"]} == {"0", "1"}
    assert {j["node"] for j in jobs.values()} == {socket.gethostname().split(".")[0]}
    assert {j["restart_count"] for j in jobs.values()} == {0}
    array = jobs["sgd"]["array_job_id"]
    # sacct (slurmdbd) knows the jobs that the summaries name, and submitit polled it without a warning
    states = {r["job"]: r["state"] for r in sacct(array)}
    assert states == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED"}, states
    assert "submitit WARNING" not in proc.stderr and "sacct" not in proc.stderr, proc.stderr[-3000:]
    report("sweep of two configurations",
           f"array job {array}: " + ", ".join(f"{o} = task {j['array_task_id']} (job id {j['job_id']}) on "
                                             f"{j['node']}" for o, j in sorted(jobs.items()))
           + f"; sacct: {states}; both status ok, 2 epochs")


def test_time_limit_requeue_resumes_to_the_uninterrupted_metrics(tmp_path, data_dir, epoch_seconds):
    """timeout_min=1 on a run of over a minute: submitit asks SLURM for SIGUSR2 signal_delay_s before
    the limit (slurmctld sends it at its next 30-s check once less than signal_delay_s + 30 s are left),
    then checkpoints the Hydra launcher's call and requeues the job; the requeued job reruns the same
    command, which resumes the run folder from its last epoch's checkpoint.pt."""
    # about 55 s of training (and some 10 s to start): longer than the 50 s a job can run before SIGUSR2
    # (signal_delay_s=10: the first 30-s check with under 40 s left)
    epochs = min(max(round(55 / epoch_seconds), 30), 120)
    run = ["optimizer=kfac", f"trainer.epochs={epochs}", *SMALL, *COMMON]
    results, reference = tmp_path / "slurm", tmp_path / "reference"
    # the uninterrupted run, on this machine, beside the SLURM one
    plain = kfac_bench("run", *run, data_dir=data_dir, results=reference, cwd=tmp_path, background=True)
    proc = kfac_bench("run", "-m", *SLURM, *run, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10",
                      "hydra.launcher.max_num_timeout=12", data_dir=data_dir, results=results, cwd=tmp_path,
                      timeout=900)
    out, err = plain.communicate(timeout=600)
    assert plain.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    assert proc.returncode == 0, output(proc)
    name = f"curves/kfac/{folder_name(run)}"
    summary = summaries(results)[name]
    assert summary["status"] == "ok" and summary["epochs_completed"] == epochs
    job = summary["cluster"]
    requeues = job["restart_count"]
    assert requeues >= 1, "the job was never stopped by its time limit: make the run longer"
    array = array_id(summary)
    runs = sacct(array)
    assert [r["state"] for r in runs][:-1] == ["REQUEUED"] * requeues, runs
    # submitit's log of the job (its own lines, "submitit LEVEL (time) - ..."): a SIGUSR2 timeout and a
    # requeue each time, then the end
    log = "".join(p.read_text() for p in sorted((results / "runs" / ".submitit").rglob("*_log.out")))
    err = "".join(p.read_text() for p in sorted((results / "runs" / ".submitit").rglob("*_log.err")))
    assert len(re.findall(r"^submitit INFO .* - Requeued job", log, flags=re.M)) == requeues, log[-3000:]
    assert re.search(r"^submitit INFO .* - Job completed successfully", log, flags=re.M), log[-3000:]
    assert len(re.findall(r"^submitit WARNING .* this job is timed-out", err, flags=re.M)) == requeues
    if runs[-1]["state"] != "COMPLETED":
        # a race that SLURM and submitit leave open: the last run ended its work (result written, "Job
        # completed successfully") just as slurmctld's 30-s check sent SIGUSR2, which then killed the
        # exiting process, its handler gone (sacct: FAILED); the sweep still gets the result
        assert runs[-1]["state"] == "FAILED" and "User defined signal 2" in err, (runs, err[-2000:])
    # the run's own log: each requeued job resumed where the checkpoint left it
    run_log = (results / "runs" / name / "kfac-bench-run.log").read_text()
    resumed = [int(line.rsplit(" ", 1)[1]) for line in run_log.splitlines() if "from the end of epoch" in line]
    assert len(resumed) == requeues and resumed == sorted(resumed) and resumed[0] >= 1, resumed
    ours, theirs = metrics(results / "runs" / name / "metrics.csv"), metrics(reference / "runs" / name / "metrics.csv")
    assert len(ours) == epochs + 1 and ours == theirs
    ref = summaries(reference)[name]
    for key in ("iterations", "final_train_loss", "final_val_loss", "best_val_loss"):
        assert summary[key] == ref[key], key
    times = ", ".join(f"{r['state']} {r['start'][11:]}-{r['end'][11:]}" for r in runs)
    report("time-limit requeue",
           f"job {array} (job id {job['job_id']}), timeout_min=1, {epochs} epochs of KFAC: requeued {requeues} "
           f"times by submitit (sacct: {times}); resumed from the end of epochs {resumed}; metrics.csv "
           f"identical to the uninterrupted run's on {', '.join(SAME_COLUMNS)} ({len(ours)} rows; final train "
           f"loss {summary['final_train_loss']!r}, val loss {summary['final_val_loss']!r}, "
           f"{summary['iterations']} iterations)")


def test_reproduction_script_runs_the_smoke_profile_through_slurm(tmp_path, data_dir):
    results = tmp_path / "smoke"
    env = cli_env(data_dir)
    import subprocess
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce_paper.py"), "--profile", "smoke",
                           "--launcher", "submitit_slurm", "--launcher-arg", "hydra.launcher.timeout_min=10",
                           "--threads", "1", "--results-dir", str(results)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, output(proc)
    runs = summaries(results)
    assert len(runs) == 6 and {s["status"] for s in runs.values()} == {"ok"}, sorted(runs)  # 2 x (2 + a seed)
    jobs = sorted({array_id(s) for s in runs.values()})                    # every run was a SLURM job
    assert "launcher submitit_slurm" in proc.stdout
    written = sorted(p.name for p in (results / "report").iterdir() if p.is_file())
    assert {"summary.md", "summary.csv", "figure2.png"} <= set(written), written
    assert "SMOKE" in (results / "report" / "summary.md").read_text()
    report("reproduce_paper.py --profile smoke --launcher submitit_slurm",
           f"{len(runs)} runs, status ok, as SLURM jobs {', '.join(jobs)}; report written to <results>/report: "
           f"{', '.join(written)}")


def test_a_relaunched_sweep_trains_no_job_twice(tmp_path, data_dir, epoch_seconds):
    """Two jobs, a short and a long one; the same sweep relaunched once the long one trains. The node
    has 2 CPUs, so the second launch's jobs wait in the queue for the first launch's: its copy of the
    short job then finds a finished run (skipped), its copy of the long one finds the folder held by
    the running job (refused, exit 1 naming it), and the first launch's long job finishes."""
    # the long job trains for about 60 s: the second launch's copy of it starts some 30 s after it
    long = min(max(round(60 / epoch_seconds), 30), 120)
    sweep = ["optimizer=kfac", f"trainer.epochs=2,{long}", *SMALL, *COMMON, *SLURM, "hydra.launcher.timeout_min=10"]
    results = tmp_path / "results"
    first = kfac_bench("run", "-m", *sweep, data_dir=data_dir, results=results, cwd=tmp_path, background=True)
    long_run = results / "runs" / "curves" / "kfac" / folder_name([f"trainer.epochs={long}", *SMALL])
    short_run = long_run.parent / folder_name(["trainer.epochs=2", *SMALL])
    try:
        # the long job holds its folder (.lock.holder) and has trained an epoch: the first launch is running
        wait_until(lambda: (long_run / ".lock.holder").exists() and (long_run / "checkpoint.pt").exists(),
                   300, "the first launch's long job to train")
        second = kfac_bench("run", "-m", *sweep, data_dir=data_dir, results=results, cwd=tmp_path, timeout=600)
        assert first.poll() is None, "the first launch ended before the second one's jobs ran: make it longer"
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    assert second.returncode == 1, output(second)
    refused = second.stderr[second.stderr.index("1 of 2 jobs of the sweep failed or were refused"):]
    assert "job 1 refused" in refused and f"trainer.epochs={long}" in refused and "job 0" not in refused
    assert f"run folder {long_run} is in use by another kfac-bench process" in refused
    runs = summaries(results)
    short, long_ = runs[short_run.relative_to(results / "runs").as_posix()], \
        runs[long_run.relative_to(results / "runs").as_posix()]
    assert short["status"] == long_["status"] == "ok" and long_["epochs_completed"] == long
    assert short["cluster"]["array_job_id"] == long_["cluster"]["array_job_id"]   # both trained by the first launch
    first_array = long_["cluster"]["array_job_id"]
    epochs = [row["epoch"] for row in metrics(long_run / "metrics.csv")]
    assert epochs == [str(e) for e in range(long + 1)]    # every epoch once
    assert not (long_run / "refused.jsonl").exists()      # a busy folder's refusal writes nothing there
    # the second launch's jobs ran in SLURM too (another array), and completed: refusing is their result
    arrays = sorted((p.name for p in (results / "runs" / ".submitit").iterdir() if p.name.isdigit()), key=int)
    assert len(arrays) == 2 and arrays[0] == first_array, arrays
    second_array = arrays[1]
    states = {r["job"]: r["state"] for r in sacct(second_array)}
    assert states == {f"{second_array}_0": "COMPLETED", f"{second_array}_1": "COMPLETED"}, states
    logs = "".join(p.read_text() for p in (results / "runs" / ".submitit").rglob(f"{second_array}_*_log.*"))
    assert "already holds a finished run" in logs and "is in use by another kfac-bench process" in logs
    report("relaunched sweep",
           f"first launch = array {first_array} (short job 2 epochs, long job {long} epochs); relaunched while its "
           f"long job trained = array {second_array}: its copy of the short job skipped the finished run, its "
           f"copy of the long job was refused (folder held by the first launch's job), the relaunch exited 1 "
           f"naming job 1; the first launch exited 0, its long run has each of epochs 0-{long} once")
