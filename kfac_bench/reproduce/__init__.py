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
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..configs import config_dir
from ..registry import curvature_method_names, first_order_method_names


def _root() -> Path:
    """The checkout this package sits in (commands run there, README.md and docs/ are its own), or the
    working directory for an installed package."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "README.md").is_file() and (checkout / "conf").is_dir() else Path.cwd()


ROOT = _root()
CONF = config_dir()

# the registry's lists (kfac_bench/registry.py): a method added there gets its profile overrides here
FIRST_ORDER = tuple(first_order_method_names())
CURVATURE = tuple(curvature_method_names())
SWEEPS = {"curvature": "paper_grid", "first_order": "paper_grid_first_order"}
README_TABLE = ("<!-- reproduce:table:start -->", "<!-- reproduce:table:end -->")
README_CLAIMS = ("<!-- claims:start -->", "<!-- claims:end -->")


def readme_markers(readme_text: str, profile: str) -> tuple[str, str]:
    """The block of the results page (docs/results.md; ``--results-page``) a profile's --publish-docs replaces:
    its own (``<!-- reproduce:table:<profile>:start -->``) when the page has one, else the shared one."""
    own = (f"<!-- reproduce:table:{profile}:start -->", f"<!-- reproduce:table:{profile}:end -->")
    return own if own[0] in readme_text and own[1] in readme_text else README_TABLE


def runs_span(results_dir: Path) -> str:
    """", its N runs trained from <first start> to <last end> (<duration>)" from the runs' summary.json
    (``started`` / ``finished``): the wall time of the runs a (possibly report-only) command publishes."""
    times = []
    for path in (results_dir / "runs").rglob("summary.json") if (results_dir / "runs").is_dir() else []:
        try:
            summary = json.loads(path.read_text())
            times.append((datetime.fromisoformat(summary["started"]), datetime.fromisoformat(summary["finished"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not times:
        return ""
    first, last = min(t[0] for t in times), max(t[1] for t in times)
    return (f"; its {len(times)} runs trained from {first.isoformat(timespec='minutes')} to "
            f"{last.isoformat(timespec='minutes')} ({fmt_duration((last - first).total_seconds())})")


def readme_sections(summary: str, wanted: list[str] | None) -> list[str]:
    """The lines of summary.md's top-level sections (``# Title``) whose titles start with one of
    ``wanted`` (a profile's ``readme_sections``; None: every section): the results page shows what the
    profile is for, the rest stays in docs/figures/<profile>/summary.md."""
    lines, keep = [], wanted is None
    for line in summary.splitlines():
        if line.startswith("# "):
            keep = wanted is None or any(line[2:].startswith(w) for w in wanted)
        if keep:
            lines.append(line)
    return lines


def replace_block(text: str, markers: tuple[str, str], lines: list[str]) -> str | None:
    """``text`` with everything between the markers (included) replaced by ``lines`` framed by them;
    None when the markers are missing or out of order."""
    start, end = markers
    if start not in text or end not in text or text.index(start) > text.index(end):
        return None
    return text[:text.index(start)] + "\n".join([start, *lines, end]) + text[text.index(end) + len(end):]


def say(message: str = "") -> None:
    print(f"[reproduce] {message}" if message else "", flush=True)


def _plain(text: str) -> str:
    """A note that fits in a double-quoted Hydra string."""
    return text.replace('"', "").replace("\\", "/").replace("'", "")


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


# ------------------------------------------------------------------------------------- profile
def load_profile(name: str) -> dict:
    from omegaconf import OmegaConf
    path = Path(name)
    if not path.suffix:
        path = CONF / "profile" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF / "profile").glob("*.yaml"))
        raise SystemExit(f"reproduce_paper: no profile {name!r} ({path}); known profiles: {', '.join(known)}")
    profile = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    profile.setdefault("name", path.stem)
    profile["_path"] = str(path)
    profile["methods"] = profile_methods(profile.get("methods"), path)
    return profile


def profile_methods(spec, where="the profile") -> list[str]:
    """A profile's ``methods``: ``paper`` (the paper's seven, from the registry), ``all`` (every
    method of the registry) or a list of registry names."""
    from ..registry import method_names, paper_method_names
    if spec in (None, []):
        return []
    if spec == "paper":
        return paper_method_names()
    if spec == "all":
        return method_names()
    names = [spec] if isinstance(spec, str) else list(spec)
    unknown = [m for m in names if m not in method_names()]
    if unknown:
        raise SystemExit(f"reproduce_paper: {where}: unknown method(s) {unknown} in methods; use paper, all "
                         f"or names among {method_names()}")
    return names


def load_sweep(name: str) -> dict[str, list[str]]:
    """``hydra.sweeper.params`` of ``conf/sweep/<name>.yaml`` as {key: [value strings]}."""
    from omegaconf import OmegaConf
    params = OmegaConf.load(CONF / "sweep" / f"{name}.yaml").hydra.sweeper.params
    return {k: [fmt_value(parse_value(v)) for v in str(params[k]).split(",")] for k in params}


def parse_value(text: str):
    """A command-line value as Hydra reads it (numbers, null, true/false, strings)."""
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)   # yaml 1.1 reads 1e-3 as a string
        except ValueError:
            return value
    return value


def fmt_value(value) -> str:
    """How Hydra writes a value into a run folder's name (``str(float)``): ``3e-4`` -> ``0.0003``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def tuned(method: str, dataset: str) -> dict:
    """The authors' selected values (the optimizer config's ``tuned`` entry; ``lr`` for SGD/Adam)."""
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(CONF / "optimizer" / f"{method}.yaml")
    if method in FIRST_ORDER:
        return {"lr": float(cfg.lr)}
    entry = cfg.tuned[dataset]
    return {"lr": float(entry.lr), "damping": float(entry.damping)}


