"""Running ``kfac-bench`` commands: one at a time (``Runner.call``) or as a queue of tasks, side by
side in ``slots`` lanes (``Task``, ``run_tasks``)."""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from .common import ROOT, fmt_duration, say


class Runner:
    def __init__(self, args, profile: dict, results_dir: Path, data_dir: Path, env: dict):
        self.args, self.profile = args, profile
        self.results_dir, self.data_dir, self.env = results_dir, data_dir, env
        exe = Path(sys.executable).parent / "kfac-bench"
        self.base = [str(exe)] if exe.exists() else [sys.executable, "-m", "kfac_bench.cli"]
        self.failures: list[str] = []
        self.claims: list[str] = []          # claims_from=[...] for the report (other profiles' folders)

    def common(self, run: bool = False) -> list[str]:
        out = [f"results_dir={self.results_dir}", f"data_dir={self.data_dir}"]
        if self.args.device != "auto":
            out.append(f"device={self.args.device}")
        if run and self.args.threads:
            out.append(f"threads={self.args.threads}")   # also in OMP_NUM_THREADS, for every command
        if run and self.args.drop_checkpoints:
            out.append("trainer.keep_checkpoint=false")
        return out

    def launcher(self) -> list[str]:
        out = []
        if self.args.launcher != "basic":
            out.append(f"hydra/launcher={self.args.launcher}")
        if self.args.jobs and self.args.launcher == "joblib":
            out.append(f"hydra.launcher.n_jobs={self.args.jobs}")
        return out + list(self.args.launcher_arg or [])

    def call(self, args: list[str], what: str) -> int:
        shown = "kfac-bench " + " ".join(shlex.quote(a) for a in args)
        say(f"$ {shown}")
        if self.args.dry_run:
            return 0
        t0 = time.perf_counter()
        proc = subprocess.run(self.base + args, env=self.env, cwd=ROOT)
        if proc.returncode != 0:
            self.failures.append(f"{what}: exit {proc.returncode}: {shown}")
            say(f"!! {what} exited with {proc.returncode} (the other steps go on; rerun to retry)")
        say(f"   {what}: {fmt_duration(time.perf_counter() - t0)}")
        return proc.returncode


class Task:
    """One ``kfac-bench`` command of the plan. ``make_args`` is called when the task starts (the
    seeds of a winner are known only then) and returns None when there is nothing left to do."""

    def __init__(self, what: str, stage: str, cost: float, make_args, after=(), rank: int = 0):
        self.what, self.stage, self.cost, self.make_args = what, stage, cost, make_args
        self.after = set(after)
        # lower ranks start first (a settings profile's first seed before its extra seeds, so that an
        # interrupted plan leaves complete sets of runs), then the longest task
        self.rank = rank

    def order(self) -> tuple:
        return (self.rank, -self.cost)


def run_tasks(tasks: list[Task], runner: "Runner", slots: int, on_done) -> None:
    """Run the tasks, ``slots`` commands at a time, each once those it comes ``after`` have ended;
    the ready task of the lowest rank first, the longest among those. With one slot a command's output goes to the console, with more
    to ``<results>/logs/<task>.log``."""
    pending, running, finished = list(tasks), [], set()
    logs = runner.results_dir / "logs"
    while pending or running:
        ready = sorted((t for t in pending if t.after <= finished), key=Task.order)
        while ready and len(running) < slots:
            task = ready.pop(0)
            pending.remove(task)
            args = task.make_args()
            if args is None:
                finished.add(task.what)
                ready = sorted((t for t in pending if t.after <= finished), key=Task.order)
                continue
            shown = "kfac-bench " + " ".join(shlex.quote(a) for a in args)
            if slots == 1:
                say(f"$ {shown}")
                proc, log_path = subprocess.Popen(runner.base + args, env=runner.env, cwd=ROOT), None
            else:
                logs.mkdir(parents=True, exist_ok=True)
                log_path = logs / (task.what.replace(" ", "_").replace("+", "_") + ".log")
                say(f"$ {shown}\n[reproduce]     (output: {log_path})")
                with open(log_path, "w") as handle:
                    proc = subprocess.Popen(runner.base + args, env=runner.env, cwd=ROOT, stdout=handle,
                                            stderr=subprocess.STDOUT)
            running.append((task, proc, time.perf_counter(), log_path, shown))
        if not running:
            for task in pending:   # nothing runs and nothing is ready: what they wait for is not in the plan
                finished |= task.after
            continue
        time.sleep(0.2 if slots > 1 else 0.05)
        for item in list(running):
            task, proc, t0, log_path, shown = item
            if proc.poll() is None:
                continue
            running.remove(item)
            finished.add(task.what)
            if proc.returncode != 0:
                where = f" (see {log_path})" if log_path else ""
                runner.failures.append(f"{task.what}: exit {proc.returncode}{where}: {shown}")
                say(f"!! {task.what} exited with {proc.returncode}{where}; the other steps go on; rerun to retry")
            say(f"   {task.what}: done in {fmt_duration(time.perf_counter() - t0)}")
            on_done(task)
