"""The plan: the command line merged with its profile (``Context``), the ``kfac-bench run -m`` commands
of the grid (``Invocation``), what each run costs (``Estimator``, the profile's cost table) and the
tasks to run (``Plan``: grid, settings, seeds of the winners, fisher), finished runs left out."""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .common import say
from .profiles import (CURVATURE, FIRST_ORDER, SWEEPS, authors_code_value, confirm_overrides, dataset_overrides,
                       fmt_value, grid_for, load_profile, load_sweep, parse_value, seeded_overrides, settings_runs,
                       settings_seeds, shared_points)
from .run_index import RunIndex, fisher_done, select_best_hyperparameters
from .runner import Runner, Task


# --------------------------------------------------------------------------------------- jobs
class Invocation:
    """One ``kfac-bench run -m`` command: the cartesian product of its datasets, methods and grid.

    ``swept`` goes on the command line; ``grid`` is every swept value including those the sweep
    config supplies itself (what the bookkeeping counts)."""

    def __init__(self, stage: str, datasets: list[str], methods: list[str], swept: dict[str, list[str]],
                 fixed: list[str], sweep: str | None, grid: dict[str, list[str]] | None = None, tag: str = ""):
        self.stage, self.datasets, self.methods = stage, datasets, methods
        self.swept, self.fixed, self.sweep = swept, fixed, sweep
        self.grid = {**(grid or {}), **swept}
        self.tag = tag   # names the command in the plan and its log ("" = the grid itself)

    def key(self) -> tuple:
        return (self.stage, self.tag, self.sweep, json.dumps(self.swept), json.dumps(self.grid), tuple(self.fixed))

    def jobs(self) -> list[tuple[str, str, dict]]:
        """(dataset, method, {key: value string}) of every run it launches."""
        keys = list(self.grid)
        out = []
        for d, m in itertools.product(self.datasets, self.methods):
            for values in itertools.product(*(self.grid[k] for k in keys)):
                over = dict(kv.split("=", 1) for kv in self.fixed)
                over.update(zip(keys, values))
                out.append((d, m, over))
        return out

    def args(self) -> list[str]:
        args = ["run", "-m"] + ([f"+sweep={self.sweep}"] if self.sweep else [])
        args += [f"optimizer={','.join(self.methods)}", f"dataset={','.join(self.datasets)}"]
        args += [f"{k}={','.join(v)}" for k, v in self.swept.items()]
        return args + list(self.fixed)


def merge(invocations: list[Invocation]) -> list[Invocation]:
    """Merge commands that differ only by dataset or only by method (fewer start-ups, and a parallel
    launcher gets more jobs at once)."""
    for attr_same, attr_join in (("datasets", "methods"), ("methods", "datasets")):
        merged: dict[tuple, Invocation] = {}
        for inv in invocations:
            key = (*inv.key(), tuple(getattr(inv, attr_same)))
            if key in merged:
                getattr(merged[key], attr_join).extend(x for x in getattr(inv, attr_join)
                                                      if x not in getattr(merged[key], attr_join))
            else:
                merged[key] = Invocation(inv.stage, list(inv.datasets), list(inv.methods), inv.swept, inv.fixed,
                                         inv.sweep, inv.grid, inv.tag)
        invocations = list(merged.values())
    return invocations


# ------------------------------------------------------------------------------- estimates
class Estimator:
    def __init__(self, profile: dict, device: str, parallel: float = 1):
        self.parallel = parallel
        self.cost = profile.get("cost") or {}
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        table = self.cost.get(self.device)
        self.guess = table is None
        self.table = table or self.cost.get("cpu") or {}

    def _device_value(self, key: str, default: float) -> float:
        value = self.cost.get(key, default)
        return float(value.get(self.device, default)) if isinstance(value, dict) else float(value)

    def epoch_cost(self, dataset: str, method: str) -> float:
        per = self.table.get(dataset) or {}
        return float(per.get(method, per.get("curvature" if method in CURVATURE else "first_order", 5.0)))

    def run_cost(self, dataset: str, method: str, overrides: dict) -> float:
        epochs = int(parse_value(overrides.get("trainer.epochs", "10")))
        return epochs * self.epoch_cost(dataset, method) + self._device_value("job_overhead_s", 3)

    def invocation(self) -> float:
        return self._device_value("invocation_overhead_s", 4)

    def batch(self, costs: list[float]) -> float:
        """Wall time of jobs launched together: ``parallel`` at a time, never less than the longest."""
        if not costs:
            return 0.0
        return max(sum(costs) / self.parallel, max(costs)) + self.invocation()

    def fisher(self, dataset: str) -> float:
        table = self.cost.get("fisher_s") or {}
        table = table.get(self.device, table) if isinstance(table, dict) else {}
        return float(table.get(dataset, 300))

    def report(self) -> float:
        return float(self.cost.get("report_s", 30))