def around(value: float, steps: list[int], grid: list[float]) -> list[float]:
    """Values ``steps`` places away from ``value`` along the sorted paper grid (0 = value itself)."""
    grid = sorted(grid)
    i = min(range(len(grid)), key=lambda j: abs(math.log(grid[j]) - math.log(value)))
    return [grid[i + s] for s in steps if 0 <= i + s < len(grid)]


def dataset_overrides(profile: dict, dataset: str, method: str) -> list[str]:
    out = list((profile.get("overrides") or {}).get("all") or [])
    out += list((profile.get("overrides") or {}).get(dataset) or [])
    if method in CURVATURE:
        out += list((profile.get("curvature_overrides") or {}).get("all") or [])
        out += list((profile.get("curvature_overrides") or {}).get(dataset) or [])
    return out


def own_grid_spec(spec: dict, dataset: str) -> dict:
    """A profile's ``grid`` entry for one dataset: the shared keys, then that dataset's changes
    (``grid: {lr_steps: [...], faces: {lr_steps: [...]}}``)."""
    datasets = ("curves", "mnist", "faces")
    return {**{k: v for k, v in spec.items() if k not in datasets}, **(spec.get(dataset) or {})}


def grid_for(profile: dict, dataset: str, method: str) -> dict[str, list[str]]:
    """The swept values of one (dataset, method): {key: [value strings]}."""
    kind = "first_order" if method in FIRST_ORDER else "curvature"
    paper = load_sweep(SWEEPS[kind])
    spec = profile.get("grid", "paper")
    if spec == "paper":
        return paper
    spec = own_grid_spec(spec, dataset)
    lr_grid = [float(v) for v in paper["optimizer.lr"]]
    best = tuned(method, dataset)
    # absolute values (the same for every method: a fair comparison) or steps along the paper grid
    # from the authors' selected value of each method
    if kind == "first_order" and (spec.get("first_order_lr") or {}).get(method):
        lrs = [float(v) for v in spec["first_order_lr"][method]]
    elif kind == "curvature" and spec.get("lr"):
        lrs = [float(v) for v in spec["lr"]]
    else:
        lrs = around(best["lr"], spec.get("lr_steps", [0]), lr_grid)
    out = {"optimizer.lr": [fmt_value(v) for v in lrs]}
    if kind == "curvature":
        damping_grid = [float(v) for v in paper["optimizer.damping"]]
        dampings = ([float(v) for v in spec["damping"]] if spec.get("damping")
                    else around(best["damping"], spec.get("damping_steps", [0]), damping_grid))
        out["optimizer.damping"] = [fmt_value(v) for v in dampings]
        out["optimizer.kl_clip"] = [fmt_value(parse_value(str(v))) for v in spec.get("kl_clip", [0.01])]
    return out


