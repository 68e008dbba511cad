"""The estimate of a plan (per stage and in all) and the plan printed with it, before anything runs."""
from __future__ import annotations

from dataclasses import dataclass

from .common import fmt_duration, say
from .plan import Context, Plan, variant_overrides, variant_spec
from .profiles import confirm_overrides


@dataclass
class Estimate:
    """Seconds: per stage, the tasks' work (all lanes together) and the whole command's wall time."""
    stages: dict[str, float]
    work: float
    total: float


def estimate(ctx: Context, plan: Plan) -> Estimate:
    tasks, slots = plan.tasks, ctx.slots
    est = {stage: sum(t.cost for t in tasks if t.stage == stage and not _extension(t)) / slots
           for stage in ("settings", "grid", "seeds", "fisher")}
    est["extensions"] = sum(t.cost for t in tasks if _extension(t)) / slots
    longest = max((t.cost for t in tasks), default=0.0)
    work = sum(t.cost for t in tasks)
    tasks_wall = max(work / slots, longest)
    building_faces = "faces" in ctx.datasets and not any((ctx.data_dir / "faces").glob("faces_generated_*.pt"))
    est["data"] = (40.0 * building_faces + 10.0 * len(ctx.datasets)) if "data" in ctx.stages else 0.0
    est["report"] = ctx.estimator.report() if "report" in ctx.stages else 0.0
    return Estimate(est, work, tasks_wall + est["data"] + est["report"])


def _extension(task) -> bool:
    """A tuning's extension: it runs only where a winner sits on an edge (the estimate counts them all)."""
    return task.what.startswith("extend ")


def print_plan(ctx: Context, plan: Plan, est: Estimate) -> None:
    args, profile, slots = ctx.args, ctx.profile, ctx.slots
    say(f"profile {profile['name']} ({profile['_path']}): {ctx.note}")
    say(f"datasets {', '.join(ctx.datasets)}; methods {', '.join(ctx.methods)}; device {ctx.device}; "
        f"launcher {args.launcher}"
        + (f", {args.jobs} runs at a time" if args.jobs and args.launcher in ("basic", "joblib") else "")
        + (f" ({slots} commands at a time)" if slots > 1 else "")
        + (f"; {args.threads} torch thread(s) per run" if args.threads else ""))
    say(f"results {ctx.results_dir}; data {ctx.data_dir}")
    if ctx.settings_mode:
        say(f"settings: {plan.n_settings} runs (the authors' selected lr and damping; authors_code from "
            f"{profile['settings'].get('start', 'all')} down the profile's steps), {plan.n_settings_done} already "
            f"finished")
    elif profile.get("tuning"):
        spec = profile["tuning"]
        say(f"tuning: {plan.n_grid} trials ({spec.get('trials', 12)} per method and problem), "
            f"{plan.n_grid - plan.n_grid_todo} already finished; then up to {spec.get('max_extensions', 3)} "
            f"extensions per method and problem, each only where its winner sits on an edge of its space")
    else:
        say(f"grid: {plan.n_grid} runs in {len(plan.grid_invocations)} commands, "
            f"{plan.n_grid - plan.n_grid_todo} already finished")
    confirmed = [d for d in ctx.datasets if confirm_overrides(ctx.profile, d, "sgd") is not None]
    plain = [d for d in ctx.datasets if d not in confirmed]
    say(f"seeds: extra seeds {plan.extra_seeds} of each winner ({', '.join(plain) or 'no dataset'}): up to "
        f"{len(plain) * len(ctx.methods) * len(plan.extra_seeds)} runs")
    if ctx.profile.get("tie_seeds"):
        ties = list(ctx.profile["tie_seeds"])
        say(f"ties: seeds {ties} of the two leaders of a problem where their seeds' final losses overlap: up to "
            f"{2 * len(ctx.datasets) * len(ties)} runs")
    if confirmed:
        seeds = (ctx.profile.get("confirm") or {}).get("seeds", [0])
        say(f"confirm: each winner again at the profile's confirm settings with seeds {seeds} "
            f"({', '.join(confirmed)}): up to {len(confirmed) * len(ctx.methods) * len(seeds)} runs")
    for name in ctx.profile.get("variants") or {}:
        runs = [(d, m) for d in ctx.datasets for m in ctx.methods
                if variant_overrides(ctx.profile, name, d, m) is not None]
        seeds = variant_spec(ctx.profile, name).get("seeds", [0])
        say(f"variant {name}: each winner again with seeds {seeds} ({variant_spec(ctx.profile, name).get('label', name)}"
            f"): up to {len(runs) * len(seeds)} runs")
    say(f"fisher (Figure 1): {', '.join(ctx.fisher_sets) or 'none'}")
    say("ESTIMATED running time: " + fmt_duration(est.total) + " ("
        + ", ".join(f"{k} {fmt_duration(v)}" for k, v in est.stages.items() if v) + ")"
        + (f"; without extensions {fmt_duration(est.total - est.stages['extensions'])}"
           if est.stages.get("extensions") else "")
        + (f" -- no cost table for {ctx.device} in the profile, CPU figures used" if ctx.estimator.guess else "")
        + (" -- on a cluster the queue decides" if args.launcher == "submitit_slurm" else ""))
    say()
    for line in plan.notes:
        say(line)
