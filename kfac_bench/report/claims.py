"""The claims of the paper, each checked by a rule on the results: the verdict table.

One row per claim (Figure 1, Figure 2, Table 1, the conclusion) with its verdict, the numbers the
rule used, the rule itself (its thresholds by name and value) and where the numbers come from.
Every verdict comes from a rule below and its module-level thresholds; nothing is typed by hand.

Inputs: the training runs and fisher studies under one or more results folders (the report's
``results_dir`` and ``claims_from``). Per folder, problem (dataset setting without
``authors_code``) and method, two settings are read:

* **specification**: runs with ``authors_code == []``;
* **authors' code**: runs whose ``authors_code`` switches on every behaviour that acts on the
  method except those the authors' published curves rule out: ``all`` for the curvature methods,
  SGD and Adam without ``first_order_weight_decay`` (with it they do not train, while the published
  baselines do; :func:`kfac_bench.optim.authors_code.authors_setting`, :func:`.ablation.setting_class`).

Partial settings (ablation steps) are not used here. For each (problem, method, setting) the best
configuration by final training loss (:func:`.tables.select_best`) and the median over its seeds
per epoch (training loss evaluated at the end of each epoch; cumulative training seconds).

Matched points of two (or more) runs compared: E = the last epoch they all have, epochs
M = {ceil(E/2), E}; T = the smaller total training time, times {T/2, T}, the loss at a time by
linear interpolation of the per-epoch loss against cumulative training time (epoch 0 at time 0
when recorded).

Budgets. Every Figure 2 / Table 1 / conclusion rule is judged **per problem and horizon** (a
problem's runs pooled over their ``trainer.epochs``: at horizon H, every seed of the selected
configuration that trained at least H epochs, cut at H -- so the first seed of a long run joins the
extra seeds of a shorter one) and evaluated, by the same rule function, on the authors' published
curves (:mod:`kfac_bench.reference`) cut to the same budget:

* ``published_at_budget``: at full data (our ``n_train`` and batch size are the paper's), their
  per-epoch curves up to our H; on reduced data, the same number of **optimizer steps** (our batch
  sizes are the paper's, so steps and examples seen agree): their per-iteration record
  (``authors_iterations.csv``, their first 10 epochs) averaged over each of our epochs' steps, as
  their own per-epoch loss is the mean of the epoch's mini-batch losses; ``not published`` beyond it;
* ``published_full``: their 200 epochs.

The verdict on a problem (:func:`problem_verdict`): ``holds`` / ``does not hold`` only where
``published_at_budget`` holds (their own curves show the effect at this budget, so ours can confirm
or refute it) -- where they do not at the runs' own horizon, the rule is judged at the largest shorter
horizon of :data:`CUT_HORIZONS` where they do (the runs' first epochs; :func:`decisive_budget`), and the
row's budget says so; ``not testable at this budget`` where their curves at our budget do not show it but at
200 epochs do; ``not shown by the paper's own curves`` where they fail the rule even at 200 epochs;
``not measured`` where our runs lack a method. A claim's verdict under a setting (specification, the
authors' code) comes from its problems' by :func:`overall_verdict`: ``holds`` if every decided problem
holds, ``does not hold`` if any decided problem fails; with no decided problem, ``not testable at this
budget`` if any problem says so, else ``not shown by the paper's own curves`` if any says so, else
``not measured``. Figure 1 rows read the fisher studies (``<folder>/fisher/<dataset>/...``):
``holds`` / ``does not hold`` / ``not testable here`` (F1c, when the study is shorter than the paper's)
/ ``not measured``; the paper publishes Figure 1 as a picture only, so their ``published_*`` columns
say ``not published``.

Use::

    from kfac_bench.report.claims import claims_markdown, claims_table
    table = claims_table(["results/verdict"])      # also written as claims.csv by the report
    block = claims_markdown(table, note="profile ...", heading="## Claims of the paper")
    compact = claims_summary_markdown(table)       # one row per claim (the README's block)
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ..registry import get_method, methods_in_role, paper_method_names
from .ablation import AUTHORS_CODE, SPECIFICATION, setting_items, with_base
from .results import load_results, profile_folders, runs_table
from .tables import markdown_table, mean_curve, method_label, select_best

# ------------------------------------------------------------------------------------ thresholds
THROUGHOUT_FRACTION = 1.0    # F1a: fraction of evaluation points where an approximation beats KFAC
BEST_FRACTION = 0.9          # F1b: fraction of points where Deflation is the lowest of the five
BEST_TIE_RTOL = 1e-4         # F1b: within this relative margin of the lowest counts as lowest (Lanczos
                             #      reaches Deflation's optimum to ~1e-6; fisher_study.TIE_RTOL)
PEAK_VALUE = 6.5             # F1c: the paper's Figure 1 caption, KFAC's peak amplitude on MNIST
PEAK_TOLERANCE = 0.25        # F1c: relative tolerance around PEAK_VALUE
PAPER_FISHER_EPOCHS = {"curves": 40, "mnist": 26, "faces": 32}   # F1c: epochs of Adam of the paper's study
FASTER_MARGIN = 0.05         # F2a/F2b/C1: "faster" = loss ratio <= 1 - FASTER_MARGIN
SAME_TOLERANCE = 0.05        # F2c: "about the same" = |ratio - 1| <= SAME_TOLERANCE
MUCH_FASTER_RATIO = 0.8      # F2d/F2e: "much faster" = loss ratio <= MUCH_FASTER_RATIO
SAME_ORDER_FACTOR = 3.0      # T1: seconds per epoch / KFAC's <= SAME_ORDER_FACTOR

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NOT_TESTABLE_AT_BUDGET = "not testable at this budget"
NOT_SHOWN_BY_PAPER = "not shown by the paper's own curves"
NOT_TESTABLE = "not testable here"          # F1c: a fisher study shorter than the paper's
NOT_MEASURED = "not measured"
VERDICTS = (HOLDS, DOES_NOT_HOLD, NOT_TESTABLE_AT_BUDGET, NOT_SHOWN_BY_PAPER, NOT_TESTABLE, NOT_MEASURED)
NOT_PUBLISHED = "not published"
# the paper's problems: training examples, batch size and epochs (appendix D; the authors' outputs_<batch>)
PAPER_SIZE = {"curves": (16000, 256), "mnist": (50000, 512), "faces": (82800, 1024)}
PAPER_EPOCHS = 200
# the shorter horizons a run is also judged at when its own cannot decide a rule (its first epochs are a
# shorter run of the same seed): the largest at which the paper's own curves show the effect decides
CUT_HORIZONS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 100, 150)

# what produces the inputs of a rule when they are absent
PRODUCED_BY = {
    SPECIFICATION: "`python scripts/reproduce_paper.py --profile verdict` (results/verdict/: the seven methods at "
                   "full data under the specification and the authors' code)",
    AUTHORS_CODE: "`python scripts/reproduce_paper.py --profile verdict` (results/verdict/: authors' code = "
                  "authors_code=all, the authors' selected lr/damping)",
    "fisher": "`kfac-bench fisher dataset=<d>` (or the profiles' fisher stage) into <results>/fisher/<d>/",
}

# The claims' subjects are roles of the registry (kfac_bench/registry.py, ROLES), never method names:
# the paper's reference approximation, its first-order baselines, its Kronecker-factored methods, the
# approximations it proposes (all but the reference), those of rank 1 and rank 2, and the one its
# Figure 1 finds best.
REFERENCE = methods_in_role("reference")[0]
BASELINES = methods_in_role("baselines")
CURVATURE_METHODS = methods_in_role("curvature")
APPROXIMATIONS = methods_in_role("approximations")
RANK_ONE = methods_in_role("rank1")
SAME_AS_REFERENCE = methods_in_role("rank1_approximations")
HIGH_RANK = methods_in_role("rank2")
FIGURE1_BEST = methods_in_role("figure1_best")[0]
ERRORS = (("error_frobenius", "Error 1"), ("error_spectrum", "Error 2"))
CLAIM_COLUMNS = ["id", "claim", "problem", "setting", "verdict", "budget", "published_at_budget", "published_full",
                 "key_number", "numbers", "published_numbers", "rule", "source"]
ALL_PROBLEMS = "all problems"


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class Problem:
    """The best curves of one problem of one results folder under one setting."""
    label: str                          # dataset (+ setting entries), "(generated stand-in)", [folder]
    folder: str
    setting_class: str
    curves: dict = field(default_factory=dict)          # method -> DataFrame epoch, loss, time
    hyperparameters: dict = field(default_factory=dict)  # method -> dict
    run_dirs: dict = field(default_factory=dict)         # method -> [run folders of the seeds]
    commands: list = field(default_factory=list)
    dataset: str = ""
    n_train: int | None = None
    batch_size: int | None = None
    horizon: int | None = None                           # epochs every curve is cut at
    seeds: int = 0                                       # the fewest seeds of a paper's method

    def steps(self) -> int | None:
        if not (self.n_train and self.batch_size and self.horizon):
            return None
        return self.horizon * math.ceil(self.n_train / self.batch_size)

    def budget(self) -> str:
        """What the rule was decided at: epochs, training examples, optimizer steps, seeds."""
        size = f" x {self.n_train} examples ({self.steps()} steps)" if self.steps() else ""
        return f"{self.horizon} epochs{size}, {self.seeds} seed{'s' if self.seeds != 1 else ''}"

    def full_data(self) -> bool:
        return PAPER_SIZE.get(self.dataset) == (self.n_train, self.batch_size)


@dataclass
class FisherStudy:
    label: str
    dataset: str
    path: str
    table: pd.DataFrame
    epochs: float                       # epochs of Adam the study covered


@dataclass
class Outcome:
    """A rule on one problem: holds True/False, or None when the problem lacks its inputs; ``key``
    the one number that decides it (the worst ratio, ...)."""
    holds: bool | None
    numbers: str
    key: str = ""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _say(message: str) -> None:
    print(f"[report] claims: {message}", flush=True)


def _without_epochs(setting: str) -> str:
    items = setting_items(setting)
    items.pop("trainer.epochs", None)
    return json.dumps(items, sort_keys=True, default=str)


def _best_per_setting(runs: pd.DataFrame) -> dict:
    """(base setting without epochs, class, method) -> {horizon: selection row}, specification and
    authors' code only, the lowest final loss where a class has several settings."""
    best: dict = {}
    for _, sel in select_best(runs).iterrows():
        if not isinstance(sel["best_config"], str):
            continue
        row = runs[runs["run_dir"] == sel["best_run_dir"]].iloc[0]
        if row["setting_class"] not in (SPECIFICATION, AUTHORS_CODE):
            continue
        horizon = _int(setting_items(row["base_setting"]).get("trainer.epochs")) or _int(row["epochs_completed"]) or 0
        key = (_without_epochs(row["base_setting"]), row["setting_class"], sel["method"])
        held = best.setdefault(key, {}).get(horizon)
        if held is None or sel["selection_loss"] < held[0]["selection_loss"]:
            best[key][horizon] = (sel, row)
    return best


