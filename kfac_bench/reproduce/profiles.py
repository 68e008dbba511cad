"""Reading profiles (``conf/profile/<name>.yaml``) and sweeps: the grids, the settings and seeds of a
settings profile, the confirmation of the winners."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

from ..configs import config_dir
from ..registry import curvature_method_names, first_order_method_names


CONF = config_dir()

# the registry's lists (kfac_bench/registry.py): a method added there gets its profile overrides here
FIRST_ORDER = tuple(first_order_method_names())
CURVATURE = tuple(curvature_method_names())
SWEEPS = {"curvature": "paper_grid", "first_order": "paper_grid_first_order"}


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


GRID_KEYS = ("lr", "damping", "kl_clip", "lr_steps", "damping_steps", "first_order_lr", "also_from")


def own_grid_spec(spec: dict, dataset: str) -> dict:
    """A profile's ``grid`` entry for one dataset: the shared keys, then that dataset's changes
    (``grid: {lr_steps: [...], faces: {lr_steps: [...]}}``: any key that is not a grid key names a
    dataset)."""
    return {**{k: v for k, v in spec.items() if k in GRID_KEYS}, **(spec.get(dataset) or {})}


def grid_for(profile: dict, dataset: str, method: str) -> dict[str, list[str]]:
    """The swept values of one (dataset, method): {key: [value strings]}."""
    kind = "first_order" if method in FIRST_ORDER else "curvature"
    paper = load_sweep(SWEEPS[kind])
    spec = profile.get("grid", "paper")
    if spec == "paper":
        return paper
    spec = own_grid_spec(spec, dataset)
    lr_grid = [float(v) for v in paper["optimizer.lr"]]
    # absolute values (the same for every method: a fair comparison) or steps along the paper grid
    # from the authors' selected value of each method
    if kind == "first_order" and (spec.get("first_order_lr") or {}).get(method):
        lrs = [float(v) for v in spec["first_order_lr"][method]]
    elif kind == "curvature" and spec.get("lr"):
        lrs = [float(v) for v in spec["lr"]]
    else:   # the problems outside the paper have no authors' selection: their profiles give values
        lrs = around(tuned(method, dataset)["lr"], spec.get("lr_steps", [0]), lr_grid)
    out = {"optimizer.lr": [fmt_value(v) for v in lrs]}
    if kind == "curvature":
        damping_grid = [float(v) for v in paper["optimizer.damping"]]
        dampings = ([float(v) for v in spec["damping"]] if spec.get("damping")
                    else around(tuned(method, dataset)["damping"], spec.get("damping_steps", [0]), damping_grid))
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
        out = [("authors' code", authors_code_value(method))]
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


def authors_code_value(method: str) -> str:
    """The ``authors_code`` value of "the authors' code" for ``method`` (:func:`authors_setting`): ``all``
    where that is every behaviour acting on it (the curvature methods), else the list (SGD and Adam:
    without first_order_weight_decay)."""
    from kfac_bench.optim.authors_code import applicable, authors_setting
    names = authors_setting(method)
    return "all" if names == applicable(method) else "[" + ",".join(names) + "]"


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