def settings_runs(profile: dict, method: str) -> list[tuple[str, str]]:
    """The ``authors_code`` values a ``settings`` profile runs for ``method``, as (label, value):
    ``start`` (``all``: the authors' code preset) and then, one cumulative step at a time, the preset
    with the behaviours of each ``remove`` step turned off (``rest``: every one left, i.e. the
    specification), skipping steps that turn nothing off for this method; then the ``combinations``
    (behaviours turned off from the preset together, for the interactions worth a run of their own).
    Only the behaviours that act on the method count (:func:`kfac_bench.optim.authors_code.applicable`)."""
    from kfac_bench.optim.authors_code import applicable, authors_setting, behaviour_names
    spec = profile.get("settings") or {}
    acting = applicable(method)

    def value(names: list[str]) -> str:
        return "[" + ",".join(names) + "]"

    start = spec.get("start", "all")
    if start == "authors":   # the authors' code as their published curves were made (authors_setting)
        current = authors_setting(method)
        out = [("authors' code", "all" if current == acting else value(current))]
    else:
        current = [n for n in behaviour_names(start) if n in acting]
        out = [("authors' code (all)" if start == "all" else value(current),
                start if start == "all" else value(current))]
    for step in spec.get("remove") or []:
        names = current if step == "rest" else [n for n in behaviour_names(step) if n in current]
        if not names:
            continue
        current = [n for n in current if n not in names]
        out.append(("specification" if not current else "- " + "+".join(names), value(current)))
    for combination in spec.get("combinations") or []:
        names = [n for n in behaviour_names(combination) if n in acting]
        kept = [n for n in acting if n not in names]
        if names and value(kept) not in {v for _, v in out}:
            out.append(("authors' code - " + "+".join(names), value(kept)))
    return out


def settings_seeds(profile: dict, dataset: str) -> list[tuple[int | None, int | None]]:
    """The (seed, epochs) of a settings profile's runs on ``dataset``, from its ``seeds`` entry
    (``{dataset: {seed: epochs}}``: the first seed at the longest horizon, extra seeds where shorter
    runs decide); ``[(None, None)]`` (seed 0 at the overrides' epochs) where it has none."""
    spec = (profile.get("seeds") or {}).get(dataset)
    if not spec:
        return [(None, None)]
    if not isinstance(spec, dict):
        raise SystemExit(f"reproduce_paper: profile {profile['name']}: seeds.{dataset} must map seeds to epochs, "
                         f"e.g. {{0: 10, 1: 5}}; got {spec!r}")
    return [(int(seed), int(epochs)) for seed, epochs in spec.items()]


def settings_plan_size(profile: dict) -> int:
    """How many runs a settings profile plans (every dataset, method, seed and setting)."""
    return sum(len(settings_seeds(profile, d)) * len(settings_runs(profile, m))
               for d in profile.get("datasets") or [] for m in profile.get("methods") or [])


def seeded_overrides(fixed: list[str], seed: int | None, epochs: int | None) -> list[str]:
    """``fixed`` with ``seed=`` and ``trainer.epochs=`` set (None: left as they are)."""
    out = [kv for kv in fixed if not (epochs is not None and kv.startswith("trainer.epochs="))]
    out += [f"trainer.epochs={epochs}"] if epochs is not None else []
    return out + ([f"seed={seed}"] if seed is not None else [])


def shared_points(profile: dict, dataset: str, method: str) -> list[dict[str, list[str]]]:
    """One-run grids: the points of the ``grid.also_from`` methods' reduced grids (their learning
    rates around their tuned lr, at their tuned damping) that a curvature method's own grid lacks. A
    reduced grid centred on the authors' values for each method alone compares every method at
    settings tuned for 200 full-size epochs; giving all curvature methods KFAC's candidates too keeps
    the comparison fair when those settings do not carry over to the reduced runs."""
    spec = profile.get("grid", "paper")
    if spec == "paper" or method not in CURVATURE:
        return []
    spec = own_grid_spec(spec, dataset)
    own = grid_for(profile, dataset, method)
    mine = set(itertools.product(own["optimizer.lr"], own["optimizer.damping"]))
    points: list[dict[str, list[str]]] = []
    for source in spec.get("also_from") or []:
        if source not in CURVATURE:
            raise ValueError(f"grid.also_from: {source!r} is not a curvature method ({', '.join(CURVATURE)})")
        theirs = grid_for(profile, dataset, source)
        for lr, damping in itertools.product(theirs["optimizer.lr"], theirs["optimizer.damping"]):
            if (lr, damping) not in mine:
                mine.add((lr, damping))
                points.append({"optimizer.lr": [lr], "optimizer.damping": [damping],
                               "optimizer.kl_clip": own["optimizer.kl_clip"]})
    return points


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