def _pooled_runs(runs: pd.DataFrame, horizons: dict, horizon: int) -> list[str]:
    """The seeds at ``horizon``: the selected configuration's runs of every horizon >= ``horizon``
    with the same hyperparameters (a long run's first epochs are a shorter run of the same seed)."""
    sel, _ = horizons[horizon]
    dirs = list(sel["seed_run_dirs"])
    for other, (osel, _) in horizons.items():
        if other > horizon and osel["hyperparameters"] == sel["hyperparameters"]:
            dirs += [d for d in osel["seed_run_dirs"] if d not in dirs]
    done = runs.set_index("run_dir")["epochs_completed"]
    return [d for d in dirs if (done.get(d) or 0) >= horizon]


def _curve(long: pd.DataFrame, run_dirs: list[str], horizon: int) -> pd.DataFrame:
    curve = mean_curve(long, run_dirs)
    if curve.empty:
        return curve
    curve = curve[curve["epoch"].astype(int) <= horizon]
    return pd.DataFrame({"epoch": curve["epoch"].astype(int), "loss": curve["train_median"].astype(float),
                         "time": curve["time_median"].astype(float)})


def collect_problems(folders: Iterable[str | Path], exclude: Iterable[Path] = ()) -> list[Problem]:
    """Every (folder, problem, setting, horizon) with its best curves per method (specification and
    authors' code only); a root of several profiles' folders (``docs/runs/``) is read profile by profile
    (:func:`.results.profile_folders`). A folder that cannot be read is reported and skipped."""
    out: list[Problem] = []
    paper_methods = set(paper_method_names())
    for folder in (sub for f in folders for sub in profile_folders(f)):
        if not folder.is_dir():
            _say(f"{folder} does not exist: skipped")
            continue
        try:
            long = load_results(folder, exclude=[folder / "report", *exclude])
            runs = with_base(runs_table(long))
        except Exception as err:  # noqa: BLE001 - one bad folder must not stop the report
            _say(f"{folder} cannot be read ({type(err).__name__}: {err}): skipped")
            continue
        if runs.empty:
            continue
        grouped: dict = {}
        for (base, cls, method), horizons in _best_per_setting(runs).items():
            for horizon, (sel, row) in horizons.items():
                problem = grouped.get((base, cls, horizon))
                if problem is None:
                    items = setting_items(base)
                    label = f"{row['base_label']} [{folder.name or folder}]"
                    problem = grouped[(base, cls, horizon)] = Problem(
                        label, str(folder), cls, dataset=str(row["dataset"]), horizon=horizon,
                        n_train=_int(items.get("dataset.n_train")), batch_size=_int(items.get("dataset.batch_size")))
                dirs = _pooled_runs(runs, horizons, horizon)
                curve = _curve(long, dirs, horizon)
                if curve.empty:
                    continue
                problem.curves[method] = curve
                problem.hyperparameters[method] = json.loads(sel["hyperparameters"])
                problem.run_dirs[method] = dirs
                if method in paper_methods:   # the claims compare only these: a method beside them
                    problem.seeds = min(problem.seeds or len(dirs), len(dirs))   # does not shrink the budget
                command = _read_json(Path(sel["best_run_dir"]) / "summary.json").get("command")
                if command and command not in problem.commands:
                    problem.commands.append(command)
        out += [p for p in grouped.values() if p.curves]
    return out


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------ the published curves
def _reference_curve(dataset: str, method: str, problem: Problem | None, full: bool) -> pd.DataFrame | None:
    """The authors' curve of ``method`` as a claims curve (epoch, loss, time): their 200 epochs
    (``full``), else cut to ``problem``'s budget (see the module docstring); None where the budget
    lies beyond what they published."""
    from ..reference import authors_curve, load_authors_iterations
    if full or problem.full_data():
        c = authors_curve(dataset, method)
        if c.empty:
            return None
        c = c if full else c[c["epoch"] <= problem.horizon]
        if not full and int(c["epoch"].max()) < problem.horizon:
            return None
        return pd.DataFrame({"epoch": c["epoch"].astype(int), "loss": c["train_loss"].astype(float),
                             "time": c["time_s"].astype(float)})
    if not (problem.n_train and problem.batch_size and problem.horizon):
        return None
    its = load_authors_iterations()
    its = its[(its["dataset"] == dataset) & (its["method"] == method)].sort_values("iteration")
    per_epoch = math.ceil(problem.n_train / problem.batch_size)
    if its.empty or int(its["iteration"].max()) < per_epoch * problem.horizon:
        return None
    rows = []
    for epoch in range(1, problem.horizon + 1):
        window = its[(its["iteration"] > (epoch - 1) * per_epoch) & (its["iteration"] <= epoch * per_epoch)]
        rows.append((epoch, float(window["train_loss"].mean()), float(window["time_s"].iloc[-1])))
    return pd.DataFrame(rows, columns=["epoch", "loss", "time"])


