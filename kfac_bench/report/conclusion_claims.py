"""The paper's conclusion on the authors' other networks (issue 34): C2 "good results on other MLP
architectures", C3 "no gain in performance compared to KFAC" on CNNs, and C3's explanation (KFAC's
spatial assumptions) from Figure 1 on the convolutional layers.

The problems are the runs of problems that are not the paper's auto-encoders (``conf/profile/conclusion.yaml``:
ToyNet, DeepLinear, the BatchNorm MLP, the CNN auto-encoder, cuda_convnet), read from the same folders as
the paper's claims. A problem is an MLP or a CNN by its network (:data:`CONV_MODEL_KINDS`). The authors
published no curves for these networks, so a rule's verdict is our runs' (``holds`` / ``does not hold`` /
``not measured``) and the ``published_*`` columns say ``not published``.

Per (problem, setting) the best configuration of each method by its first seed's final training loss
(:func:`.tables.select_best`), the median over its seeds per epoch. On a CNN the curvature methods'
spatial treatment is a third coordinate (an *arm*): under the specification the grid's ``independent``
(KFC / KFAC-expand) and, where run, ``exact`` for the methods that have such runs (the others keep their
runs: KFAC's factors are KFC's under every treatment); under the authors' code their ``banded`` zigzag
products (``authors_code=all`` includes ``banded_spatial``).

It imports the rules' helpers of :mod:`.claims` and :mod:`.claim_inputs`; :mod:`.claim_engine` imports it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .ablation import AUTHORS_CODE, SPECIFICATION, setting_items, with_base
from .claim_inputs import Outcome, Problem, _int, _read_json, add_method
from .claims import (DOES_NOT_HOLD, FASTER_MARGIN, HIGH_RANK, HOLDS, NOT_MEASURED, NOT_PUBLISHED, REFERENCE, _missing, _not_measured, _points, _ratios, _worst,
                     rule_faster_than_baselines)
from .results import load_results, profile_folders, runs_table
from .tables import method_label, select_best

PAPER_PROBLEMS = ("curves", "mnist", "faces")          # the paper's auto-encoders: the other claims' problems
CONV_MODEL_KINDS = ("conv_autoencoder", "cuda_convnet")  # kfac_bench/models: the networks with convolutions
INDEPENDENT, EXACT, BANDED, NO_TREATMENT = "independent", "exact", "banded", ""
NO_RUNS = "no runs"
PRODUCED_BY = "produced by python scripts/reproduce_paper.py --profile conclusion (conf/profile/conclusion.yaml)"
EXACT_GAIN_RATIO = 0.5      # C3e: fitted to the exact block, a rank-2 method's Error 1 <= this x KFAC's
SETTING_NAMES = {SPECIFICATION: "specification", AUTHORS_CODE: "authors' code"}


# ------------------------------------------------------------------------------------- the problems
def problem_key(items: dict) -> str:
    """A run's problem: its dataset config's folder (mnist_conv, mnist_mlp, ...) or name."""
    return str(items.get("dataset.folder") or items.get("dataset.name") or "")


def is_conv(items: dict) -> bool:
    return str(items.get("dataset.model.kind")) in CONV_MODEL_KINDS


def _treatment(hyperparameters: str, setting_class: str, conv: bool) -> str:
    """The spatial treatment a run's curvature method used on the convolutions ("" for none)."""
    spatial = json.loads(hyperparameters or "{}").get("spatial")
    if not conv or spatial is None:
        return NO_TREATMENT
    return BANDED if setting_class == AUTHORS_CODE else str(spatial)