# ------------------------------------------------------------------------------ what is done
def _flat_config(run_dir: Path) -> dict | None:
    from kfac_bench.report.results import flat_config
    return flat_config(run_dir)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def matches(flat: dict, overrides: dict) -> bool:
    for key, text in overrides.items():
        if key.startswith(("hydra", "+sweep", "sweep")) or key in ("results_dir", "data_dir", "device",
                                                                    "trainer.keep_checkpoint"):
            continue
        want = parse_value(text)
        have = flat.get(key.lstrip("+"), None if want is None else object())
        if not _same(have, want):
            return False
    return True


class RunIndex:
    """The finished runs under ``results/runs/<dataset>/<method>/`` (status, config)."""

    def __init__(self, results_dir: Path):
        self.root = results_dir / "runs"
        self.cache: dict[tuple[str, str], list[tuple[dict, str]]] = {}

    def refresh(self, dataset: str, method: str) -> None:
        self.cache.pop((dataset, method), None)

    def runs(self, dataset: str, method: str) -> list[tuple[dict, str]]:
        key = (dataset, method)
        if key not in self.cache:
            found = []
            folder = self.root / dataset / method
            for summary_path in sorted(folder.glob("*/summary.json")) if folder.is_dir() else []:
                try:
                    summary = json.loads(summary_path.read_text())
                except (OSError, ValueError):
                    continue
                flat = _flat_config(summary_path.parent)
                if flat is not None:
                    found.append((flat, summary.get("status"), folder_override_keys(summary_path.parent.name)))
            self.cache[key] = found
        return self.cache[key]

    def finished(self, dataset: str, method: str, overrides: dict) -> bool:
        full = {"seed": "0", **overrides}
        named = {_folder_key(k) for k in full}
        # a run on another version of a generated stand-in is not this run (kfac-bench run refuses
        # its folder): config.yaml records the version since version 2, genuine data record none
        version = stand_in_version(dataset, overrides)
        # a run launched with an override the query leaves at its default is another run: matching the
        # named values alone took the 5k tuning run of a winner (seed 0, 5 epochs) for its full-size
        # confirmation, which then never trained
        return any(status in ("ok", "diverged") and matches(flat, full) and keys <= named
                   and flat.get("dataset.generator_version") == version
                   for flat, status, keys in self.runs(dataset, method))


def _folder_key(override_key: str) -> str:
    """An override's key as a run folder's name writes it (:func:`kfac_bench.cli._run_name`)."""
    return override_key.replace("/", "_").replace("+", "")


def folder_override_keys(folder_name: str) -> set[str]:
    """The override keys a run folder's name records (Hydra's ``override_dirname``, ``key=value`` joined by
    commas; a comma inside a list value starts no key; ``default``: none)."""
    return {part.split("=", 1)[0] for part in folder_name.split(",") if "=" in part}


def stand_in_version(dataset: str, overrides: dict) -> int | None:
    """The generator version this code builds for ``dataset`` with ``overrides`` (None: genuine)."""
    from kfac_bench.data import generator_version
    source = overrides.get("dataset.source")
    return generator_version({"name": dataset, "source": parse_value(source) if source is not None else None})


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


# ----------------------------------------------------------------------------------- running
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


def select_best_hyperparameters(results_dir: Path, dataset: str, method: str, overrides: list[str],
                                keys: list[str]) -> dict | None:
    """The winner of one (dataset, method) among this profile's runs, chosen as the report does."""
    from kfac_bench.report.results import load_results, runs_table
    from kfac_bench.report.tables import select_best
    folder = results_dir / "runs" / dataset / method
    if not folder.is_dir():
        return None
    runs = runs_table(load_results(folder))
    if runs.empty:
        return None
    fixed = dict(kv.split("=", 1) for kv in overrides)
    keep = [matches(_flat_config(Path(d)) or {}, fixed) for d in runs["run_dir"]]
    runs = runs[keep]
    if runs.empty:
        return None
    sel = select_best(runs)
    sel = sel[sel["best_config"].notna()]
    if sel.empty:
        return None
    best = sel.iloc[0]
    hyper = json.loads(best["hyperparameters"])
    return {k: hyper.get(k.split(".", 1)[1]) for k in keys} | {"_loss": best["selection_loss"]}


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