def published_problem(problem: Problem, full: bool) -> Problem:
    """``problem`` with the authors' published curves of its methods in place of ours."""
    horizon = PAPER_EPOCHS if full else problem.horizon
    where = f"{problem.dataset}, authors' published curves, " + (
        f"their {PAPER_EPOCHS} epochs" if full else
        (f"their first {horizon} epochs" if problem.full_data() else f"their first {problem.steps()} steps"))
    out = Problem(where, "kfac_bench/reference", problem.setting_class, dataset=problem.dataset,
                  horizon=horizon, n_train=problem.n_train, batch_size=problem.batch_size)
    # every method the authors published, whichever of ours have run: what their own figure shows at
    # this budget does not depend on how far our plan has got
    for method in dict.fromkeys([*paper_method_names(), *problem.curves]):
        curve = _reference_curve(problem.dataset, method, problem, full)
        if curve is not None:
            out.curves[method] = curve
            out.hyperparameters[method] = {}
    return out


def collect_fisher_studies(folders: Iterable[str | Path]) -> list[FisherStudy]:
    studies = []
    from .results import fisher_study_files
    for folder in (Path(f) for f in folders):
        for root, path in fisher_study_files(folder):
            try:
                table = pd.read_csv(path)
            except (OSError, ValueError, pd.errors.EmptyDataError) as err:
                _say(f"cannot read {path} ({err}): skipped")
                continue
            if not {"iteration", "layer", "method", "error_frobenius", "error_spectrum"} <= set(table.columns):
                _say(f"{path} lacks the Figure 1 columns: skipped")
                continue
            meta = _read_json(path.parent / "summary.json")
            rel = path.parent.relative_to(root)
            dataset = str(meta.get("dataset") or (rel.parts[0] if rel.parts else "unknown"))
            epochs = meta.get("epochs")
            if epochs is None and "epoch" in table:
                epochs = float(pd.to_numeric(table["epoch"], errors="coerce").max())
            stand_in = " (generated stand-in)" if meta.get("dataset_source") == "generated" else ""
            where = root.parent.relative_to(folder).as_posix()
            place = f"{folder.name}/{where}" if where != "." else folder.name
            studies.append(FisherStudy(f"{dataset}{stand_in} [{place}/fisher/{rel}]", dataset, str(path),
                                       table, float(epochs) if epochs is not None else math.nan))
    return studies


# ------------------------------------------------------------------------------- matched points
def matched_epochs(curves: list[pd.DataFrame]) -> list[int]:
    """M = {ceil(E/2), E}, E = the last epoch every curve has (empty when E < 1)."""
    last = min(int(c["epoch"].max()) for c in curves)
    return sorted({math.ceil(last / 2), last}) if last >= 1 else []


def loss_at_epoch(curve: pd.DataFrame, epoch: int) -> float:
    # numpy, not a pandas mask: the claims ask this thousands of times per table
    hit = np.flatnonzero(curve["epoch"].to_numpy() == epoch)
    return float(curve["loss"].to_numpy()[hit[0]]) if len(hit) else math.nan


def matched_times(curves: list[pd.DataFrame]) -> list[float]:
    """{T/2, T}, T = the smallest total training time of the curves."""
    total = min(float(c["time"].max()) for c in curves)
    return [total / 2, total] if total > 0 else []


def loss_at_time(curve: pd.DataFrame, seconds: float) -> float:
    """Linear interpolation of the per-epoch loss against cumulative training time."""
    time, loss = curve["time"].to_numpy(dtype=float), curve["loss"].to_numpy(dtype=float)
    finite = np.isfinite(time) & np.isfinite(loss)
    order = np.argsort(time[finite])
    time, loss = time[finite][order], loss[finite][order]
    if not len(time) or seconds < time[0] or seconds > time[-1]:
        return math.nan
    return float(np.interp(seconds, time, loss))


