"""Running a plan: 1. data, 2-4. the tasks (grid, settings, seeds after their grid, fisher), 5. the report."""
from __future__ import annotations

import shlex
import time

from .common import _plain, fmt_duration, say
from .estimates import Estimate
from .plan import Context, Plan
from .profiles import dataset_overrides
from .runner import Task, run_tasks


def execute(ctx: Context, plan: Plan, est: Estimate) -> None:
    """1. data, 2-4. grid, settings, seeds (after their grid) and fisher, 5. the report."""
    if "data" in ctx.stages:
        _fetch_data(ctx)
    say(f"== grid search, seeds of the winners, Figure 1: {len(plan.tasks)} commands"
        + (f", {ctx.slots} at a time" if ctx.slots > 1 else ""))
    if ctx.args.dry_run:
        for task in sorted(plan.tasks, key=lambda t: t.rank):   # in the order of their ranks, as they would start
            command = task.make_args()
            if command is not None:
                say("$ kfac-bench " + " ".join(shlex.quote(a) for a in command))
    else:
        run_tasks(plan.tasks, ctx.runner, ctx.slots, _progress(ctx.slots, est.work))
    if "report" in ctx.stages:
        say("== report")
        ctx.runner.call(["report", f"results_dir={ctx.results_dir}", f'note="{_plain(ctx.note)}"', *ctx.runner.claims,
                         *(ctx.profile.get("report_args") or [])], "report")


def data_name(dataset: str) -> str:
    """What ``kfac-bench data fetch`` calls a dataset option's data: a problem's ``data`` (mnist_mlp: mnist),
    else its ``name`` (mnist_conv: mnist), else the option itself."""
    from kfac_bench.configs import dataset_config
    cfg = dataset_config(dataset) or {}
    return str(cfg.get("data") or cfg.get("name") or dataset)


def _fetch_data(ctx: Context) -> None:
    say("== data")
    fetched: set[str] = set()
    for d in ctx.datasets:
        touched = [kv for m in ctx.methods for kv in dataset_overrides(ctx.profile, d, m)
                   if kv.split("=", 1)[0].startswith(("dataset.generator", "dataset.source", "dataset.path"))]
        if touched:
            say(f"{d}: the profile changes {sorted(set(touched))}; the first run builds that data")
            continue
        name = data_name(d)
        if name not in fetched:   # the MNIST problems share one download
            fetched.add(name)
            ctx.runner.call(["data", "fetch", name, "--data-dir", str(ctx.data_dir)], f"data {name}")


def _progress(slots: int, work: float):
    """The callback run_tasks calls as each task ends: the time spent and left at this pace."""
    t_tasks, done_work = time.perf_counter(), 0.0

    def on_done(task: Task) -> None:
        nonlocal done_work
        done_work += task.cost
        elapsed = time.perf_counter() - t_tasks
        pace = elapsed / max(done_work / slots, 1e-9)
        say(f"   elapsed {fmt_duration(elapsed)} for {fmt_duration(done_work / slots)} estimated; about "
            f"{fmt_duration(max(work - done_work, 0) / slots * pace)} left at this pace")
    return on_done
