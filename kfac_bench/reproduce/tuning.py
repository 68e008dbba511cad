"""The tuned comparison's trials (issue 33): every method gets the same number of trials per problem, drawn
by Optuna's quasi-random sampler over its registry search space (:mod:`kfac_bench.search_space`), and a
winner on the edge of its space is followed out of it, one bound at a time, until it is interior or the
extension diverges.

Why quasi-random and not TPE: the points of a scrambled Sobol sequence do not depend on the results, so a
plan knows every trial before any runs, an interrupted tuning resumes with the same points (a finished run
folder is skipped), and two lanes can train trials side by side. Trials are the first ``trials`` points of
``QMCSampler(qmc_type="sobol", scramble=True, seed=seed)``; categorical dimensions, which Sobol cannot
order, come from its seeded independent sampler.

The extension (:func:`extension_point`): the winner with each edge dimension moved one step past the bound
of the space searched so far (a decade on a log scale, the range's width on a linear one:
:func:`kfac_bench.search_space.extended`); it runs once the trials have ended, and again while the winner of
all points tried is still on an edge, up to ``max_extensions`` times. It is stateless: the searched space is
the search space widened to every point tried (:func:`kfac_bench.search_space.covering`), so a resumed plan finds the same next
point. :func:`kfac_bench.search_space.edge_flag` (the report reads it too) says, per (problem, method), where the trials' winner sat and what the extension
found -- the tables print it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from kfac_bench.search_space import Choice, LogUniform, SearchSpace, covering, edge_flag, edges, extended

__all__ = ["covering", "edge_flag", "extension_point", "overrides", "trial_points"]

SIGNIFICANT = 3      # a trial's values keep 3 significant digits: readable run folders, no lost resolution


def _distribution(dimension):
    import optuna
    if isinstance(dimension, LogUniform):
        return optuna.distributions.FloatDistribution(dimension.low, dimension.high, log=True)
    if isinstance(dimension, Choice):   # by index: Optuna's choices are scalars, a choice may be a list (betas)
        return optuna.distributions.CategoricalDistribution(list(range(len(dimension.values))))
    return optuna.distributions.FloatDistribution(dimension.low, dimension.high)


def _rounded(value):
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.{SIGNIFICANT}g}")
    return list(value) if isinstance(value, tuple) else value


def trial_points(space: SearchSpace, trials: int, seed: int = 0) -> list[dict]:
    """The first ``trials`` points of a scrambled Sobol sequence over ``space`` (Optuna's QMCSampler,
    seeded): {dimension name: value}, the same on every call."""
    import warnings

    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)   # QMCSampler's, since 3.0
    sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False,
                                         independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(sampler=sampler)
    distributions = {name: _distribution(dimension) for name, dimension in space.items()}
    points = []
    for _ in range(trials):
        trial = study.ask(distributions)
        points.append({name: _rounded(dimension.values[trial.params[name]] if isinstance(dimension, Choice)
                                      else trial.params[name]) for name, dimension in space.items()})
        study.tell(trial, 0.0)     # the sequence does not read the values
    return points


def overrides(point: Mapping) -> list[str]:
    """A point as ``optimizer.<key>=value`` overrides of ``kfac-bench run``."""
    def shown(value):
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(map(str, value)) + "]"
        return str(value)
    return [f"optimizer.{name}={shown(value)}" for name, value in point.items()]


def extension_point(space: SearchSpace, tried: list[Mapping], winner: Mapping) -> dict | None:
    """The next point to try past the edges of the searched space (:func:`covering` ``space`` and every
    ``tried`` point) the winner sits on: the winner with each such value moved one step out
    (:func:`kfac_bench.search_space.extended`); None when the winner is interior (or at an option's own limit)."""
    searched = covering(space, tried)
    sides = edges(searched, winner)
    if not sides:
        return None
    wider = extended(searched, sides)
    point = dict(winner)
    for name, side in sides.items():
        point[name] = _rounded(wider[name].low if side == "low" else wider[name].high)
    return point


def leaders_within_noise(losses: Mapping[str, list[float]]) -> list[str]:
    """The two methods of lowest median final loss (``losses``: method -> its seeds' final losses, inf for
    a diverged seed) when they are within seed noise -- their seeds' ranges overlap: the second's best seed
    at or below the first's worst -- else []. A confirmation gives these two more seeds (issue 33: 5 seeds
    where two leaders are within seed noise)."""
    import statistics
    ranked = sorted((statistics.median(v), m) for m, v in losses.items() if v)
    if len(ranked) < 2 or not math.isfinite(ranked[1][0]):
        return []
    first, second = losses[ranked[0][1]], losses[ranked[1][1]]
    return [ranked[0][1], ranked[1][1]] if min(second) <= max(first) else []


# ------------------------------------------------------------------------------------- the plan's tasks
def tuning_spec(profile: dict) -> dict:
    """A profile's ``tuning`` entry with its defaults: 12 trials, seed 0, at most 3 extensions."""
    spec = dict(profile.get("tuning") or {})
    unknown = set(spec) - {"trials", "seed", "max_extensions"}
    if unknown:
        raise SystemExit(f"reproduce_paper: profile {profile['name']}: tuning: unknown keys {sorted(unknown)}")
    return {"trials": int(spec.get("trials", 12)), "seed": int(spec.get("seed", 0)),
            "max_extensions": int(spec.get("max_extensions", 3))}


def tuning_keys(method: str) -> list[str]:
    """The config keys a tuning varies for ``method``: its search space's dimensions."""
    from kfac_bench.registry import search_space
    return [f"optimizer.{name}" for name in search_space(method)]


def tried_points(results_dir, dataset: str, method: str, fixed: list[str], space: SearchSpace) -> list[dict]:
    """The points of ``space`` that runs of (dataset, method) under ``fixed`` tried, whatever their status."""
    import json

    from kfac_bench.report.results import load_results, runs_table

    from .run_index import _flat_config, matches
    folder = results_dir / "runs" / dataset / method
    runs = runs_table(load_results(folder)) if folder.is_dir() else None
    if runs is None or runs.empty:
        return []
    wanted = dict(kv.split("=", 1) for kv in fixed)
    out = []
    for run_dir, hyper in zip(runs["run_dir"], runs["hyperparameters"]):
        if matches(_flat_config(run_dir) or {}, wanted):
            values = json.loads(hyper or "{}")
            out.append({name: values.get(name) for name in space})
    return out


def plan_tuning(ctx, plan, task_class) -> None:
    """The trials of every (dataset, method) of a ``tuning`` profile, each one ``kfac-bench run``, then its
    extensions one after the other; ``plan.grid_task_of`` lets the winners' seeds wait for them all."""
    from kfac_bench.registry import search_space

    from .profiles import dataset_overrides
    spec = tuning_spec(ctx.profile)
    for d in ctx.datasets:
        for m in ctx.methods:
            space, fixed = search_space(m), dataset_overrides(ctx.profile, d, m)
            names: list[str] = []
            for i, point in enumerate(trial_points(space, spec["trials"], spec["seed"])):
                over = fixed + overrides(point)
                plan.n_grid += 1
                if ctx.index.finished(d, m, dict(kv.split("=", 1) for kv in over)):
                    continue
                plan.n_grid_todo += 1
                names.append(f"trial {d} {m} {i}")
                plan.tasks.append(task_class(names[-1], "grid", _cost(ctx, d, m, over),
                                             lambda over=over, d=d, m=m: _run_args(ctx, d, m, over)))
            for k in range(1, spec["max_extensions"] + 1):
                what = f"extend {d} {m} {k}"
                plan.tasks.append(task_class(what, "grid", _cost(ctx, d, m, fixed),
                                             lambda d=d, m=m, space=space, fixed=fixed: _extension_args(ctx, d, m, space, fixed),
                                             after=list(names)))
                names.append(what)
            plan.grid_task_of[(d, m)] = names
            plan.grid_left.add((d, m))      # the extensions decide the winner: its seeds wait for them


def _cost(ctx, d: str, m: str, over: list[str]) -> float:
    return ctx.estimator.batch([ctx.estimator.run_cost(d, m, dict(kv.split("=", 1) for kv in over))])


def _run_args(ctx, d: str, m: str, over: list[str]) -> list[str]:
    return ["run", f"dataset={d}", f"optimizer={m}", *over] + ctx.runner.common(run=True)


def _extension_args(ctx, d: str, m: str, space: SearchSpace, fixed: list[str]) -> list[str] | None:
    """The next extension's command, or None when the winner of every point tried so far is interior."""
    from .common import say
    from .run_index import select_best_hyperparameters
    ctx.index.refresh(d, m)
    best = select_best_hyperparameters(ctx.results_dir, d, m, fixed, tuning_keys(m))
    if best is None:
        return None
    winner = {key.split(".", 1)[1]: best[key] for key in tuning_keys(m)}
    point = extension_point(space, tried_points(ctx.results_dir, d, m, fixed, space), winner)
    if point is None:
        return None
    over = fixed + overrides(point)
    if ctx.index.finished(d, m, dict(kv.split("=", 1) for kv in over)):
        return None
    say(f"extend {d} {m}: the winner {overrides(winner)} is on an edge; trying {overrides(point)}")
    return _run_args(ctx, d, m, over)
