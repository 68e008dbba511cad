"""The inputs the claims' rules read (:mod:`.claims`): the best curves of each problem of the runs
(:class:`Problem`), the Figure 1 fisher studies (:class:`FisherStudy`), a rule's :class:`Outcome`, the
authors' published curves cut to a problem's budget (:func:`published_problem`) and the matched points
of compared curves (epochs and times).

The lowest of the claims' modules: it imports the results, ablation and tables modules and the
registry, never :mod:`.claims`, :mod:`.claim_engine` or :mod:`.claims_text`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..registry import paper_method_names
from .ablation import AUTHORS_CODE, SPECIFICATION, setting_items, with_base
from .results import flat_config, load_results, profile_folders, runs_table
from .tables import mean_curve, select_best

# the paper's problems: training examples, batch size and epochs (appendix D; the authors' outputs_<batch>)
PAPER_SIZE = {"curves": (16000, 256), "mnist": (50000, 512), "faces": (82800, 1024)}
PAPER_EPOCHS = 200
PAPER_MODEL = "mlp"          # the paper's deep auto-encoders: ``dataset.model.kind``'s default (kfac_bench.models)
NO_SPATIAL = "none"          # a fisher row of a layer without positions (studies.fisher_layers.NO_SPATIAL; copied
                             # so that reading results does not import torch -- a test checks that they agree)


def is_paper_problem(items: dict) -> bool:
    """Whether a setting's flattened dataset entries are a problem of the paper: one of its datasets
    (:data:`PAPER_SIZE`) auto-encoded by its deep MLP, in the dataset's own folder. The authors' other
    networks (profile ``conclusion``) are not: a problem may reuse a dataset's name for its data
    (``mnist_conv``: ``dataset.name: mnist``, ``dataset.folder: mnist_conv``, ``dataset.model.kind:
    conv_autoencoder``) or be a classification (``dataset.task: classification``)."""
    name = items.get("dataset.name")
    return (name in PAPER_SIZE and (items.get("dataset.folder") or name) == name
            and (items.get("dataset.task") or "autoencoder") != "classification"
            and (items.get("dataset.model.kind") or PAPER_MODEL) == PAPER_MODEL)


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


def _paper_runs(runs: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The runs of ``folder`` on a problem of the paper (:func:`is_paper_problem`); the others are reported."""
    if runs.empty:
        return runs
    keep = runs["base_setting"].map(lambda s: is_paper_problem(setting_items(s)))
    others = sorted(runs.loc[~keep, "run_dir"].map(lambda d: Path(d).parent.parent.name).unique())
    if others:
        _say(f"{folder}: {int((~keep).sum())} run(s) of {', '.join(others)}, not problems of the paper: "
             f"not judged")
    return runs[keep]


def collect_problems(folders: Iterable[str | Path], exclude: Iterable[Path] = ()) -> list[Problem]:
    """Every (folder, problem, setting, horizon) with its best curves per method (specification and
    authors' code only) of the paper's problems (:func:`is_paper_problem`); a root of several profiles'
    folders (``docs/runs/``) is read profile by profile (:func:`.results.profile_folders`). A folder that
    cannot be read is reported and skipped."""
    out: list[Problem] = []
    for folder in (sub for f in folders for sub in profile_folders(f)):
        if not folder.is_dir():
            _say(f"{folder} does not exist: skipped")
            continue
        try:
            long = load_results(folder, exclude=[folder / "report", *exclude])
            runs = _paper_runs(with_base(runs_table(long)), folder)
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
                add_method(problem, long, sel, _pooled_runs(runs, horizons, horizon))
        out += [p for p in grouped.values() if p.curves]
    return out