def _ratios(curve: pd.DataFrame, reference: list[pd.DataFrame], per: str) -> list[tuple[float, float]]:
    """(point, loss / min over ``reference`` of their losses) at the matched points of all curves."""
    curves = [curve, *reference]
    if per == "epoch":
        points, at = matched_epochs(curves), loss_at_epoch
    else:
        points, at = matched_times(curves), loss_at_time
    out = []
    for p in points:
        denominator = min(at(r, p) for r in reference)
        out.append((p, at(curve, p) / denominator if denominator > 0 else math.nan))
    return out


def _points(per: str, ratios) -> str:
    unit = "epoch" if per == "epoch" else "s"
    return ", ".join(f"{r:.3g}@{p:g}{unit}" if per == "epoch" else f"{r:.3g}@{p:.0f}{unit}" for p, r in ratios)


def _missing(problem: Problem, needed: Iterable[str]) -> list[str]:
    return [m for m in needed if m not in problem.curves]


def _not_measured(problem: Problem, missing: list[str]) -> Outcome:
    return Outcome(None, f"{problem.label}: not measured (no finished run of "
                         f"{', '.join(method_label(m) for m in missing)})")


# ------------------------------------------------------------------------------------ the rules
def _names(methods: Iterable[str], last: str = ", ") -> str:
    """The methods' labels, comma-separated (``last``: the word before the last one)."""
    labels = [method_label(m) for m in methods]
    return ", ".join(labels[:-1]) + last + labels[-1] if len(labels) > 1 else "".join(labels)


def _subject(methods: tuple[str, ...]) -> str:
    """How a ratio names the methods of a role: the label of a role of one method, else ``m``."""
    return method_label(methods[0]) if len(methods) == 1 else "m"


def rule_faster_than_baselines(problem: Problem, per: str) -> Outcome:
    """F2a/F2b: every curvature method's loss / min(baselines) <= 1 - FASTER_MARGIN at M (or at the times)."""
    missing = _missing(problem, (*CURVATURE_METHODS, *BASELINES))
    if missing:
        return _not_measured(problem, missing)
    baselines = [problem.curves[b] for b in BASELINES]
    parts, holds, worst = [], True, []
    for m in CURVATURE_METHODS:
        ratios = _ratios(problem.curves[m], baselines, per)
        ok = bool(ratios) and all(r <= 1 - FASTER_MARGIN for _, r in ratios)
        holds &= ok
        worst += [r for _, r in ratios]
        parts.append(f"{method_label(m)} {_points(per, ratios)}")
    return Outcome(holds, f"{problem.label}: loss/min({_names(BASELINES)}) " + "; ".join(parts), _worst(worst))


def rule_same_as_kfac(problem: Problem) -> Outcome:
    """F2c: |loss_m / loss_reference - 1| <= SAME_TOLERANCE at every matched epoch, for each rank-1
    approximation m (KPSVD against KFAC)."""
    missing = _missing(problem, (REFERENCE, *SAME_AS_REFERENCE))
    if missing:
        return _not_measured(problem, missing)
    reference, name = problem.curves[REFERENCE], method_label(REFERENCE)
    parts, holds, spreads = [], True, []
    for m in SAME_AS_REFERENCE:
        per_epoch = _ratios(problem.curves[m], [reference], "epoch")
        per_second = _ratios(problem.curves[m], [reference], "time")
        holds &= bool(per_epoch) and all(abs(r - 1) <= SAME_TOLERANCE for _, r in per_epoch)
        spreads += [abs(r - 1) for _, r in per_epoch]
        parts.append(f"{method_label(m)}/{name} {_points('epoch', per_epoch)} "
                     f"(per second: {_points('time', per_second)})")
    spread = max(spreads, default=math.nan)
    return Outcome(holds, f"{problem.label}: " + "; ".join(parts),
                   f"{_subject(SAME_AS_REFERENCE)}/{name} within 1 ± {spread:.3g}")


def rule_much_faster_than_kfac(problem: Problem, per: str) -> Outcome:
    """F2d/F2e: loss_m / loss_reference <= MUCH_FASTER_RATIO for each rank-2 method (Deflation,
    Lanczos, KFAC-corrected against KFAC)."""
    missing = _missing(problem, (REFERENCE, *HIGH_RANK))
    if missing:
        return _not_measured(problem, missing)
    parts, holds, worst = [], True, []
    for m in HIGH_RANK:
        ratios = _ratios(problem.curves[m], [problem.curves[REFERENCE]], per)
        holds &= bool(ratios) and all(r <= MUCH_FASTER_RATIO for _, r in ratios)
        worst += [r for _, r in ratios]
        parts.append(f"{method_label(m)} {_points(per, ratios)}")
    return Outcome(holds, f"{problem.label}: loss/{method_label(REFERENCE)} " + "; ".join(parts), _worst(worst))


def seconds_per_epoch(curve: pd.DataFrame) -> float:
    last = curve[curve["epoch"] == curve["epoch"].max()].iloc[0]
    return float(last["time"] / last["epoch"]) if last["epoch"] > 0 else math.nan


def rule_same_order_cost(problem: Problem) -> Outcome:
    """T1: seconds per epoch of each approximation / the reference's <= SAME_ORDER_FACTOR."""
    missing = _missing(problem, (REFERENCE, *APPROXIMATIONS))
    if missing:
        return _not_measured(problem, missing)
    reference, name = seconds_per_epoch(problem.curves[REFERENCE]), method_label(REFERENCE)
    parts, holds, ratios = [f"{name} {reference:.3g} s/epoch"], True, []
    for m in APPROXIMATIONS:
        ratio = seconds_per_epoch(problem.curves[m]) / reference
        holds &= bool(ratio <= SAME_ORDER_FACTOR)
        ratios.append(ratio)
        parts.append(f"{method_label(m)} ×{ratio:.2f}")
    return Outcome(holds, f"{problem.label}: " + ", ".join(parts), f"largest ×{max(ratios):.2f} of {name}'s s/epoch")


def kronecker_rank(method: str, hyperparameters: dict | None = None) -> int | None:
    """The number of Kronecker terms of a configured method, from the registry (a method whose rank
    is an option, e.g. ``lanczos_k``'s ``k``, reads it from its hyperparameters); None for a
    first-order or unknown method."""
    try:
        entry = get_method(method)
    except (KeyError, ValueError):
        return None
    return entry.rank_of(hyperparameters or {})