# ------------------------------------------------------------------------------------- context


STAGES = ("data", "grid", "seeds", "fisher", "report")


@dataclass
class Context:
    """What one invocation works with: the command line merged with its profile, the folders, the
    device and the helpers that estimate, run and look up runs."""
    args: argparse.Namespace
    argv: list[str]
    profile: dict
    datasets: list[str]
    methods: list[str]
    stages: list[str]
    fisher_sets: dict[str, list[str]]
    results_root: Path
    results_dir: Path
    data_dir: Path
    device: str
    slots: int                          # kfac-bench commands at a time (the basic launcher's --jobs)
    estimator: "Estimator"
    runner: "Runner"
    index: "RunIndex"
    note: str
    started: str
    commit: str
    t_start: float

    @property
    def confirm_estimator(self) -> "Estimator":
        """Costs of the ``confirm`` runs (their own table: they run at other sizes than the grid)."""
        confirm = self.profile.get("confirm") or {}
        return Estimator({**self.profile, "cost": confirm.get("cost") or self.profile.get("cost") or {}},
                         self.device, self.estimator.parallel)

    @property
    def settings_mode(self) -> bool:
        # a `settings` profile runs the authors' selected settings under a list of authors_code values
        # (the authors' code, an ablation down to the specification) instead of a grid
        return bool(self.profile.get("settings"))


def _subset(parser, option: str, given: str | None, known: list[str], what: str) -> list[str]:
    """``known`` cut to the comma-separated ``given`` (an option of the command line), in its order."""
    if not given:
        return known
    unknown = set(given.split(",")) - set(known)
    if unknown:
        parser.error(f"{option}: {sorted(unknown)} not in the profile's {what} {known}")
    return [x for x in known if x in given.split(",")]


def _absolute(path: Path) -> Path:
    return path if path.is_absolute() else Path.cwd() / path


def _environment(args) -> dict | None:
    """The environment of the kfac-bench commands; None (after the message) when --olivetti is wrong."""
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    if args.olivetti:   # another copy than the one shipped with the package
        if not Path(args.olivetti).is_file():
            print(f"reproduce_paper: error: the Olivetti file {args.olivetti} does not exist (--olivetti); "
                  f"leave --olivetti out to use the copy shipped with kfac-bench", file=sys.stderr)
            return None
        env["KFAC_BENCH_OLIVETTI"] = str(Path(args.olivetti).resolve())
    return env


def claims_args(profile: dict, results_dir: Path, results_root: Path) -> list[str]:
    """``claims_from=[...]`` for the report: the results folders of the profiles named by
    ``claims_from`` that exist (the claims table weighs the specification against the authors' code,
    which other profiles measure)."""
    folders = []
    for name in profile.get("claims_from") or []:
        folder = results_root / name
        folder = folder if folder.is_absolute() else Path.cwd() / folder
        if folder.is_dir() and folder.resolve() != results_dir.resolve():
            folders.append(str(folder))
    return [f"claims_from=[{','.join(folders)}]"] if folders else []