def add_method(problem: Problem, long: pd.DataFrame, sel, dirs: list[str]) -> None:
    """``problem`` gains a method's curve (the median over the seeds ``dirs`` of its selected configuration
    ``sel``, cut at the problem's horizon), its hyperparameters, seeds and command; nothing without a curve."""
    curve = _curve(long, dirs, problem.horizon)
    if curve.empty:
        return
    method = sel["method"]
    problem.curves[method] = curve
    problem.hyperparameters[method] = json.loads(sel["hyperparameters"])
    problem.run_dirs[method] = dirs
    if method in paper_method_names():   # the claims compare only these: a method beside them
        problem.seeds = min(problem.seeds or len(dirs), len(dirs))   # does not shrink the budget
    command = _read_json(Path(sel["best_run_dir"]) / "summary.json").get("command")
    if command and command not in problem.commands:
        problem.commands.append(command)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------ the published curves
def _reference_curve(dataset: str, method: str, problem: Problem | None, full: bool) -> pd.DataFrame | None:
    """The authors' curve of ``method`` as a claims curve (epoch, loss, time): their 200 epochs
    (``full``), else cut to ``problem``'s budget (see the docstring of :mod:`.claims`); None where the budget
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


def _study_items(folder: Path, meta: dict, dataset_folder: str) -> dict:
    """A study's flattened dataset entries: its config.yaml's, else what its summary.json and the folder
    under ``fisher/`` say."""
    items = {k: v for k, v in (flat_config(folder) or {}).items() if k.startswith("dataset.")}
    items.setdefault("dataset.name", meta.get("dataset") or dataset_folder)
    items.setdefault("dataset.folder", dataset_folder)
    return items


def is_figure1_study(table: pd.DataFrame, items: dict) -> bool:
    """Whether a fisher study is one of Figure 1's: a problem of the paper (:func:`is_paper_problem`), whose
    layers have no positions (a conv study's rows name a ``spatial`` treatment)."""
    spatial = table["spatial"].fillna(NO_SPATIAL).astype(str) if "spatial" in table else pd.Series([], dtype=str)
    return is_paper_problem(items) and bool((spatial == NO_SPATIAL).all())


def _read_study(root: Path, path: Path, folder: Path) -> FisherStudy | None:
    """The study of ``path`` (its fisher_errors.csv), None where it is unreadable or not one of Figure 1's."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError) as err:
        _say(f"cannot read {path} ({err}): skipped")
        return None
    if not {"iteration", "layer", "method", "error_frobenius", "error_spectrum"} <= set(table.columns):
        _say(f"{path} lacks the Figure 1 columns: skipped")
        return None
    meta = _read_json(path.parent / "summary.json")
    rel = path.parent.relative_to(root)
    dataset_folder = rel.parts[0] if rel.parts else "unknown"
    items = _study_items(path.parent, meta, dataset_folder)
    if not is_figure1_study(table, items):
        _say(f"{path}: not a study of the paper's MLP auto-encoders ({dataset_folder}): not used for Figure 1")
        return None
    dataset = str(items["dataset.name"])
    epochs = meta.get("epochs")
    if epochs is None and "epoch" in table:
        epochs = float(pd.to_numeric(table["epoch"], errors="coerce").max())
    stand_in = " (generated stand-in)" if meta.get("dataset_source") == "generated" else ""
    where = root.parent.relative_to(folder).as_posix()
    place = f"{folder.name}/{where}" if where != "." else folder.name
    return FisherStudy(f"{dataset}{stand_in} [{place}/fisher/{rel}]", dataset, str(path), table,
                       float(epochs) if epochs is not None else math.nan)


def collect_fisher_studies(folders: Iterable[str | Path]) -> list[FisherStudy]:
    """The Figure 1 studies under ``folders`` (every profile's ``fisher/`` under a root such as
    ``docs/runs/``); a study of another problem (the conclusion's conv auto-encoder) is reported and left out."""
    from .results import fisher_study_files
    studies = []
    for folder in (Path(f) for f in folders):
        for root, path in fisher_study_files(folder):
            study = _read_study(root, path, folder)
            if study is not None:
                studies.append(study)
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