def rule_higher_rank_better(problem: Problem) -> Outcome:
    """C1: the best rank-2 method's loss / the best rank-1 method's <= 1 - FASTER_MARGIN at every
    matched epoch (the best = the lowest loss at the last common epoch); ranks > 2 reported."""
    ranks = {m: kronecker_rank(m, problem.hyperparameters.get(m)) for m in problem.curves}
    ranks = {m: r for m, r in ranks.items() if r is not None}
    by_rank: dict[int, list[str]] = {}
    for m, r in ranks.items():
        by_rank.setdefault(r, []).append(m)
    if 1 not in by_rank or 2 not in by_rank:
        return Outcome(None, f"{problem.label}: not measured (needs a rank-1 and a rank-2 method; has "
                             f"{', '.join(sorted(ranks)) or 'none'})")
    last = min(int(problem.curves[m]["epoch"].max()) for m in ranks)

    def best(methods):
        return min(methods, key=lambda m: loss_at_epoch(problem.curves[m], last))
    one, two = best(by_rank[1]), best(by_rank[2])
    ratios = _ratios(problem.curves[two], [problem.curves[one]], "epoch")
    holds = bool(ratios) and all(r <= 1 - FASTER_MARGIN for _, r in ratios)
    text = f"{problem.label}: best rank 2 {method_label(two)} / best rank 1 {method_label(one)} {_points('epoch', ratios)}"
    if max(by_rank) > 2:
        losses = [(r, loss_at_epoch(problem.curves[best(by_rank[r])], last)) for r in sorted(by_rank)]
        decreasing = all(b[1] < a[1] for a, b in zip(losses, losses[1:]))
        text += (f"; loss at epoch {last} by rank: " + ", ".join(f"rank {r} {v:.4g}" for r, v in losses)
                 + f" (decreases with rank: {'yes' if decreasing else 'no'})")
    return Outcome(holds, text, _worst([r for _, r in ratios]))


def _worst(ratios: list[float]) -> str:
    finite = [r for r in ratios if r == r]
    return f"worst ratio {max(finite):.3g}" if finite else ""


def _points_by_method(study: FisherStudy, column: str) -> pd.DataFrame:
    table = study.table.copy()
    table[column] = pd.to_numeric(table[column], errors="coerce")
    return table.pivot_table(index=["iteration", "layer"], columns="method", values=column, aggfunc="first")


def rule_below_kfac(study: FisherStudy) -> Outcome:
    """F1a: per approximation and error, the fraction of points with error < the reference's >=
    THROUGHOUT_FRACTION."""
    parts, holds, any_value = [], True, False
    name = method_label(REFERENCE)
    for column, error in ERRORS:
        wide = _points_by_method(study, column)
        if REFERENCE not in wide:
            return Outcome(None, f"{study.label}: no {name} errors")
        for m in APPROXIMATIONS:
            if m not in wide:
                holds = False
                parts.append(f"{method_label(m)} {error} missing")
                continue
            valid = wide[[m, REFERENCE]].dropna()
            if valid.empty:
                continue
            fraction = float((valid[m] < valid[REFERENCE]).mean())
            any_value = True
            holds &= fraction >= THROUGHOUT_FRACTION
            parts.append(f"{method_label(m)} {error} {fraction:.2f}")
    if not any_value:
        return Outcome(None, f"{study.label}: no error values")
    return Outcome(holds, f"{study.label}: fraction of points below {name}: " + ", ".join(parts))


def rule_deflation_best(study: FisherStudy) -> Outcome:
    """F1b: the fraction of points where the Figure 1 best (Deflation) is the lowest of the curvature
    methods (within BEST_TIE_RTOL) >= BEST_FRACTION, for both errors."""
    parts, holds = [], True
    best, name = FIGURE1_BEST, method_label(FIGURE1_BEST)
    for column, error in ERRORS:
        wide = _points_by_method(study, column)
        if best not in wide:
            return Outcome(None, f"{study.label}: no {name} errors")
        others = [m for m in CURVATURE_METHODS if m in wide and m != best]
        valid = wide[[best, *others]].dropna()
        if valid.empty:
            return Outcome(None, f"{study.label}: no {error} values")
        lowest = valid.min(axis=1)
        fraction = float((valid[best] <= lowest * (1 + BEST_TIE_RTOL)).mean())
        holds &= fraction >= BEST_FRACTION
        parts.append(f"{error} {fraction:.2f} of {len(valid)} points")
    return Outcome(holds, f"{study.label}: {name} lowest: " + ", ".join(parts))


def rule_kfac_peak(study: FisherStudy) -> tuple[str, str]:
    """F1c on one MNIST study: (verdict, numbers) from the reference's (KFAC's) peak error."""
    wide = {c: _points_by_method(study, c) for c, _ in ERRORS}
    name = method_label(REFERENCE)
    if REFERENCE not in wide["error_frobenius"]:
        return NOT_MEASURED, f"{study.label}: no {name} errors"
    peak1 = float(wide["error_frobenius"][REFERENCE].max())
    peak2 = float(wide["error_spectrum"][REFERENCE].max()) if REFERENCE in wide["error_spectrum"] else math.nan
    paper_epochs = PAPER_FISHER_EPOCHS.get(study.dataset)
    points = int(study.table["iteration"].nunique())
    numbers = (f"{study.label}: {name} peak Error 1 {peak1:.3g} (Error 2 {peak2:.3g}) over {points} points in "
               f"{study.epochs:g} epochs of Adam (paper: {paper_epochs} epochs, every iteration)")
    if abs(peak1 / PEAK_VALUE - 1) <= PEAK_TOLERANCE:
        return HOLDS, numbers
    if paper_epochs is not None and not (study.epochs >= paper_epochs):
        return NOT_TESTABLE, numbers
    return DOES_NOT_HOLD, numbers


def _peak_on_mnist(studies: list[FisherStudy]) -> tuple[str, str]:
    """F1c over the studies: the MNIST study covering the most epochs decides, the others reported."""
    mnist = [s for s in studies if s.dataset == "mnist"]
    if not mnist:
        return (NOT_MEASURED, f"no MNIST fisher study: produced by {PRODUCED_BY['fisher'].replace('<d>', 'mnist')} "
                              f"(the paper's: trainer.epochs=26 fisher.every=1)")
    longest = max(mnist, key=lambda s: (s.epochs if s.epochs == s.epochs else -1, s.table["iteration"].nunique()))
    verdict, numbers = rule_kfac_peak(longest)
    others = [rule_kfac_peak(s)[1] for s in mnist if s is not longest]
    return verdict, numbers + (" || other MNIST studies: " + "; ".join(others) if others else "")