def make_context(args, parser, argv: list[str], started: str, commit: str, t_start: float) -> Context | None:
    """The profile read and merged with the command line (the command line wins); None when it cannot run."""
    from kfac_bench.utils import select_device
    profile = load_profile(args.profile)
    args.launcher = args.launcher or profile.get("launcher") or "basic"
    args.jobs = args.jobs if args.jobs is not None else profile.get("jobs")
    args.threads = args.threads if args.threads is not None else profile.get("threads")
    datasets = _subset(parser, "--datasets", args.datasets, list(profile.get("datasets") or []), "datasets")
    methods = _subset(parser, "--methods", args.methods, list(profile.get("methods") or []), "methods")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = set(stages) - set(STAGES)
    if bad:
        parser.error(f"--stages: unknown {sorted(bad)}")
    # a Figure 1 study on a dataset the profile trains on follows --datasets; one on another dataset always runs
    fisher_sets = {d: _studies(v) for d, v in (profile.get("fisher") or {}).items()
                   if d in datasets or d not in (profile.get("datasets") or [])}

    results_root = Path(os.environ.get("KFAC_BENCH_RESULTS", "results"))
    # `results: <folder>` lets profiles share runs (the ablation extends the authors profile's runs)
    results_dir = _absolute(Path(args.results_dir or results_root / profile.get("results", profile["name"])))
    data_dir = _absolute(Path(args.data_dir or os.environ.get("KFAC_BENCH_DATA", "data")))
    env = _environment(args)
    if env is None:
        return None

    # an explicit --device is taken as it is (a GPU plan can be printed on a CPU machine)
    device = select_device("auto").type if args.device == "auto" else args.device
    if args.jobs == "auto":   # K concurrent runs on the device (conf/profile/gpu.yaml, kfac_bench/concurrency.py)
        from kfac_bench.runs.concurrency import choose_jobs
        args.jobs = choose_jobs(device, profile.get("concurrency"), log=say)
    # runs at a time inside one command (Hydra's launcher) and commands at a time (this script)
    parallel = {"basic": 1, "joblib": args.jobs or os.cpu_count() or 1, "submitit_local": os.cpu_count() or 1,
                "submitit_slurm": math.inf}[args.launcher]
    slots = max(int(args.jobs or 1), 1) if args.launcher == "basic" else 1
    runner = Runner(args, profile, results_dir, data_dir, env)
    runner.claims = claims_args(profile, results_dir, results_root)
    return Context(args, argv, profile, datasets, methods, stages, fisher_sets, results_root, results_dir, data_dir,
                   device, slots, Estimator(profile, device, parallel), runner, RunIndex(results_dir),
                   profile.get("description") or f"profile {profile['name']}", started, commit, t_start)


# ------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """The commands to run: data, then the tasks (grid, settings, seeds, fisher) in ``slots`` lanes,
    then the report; ``notes`` say what is skipped and why."""
    grid_invocations: list[Invocation] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_grid: int = 0                     # runs of the grid ...
    n_grid_todo: int = 0                # ... not finished yet
    grid_left: set = field(default_factory=set)            # (dataset, method) with grid runs to do
    grid_task_of: dict = field(default_factory=dict)       # the grid commands a winner's seeds wait for
    n_settings: int = 0
    n_settings_done: int = 0
    extra_seeds: list[int] = field(default_factory=list)


def make_plan(ctx: Context) -> Plan:
    plan = Plan(extra_seeds=[int(x) for x in ctx.profile.get("extra_seeds") or []])
    plan.grid_invocations = _grid_invocations(ctx)
    todo_grid = [(i, [j for j in i.jobs() if not ctx.index.finished(*j)]) for i in plan.grid_invocations]
    plan.n_grid = sum(len(i.jobs()) for i in plan.grid_invocations)
    plan.n_grid_todo = sum(len(t) for _, t in todo_grid)
    plan.grid_left = {(j[0], j[1]) for _, todo in todo_grid for j in todo}
    if "grid" in ctx.stages:
        _plan_grid(ctx, plan, todo_grid)
    if ctx.profile.get("tuning") and "grid" in ctx.stages:   # trials drawn from each method's search space
        from .tuning import plan_tuning   # Optuna and the search spaces: only for a tuning profile
        plan_tuning(ctx, plan, Task)
    if ctx.settings_mode and "grid" in ctx.stages:
        _plan_settings(ctx, plan)
    if "seeds" in ctx.stages and (plan.extra_seeds or ctx.profile.get("confirm")):
        for d in ctx.datasets:
            for m in ctx.methods:
                task = _seeds_task(ctx, plan, d, m)
                if task is not None:
                    plan.tasks.append(task)
    if "seeds" in ctx.stages and ctx.profile.get("tie_seeds"):
        _plan_ties(ctx, plan)
    if "seeds" in ctx.stages:
        for d in ctx.datasets:
            for m in ctx.methods:
                plan.tasks += [t for name in ctx.profile.get("variants") or {}
                               if (t := _variant_task(ctx, plan, d, m, name)) is not None]
    if "fisher" in ctx.stages:
        _plan_fisher(ctx, plan)
    if ctx.profile.get("one_problem_at_a_time"):
        # a plan that spans sessions leaves whole problems behind it: each problem's tasks before the next's
        # (its Figure 1 studies first: nothing waits for them)
        for task in plan.tasks:
            d = task.what.split()[1]
            task.rank = -1 if task.stage == "fisher" else (ctx.datasets.index(d) if d in ctx.datasets else 0)
    return plan


def _kind(method: str) -> str:
    return "first_order" if method in FIRST_ORDER else "curvature"


def _grid_invocations(ctx: Context) -> list[Invocation]:
    """The grid's commands: per (dataset, method), the sweep and the points shared from other methods."""
    invocations = []
    for d in ctx.datasets if not (ctx.settings_mode or ctx.profile.get("tuning")) else []:
        for m in ctx.methods:
            sweep = SWEEPS[_kind(m)]
            fixed = dataset_overrides(ctx.profile, d, m)
            # the paper grid is the sweep config's own (nothing swept on the command line)
            swept = grid_for(ctx.profile, d, m) if ctx.profile.get("grid", "paper") != "paper" else {}
            invocations.append(Invocation("grid", [d], [m], swept, fixed, sweep, load_sweep(sweep)))
            by_damping: dict[str, list[str]] = {}   # one command per damping: an lr sweep
            for point in shared_points(ctx.profile, d, m):
                by_damping.setdefault(point["optimizer.damping"][0], []).extend(point["optimizer.lr"])
            for damping, lrs in by_damping.items():
                swept_point = {"optimizer.lr": lrs, "optimizer.damping": [damping],
                               "optimizer.kl_clip": swept["optimizer.kl_clip"]}
                invocations.append(Invocation("grid", [d], [m], swept_point, fixed, sweep, load_sweep(sweep),
                                              f"shared damping{damping}"))
    if ctx.slots == 1:   # one command at a time: fewer, longer commands start up less often
        invocations = merge(invocations)
    return invocations


