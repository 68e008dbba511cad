"""Reproduce the paper end to end: settings or grid sweeps, extra seeds of the winners, Figure 1, the report.

The logic of ``scripts/reproduce_paper.py`` (= ``make reproduce-paper``), importable and tested here.

    python scripts/reproduce_paper.py --profile cpu            # = make reproduce-paper
    python scripts/reproduce_paper.py --profile paper --launcher submitit_slurm \\
        --launcher-arg hydra.launcher.partition=gpu --launcher-arg hydra.launcher.gpus_per_node=1
    python scripts/reproduce_paper.py --profile cpu --dry-run  # the plan and its estimate only

A profile (``conf/profile/<name>.yaml``, or a path) says which datasets, methods, grid, epochs,
dataset sizes, seeds and Figure 1 settings to use, and what an epoch costs (for the estimate printed
before anything runs). The stages:

1. data    ``kfac-bench data fetch <dataset>`` (downloads MNIST, builds the generated stand-ins once)
2. grid    ``kfac-bench run -m +sweep=paper_grid[_first_order] optimizer=M dataset=D ...`` per
           dataset and method (when commands run one at a time, those that differ only by method or
           dataset are merged into one)
3. seeds   once its grid command has ended, the best configuration of a (dataset, method) -- lowest
           final training loss, chosen exactly as the report chooses -- with the profile's
           ``extra_seeds``
4. fisher  ``kfac-bench fisher dataset=D ...`` (Figure 1)
5. report  ``kfac-bench report results_dir=... note=...``

Stages 2-4 are one queue of commands: with the basic launcher and ``--jobs N`` (the CPU profile:
2), N commands run side by side, the longest ready one first, each with its output in
``<results>/logs/``; with ``--launcher joblib --jobs N`` one command runs at a time and Hydra runs N
of its jobs in parallel; ``--threads`` sets the torch threads of every run (OMP_NUM_THREADS).

Every training and fisher step goes through the ``kfac-bench`` command line in a subprocess, so what
runs is what a user would type (each command is printed). Resumable: a run folder that holds a
finished run (status ok or diverged) is skipped by ``kfac-bench run`` itself, an interrupted one
resumes from its last epoch, and a command whose runs are all finished is not even started; so
rerunning the same command after an interruption (or a crash, or Ctrl-C) finishes the job. Failed
runs are retried on a rerun. A failing or diverging run never stops the others.

Results go to ``--results-dir`` (default ``$KFAC_BENCH_RESULTS/<profile>``, i.e. ``results/cpu``
for the CPU profile), one folder per profile so that runs of different sizes are never mixed.
FACES (generated stand-in) is built from the Olivetti faces shipped with the package (``--olivetti PATH`` or
``$KFAC_BENCH_OLIVETTI``: another copy).

The stages are modules of this package, each importing only from those before it: ``common`` (the
checkout, the console line, the README blocks), ``profiles`` (profiles, sweeps, grids, settings,
seeds), ``run_index`` (what is done already), ``runner`` (running commands, the task queue), ``plan``
(the command line merged with the profile, the commands to run and their costs), ``estimates`` (the
plan's estimate, printed), ``execution`` (running the plan) and ``publishing`` (``--publish-docs``,
the closing lines). This module reads the command line and runs them in turn (:func:`main`).
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

from .common import (README_CLAIMS, README_TABLE, ROOT, fmt_duration, readme_markers, readme_sections,
                     replace_block, runs_span, say)
from .profiles import (CONF, CURVATURE, FIRST_ORDER, SWEEPS, around, confirm_overrides, dataset_overrides,
                       fmt_value, grid_for, load_profile, load_sweep, own_grid_spec, parse_value, profile_methods,
                       seeded_overrides, settings_plan_size, settings_runs, settings_seeds, shared_points, tuned)
from .run_index import (RunIndex, fisher_done, folder_override_keys, matches, select_best_hyperparameters,
                        stand_in_version)
from .runner import Runner, Task, run_tasks
from .plan import STAGES, Context, Estimator, Invocation, Plan, claims_args, make_context, make_plan, merge
from .estimates import Estimate, estimate, print_plan
from .execution import execute
from .publishing import public_command, publish, publish_docs

__all__ = [
    "README_CLAIMS", "README_TABLE", "ROOT", "fmt_duration", "readme_markers", "readme_sections", "replace_block",
    "runs_span", "say",
    "CONF", "CURVATURE", "FIRST_ORDER", "SWEEPS", "around", "confirm_overrides", "dataset_overrides", "fmt_value",
    "grid_for", "load_profile", "load_sweep", "own_grid_spec", "parse_value", "profile_methods", "seeded_overrides",
    "settings_plan_size", "settings_runs", "settings_seeds", "shared_points", "tuned",
    "RunIndex", "fisher_done", "folder_override_keys", "matches", "select_best_hyperparameters", "stand_in_version",
    "Runner", "Task", "run_tasks",
    "STAGES", "Context", "Estimator", "Invocation", "Plan", "claims_args", "make_context", "make_plan", "merge",
    "Estimate", "estimate", "print_plan", "execute", "public_command", "publish", "publish_docs", "main",
]


# ------------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Profiles: conf/profile/*.yaml. See docs/reproduction.md.")
    parser.add_argument("--profile", default="authors", help="conf/profile/<name>.yaml or a path (default: authors)")
    parser.add_argument("--results-dir", default=None,
                        help="results root (default: $KFAC_BENCH_RESULTS or results, then /<profile>)")
    parser.add_argument("--data-dir", default=None, help="dataset cache (default: $KFAC_BENCH_DATA or data)")
    parser.add_argument("--olivetti", default=None,
                        help="another olivettifaces.mat for the generated FACES (default: $KFAC_BENCH_OLIVETTI, else the copy "
                             "shipped with kfac-bench)")
    parser.add_argument("--datasets", default=None, help="comma-separated subset of the profile's datasets")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the profile's methods")
    parser.add_argument("--stages", default="data,grid,seeds,fisher,report",
                        help="comma-separated subset of data,grid,seeds,fisher,report (default: all)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    parser.add_argument("--launcher", default=None, choices=["basic", "joblib", "submitit_local", "submitit_slurm"],
                        help="Hydra launcher of the sweeps (default: the profile's, else basic = sequential)")
    parser.add_argument("--jobs", type=lambda s: s if s == "auto" else int(s), default=None,
                        help="runs at a time on this machine (default: the profile's): with the basic launcher, "
                             "that many kfac-bench commands at a time; with joblib, hydra.launcher.n_jobs; "
                             "auto = from the GPU's free memory and measured scaling (kfac_bench/concurrency.py)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per job (OMP_NUM_THREADS; 0 = torch's default; default: the profile's)")
    parser.add_argument("--launcher-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="extra launcher override, repeatable, e.g. hydra.launcher.partition=gpu")
    parser.add_argument("--drop-checkpoints", action="store_true",
                        help="delete each run's checkpoint.pt once it has ended (the CPU profile keeps ~15 GB of "
                             "them, the paper profile hundreds); finished runs then cannot be extended")
    parser.add_argument("--publish-docs", default=None, metavar="DIR",
                        help="after the report, copy small PNGs + the summary table to DIR (e.g. docs/figures/<profile>) "
                             "with the command and date, update the profile's block of the results page and the "
                             "README's claims table")
    parser.add_argument("--results-page", default=str(ROOT / "docs" / "results.md"), metavar="FILE",
                        help="the page whose <!-- reproduce:table:<profile>:start/end --> block --publish-docs "
                             "replaces (default: docs/results.md)")
    parser.add_argument("--readme", default=str(ROOT / "README.md"), help=argparse.SUPPRESS)   # tests
    parser.add_argument("--dry-run", action="store_true", help="print the plan, the commands and the estimate only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Plan, estimate, execute, publish."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    from kfac_bench.utils import git_commit
    commit = git_commit()
    t_start = time.perf_counter()
    ctx = make_context(args, parser, argv, started, commit, t_start)
    if ctx is None:
        return 2
    plan = make_plan(ctx)
    est = estimate(ctx, plan)
    print_plan(ctx, plan, est)
    execute(ctx, plan, est)
    return publish(ctx, est)


if __name__ == "__main__":
    sys.exit(main())