# ------------------------------------------------------------------------------------- verdicts
def _word(outcome: Outcome | None) -> str:
    if outcome is None or outcome.holds is None:
        return NOT_PUBLISHED
    return HOLDS if outcome.holds else DOES_NOT_HOLD


def problem_verdict(ours: Outcome, at_budget: Outcome | None, full: Outcome | None) -> str:
    """The verdict on one problem: ours decides only where the authors' own curves at our budget
    show the effect (see the module docstring)."""
    if ours.holds is None:
        return NOT_MEASURED
    if at_budget is not None and at_budget.holds:
        return HOLDS if ours.holds else DOES_NOT_HOLD
    if full is not None and full.holds:
        return NOT_TESTABLE_AT_BUDGET
    if full is not None and full.holds is False:
        return NOT_SHOWN_BY_PAPER
    return NOT_TESTABLE_AT_BUDGET       # no published curve to judge by: nothing decides


def overall_verdict(verdicts: list[str]) -> str:
    """A claim's verdict under one setting from its problems' verdicts."""
    decided = [v for v in verdicts if v in (HOLDS, DOES_NOT_HOLD)]
    if decided:
        return HOLDS if all(v == HOLDS for v in decided) else DOES_NOT_HOLD
    for verdict in (NOT_TESTABLE_AT_BUDGET, NOT_SHOWN_BY_PAPER):
        if verdict in verdicts:
            return verdict
    return NOT_MEASURED


def _fisher_verdict(outcomes: list[Outcome]) -> tuple[str, str]:
    measured = [o for o in outcomes if o.holds is not None]
    numbers = "; ".join(o.numbers for o in outcomes)
    if not measured:
        return NOT_MEASURED, (numbers + " || " if numbers else "") + f"no fisher study: produced by {PRODUCED_BY['fisher']}"
    return (HOLDS if all(o.holds for o in measured) else DOES_NOT_HOLD), numbers


def _source(folders: list[str], problems: list[Problem], studies: list[FisherStudy] | None = None) -> str:
    parts = [f"results: {', '.join(folders)}"]
    if studies is not None:
        parts.append("fisher studies: " + (", ".join(s.path for s in studies) or "none"))
        return "; ".join(parts)
    parts.append("settings: specification = runs with authors_code=[]; authors' code = runs with every "
                 "behaviour of the method (authors_code=all); best configuration by final train loss, median "
                 "over its seeds")
    commands = list(dict.fromkeys(c for p in problems for c in p.commands))
    if commands:
        shown = commands[:2]
        parts.append("commands (summary.json) e.g. " + " ; ".join(f"`{c}`" for c in shown)
                     + (f" (+{len(commands) - len(shown)} more)" if len(commands) > len(shown) else ""))
    return "; ".join(parts)


TIME_NOTE = ("; the seconds are the runs' cumulative training time (evaluation excluded) on a machine the "
             "reproduction shares between two runs at a time, not an isolated measurement")