def _plan_grid(ctx: Context, plan: Plan, todo_grid) -> None:
    for inv, todo in todo_grid:
        what = f"grid {'+'.join(inv.datasets)} {'+'.join(inv.methods)}" + (f" {inv.tag}" if inv.tag else "")
        if not todo:
            plan.notes.append(f"{what}: all {len(inv.jobs())} runs finished already, skipped")
            continue
        for d, m in itertools.product(inv.datasets, inv.methods):
            plan.grid_task_of.setdefault((d, m), []).append(what)

        def grid_args(inv=inv):
            return inv.args() + ctx.runner.common(run=True) + ctx.runner.launcher()
        plan.tasks.append(Task(what, "grid", ctx.estimator.batch([ctx.estimator.run_cost(*j) for j in todo]),
                               grid_args))


def _plan_settings(ctx: Context, plan: Plan) -> None:
    """One run per (dataset, method, seed, authors_code value) of a settings profile."""
    for d in ctx.datasets:
        for m in ctx.methods:
            fixed = dataset_overrides(ctx.profile, d, m)
            for rank, (seed, epochs) in enumerate(settings_seeds(ctx.profile, d)):
                fixed_seed = seeded_overrides(fixed, seed, epochs)
                for i, (label, value) in enumerate(settings_runs(ctx.profile, m)):
                    over = {**dict(kv.split("=", 1) for kv in fixed_seed), "authors_code": value}
                    plan.n_settings += 1
                    what = f"run {d} {m} step{i}" + (f" seed{seed}" if seed is not None else "")
                    if ctx.index.finished(d, m, over):
                        plan.n_settings_done += 1
                        plan.notes.append(f"{what} ({label}: authors_code={value}): finished already, skipped")
                        continue
                    command = (["run", f"dataset={d}", f"optimizer={m}", f"authors_code={value}", *fixed_seed]
                               + ctx.runner.common(run=True))
                    plan.notes.append(f"{what}: {label}")
                    plan.tasks.append(Task(what, "settings", ctx.estimator.batch([ctx.estimator.run_cost(d, m, over)]),
                                           lambda command=command: command, rank=rank))


def _winner_seeds(ctx: Context, plan: Plan, d: str, m: str) -> tuple[list[str], list[int], float]:
    """(the settings, the seeds, the cost of one run) the grid's winner of (d, m) runs again with."""
    confirm = confirm_overrides(ctx.profile, d, m)
    if confirm is None:
        over = dict(kv.split("=", 1) for kv in dataset_overrides(ctx.profile, d, m))
        return dataset_overrides(ctx.profile, d, m), plan.extra_seeds, ctx.estimator.run_cost(d, m, over)
    seeds = [int(x) for x in ctx.profile["confirm"].get("seeds", [0])]
    over = dict(kv.split("=", 1) for kv in confirm)
    return confirm, seeds, ctx.confirm_estimator.run_cost(d, m, over)