def _runs(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    long = load_results(folder, exclude=[folder / "report"])
    runs = with_base(runs_table(long))
    if runs.empty:
        return long, runs
    runs = runs[runs["setting_class"].isin([SPECIFICATION, AUTHORS_CODE])].copy()
    items = [setting_items(b) for b in runs["base_setting"]]
    runs["problem"] = [problem_key(i) for i in items]
    runs["conv"] = [is_conv(i) for i in items]
    runs = runs[~runs["problem"].isin(PAPER_PROBLEMS)].copy()
    runs["treatment"] = [_treatment(h, c, v) for h, c, v in zip(runs["hyperparameters"], runs["setting_class"],
                                                                runs["conv"])]
    return long, runs


def _arms(group: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs of one (problem, setting) per spatial arm: the main one (the setting's own treatment and
    the methods without one), then one per other treatment with those methods' runs in place of theirs."""
    treatments = sorted(set(group["treatment"]) - {NO_TREATMENT})
    main = INDEPENDENT if INDEPENDENT in treatments else (treatments[0] if treatments else NO_TREATMENT)
    base = group[group["treatment"].isin([main, NO_TREATMENT])]
    out = {main: base}
    for other in (t for t in treatments if t != main):
        replaced = set(group.loc[group["treatment"] == other, "method"])
        out[other] = pd.concat([base[~base["method"].isin(replaced)], group[group["treatment"] == other]])
    return out


def _problem(long: pd.DataFrame, runs: pd.DataFrame, label: str, folder: Path, cls: str) -> Problem:
    items = setting_items(runs["base_setting"].iloc[0])
    horizon = _int(items.get("trainer.epochs")) or int(runs["epochs_completed"].max() or 0)
    problem = Problem(label, str(folder), cls, dataset=str(runs["problem"].iloc[0]), horizon=horizon,
                      n_train=_int(items.get("dataset.n_train")), batch_size=_int(items.get("dataset.batch_size")))
    for _, sel in select_best(runs).iterrows():
        if isinstance(sel["best_config"], str):
            add_method(problem, long, sel, list(sel["seed_run_dirs"]))
    return problem


def collect_conclusion_problems(folders: Iterable[str | Path]) -> list[tuple[Problem, bool, str]]:
    """(problem, is a CNN, spatial arm) for every (folder, problem, setting, arm) of the other networks."""
    out = []
    for folder in (sub for f in folders for sub in profile_folders(f)):
        if not folder.is_dir():
            continue
        long, runs = _runs(folder)
        if runs.empty:
            continue
        for (base, cls), group in runs.groupby(["base_setting", "setting_class"], sort=True):
            conv = bool(group["conv"].iloc[0])
            stand_in = " (generated stand-in)" if (group["dataset_source"] == "generated").any() else ""
            for arm, arm_runs in _arms(group).items():
                where = f" [spatial={arm}]" if arm else ""
                label = f"{group['problem'].iloc[0]}{stand_in}{where} [{folder.name}]"
                problem = _problem(long, arm_runs, label, folder, cls)
                if problem.curves:
                    out.append((problem, conv, arm))
    return out


# ------------------------------------------------------------------------------------------- rules
def rule_good_on_mlps(problem: Problem) -> Outcome:
    """C2: F2a's rule (every curvature method's loss / min(SGD, Adam) <= 1 - FASTER_MARGIN at the matched
    epochs) and every rank-2 method not worse than KFAC (loss / KFAC's <= 1 + FASTER_MARGIN there)."""
    faster = rule_faster_than_baselines(problem, "epoch")
    missing = _missing(problem, (REFERENCE, *HIGH_RANK))
    if faster.holds is None or missing:
        return faster if faster.holds is None else _not_measured(problem, missing)
    parts, worst, not_worse = [], [], True
    for m in HIGH_RANK:
        ratios = _ratios(problem.curves[m], [problem.curves[REFERENCE]], "epoch")
        not_worse &= bool(ratios) and all(r <= 1 + FASTER_MARGIN for _, r in ratios)
        worst += [r for _, r in ratios]
        parts.append(f"{method_label(m)} {_points('epoch', ratios)}")
    numbers = f"{faster.numbers} || loss/{method_label(REFERENCE)}: " + "; ".join(parts)
    key = f"vs baselines {faster.key}; vs {method_label(REFERENCE)} {_worst(worst)}"
    return Outcome(faster.holds and not_worse, numbers, key)


def rule_no_gain_over_kfac(problem: Problem) -> Outcome:
    """C3: no rank-2 method's loss / KFAC's <= 1 - FASTER_MARGIN at every matched epoch (a gain as F2a
    counts one); holds iff none gains."""
    missing = _missing(problem, (REFERENCE, *HIGH_RANK))
    if missing:
        return _not_measured(problem, missing)
    parts, gains, best = [], [], []
    for m in HIGH_RANK:
        ratios = _ratios(problem.curves[m], [problem.curves[REFERENCE]], "epoch")
        if ratios and all(r <= 1 - FASTER_MARGIN for _, r in ratios):
            gains.append(method_label(m))
        best += [max(r for _, r in ratios)] if ratios else []
        parts.append(f"{method_label(m)} {_points('epoch', ratios)}")
    key = f"gain: {', '.join(gains)}" if gains else f"best rank-2 ratio {min(best):.3g}" if best else ""
    return Outcome(not gains, f"{problem.label}: loss/{method_label(REFERENCE)} " + "; ".join(parts), key)


def rule_spatial_explanation(summary: dict, label: str) -> Outcome:
    """C3e, on every conv layer of a Figure 1 study: fitted to the `independent` block every approximation's
    mean Error 1 stays >= (1 - FASTER_MARGIN) x KFAC's (removes under 5 % of it), and fitted to the `exact`
    block every rank-2 method's is <= EXACT_GAIN_RATIO x KFAC's: KFAC's error is the spatial assumption's."""
    layers = summary.get("spatial") or {}
    if not layers:
        return Outcome(None, f"{label}: no conv layer")
    parts, holds = [], True
    for layer, entry in sorted(layers.items(), key=lambda kv: int(kv[0])):
        methods = {t: v.get("methods", {}) for t, v in entry.get("treatments", {}).items()}
        kfac = methods.get(INDEPENDENT, {}).get(REFERENCE, {}).get("error_frobenius_mean")
        if kfac is None or EXACT not in methods:
            return Outcome(None, f"{label}: layer {layer} lacks KFAC's error or the exact treatment")
        independent = {m: v["error_frobenius_mean"] / kfac for m, v in methods[INDEPENDENT].items() if m != REFERENCE}
        exact = {m: methods[EXACT][m]["error_frobenius_mean"] / kfac for m in HIGH_RANK if m in methods[EXACT]}
        holds &= all(r >= 1 - FASTER_MARGIN for r in independent.values())
        holds &= bool(exact) and all(r <= EXACT_GAIN_RATIO for r in exact.values())
        parts.append(f"layer {layer}: KFAC Error 1 {kfac:.3g}, rank-1 optimum of the exact block "
                     f"{entry.get('optimal_rank1_mean', math.nan):.3g}; /KFAC fitted to independent "
                     + ", ".join(f"{method_label(m)} {r:.3g}" for m, r in independent.items())
                     + "; fitted to exact " + ", ".join(f"{method_label(m)} {r:.3g}" for m, r in exact.items()))
    return Outcome(holds, f"{label}: " + " | ".join(parts))


# ------------------------------------------------------------------------------------------- rows
C2_TEXT = "Conclusion: good results on other MLP architectures"
C3_TEXT = "Conclusion: no gain over KFAC on CNNs"
C3X_TEXT = "Conclusion, beyond the paper: no gain over KFAC on CNNs without the spatial assumption (spatial=exact)"
C3E_TEXT = "Conclusion: on CNNs, KFAC's spatial assumptions are why (Figure 1 on conv layers)"
MATCHED = ("E = last epoch common to the compared runs, matched epochs {ceil(E/2), E}; our runs only (the "
           "authors published no curves for these networks)")
C2_RULE = (f"on each other MLP problem: F2a's rule (every curvature method's loss / min(SGD, Adam) <= 1 - "
           f"FASTER_MARGIN = {1 - FASTER_MARGIN:g} at the matched epochs) and every rank-2 method's loss / KFAC's <= "
           f"1 + FASTER_MARGIN = {1 + FASTER_MARGIN:g} there; {MATCHED}")
C3_RULE = (f"on each CNN problem: holds iff no rank-2 method's loss / KFAC's is <= 1 - FASTER_MARGIN = "
           f"{1 - FASTER_MARGIN:g} at every matched epoch (a gain as F2a counts one); the specification's rank-2 "
           f"methods with spatial=independent (KFC's assumption, the paper's KFAC), the authors' code's with their "
           f"banded products; {MATCHED}")
C3X_RULE = f"as C3, the specification's rank-2 methods fitted to the exact block (spatial=exact); {MATCHED}"
C3E_RULE = (f"per conv layer of the CNN auto-encoder's Figure 1 study (mean over its points): every approximation "
            f"fitted to the independent block has Error 1 >= (1 - FASTER_MARGIN) x KFAC's, and every rank-2 method "
            f"fitted to the exact block <= EXACT_GAIN_RATIO = {EXACT_GAIN_RATIO:g} x KFAC's; all errors against the "
            f"exact block")


def _row(cid: str, text: str, label: str, setting: str, outcome: Outcome, budget: str, rule: str, source: str) -> dict:
    verdict = NOT_MEASURED if outcome.holds is None else HOLDS if outcome.holds else DOES_NOT_HOLD
    return {"id": cid, "claim": text, "problem": label, "setting": setting, "verdict": verdict, "budget": budget,
            "published_at_budget": NOT_PUBLISHED, "published_full": NOT_PUBLISHED, "key_number": outcome.key,
            "numbers": outcome.numbers, "published_numbers": "", "rule": rule, "source": source}


def _claim_of(conv: bool, arm: str) -> tuple[str, str, object, str]:
    """(id, text, rule, rule text) a problem's arm is judged by."""
    if not conv:
        return "C2", C2_TEXT, rule_good_on_mlps, C2_RULE
    if arm == EXACT:
        return "C3x", C3X_TEXT, rule_no_gain_over_kfac, C3X_RULE
    return "C3", C3_TEXT, rule_no_gain_over_kfac, C3_RULE


def conclusion_rows(folders: Iterable[str | Path]) -> list[dict]:
    """One row per problem, setting and claim of C2, C3, C3x (its setting column says ``specification`` or
    ``authors' code``), then one per Figure 1 study with conv layers (C3e); the engine adds the rows over
    the problems."""
    folders = [Path(f) for f in folders]
    source = ("results: " + ", ".join(str(f) for f in folders) + "; best configuration by its first seed's final "
              "train loss, median over its seeds per epoch")
    rows = []
    found = sorted(collect_conclusion_problems(folders), key=lambda pca: (pca[0].setting_class != SPECIFICATION,
                                                                          pca[0].label))
    for problem, conv, arm in found:
        cid, text, rule, rule_text = _claim_of(conv, arm)
        rows.append(_row(cid, text, problem.label, SETTING_NAMES[problem.setting_class], rule(problem),
                         problem.budget(), rule_text, source))
    for cid, text, rule_text in (("C2", C2_TEXT, C2_RULE), ("C3", C3_TEXT, C3_RULE), ("C3x", C3X_TEXT, C3X_RULE)):
        if not any(r["id"] == cid for r in rows):   # a claim without runs says so rather than vanish from the table
            rows.append(_row(cid, text, NO_RUNS, SETTING_NAMES[SPECIFICATION], Outcome(None, f"no runs: {PRODUCED_BY}"),
                             "", rule_text, source))
    order = {"C2": 0, "C3": 1, "C3x": 2}
    return sorted(rows, key=lambda r: order[r["id"]]) + _explanation_rows(folders, source)


def _explanation_rows(folders: list[Path], source: str) -> list[dict]:
    """C3e from every Figure 1 study with conv layers (its summary.json's ``spatial`` part)."""
    rows = []
    for folder in (sub for f in folders for sub in profile_folders(f)):
        for summary_path in sorted((folder / "fisher").rglob("summary.json")) if (folder / "fisher").is_dir() else []:
            summary = _read_json(summary_path)
            if not summary.get("spatial"):
                continue
            label = f"{summary_path.parent.relative_to(folder / 'fisher')} [{folder.name}]"
            rows.append(_row("C3e", C3E_TEXT, label, "fisher study", rule_spatial_explanation(summary, label),
                             f"{summary.get('points', '')} points".strip(), C3E_RULE, source))
    return rows