MATCHED = ("E = last epoch common to the compared runs, matched epochs {ceil(E/2), E}; matched times {T/2, T}, "
           "T = the smaller total training time of the compared runs, loss interpolated linearly in time")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: its id, its text, the rule that decides it and that rule in words.

    ``on="runs"``: ``rule(problem) -> Outcome``, judged per problem and setting on our runs and on the
    authors' published curves (:func:`judge`); ``on="fisher"``: ``rule(studies) -> (verdict, numbers)``
    once over the Figure 1 studies."""
    id: str
    text: str
    rule: Callable
    description: str
    on: str = "runs"


def _count(methods: tuple[str, ...]) -> str:
    return NUMBER_WORDS.get(len(methods), str(len(methods)))


def paper_claims() -> tuple[Claim, ...]:
    """The claims of the paper, in the table's order; their subjects are the registry's roles."""
    ref, best = method_label(REFERENCE), method_label(FIGURE1_BEST)
    # the methods that reach the same optimum as the Figure 1 best (best of the same rank): a tie with
    # them is no defeat
    same_optimum = [m for m in CURVATURE_METHODS if m != FIGURE1_BEST and get_method(m).best_of_rank
                    and get_method(m).rank == get_method(FIGURE1_BEST).rank]
    min_baselines = ", ".join(f"loss_{method_label(b)}(e)" for b in BASELINES)
    same = _subject(SAME_AS_REFERENCE)
    return (
        Claim("F1a", f"Figure 1: all {_count(APPROXIMATIONS)} approximations below {ref} on Error 1 and Error 2 "
                     f"throughout",
              lambda studies: _fisher_verdict([rule_below_kfac(s) for s in studies]),
              f"per fisher study, for {_names(APPROXIMATIONS)} and each error: the fraction of evaluation points "
              f"(iteration, layer) where its error < {ref}'s; holds iff every fraction >= THROUGHOUT_FRACTION = "
              f"{THROUGHOUT_FRACTION:g} on every study", on="fisher"),
        Claim("F1b", f"Figure 1: {best} the best approximation",
              lambda studies: _fisher_verdict([rule_deflation_best(s) for s in studies]),
              f"per fisher study and error: the fraction of points where {best}'s error is the lowest of the "
              f"{_count(CURVATURE_METHODS)} (within BEST_TIE_RTOL = {BEST_TIE_RTOL:g} relative: "
              f"{_names(same_optimum, ' and ')} reaches the same optimum); holds iff >= BEST_FRACTION = "
              f"{BEST_FRACTION:g} for both errors on every study", on="fisher"),
        Claim("F1c", f"Figure 1: {ref}'s Error 1 peaks near {PEAK_VALUE:g} on MNIST", _peak_on_mnist,
              f"the peak of {ref}'s Error 1 over the points of the MNIST study covering the most epochs; holds iff "
              f"|peak / PEAK_VALUE - 1| <= PEAK_TOLERANCE = {PEAK_TOLERANCE:g} (PEAK_VALUE = {PEAK_VALUE:g}); "
              f"otherwise 'not testable here' when the study covered fewer than PAPER_FISHER_EPOCHS['mnist'] = "
              f"{PAPER_FISHER_EPOCHS['mnist']} epochs. Error 1 here is the paper's definition, ||F - F^||_F / "
              f"||F||_F of layer 5's block (relative, so the loss's scale does not enter); the paper's caption does "
              f"not say which of the two errors peaks at about {PEAK_VALUE:g} -- Error 2's peak is in the numbers",
              on="fisher"),
        Claim("F2a", f"Figure 2: all {_count(CURVATURE_METHODS)} curvature methods faster than "
                     f"{_names(BASELINES, ' and ')} per epoch",
              partial(rule_faster_than_baselines, per="epoch"),
              f"on each problem, for each of {_names(CURVATURE_METHODS)}: R = loss_m(e) / min({min_baselines}) at "
              f"the matched epochs; holds on the problem iff every R <= 1 - FASTER_MARGIN = {1 - FASTER_MARGIN:g} "
              f"(FASTER_MARGIN = {FASTER_MARGIN:g}); {MATCHED}"),
        Claim("F2b", f"Figure 2: all {_count(CURVATURE_METHODS)} curvature methods faster than "
                     f"{_names(BASELINES, ' and ')} per second",
              partial(rule_faster_than_baselines, per="time"),
              f"as F2a at the matched times (T = the smallest total training time of the method, "
              f"{_names(BASELINES, ' and ')}): every R <= 1 - FASTER_MARGIN = {1 - FASTER_MARGIN:g}; "
              f"{MATCHED}{TIME_NOTE}"),
        Claim("F2c", f"Figure 2: {ref} ≈ {_names(SAME_AS_REFERENCE, ' and ')}", rule_same_as_kfac,
              f"|loss_{same} / loss_{ref} - 1| <= SAME_TOLERANCE = {SAME_TOLERANCE:g} at every matched epoch (the "
              f"per-second ratios are reported, not judged); {MATCHED}"),
        Claim("F2d", f"Figure 2: {_names(HIGH_RANK, ' and ')} much faster than {ref} per epoch",
              partial(rule_much_faster_than_kfac, per="epoch"),
              f"loss_m / loss_{ref} <= MUCH_FASTER_RATIO = {MUCH_FASTER_RATIO:g} at every matched epoch, for each "
              f"of {_names(HIGH_RANK)}; {MATCHED}"),
        Claim("F2e", f"Figure 2: {_names(HIGH_RANK, ' and ')} much faster than {ref} per second",
              partial(rule_much_faster_than_kfac, per="time"),
              f"as F2d at the matched times: loss_m / loss_{ref} <= MUCH_FASTER_RATIO = {MUCH_FASTER_RATIO:g}; "
              f"{MATCHED}{TIME_NOTE}"),
        Claim("T1", f"Table 1: the {_count(APPROXIMATIONS)} approximations cost the same order as {ref}",
              rule_same_order_cost,
              f"seconds per epoch (median over the seeds of the best configuration; cumulative training time at "
              f"the last epoch / epochs) of {_names(APPROXIMATIONS)} over {ref}'s, same results folder and problem: "
              f"every ratio <= SAME_ORDER_FACTOR = {SAME_ORDER_FACTOR:g}{TIME_NOTE}; `kfac-bench bench` measures "
              f"the per-step cost of each approximation in isolation"),
        Claim("C1", "Conclusion: higher Kronecker rank, better optimisation", rule_higher_rank_better,
              f"the best rank-2 method ({_names(HIGH_RANK)}) vs the best rank-1 method ({_names(RANK_ONE)}), the "
              f"best = the lowest loss at E: loss ratio <= 1 - FASTER_MARGIN = {1 - FASTER_MARGIN:g} at every "
              f"matched epoch on every problem; ranks from kfac_bench.registry; ranks > 2 (if run) reported: does "
              f"the loss decrease with rank; {MATCHED}"),
    )


def claims_table(folders: Iterable[str | Path], problems: list[Problem] | None = None,
                 studies: list[FisherStudy] | None = None) -> pd.DataFrame:
    """The verdict table (columns :data:`CLAIM_COLUMNS`) from the runs and fisher studies of ``folders``."""
    folders = [str(f) for f in folders]
    problems = collect_problems(folders) if problems is None else problems
    studies = collect_fisher_studies(folders) if studies is None else studies
    sources = {"fisher": _source(folders, [], studies), "runs": _source(folders, problems)}
    rows = []
    for claim in paper_claims():
        if claim.on == "fisher":
            rows.append(_fisher_row(claim, *claim.rule(studies), sources["fisher"]))
        else:
            rows.extend(judge(claim.id, claim.text, problems, claim.rule, claim.description, sources["runs"]))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def cut_at(problem: Problem, horizon: int) -> Problem:
    """``problem``'s curves up to ``horizon`` epochs (the same runs, a shorter budget)."""
    return replace(problem, curves={m: c[c["epoch"] <= horizon] for m, c in problem.curves.items()},
                   horizon=horizon)


def decisive_budget(problem: Problem, rule_fn) -> tuple[Problem, Outcome]:
    """The budget a rule is judged at on ``problem``: the runs' own horizon where the paper's curves
    show the effect there, else the largest of :data:`CUT_HORIZONS` below it where they do (a verdict
    at the shortest horizon that decides), else the runs' own; with the rule on the published curves."""
    at_budget = rule_fn(published_problem(problem, full=False))
    if at_budget.holds or not problem.horizon:
        return problem, at_budget
    for horizon in sorted((h for h in CUT_HORIZONS if h < problem.horizon), reverse=True):
        cut = cut_at(problem, horizon)
        published = rule_fn(published_problem(cut, full=False))
        if published.holds:
            return cut, published
    return problem, at_budget


def _fisher_row(claim: Claim, verdict: str, numbers: str, source: str) -> dict:
    """The one row of a Figure 1 claim (the paper publishes Figure 1 as a picture: nothing to compare)."""
    return {"id": claim.id, "claim": claim.text, "problem": ALL_PROBLEMS, "setting": "fisher study",
            "verdict": verdict, "budget": "", "published_at_budget": NOT_PUBLISHED, "published_full": NOT_PUBLISHED,
            "key_number": "", "numbers": numbers, "published_numbers": "", "rule": claim.description,
            "source": source}


AUTHORS_NAME = "authors' code"
SETTINGS = ((SPECIFICATION, "specification"), (AUTHORS_CODE, AUTHORS_NAME))