def _selection(ctx: Context, m: str) -> tuple[str | None, list[str]]:
    """(the sweep config a winner's seeds run with, the keys that make a configuration): a grid's, or a
    tuning's search space (no sweep config: its keys are on the command line)."""
    if ctx.profile.get("tuning"):
        from .tuning import tuning_keys
        return None, tuning_keys(m)
    sweep = SWEEPS[_kind(m)]
    return sweep, list(load_sweep(sweep))


def _seeds_task(ctx: Context, plan: Plan, d: str, m: str) -> Task | None:
    """The extra seeds of the grid's winner of (d, m), or its confirmation at the profile's ``confirm``
    settings: its command is made once the grid has ended."""
    target, seeds, cost = _winner_seeds(ctx, plan, d, m)
    if not seeds:
        return None
    what = f"{'seeds' if confirm_overrides(ctx.profile, d, m) is None else 'confirm'} {d} {m}"
    return _winner_task(ctx, plan, d, m, what, seeds, target, cost)


def _winner_task(ctx: Context, plan: Plan, d: str, m: str, what: str, seeds: list[int], target: list[str],
                 cost: float, under: str = "") -> Task | None:
    """The grid's winner of (d, m) again with ``seeds`` and the overrides ``target`` (its own values replaced
    by target's): a task whose command is made once the grid has ended; None when every seed has run."""
    sweep, keys = _selection(ctx, m)
    fixed = dataset_overrides(ctx.profile, d, m)

    def winner(best) -> list[str]:
        return [f"{k}={fmt_value(best[k])}" for k in keys]

    def again(best) -> Invocation:
        return Invocation("seeds", [d], [m], {"seed": [str(x) for x in seeds]}, _merged(winner(best), target), sweep)
    left = len(seeds)
    if (d, m) not in plan.grid_left:   # the winner may be known already: count its missing seeds only
        best = select_best_hyperparameters(ctx.results_dir, d, m, fixed, keys)
        if best is not None:
            left = sum(not ctx.index.finished(*j) for j in again(best).jobs())
            if not left:
                plan.notes.append(f"{what}: finished already, skipped")
                return None

    def make_args():
        ctx.index.refresh(d, m)
        best = select_best_hyperparameters(ctx.results_dir, d, m, fixed, keys)
        if best is None:
            say(f"{what}: seeds {seeds} of the grid's winner{under}, known after the grid" if ctx.args.dry_run
                else f"{what}: no finished run of the grid, nothing to repeat")
            return None
        inv = again(best)
        if all(ctx.index.finished(*j) for j in inv.jobs()):
            say(f"{what}: finished already, skipped")
            return None
        say(f"{what}: best {' '.join(winner(best))} (final training loss {best['_loss']:.6g})")
        return inv.args() + ctx.runner.common(run=True) + ctx.runner.launcher()
    after = plan.grid_task_of.get((d, m), []) if (d, m) in plan.grid_left else []
    return Task(what, "seeds", ctx.estimator.batch([cost] * left), make_args, after)


def _plan_ties(ctx: Context, plan: Plan) -> None:
    """The two leaders of a problem again with the profile's ``tie_seeds`` where their confirmation seeds
    (0 and ``extra_seeds``) are within seed noise (:func:`.tuning.leaders_within_noise`). The leaders are
    known once every method's seeds have run: each method has a task, after all of them, that runs only
    if the method is a leader (its cost counted as two methods' in n)."""
    from .run_index import winner_seed_losses
    from .tuning import leaders_within_noise
    seeds, confirmation = [int(x) for x in ctx.profile["tie_seeds"]], {0, *plan.extra_seeds}
    for d in ctx.datasets:
        before = {t.what for t in plan.tasks if t.stage in ("grid", "seeds") and t.what.split()[1] == d}

        @functools.lru_cache(maxsize=None)   # every method's task asks; the seeds have all run by then
        def leaders(d=d) -> list[str]:
            losses = {m: [loss for seed, loss in winner_seed_losses(
                ctx.results_dir, d, m, dataset_overrides(ctx.profile, d, m)).items() if seed in confirmation]
                for m in ctx.methods}
            return leaders_within_noise(losses)
        for m in ctx.methods:
            target, _, cost = _winner_seeds(ctx, plan, d, m)
            task = _winner_task(ctx, plan, d, m, f"ties {d} {m}", seeds, target, cost)
            if task is None:
                continue
            task.cost *= min(1.0, 2 / len(ctx.methods))
            task.after |= before
            task.make_args = _if_leader(ctx, d, m, seeds, leaders, task.make_args)
            plan.tasks.append(task)