def fisher_done(results_dir: Path, dataset: str, overrides: list[str]) -> bool:
    root = results_dir / "fisher" / dataset
    fixed = dict(kv.split("=", 1) for kv in overrides)
    for path in root.rglob("fisher_errors.csv") if root.is_dir() else []:
        summary = path.parent / "summary.json"   # written last: a study without it did not finish
        try:
            if json.loads(summary.read_text()).get("status", "ok") not in ("ok", None):
                continue
        except (OSError, ValueError):
            continue
        flat = _flat_config(path.parent) if (path.parent / "config.yaml").exists() else {}
        if not fixed or matches(flat or {}, fixed):
            return True
    return False


def public_command(argv: list[str], root: Path = ROOT) -> str:
    """The command as the README and docs/ show it: paths inside the checkout relative to it, other absolute
    paths (this machine's) as ``<local path>``; PROVENANCE.md keeps the command as typed."""
    def shown(arg: str) -> str:
        key, sep, value = arg.partition("=") if arg.startswith("-") and "=" in arg else ("", "", arg)
        if value.startswith("/"):
            try:
                value = str(Path(value).resolve().relative_to(root.resolve())) or "."
            except ValueError:
                value = "<local path>"
        return key + sep + value
    return "python scripts/reproduce_paper.py " + " ".join(shlex.quote(shown(a)) for a in argv)


def publish_docs(runner: Runner, docs: Path, note: str, started: str, elapsed: float, estimate: float,
                 argv: list[str], readme: Path, commit: str, results_page: Path | None = None) -> None:
    """Small PNGs of the report and the summary table into ``docs``, the command and date beside
    them, the profile's tables into ``results_page`` (docs/results.md; default: ``readme``) between its
    reproduce:table markers, and the claims table into ``readme`` between the claims markers. ``commit``:
    the code's commit when the run started (taken then: the files written here would mark the tree dirty)."""
    copied = _report_for_docs(runner, docs, note)
    cmd = "python scripts/reproduce_paper.py " + " ".join(shlex.quote(a) for a in argv)
    (docs / "PROVENANCE.md").write_text(
        f"# Provenance of these files\n\nGenerated by\n\n```\n{cmd}\n```\n\n"
        f"- profile: {runner.profile['name']} ({note})\n- started: {started}; finished: "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
        f"- stages run by this command: {runner.args.stages} (a report-only command publishes runs made by "
        f"earlier ones: their times are in each run's summary.json)\n"
        f"- wall time of this command: {fmt_duration(elapsed)} (estimated {fmt_duration(estimate)})\n"
        f"- machine: {platform.node() or '?'}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, device {runner.args.device}\n- git commit (at the start): {commit}\n"
        f"- files: {', '.join(copied)}\n")
    shown = public_command(argv)
    generated = (f"_Generated by `{shown}` on {started[:10]} in {fmt_duration(elapsed)} "
                 f"(estimated {fmt_duration(estimate)}){runs_span(runner.results_dir)}")
    _publish_tables(runner, docs, copied, results_page or readme, generated)
    claims = docs / "claims_summary.md" if (docs / "claims_summary.md").exists() else docs / "claims.md"
    if readme.exists() and claims.exists():   # the verdict: the claims table as the report computed it
        text = readme.read_text()
        lines = [f"_Computed by `kfac-bench report` in `{shown}` on {started[:10]} from the runs listed in "
                 f"each row's source; rules and thresholds: `kfac_bench/report/claims.py`._", "",
                 claims.read_text().strip()]
        updated = replace_block(text, README_CLAIMS, lines)
        if updated is not None:
            readme.write_text(updated)
            say(f"README.md: the claims table between {README_CLAIMS[0]} and {README_CLAIMS[1]} updated")
    say(f"docs: {', '.join(copied)} and PROVENANCE.md in {docs}")