def judge(cid: str, claim: str, problems: list[Problem], rule_fn, rule: str, source: str) -> list[dict]:
    """The rows of one Figure 2 / Table 1 / conclusion claim: one per (problem, horizon, setting), the
    rule on our runs, on the authors' curves at our budget and at 200 epochs; then one row per
    setting over all problems (:func:`overall_verdict`)."""
    rows = []
    for cls, name in SETTINGS:
        mine = [p for p in problems if p.setting_class == cls]
        verdicts = []
        for problem in sorted(mine, key=lambda p: (p.label, p.horizon or 0)):
            problem, at_budget = decisive_budget(problem, rule_fn)
            ours, full = rule_fn(problem), rule_fn(published_problem(problem, full=True))
            verdict = problem_verdict(ours, at_budget, full)
            verdicts.append(verdict)
            rows.append({"id": cid, "claim": claim, "problem": problem.label, "setting": name, "verdict": verdict,
                         "budget": problem.budget(), "published_at_budget": _word(at_budget),
                         "published_full": _word(full), "key_number": ours.key, "numbers": ours.numbers,
                         "published_numbers": f"at budget: {at_budget.numbers} || full: {full.numbers}",
                         "rule": rule, "source": source})
        missing = "" if mine else f"no runs: produced by {PRODUCED_BY[cls]}"
        rows.append({"id": cid, "claim": claim, "problem": ALL_PROBLEMS, "setting": name,
                     "verdict": overall_verdict(verdicts), "budget": "; ".join(sorted({r["budget"] for r in rows
                                                                                      if r["setting"] == name})),
                     "published_at_budget": "", "published_full": "", "key_number": "", "numbers": missing,
                     "published_numbers": "", "rule": OVERALL_RULE, "source": source})
    return rows


OVERALL_RULE = ("over the problems: holds if every decided problem (holds / does not hold) holds, does not hold if "
                "any decided problem fails; otherwise not testable at this budget if any problem says so, else not "
                "shown by the paper's own curves if any says so, else not measured")


def _cell(text, limit: int = 200) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _overall(table: pd.DataFrame, cid: str, setting: str) -> str:
    hit = table[(table["id"] == cid) & (table["problem"] == ALL_PROBLEMS) & (table["setting"] == setting)]
    return hit["verdict"].iloc[0] if len(hit) else ""


def _short(label: str) -> str:
    """A problem's dataset for a compact cell, ``*`` for a generated stand-in (the cell says the budget)."""
    return label.split(" [")[0].split(" (")[0] + ("*" if "(generated stand-in)" in label else "")


def _seeds(budget: str) -> int:
    found = re.search(r"(\d+) seeds?$", str(budget))
    return int(found.group(1)) if found else 0


def _epochs(budget: str) -> int:
    return _int(str(budget).split(" ")[0]) or 0


def _profile(label: str) -> str:
    return label.rsplit(" [", 1)[-1].rstrip("]")


def _key_cell(row, several_profiles: bool) -> str:
    """``curves* 200 ep., 3 seeds: worst ratio 1.2`` (the profile named where several are read)."""
    seeds = _seeds(row["budget"])
    where = _short(row["problem"]) + (f" [{_profile(row['problem'])}]" if several_profiles else "")
    return f"{where} {_epochs(row['budget'])} ep., {seeds} seed{'s' if seeds != 1 else ''}: {row['key_number']}"


def _key_rows(spec: pd.DataFrame) -> list:
    """One row per dataset (its problems differ in horizon, a profile's seeds 1-2 running shorter than
    seed 0 (``conf/profile/verdict.yaml``), and in profile): the one that decides, so a failing decided
    problem first, else the decided one with the most seeds, else the one with the most seeds."""
    def rank(row):
        decided = row["verdict"] in (HOLDS, DOES_NOT_HOLD)
        return decided, row["verdict"] == DOES_NOT_HOLD, _seeds(row["budget"]), _epochs(row["budget"])
    groups: dict = {}
    for _, row in spec.iterrows():
        groups.setdefault(_short(row["problem"]), []).append(row)
    return [max(rows, key=rank) for rows in groups.values()]


def claims_summary_markdown(table: pd.DataFrame) -> str:
    """One row per claim: the verdict under the specification and the authors' code, what the paper's own
    curves show at our budgets, one key number per problem (the README's verdict block)."""
    header = ["id", "claim", "specification", "authors' code", "paper's own curves at our budget", "key number (spec.)"]
    rows = [_summary_cells(table, cid, group) for cid, group in table.groupby("id", sort=False)]
    return "\n".join([markdown_table(header, rows), "", "\\* generated stand-in data (docs/data.md)"])


def _summary_cells(table: pd.DataFrame, cid: str, group: pd.DataFrame) -> list[str]:
    """A claim's row of the summary: its overall verdicts, the paper's curves, a key number per problem."""
    claim = group["claim"].iloc[0]
    if (group["setting"] == "fisher study").all():
        return [cid, _cell(claim), group["verdict"].iloc[0], "–", "not published (Figure 1 is a picture)", "–"]
    spec = group[(group["setting"] == "specification") & (group["problem"] != ALL_PROBLEMS)]
    spec = spec[spec["verdict"] != NOT_MEASURED]      # problems whose runs lack a method say nothing here
    chosen = _key_rows(spec)
    shown = sum(r["published_at_budget"] == HOLDS for r in chosen)
    paper = f"holds on {shown} of {len(chosen)} problems" if chosen else "–"
    several = spec["problem"].map(_profile).nunique() > 1          # a root of profiles: say whose number
    keys = "; ".join(_key_cell(r, several) for r in chosen if r["key_number"])
    return [cid, _cell(claim), _overall(table, cid, "specification"), _overall(table, cid, AUTHORS_NAME), paper,
            _cell(keys or "–")]


def claims_markdown(table: pd.DataFrame, note: str | None = None, heading: str = "# Claims of the paper") -> str:
    """The verdict table as Markdown (summary.md's section; ``docs/verdict/``): the verdicts at a glance,
    every problem's row (no cell over 200 characters), then the rules; the numbers are in claims.csv."""
    lines = [heading, ""] if heading else []
    if note:
        lines += [f"**{note}**", ""]
    lines += ["Each verdict comes from the rule below and its thresholds (module-level constants of "
              "`kfac_bench/report/claims.py`), judged per problem against the authors' own published curves cut "
              "to the same budget; 'specification' = runs with `authors_code=[]`, 'authors\' code' = "
              "`authors_code=all` (SGD and Adam without `first_order_weight_decay`). The numbers behind every "
              "row are in claims.csv.", "", claims_summary_markdown(table), ""]
    columns = ("id", "problem", "setting", "verdict", "budget", "published_at_budget", "published_full", "key_number")
    rows = [[_cell(r[c]) for c in columns] for _, r in table.iterrows()
            if r["problem"] != ALL_PROBLEMS or r["setting"] == "fisher study"]
    lines.append(markdown_table(["id", "problem", "setting", "verdict", "budget", "paper's curves at budget",
                                 "at 200 epochs", "key number"], rows))
    lines += ["", "Rules:", ""]
    for cid, group in table.groupby("id", sort=False):
        lines.append(f"- **{cid}** {group['rule'].iloc[0]}")
    lines += ["", f"- **over the problems**: {OVERALL_RULE}"]
    return "\n".join(lines + [""])