def _if_leader(ctx: Context, d: str, m: str, seeds: list[int], leaders, make_args):
    """``make_args`` where ``m`` is one of the two leaders within seed noise on ``d``, else nothing."""
    def args():
        if ctx.args.dry_run:
            say(f"ties {d} {m}: seeds {seeds} if one of the two leaders within seed noise, known after the seeds")
            return None
        chosen = leaders()
        if m not in chosen:
            say(f"ties {d} {m}: not one of two leaders within seed noise "
                f"({' and '.join(chosen) if chosen else 'none on this problem'})")
            return None
        return make_args()
    return args


def variant_spec(profile: dict, name: str) -> dict:
    """A profile's ``variants.<name>``: the grid's winners run again under other settings."""
    spec = (profile.get("variants") or {})[name]
    unknown = set(spec) - {"label", "authors_code", "overrides", "curvature_overrides", "datasets", "methods", "seeds"}
    if unknown:
        raise SystemExit(f"reproduce_paper: profile {profile['name']}: variants.{name}: unknown keys {sorted(unknown)}")
    return spec


def variant_overrides(profile: dict, name: str, dataset: str, method: str) -> list[str] | None:
    """The overrides variant ``name`` puts on top of the grid's winner of (dataset, method): its
    ``authors_code`` (``authors``: the authors' code as the verdict defines it, :func:`authors_code_value`),
    ``overrides`` and ``curvature_overrides`` (each a list, or {dataset: list} with an ``all`` entry),
    or None where the variant does not run (its ``datasets`` / ``methods``)."""
    spec = variant_spec(profile, name)
    if dataset not in (spec.get("datasets") or [dataset]) or method not in (spec.get("methods") or [method]):
        return None

    def entries(value) -> list[str]:
        if isinstance(value, dict):
            return list(value.get("all") or []) + list(value.get(dataset) or [])
        return list(value or [])
    code = spec.get("authors_code")
    out = [f"authors_code={authors_code_value(method) if code == 'authors' else code}"] if code else []
    return out + entries(spec.get("overrides")) + (entries(spec.get("curvature_overrides")) if method in CURVATURE else [])


def _merged(*lists: list[str]) -> list[str]:
    """key=value lists merged, a later value of a key replacing an earlier one (``+key`` is ``key``)."""
    out: dict[str, str] = {}
    for kv in itertools.chain(*lists):
        key, value = kv.split("=", 1)
        out.pop(key.lstrip("+"), None)
        out.pop("+" + key.lstrip("+"), None)
        out[key] = value
    return [f"{k}={v}" for k, v in out.items()]


def _variant_task(ctx: Context, plan: Plan, d: str, m: str, name: str) -> Task | None:
    """The grid's winner of (d, m) again under variant ``name`` (e.g. the authors' code, another
    spatial treatment), with the variant's seeds; its command is made once the grid has ended."""
    extra = variant_overrides(ctx.profile, name, d, m)
    if extra is None:
        return None
    seeds = [int(x) for x in variant_spec(ctx.profile, name).get("seeds", [0])]
    target = _merged(dataset_overrides(ctx.profile, d, m), extra)
    cost = ctx.estimator.run_cost(d, m, dict(kv.split("=", 1) for kv in target))
    return _winner_task(ctx, plan, d, m, f"{name} {d} {m}", seeds, target, cost, under=f" under {' '.join(extra)}")


def _studies(entry) -> list[list[str]]:
    """A profile's ``fisher.<dataset>``: the overrides of one study (a list of strings), or of several (a
    list of such lists)."""
    entry = list(entry or [])
    return [list(e) for e in entry] if entry and all(isinstance(e, list) for e in entry) else [entry]


def _plan_fisher(ctx: Context, plan: Plan) -> None:
    for d, studies in ctx.fisher_sets.items():
        for i, over in enumerate(studies):
            what = f"fisher {d}" + (f" {i + 1}" if len(studies) > 1 else "")
            if fisher_done(ctx.results_dir, d, over):
                plan.notes.append(f"{what}: finished already, skipped")
                continue
            command = ["fisher", f"dataset={d}", *over, "trainer.progress=false"] + ctx.runner.common()
            plan.tasks.append(Task(what, "fisher", ctx.estimator.fisher(d) + ctx.estimator.invocation(),
                                   lambda command=command: command))