def _report_for_docs(runner: Runner, docs: Path, note: str) -> list[str]:
    """The report again, small PNGs only, its figures (the combined Figure 2) and tables copied into
    ``docs``; the names copied."""
    with tempfile.TemporaryDirectory() as tmp:
        runner.call(["report", f"results_dir={runner.results_dir}", f"output_dir={tmp}", "formats=[png]", "dpi=72",
                     f'note="{_plain(note)}"', *runner.claims], "report for docs")
        docs.mkdir(parents=True, exist_ok=True)
        copied = []
        tables = [Path(tmp) / name for name in ("summary.md", "summary.csv", "claims.md", "claims_summary.md",
                                                "claims.csv",
                                                "ablation.csv", "fair.csv", "authors_comparison.csv")]
        for path in sorted(Path(tmp).glob("*.png")) + tables:
            if path.exists() and not path.name.startswith("figure2_"):   # the combined Figure 2 suffices
                shutil.copy2(path, docs / path.name)
                copied.append(path.name)
    return copied


def _publish_tables(runner: Runner, docs: Path, copied: list[str], page: Path, generated: str) -> None:
    """The profile's block of the results ``page``: the figures and summary.md's sections it shows,
    under the ``generated`` line."""
    summary = docs / "summary.md"
    if not (page.exists() and summary.exists()):
        return
    text = page.read_text()
    start, end = readme_markers(text, runner.profile["name"])
    if not (start in text and end in text and text.index(start) < text.index(end)):
        say(f"{page}: no <!-- reproduce:table:{runner.profile['name']}:start/end --> block (nor the shared one): "
            f"the tables stay in {summary}")
        return
    try:
        rel = docs.resolve().relative_to(page.resolve().parent)
    except ValueError:
        rel = docs.resolve()
    images = [name for name in copied if name.endswith(".png")]
    from kfac_bench.report.tables import dataset_rank   # the paper's order
    images.sort(key=lambda n: (not n.startswith("figure2.png"), dataset_rank(n[:-4].split("_")[-1]), n))
    body = "\n".join(("####" + line[2:]) if line.startswith("## ") else line
                     for line in readme_sections(summary.read_text(), runner.profile.get("readme_sections"))
                     if not line.startswith("# "))
    block = [f"{generated}; provenance: `{rel}/PROVENANCE.md`._", ""]
    block += [f"![{name[:-4]}]({rel}/{name})" for name in images if not name.startswith("figure2_")]
    page.write_text(replace_block(text, (start, end), [*block, "", body.strip()]))
    say(f"{page.name}: the block between {start} and {end} updated")


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
    fisher_sets = {d: list(v or []) for d, v in (profile.get("fisher") or {}).items() if d in datasets}

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
    if ctx.settings_mode and "grid" in ctx.stages:
        _plan_settings(ctx, plan)
    if "seeds" in ctx.stages and (plan.extra_seeds or ctx.profile.get("confirm")):
        for d in ctx.datasets:
            for m in ctx.methods:
                task = _seeds_task(ctx, plan, d, m)
                if task is not None:
                    plan.tasks.append(task)
    if "fisher" in ctx.stages:
        _plan_fisher(ctx, plan)
    return plan


def _kind(method: str) -> str:
    return "first_order" if method in FIRST_ORDER else "curvature"


def _grid_invocations(ctx: Context) -> list[Invocation]:
    """The grid's commands: per (dataset, method), the sweep and the points shared from other methods."""
    invocations = []
    for d in ctx.datasets if not ctx.settings_mode else []:
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


def confirm_overrides(profile: dict, dataset: str, method: str) -> list[str] | None:
    """Tune short, confirm long (AlgoPerf practice): the settings a profile's ``confirm`` entry gives the
    grid's winners on ``dataset`` in place of the grid's own (``None``: no confirmation there, the winner's
    extra seeds run at the grid's settings)."""
    spec = profile.get("confirm") or {}
    over = (spec.get("overrides") or {}).get(dataset)
    if over is None:
        return None
    extra = (spec.get("curvature_overrides") or {}).get(dataset) if method in CURVATURE else None
    return list(over) + list(extra or [])


def _winner_seeds(ctx: Context, plan: Plan, d: str, m: str) -> tuple[list[str], list[int], float]:
    """(the settings, the seeds, the cost of one run) the grid's winner of (d, m) runs again with."""
    confirm = confirm_overrides(ctx.profile, d, m)
    if confirm is None:
        over = dict(kv.split("=", 1) for kv in dataset_overrides(ctx.profile, d, m))
        return dataset_overrides(ctx.profile, d, m), plan.extra_seeds, ctx.estimator.run_cost(d, m, over)
    seeds = [int(x) for x in ctx.profile["confirm"].get("seeds", [0])]
    over = dict(kv.split("=", 1) for kv in confirm)
    return confirm, seeds, ctx.confirm_estimator.run_cost(d, m, over)


def _seeds_task(ctx: Context, plan: Plan, d: str, m: str) -> Task | None:
    """The extra seeds of the grid's winner of (d, m), or its confirmation at the profile's ``confirm``
    settings: its command is made once the grid has ended."""
    sweep = SWEEPS[_kind(m)]
    fixed = dataset_overrides(ctx.profile, d, m)
    target, seeds, cost = _winner_seeds(ctx, plan, d, m)
    if not seeds:
        return None
    keys = list(load_sweep(sweep))
    over = dict(kv.split("=", 1) for kv in target)
    what = f"{'confirm' if target is not fixed else 'seeds'} {d} {m}"
    left = len(seeds)
    if (d, m) not in plan.grid_left:   # the winner may be known already: count its missing seeds only
        best = select_best_hyperparameters(ctx.results_dir, d, m, fixed, keys)
        if best is not None:
            hp = {k: fmt_value(best[k]) for k in keys}
            left = sum(not ctx.index.finished(d, m, {**over, **hp, "seed": str(x)}) for x in seeds)
            if not left:
                plan.notes.append(f"{what}: finished already, skipped")
                return None

    def make_args():
        ctx.index.refresh(d, m)
        best = select_best_hyperparameters(ctx.results_dir, d, m, fixed, keys)
        if best is None:
            say(f"{what}: seeds {seeds} of the grid's winner, known after the grid" if ctx.args.dry_run
                else f"{what}: no finished run of the grid, nothing to repeat")
            return None
        hp = [f"{k}={fmt_value(best[k])}" for k in keys]
        inv = Invocation("seeds", [d], [m], {"seed": [str(x) for x in seeds]}, hp + target, sweep)
        if all(ctx.index.finished(*j) for j in inv.jobs()):
            say(f"{what}: finished already, skipped")
            return None
        say(f"{what}: best {' '.join(hp)} (final training loss {best['_loss']:.6g})")
        return inv.args() + ctx.runner.common(run=True) + ctx.runner.launcher()
    after = plan.grid_task_of.get((d, m), []) if (d, m) in plan.grid_left else []
    return Task(what, "seeds", ctx.estimator.batch([cost] * left), make_args, after)


def _plan_fisher(ctx: Context, plan: Plan) -> None:
    for d, over in ctx.fisher_sets.items():
        if fisher_done(ctx.results_dir, d, over):
            plan.notes.append(f"fisher {d}: finished already, skipped")
            continue
        command = ["fisher", f"dataset={d}", *over, "trainer.progress=false"] + ctx.runner.common()
        plan.tasks.append(Task(f"fisher {d}", "fisher", ctx.estimator.fisher(d) + ctx.estimator.invocation(),
                               lambda command=command: command))


# --------------------------------------------------------------------------------- estimate
@dataclass
class Estimate:
    """Seconds: per stage, the tasks' work (all lanes together) and the whole command's wall time."""
    stages: dict[str, float]
    work: float
    total: float


def estimate(ctx: Context, plan: Plan) -> Estimate:
    tasks, slots = plan.tasks, ctx.slots
    est = {stage: sum(t.cost for t in tasks if t.stage == stage) / slots
           for stage in ("settings", "grid", "seeds", "fisher")}
    longest = max((t.cost for t in tasks), default=0.0)
    work = sum(t.cost for t in tasks)
    tasks_wall = max(work / slots, longest)
    building_faces = "faces" in ctx.datasets and not any((ctx.data_dir / "faces").glob("faces_generated_*.pt"))
    est["data"] = (40.0 * building_faces + 10.0 * len(ctx.datasets)) if "data" in ctx.stages else 0.0
    est["report"] = ctx.estimator.report() if "report" in ctx.stages else 0.0
    return Estimate(est, work, tasks_wall + est["data"] + est["report"])


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
    else:
        say(f"grid: {plan.n_grid} runs in {len(plan.grid_invocations)} commands, "
            f"{plan.n_grid - plan.n_grid_todo} already finished")
    confirmed = [d for d in ctx.datasets if confirm_overrides(ctx.profile, d, "sgd") is not None]
    plain = [d for d in ctx.datasets if d not in confirmed]
    say(f"seeds: extra seeds {plan.extra_seeds} of each winner ({', '.join(plain) or 'no dataset'}): up to "
        f"{len(plain) * len(ctx.methods) * len(plan.extra_seeds)} runs")
    if confirmed:
        seeds = (ctx.profile.get("confirm") or {}).get("seeds", [0])
        say(f"confirm: each winner again at the profile's confirm settings with seeds {seeds} "
            f"({', '.join(confirmed)}): up to {len(confirmed) * len(ctx.methods) * len(seeds)} runs")
    say(f"fisher (Figure 1): {', '.join(ctx.fisher_sets) or 'none'}")
    say("ESTIMATED running time: " + fmt_duration(est.total) + " ("
        + ", ".join(f"{k} {fmt_duration(v)}" for k, v in est.stages.items() if v) + ")"
        + (f" -- no cost table for {ctx.device} in the profile, CPU figures used" if ctx.estimator.guess else "")
        + (" -- on a cluster the queue decides" if args.launcher == "submitit_slurm" else ""))
    say()
    for line in plan.notes:
        say(line)


# ---------------------------------------------------------------------------------- execute
def execute(ctx: Context, plan: Plan, est: Estimate) -> None:
    """1. data, 2-4. grid, settings, seeds (after their grid) and fisher, 5. the report."""
    if "data" in ctx.stages:
        _fetch_data(ctx)
    say(f"== grid search, seeds of the winners, Figure 1: {len(plan.tasks)} commands"
        + (f", {ctx.slots} at a time" if ctx.slots > 1 else ""))
    if ctx.args.dry_run:
        for task in plan.tasks:
            command = task.make_args()
            if command is not None:
                say("$ kfac-bench " + " ".join(shlex.quote(a) for a in command))
    else:
        run_tasks(plan.tasks, ctx.runner, ctx.slots, _progress(ctx.slots, est.work))
    if "report" in ctx.stages:
        say("== report")
        ctx.runner.call(["report", f"results_dir={ctx.results_dir}", f'note="{_plain(ctx.note)}"', *ctx.runner.claims,
                         *(ctx.profile.get("report_args") or [])], "report")


def _fetch_data(ctx: Context) -> None:
    say("== data")
    for d in ctx.datasets:
        touched = [kv for m in ctx.methods for kv in dataset_overrides(ctx.profile, d, m)
                   if kv.split("=", 1)[0].startswith(("dataset.generator", "dataset.source", "dataset.path"))]
        if touched:
            say(f"{d}: the profile changes {sorted(set(touched))}; the first run builds that data")
            continue
        ctx.runner.call(["data", "fetch", d, "--data-dir", str(ctx.data_dir)], f"data {d}")


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


# ---------------------------------------------------------------------------------- publish
def publish(ctx: Context, est: Estimate) -> int:
    """--publish-docs, then the closing lines; the exit status (1 when a command failed)."""
    args, runner = ctx.args, ctx.runner
    elapsed = time.perf_counter() - ctx.t_start
    if args.publish_docs and not args.dry_run:
        docs = Path(args.publish_docs)
        publish_docs(runner, docs if docs.is_absolute() else ROOT / docs, ctx.note, ctx.started, elapsed, est.total,
                     ctx.argv, Path(args.readme), ctx.commit, Path(args.results_page))
    say()
    if args.dry_run:
        say(f"dry run: nothing was run. Estimated {fmt_duration(est.total)}.")
        return 0
    say(f"done in {fmt_duration(elapsed)} (estimated {fmt_duration(est.total)}); results in {ctx.results_dir}, "
        f"report in {ctx.results_dir / 'report'}")
    if runner.failures:
        say(f"{len(runner.failures)} command(s) failed (rerun the same command to retry):")
        for f in runner.failures:
            say(f"  {f}")
        return 1
    return 0


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
