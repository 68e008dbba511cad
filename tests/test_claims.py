"""The report's verdict side: the claims table (every verdict value reachable, thresholds at their
edges so that a flipped comparison fails), the ablation chain and the common target. Tiny fake run
folders and fisher tables; nothing is trained."""
import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kfac_bench.report import claim_engine as CE
from kfac_bench.report import claim_inputs as CI
from kfac_bench.report import claims as C
from kfac_bench.report import claims_text as CT
from kfac_bench.report.ablation import (AUTHORS_CODE, PARTIAL, SPECIFICATION, STEP_ALL, ablation_table,
                                        order_steps, relevant_behaviours, setting_class)
from kfac_bench.report.results import METRIC_COLUMNS, load_results, runs_table
from kfac_bench.report.tables import select_best, summary_table

FAST = {"formats": ["png"], "dpi": 30}
METHODS = ("sgd", "adam", "kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected")


def make_run(root: Path, dataset: str, method: str, name: str, train, *, times=None, authors_code=None, seed=0,
             hp=None, source="genuine", running=None, hyper_extra=None, n_train=500, batch_size=100,
             dataset_extra=None, status="ok", epochs=None):
    """A run folder (config.yaml, metrics.csv, summary.json) with the given per-epoch losses;
    ``dataset_extra``: more dataset entries (its ``folder`` names the run folders' dataset folder);
    ``epochs``: the epochs asked for, when the run stopped before them; a ``diverged`` one has no final loss."""
    hp = dict(hp or {"lr": 0.1})
    hp.update(hyper_extra or {})
    epochs = len(train) - 1 if epochs is None else epochs
    times = times or [1.0 * e for e in range(len(train))]
    dataset_cfg = {"name": dataset, "source": source, "n_train": n_train, "n_val": 100, "batch_size": batch_size,
                   **(dataset_extra or {})}
    folder = root / "runs" / dataset_cfg.get("folder", dataset) / method / name
    folder.mkdir(parents=True)
    config = {"seed": seed, "trainer": {"epochs": epochs, "progress": False}, "dataset": dataset_cfg,
              "optimizer": {"name": method, **hp}}
    if authors_code is not None:
        config["authors_code"] = authors_code
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METRIC_COLUMNS)
        for e, (loss, t) in enumerate(zip(train, times)):
            r = "nan" if e == 0 else (running[e] if running else loss + 0.001)
            w.writerow([e, 10 * e, t, loss, loss + 0.01, r, 0.01])
    final = train[-1] if status != "diverged" else float("nan")
    (folder / "summary.json").write_text(json.dumps({
        "status": status, "dataset": dataset, "dataset_source": source, "optimizer": method,
        "hyperparameters": {"name": method, **hp}, "seed": seed, "epochs_requested": epochs,
        "epochs_completed": len(train) - 1, "final_train_loss": final, "final_val_loss": final + 0.01,
        "total_time_s": times[-1], "command": f"kfac-bench run dataset={dataset} optimizer={method} TEST"}))
    return folder


def flat(value, epochs=4):
    """A curve ending at ``value`` (epoch 0 at 1.0, then straight to ``value`` at epoch 1)."""
    return [1.0] + [value] * epochs


def curve(rows):
    """A claims curve from (epoch, loss, time) rows."""
    return pd.DataFrame(rows, columns=["epoch", "loss", "time"])


def problem(losses: dict, seconds: dict | None = None, label="p", cls=SPECIFICATION, epochs=4, hyper=None):
    """A Problem whose methods have constant losses after epoch 0 and linear time."""
    seconds = seconds or {}
    curves = {m: curve([(e, 1.0 if e == 0 else v, e * seconds.get(m, 1.0)) for e in range(epochs + 1)])
              for m, v in losses.items()}
    return CI.Problem(label, "folder", cls, curves, hyper or {m: {} for m in losses})


FAST_SPEC = {"sgd": 1.0, "adam": 1.0, "kfac": 0.5, "kpsvd": 0.5, "deflation": 0.3, "lanczos": 0.3,
             "kfac_corrected": 0.3}


# ------------------------------------------------------------------------------ matched points
def test_matched_points_and_interpolation():
    a = curve([(0, 1.0, 0.0), (1, 0.5, 2.0), (2, 0.25, 4.0), (3, 0.2, 6.0)])
    b = curve([(0, 1.0, 0.0), (1, 0.6, 1.0), (2, 0.3, 2.0)])
    assert CI.matched_epochs([a, b]) == [1, 2]
    assert CI.matched_epochs([a]) == [2, 3]                 # ceil(3/2) = 2
    assert CI.matched_times([a, b]) == [1.0, 2.0]          # T = the smaller total time
    assert CI.loss_at_time(a, 1.0) == pytest.approx(0.75)  # halfway between epoch 0 (t=0) and 1 (t=2)
    assert math.isnan(CI.loss_at_time(b, 3.0))             # beyond the run


# ----------------------------------------------------------------------------- Figure 2 rules
def test_faster_than_baselines_edges():
    inside = {**FAST_SPEC, "deflation": 0.949}            # R = 0.949 <= 0.95
    assert C.rule_faster_than_baselines(problem(inside), "epoch").holds is True
    outside = {**FAST_SPEC, "deflation": 0.951}           # R = 0.951 > 0.95
    assert C.rule_faster_than_baselines(problem(outside), "epoch").holds is False
    # the minimum of SGD and Adam is the reference: Adam at 0.5 makes KFAC's 0.5 no faster
    assert C.rule_faster_than_baselines(problem({**FAST_SPEC, "adam": 0.5}), "epoch").holds is False
    # per second: the curvature methods 10x slower per epoch; at T/2, T of the pair they are behind
    # (baselines at 0.6: a curvature method 10x slower is still near its epoch-0 loss at T = 4 s)
    slow = {m: 10.0 for m in C.CURVATURE_METHODS}
    baselines_06 = {**FAST_SPEC, "sgd": 0.6, "adam": 0.6}
    assert C.rule_faster_than_baselines(problem(baselines_06), "epoch").holds is True
    assert C.rule_faster_than_baselines(problem(baselines_06, slow), "time").holds is False
    assert C.rule_faster_than_baselines(problem(baselines_06), "time").holds is True
    missing = problem({m: v for m, v in FAST_SPEC.items() if m != "lanczos"})
    out = C.rule_faster_than_baselines(missing, "epoch")
    assert out.holds is None and "Lanczos" in out.numbers


def test_same_and_much_faster_edges():
    base = {"kfac": 0.5, "kpsvd": 0.5 * 1.049, "deflation": 0.5 * 0.79, "lanczos": 0.5 * 0.79,
            "kfac_corrected": 0.5 * 0.79}
    assert C.rule_same_as_kfac(problem(base)).holds is True
    assert C.rule_same_as_kfac(problem({**base, "kpsvd": 0.5 * 1.051})).holds is False
    assert C.rule_same_as_kfac(problem({**base, "kpsvd": 0.5 * 0.949})).holds is False
    assert C.rule_much_faster_than_kfac(problem(base), "epoch").holds is True
    assert C.rule_much_faster_than_kfac(problem({**base, "lanczos": 0.5 * 0.81}), "epoch").holds is False
    # per second: KFAC-corrected 2x slower per epoch, its loss at the pair's times is KFAC's early one
    timed = problem(base, {"kfac_corrected": 2.0})
    assert C.rule_much_faster_than_kfac(timed, "time").holds is True   # constant losses after epoch 1
    assert "per second" in C.rule_same_as_kfac(problem(base)).numbers


def test_same_order_cost_edges():
    losses = {m: 0.5 for m in C.CURVATURE_METHODS}
    assert C.rule_same_order_cost(problem(losses, {"deflation": 2.9})).holds is True
    out = C.rule_same_order_cost(problem(losses, {"deflation": 3.1}))
    assert out.holds is False and "×3.10" in out.numbers


def test_higher_rank_rule_and_ranks_above_two():
    assert C.kronecker_rank("kfac") == 1 and C.kronecker_rank("deflation") == 2
    assert C.kronecker_rank("lanczos_k", {"k": 3}) == 3
    losses = {"kfac": 0.5, "kpsvd": 0.6, "deflation": 0.5 * 0.949, "lanczos": 0.9, "kfac_corrected": 0.9}
    assert C.rule_higher_rank_better(problem(losses)).holds is True          # best 2 vs best 1 (KFAC)
    assert C.rule_higher_rank_better(problem({**losses, "deflation": 0.5 * 0.951})).holds is False
    three = problem({**losses, "lanczos_k": 0.4}, hyper={**{m: {} for m in losses}, "lanczos_k": {"k": 3}})
    out = C.rule_higher_rank_better(three)
    assert "rank 3 0.4" in out.numbers and "decreases with rank: yes" in out.numbers
    assert C.rule_higher_rank_better(problem({"kfac": 0.5, "sgd": 0.9})).holds is None


def test_every_problem_verdict_is_reachable():
    yes, no, unmeasured = CI.Outcome(True, "a"), CI.Outcome(False, "b"), CI.Outcome(None, "c")
    # ours decides only where the authors' own curves at our budget show the effect
    assert CE.problem_verdict(yes, yes, yes) == C.HOLDS
    assert CE.problem_verdict(no, yes, no) == C.DOES_NOT_HOLD
    assert CE.problem_verdict(no, no, yes) == C.NOT_TESTABLE_AT_BUDGET
    assert CE.problem_verdict(yes, no, yes) == C.NOT_TESTABLE_AT_BUDGET        # ours holding decides nothing
    assert CE.problem_verdict(no, no, no) == C.NOT_SHOWN_BY_PAPER
    assert CE.problem_verdict(no, None, no) == C.NOT_SHOWN_BY_PAPER            # beyond their per-step record
    assert CE.problem_verdict(no, unmeasured, yes) == C.NOT_TESTABLE_AT_BUDGET
    assert CE.problem_verdict(unmeasured, yes, yes) == C.NOT_MEASURED


def test_every_overall_verdict_is_reachable():
    H, D, T, S, M = C.HOLDS, C.DOES_NOT_HOLD, C.NOT_TESTABLE_AT_BUDGET, C.NOT_SHOWN_BY_PAPER, C.NOT_MEASURED
    assert CE.overall_verdict([H, T, S, M]) == H
    assert CE.overall_verdict([H, D, T]) == D
    assert CE.overall_verdict([S, T, M]) == T
    assert CE.overall_verdict([S, M]) == S
    assert CE.overall_verdict([M]) == M and CE.overall_verdict([]) == M


def test_published_curves_cut_to_the_budget(monkeypatch):
    """Full data: their epochs up to ours; reduced data: the same optimizer steps, each of our epochs the
    mean of their mini-batch losses over its steps; nothing beyond what they published."""
    import kfac_bench.reference as R
    per_epoch = pd.DataFrame({"epoch": range(1, 201), "train_loss": [1.0 / e for e in range(1, 201)],
                              "time_s": [2.0 * e for e in range(1, 201)]})
    its = pd.DataFrame({"dataset": "curves", "method": "kfac", "iteration": range(1, 631),
                        "train_loss": [float(i) for i in range(1, 631)], "time_s": [0.1 * i for i in range(1, 631)]})
    monkeypatch.setattr(R, "authors_curve", lambda d, m: per_epoch)
    monkeypatch.setattr(R, "load_authors_iterations", lambda: its)
    full_data = CI.Problem("p", "f", SPECIFICATION, {"kfac": curve([(1, 1, 1)])}, dataset="curves", n_train=16000,
                          batch_size=256, horizon=10)
    cut = CI.published_problem(full_data, full=False).curves["kfac"]
    assert list(cut["epoch"]) == list(range(1, 11)) and cut["loss"].iloc[-1] == pytest.approx(0.1)
    assert len(CI.published_problem(full_data, full=True).curves["kfac"]) == 200
    reduced = CI.Problem("p", "f", SPECIFICATION, {"kfac": curve([(1, 1, 1)])}, dataset="curves", n_train=1000,
                        batch_size=256, horizon=3)                          # 4 steps an epoch
    cut = CI.published_problem(reduced, full=False).curves["kfac"]
    assert list(cut["loss"]) == [2.5, 6.5, 10.5]                            # means of steps 1-4, 5-8, 9-12
    assert list(cut["time"]) == pytest.approx([0.4, 0.8, 1.2])
    beyond = CI.Problem("p", "f", SPECIFICATION, {"kfac": curve([(1, 1, 1)])}, dataset="curves", n_train=8000,
                       batch_size=256, horizon=30)                          # 960 steps > 630 published
    assert CI.published_problem(beyond, full=False).curves == {}


# ----------------------------------------------------------------------------- Figure 1 rules
def fisher_table(errors: dict[str, list[float]], spectrum: dict[str, list[float]] | None = None):
    rows = []
    spectrum = spectrum or errors
    for method, values in errors.items():
        for i, v in enumerate(values):
            rows.append({"iteration": i + 1, "layer": 5, "method": method, "epoch": 1,
                         "error_frobenius": v, "error_spectrum": spectrum[method][i]})
    return pd.DataFrame(rows)


def study(table, dataset="mnist", epochs=1.0):
    return CI.FisherStudy(dataset, dataset, "x/fisher_errors.csv", table, epochs)


def test_fisher_rules_edges():
    n = 10
    good = {"kfac": [1.0] * n, "kpsvd": [0.5] * n, "deflation": [0.1] * n, "lanczos": [0.1 + 1e-6] * n,
            "kfac_corrected": [0.3] * n}
    assert C.rule_below_kfac(study(fisher_table(good))).holds is True
    tie = {**good, "kpsvd": [1.0] + [0.5] * (n - 1)}          # equal to KFAC once: not below
    assert C.rule_below_kfac(study(fisher_table(tie))).holds is False
    # Lanczos within BEST_TIE_RTOL of Deflation still leaves Deflation the lowest
    assert C.rule_deflation_best(study(fisher_table(good))).holds is True
    nine = {**good, "kpsvd": [0.05] + [0.5] * (n - 1)}        # Deflation lowest on 9 of 10 = BEST_FRACTION
    assert C.rule_deflation_best(study(fisher_table(nine))).holds is True
    eight = {**good, "kpsvd": [0.05, 0.05] + [0.5] * (n - 2)}
    assert C.rule_deflation_best(study(fisher_table(eight))).holds is False


def test_kfac_peak_verdicts():
    def peaked(peak):
        return fisher_table({"kfac": [1.0, peak, 2.0], "deflation": [0.1] * 3})
    assert C.rule_kfac_peak(study(peaked(6.5 * 1.24)))[0] == C.HOLDS
    assert C.rule_kfac_peak(study(peaked(6.5 * 0.76)))[0] == C.HOLDS
    assert C.rule_kfac_peak(study(peaked(6.5 * 1.26), epochs=26))[0] == C.DOES_NOT_HOLD
    verdict, numbers = C.rule_kfac_peak(study(peaked(1.0), epochs=1))
    assert verdict == C.NOT_TESTABLE and "1 epochs of Adam" in numbers and "26 epochs" in numbers
    table = CE.claims_table([], problems=[], studies=[study(peaked(1.0), dataset="curves")])
    assert table.set_index("id").loc["F1c", "verdict"] == C.NOT_MEASURED   # no MNIST study


def write_study(root: Path, folder: str, name: str, table: pd.DataFrame, epochs: float, dataset: dict) -> Path:
    """A fisher study folder ``<root>/fisher/<folder>/<name>/`` as `kfac-bench fisher` writes it (the files the
    claims read: fisher_errors.csv, summary.json, config.yaml)."""
    path = root / "fisher" / folder / name
    path.mkdir(parents=True)
    table.to_csv(path / "fisher_errors.csv", index=False)
    (path / "summary.json").write_text(json.dumps({"dataset": dataset["name"], "dataset_source": "genuine",
                                                   "epochs": epochs, "points": int(table["iteration"].nunique())}))
    (path / "config.yaml").write_text(yaml.safe_dump({"dataset": dataset, "trainer": {"epochs": epochs}}))
    return path


def conv_study_table(n: int = 3) -> pd.DataFrame:
    """A conv auto-encoder's study: four layers, each row naming its spatial treatment, KFAC's error far
    above 6.5 and every approximation above KFAC (it would refute F1a and F1c if it were mixed in)."""
    rows = [{"iteration": i + 1, "layer": layer, "spatial": "independent" if layer < 4 else CI.NO_SPATIAL,
             "method": m, "epoch": 1, "error_frobenius": 100.0 if m == "kfac" else 200.0, "error_spectrum": 1.0}
            for i in range(n) for layer in (1, 2, 3, 4) for m in ("kfac", "kpsvd", "deflation", "lanczos",
                                                                   "kfac_corrected")]
    return pd.DataFrame(rows)


MNIST_MLP = {"name": "mnist", "source": "genuine", "batch_size": 512}
MNIST_CONV = {"name": "mnist", "folder": "mnist_conv", "source": "genuine", "batch_size": 128,
              "model": {"kind": "conv_autoencoder", "image_shape": [1, 28, 28]}}


def test_figure1_is_decided_on_the_longest_mlp_study(tmp_path):
    """Three studies under a root of profiles: the verdict profile's 3 epochs of MNIST (every approximation
    below KFAC; KFAC's peak 1.0), the conclusion's 26 epochs (KPSVD above KFAC once; KFAC's peak 6.5) and the
    conclusion's conv auto-encoder (30 epochs: the longest, but not the MLP of Figure 1). F1a-F1c are decided
    on the 26-epoch MLP study, the budget names it, the 3-epoch one is reported, the conv one nowhere."""
    root = tmp_path / "runs_root"
    n = 10
    short = {"kfac": [1.0] * n, "kpsvd": [0.5] * n, "deflation": [0.1] * n, "lanczos": [0.1] * n,
             "kfac_corrected": [0.3] * n}
    long = {**short, "kfac": [1.0, 6.5] + [2.0] * (n - 2), "kpsvd": [1.5] + [0.5] * (n - 1)}
    write_study(root / "verdict", "mnist", "fisher.points=15,trainer.epochs=3", fisher_table(short), 3, MNIST_MLP)
    write_study(root / "conclusion", "mnist", "fisher.points=100,trainer.epochs=26", fisher_table(long), 26, MNIST_MLP)
    write_study(root / "conclusion", "mnist_conv", "fisher.points=6,trainer.epochs=1", conv_study_table(), 30,
                MNIST_CONV)
    studies = CI.collect_fisher_studies([root])
    assert sorted(s.epochs for s in studies) == [3, 26] and {s.dataset for s in studies} == {"mnist"}
    table = CE.claims_table([root], problems=[]).set_index("id")
    longest = "mnist [runs_root/conclusion/fisher/mnist/fisher.points=100,trainer.epochs=26]"
    assert table.loc["F1c", "verdict"] == C.HOLDS and table.loc["F1c", "numbers"].startswith(longest)
    assert "shorter studies, not judged: mnist [runs_root/verdict/fisher/mnist/" in table.loc["F1c", "numbers"]
    assert table.loc["F1a", "verdict"] == C.DOES_NOT_HOLD and table.loc["F1b", "verdict"] == C.HOLDS
    for cid in ("F1a", "F1b", "F1c"):
        assert table.loc[cid, "budget"] == f"{longest}: 26 epochs of Adam, {n} points"
        assert "mnist_conv" not in table.loc[cid, "numbers"] + table.loc[cid, "source"]
    # a KFAC-only study of every iteration over the same 26 epochs (more points): it decides KFAC's peak
    # (F1c), not F1a/F1b, which need the approximations it did not measure
    every = {"kfac": [1.0] * (3 * n) + [3.0]}
    write_study(root / "conclusion", "mnist", "fisher.every=1,fisher.methods=[kfac],trainer.epochs=26",
                fisher_table(every), 26, MNIST_MLP)
    table = CE.claims_table([root], problems=[]).set_index("id")
    assert table.loc["F1c", "verdict"] == C.DOES_NOT_HOLD and "fisher.every=1" in table.loc["F1c", "budget"]
    assert table.loc["F1a", "budget"] == f"{longest}: 26 epochs of Adam, {n} points"
    assert table.loc["F1a", "verdict"] == C.DOES_NOT_HOLD and table.loc["F1b", "verdict"] == C.HOLDS
    # the verdict profile alone: its 3 epochs decide -- F1a holds, F1c is shorter than the paper's 26 epochs
    alone = CE.claims_table([root / "verdict"], problems=[]).set_index("id")
    assert alone.loc["F1a", "verdict"] == C.HOLDS and alone.loc["F1c", "verdict"] == C.NOT_TESTABLE
    assert alone.loc["F1c", "budget"].endswith("fisher.points=15,trainer.epochs=3]: 3 epochs of Adam, 10 points")


def test_a_conv_study_is_no_figure1_study_whatever_its_folder_says():
    mlp = {"dataset.name": "mnist", "dataset.folder": "mnist"}
    assert CI.is_figure1_study(fisher_table({"kfac": [1.0]}), mlp)
    assert not CI.is_figure1_study(conv_study_table(), mlp)                      # rows name spatial treatments
    assert not CI.is_figure1_study(fisher_table({"kfac": [1.0]}), {**mlp, "dataset.folder": "mnist_conv"})
    from kfac_bench.studies.fisher_layers import NO_SPATIAL
    assert CI.NO_SPATIAL == NO_SPATIAL


def test_the_papers_problems():
    assert CI.is_paper_problem({"dataset.name": "faces", "dataset.source": "generated"})
    assert CI.is_paper_problem({"dataset.name": "mnist", "dataset.folder": "mnist", "dataset.model.kind": "mlp"})
    assert not CI.is_paper_problem({"dataset.name": "mnist", "dataset.folder": "mnist_conv"})
    assert not CI.is_paper_problem({"dataset.name": "mnist", "dataset.model.kind": "conv_autoencoder"})
    assert not CI.is_paper_problem({"dataset.name": "mnist", "dataset.task": "classification"})
    assert not CI.is_paper_problem({"dataset.name": "mnist_toynet", "dataset.task": "classification"})


def test_runs_of_problems_not_the_papers_are_not_judged(tmp_path, monkeypatch):
    """docs/runs/conclusion/: the conv auto-encoder's runs carry ``dataset.name: mnist`` (a slow Deflation
    here: counted, it would refute F2a on MNIST) and ToyNet's are a classification; neither is a problem of
    the paper, so only the verdict profile's CURVES is judged."""
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=FAST_SPEC, full=FAST_SPEC))
    root = tmp_path / "runs_root"
    write_problem(root / "verdict", FAST_SPEC, authors_code=[])
    write_problem(root / "conclusion", {**FAST_SPEC, "deflation": 1.2}, authors_code=[], dataset="mnist",
                  source="genuine", dataset_extra={k: v for k, v in MNIST_CONV.items() if k in ("folder", "model")})
    write_problem(root / "conclusion", FAST_SPEC, authors_code=[], dataset="mnist_toynet", source="genuine",
                  dataset_extra={"folder": "mnist_toynet", "task": "classification", "data": "mnist",
                                 "model": {"kind": "toynet"}})
    problems = CI.collect_problems([root])
    assert [(Path(p.folder).name, p.dataset) for p in problems] == [("verdict", "curves")]
    table = CE.claims_table([root])
    papers = table[table["id"].isin([c.id for c in C.paper_claims()])]   # C2/C3 judge them (test_conclusion_claims)
    assert not papers["problem"].str.contains("conclusion").any()
    f2a = table[(table["id"] == "F2a") & (table["problem"] == CE.ALL_PROBLEMS)].set_index("setting")
    assert f2a.loc["specification", "verdict"] == C.HOLDS


# ------------------------------------------------------------------------ folders to verdicts
def write_problem(root: Path, losses: dict, authors_code=None, dataset="curves", source="generated", seconds=None,
                  epochs=4, seed=0, name=None, dataset_extra=None):
    from kfac_bench.optim.authors_code import authors_setting
    n_train, batch = CI.PAPER_SIZE.get(dataset, (500, 100))                # full data: the epochs are the paper's
    for m, v in losses.items():
        folder = name or ("spec" if authors_code is None or authors_code == [] else "authors")
        # "the authors' code" of SGD and Adam leaves out first_order_weight_decay (authors_setting)
        code = authors_setting(m) if authors_code == "all" and m in ("sgd", "adam") else authors_code
        make_run(root, dataset, m, folder, flat(v, epochs), authors_code=code, source=source, seed=seed,
                 times=[e * (seconds or {}).get(m, 1.0) for e in range(epochs + 1)], n_train=n_train,
                 batch_size=batch, dataset_extra=dataset_extra)


def fake_published(at_budget: dict, full: dict):
    """Authors' curves: constant losses per method, one set up to 10 epochs and another after."""
    def curve_of(dataset, method, problem, full_cut):
        losses = full if full_cut else at_budget
        epochs = range(1, (200 if full_cut else problem.horizon) + 1)
        return curve([(e, losses[method], float(e)) for e in epochs]) if method in losses else None
    return curve_of


def test_claims_table_judges_each_problem_against_the_published_curves(tmp_path, monkeypatch):
    from kfac_bench.report import build_report
    runs = tmp_path / "verdict"
    # specification: Deflation no faster than the baselines; authors' code: every method faster
    write_problem(runs, {**FAST_SPEC, "deflation": 1.2}, authors_code=[])
    write_problem(runs, FAST_SPEC, authors_code="all")
    slow_start = {**FAST_SPEC, "kfac": 1.0}            # their KFAC not faster than SGD yet: F2a not shown
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=FAST_SPEC, full=FAST_SPEC))
    table = CE.claims_table([runs])
    assert set(table["verdict"]) <= set(C.VERDICTS) and set(CE.CLAIM_COLUMNS) <= set(table.columns)
    f2a = table[table["id"] == "F2a"].set_index(["setting", "problem"])["verdict"]
    assert f2a[("specification", CE.ALL_PROBLEMS)] == C.DOES_NOT_HOLD
    assert f2a[("authors' code", CE.ALL_PROBLEMS)] == C.HOLDS
    row = table[(table["id"] == "F2a") & (table["setting"] == "specification") & (table["problem"] != CE.ALL_PROBLEMS)]
    assert row["published_at_budget"].iloc[0] == C.HOLDS and "(generated stand-in)" in row["problem"].iloc[0]
    assert row["budget"].iloc[0] == "4 epochs x 16000 examples (252 steps), 1 seed"
    assert row["key_number"].iloc[0] == "worst ratio 1.2"
    assert "FASTER_MARGIN = 0.05" in row["rule"].iloc[0] and "TEST" in row["source"].iloc[0]
    # their curves do not show it at our budget but at 200 epochs: not testable, whatever ours say
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=slow_start, full=FAST_SPEC))
    table = CE.claims_table([runs]).set_index(["id", "setting", "problem"])["verdict"]
    assert table[("F2a", "specification", CE.ALL_PROBLEMS)] == C.NOT_TESTABLE_AT_BUDGET
    assert table[("F2a", "authors' code", CE.ALL_PROBLEMS)] == C.NOT_TESTABLE_AT_BUDGET
    # nor at 200 epochs: not shown by the paper's own curves
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=slow_start, full=slow_start))
    table = CE.claims_table([runs])
    overall = table.set_index(["id", "setting", "problem"])["verdict"]
    assert overall[("F2a", "specification", CE.ALL_PROBLEMS)] == C.NOT_SHOWN_BY_PAPER
    # never a refutation where the paper's own curves at our budget do not show the effect
    decided = table[table["verdict"].isin([C.HOLDS, C.DOES_NOT_HOLD]) & (table["problem"] != CE.ALL_PROBLEMS)
                    & (table["setting"] != "fisher study")]
    assert (decided["published_at_budget"] == C.HOLDS).all()
    # no runs at all: not measured, with what produces them
    empty = CE.claims_table([tmp_path / "nothing"])
    assert (empty["verdict"] == C.NOT_MEASURED).all()
    assert "--profile verdict" in empty[empty["id"] == "T1"]["numbers"].iloc[0]

    out = build_report({"results_dir": str(runs), "authors_overlay": False, **FAST})
    report = Path(out["output_dir"])
    rows = list(csv.DictReader(open(report / "claims.csv")))
    assert {r["id"] for r in rows} >= {"F1a", "F2a", "T1", "C1"}
    md = (report / "summary.md").read_text()
    assert "# Claims of the paper" in md and "paper's own curves at our budget" in md
    markdown = CT.claims_markdown(CE.claims_table([runs]), note="PROFILE NOTE")
    assert "PROFILE NOTE" in markdown
    cells = [c for line in markdown.splitlines() if line.startswith("|") for c in line.split(" | ")]
    assert max(len(c) for c in cells) <= 202


def test_horizons_pool_the_seeds_that_trained_long_enough(tmp_path, monkeypatch):
    """Seed 0 for 8 epochs, seeds 1 and 2 for 4: at 4 epochs three seeds (seed 0 cut), at 8 one."""
    runs = tmp_path / "verdict"
    write_problem(runs, FAST_SPEC, authors_code=[], epochs=8, seed=0, name="s0")
    for seed in (1, 2):
        write_problem(runs, FAST_SPEC, authors_code=[], epochs=4, seed=seed, name=f"s{seed}")
    problems = {p.horizon: p for p in CI.collect_problems([runs])}
    assert sorted(problems) == [4, 8]
    assert problems[4].seeds == 3 and int(problems[4].curves["kfac"]["epoch"].max()) == 4
    assert problems[8].seeds == 1 and len(problems[8].run_dirs["kfac"]) == 1



def test_a_method_beside_the_papers_does_not_shrink_a_problems_seeds(tmp_path):
    """The fair profile's full MNIST: the paper's methods with 3 seeds, Shampoo with 1 (its others failed).
    The claims compare the paper's methods only, so their budget says 3 seeds."""
    runs = tmp_path / "fair"
    for seed in (0, 1, 2):
        write_problem(runs, FAST_SPEC, authors_code=[], seed=seed, name=f"s{seed}")
    write_problem(runs, {"shampoo": 0.9}, authors_code=[], seed=1, name="s1")
    (problem,) = CI.collect_problems([runs])
    assert len(problem.run_dirs["shampoo"]) == 1 and problem.seeds == 3
    assert problem.budget().endswith(", 3 seeds")

def summary_row(table, cid: str, compact: bool = True) -> list[str]:
    """The cells of one claim's row of the summary."""
    return [line for line in CT.claims_summary_markdown(table, compact=compact).splitlines()
            if line.startswith(f"| {cid} ")][0].split(" | ")


def test_the_summary_gives_one_key_number_per_problem_from_the_horizon_that_decides(tmp_path, monkeypatch):
    """Seed 0 for 8 epochs, seeds 1-2 for 4: the full summary (claims.md) shows one number per dataset, the
    failing horizon where one fails (seed 0's slow Deflation), else the one with the most seeds; the
    README's (compact) the number of the problem furthest from the claim, and where."""
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=FAST_SPEC, full=FAST_SPEC))
    runs = tmp_path / "verdict"
    write_problem(runs, {**FAST_SPEC, "deflation": 1.2}, authors_code=[], epochs=8, seed=0, name="s0")
    for seed in (1, 2):
        write_problem(runs, FAST_SPEC, authors_code=[], epochs=4, seed=seed, name=f"s{seed}")
    table = CE.claims_table([runs])
    assert summary_row(table, "F2a", compact=False)[2:] == [
        "does not hold", "not measured", "holds on 1 of 1 problems", "curves* 8 ep., 1 seed: worst ratio 1.2 |"]
    assert summary_row(table, "F2a")[5] == "worst ratio 1.2 (curves* 8 ep., 1 seed) |"
    (runs / "runs" / "curves" / "deflation" / "s0" / "summary.json").unlink()      # seed 0's Deflation gone
    write_problem(runs, {"deflation": 0.3}, authors_code=[], epochs=8, seed=0, name="s0b")
    row = summary_row(CE.claims_table([runs]), "F2a", compact=False)
    assert row[2] == "holds" and row[5] == "curves* 4 ep., 3 seeds: worst ratio 0.5 |"
    # a root of profiles: still one number per dataset, naming the profile it comes from
    root = tmp_path / "root"
    write_problem(root / "verdict", FAST_SPEC, authors_code=[], seed=0)
    write_problem(root / "fair", {**FAST_SPEC, "kfac": 0.4}, authors_code=[], seed=0)
    write_problem(root / "fair", {**FAST_SPEC, "kfac": 0.6}, authors_code=[], dataset="mnist", source="genuine")
    table = CE.claims_table([root])
    assert summary_row(table, "F2a", compact=False)[5] == (
        "curves* [fair] 4 ep., 1 seed: worst ratio 0.5; mnist [fair] 4 ep., 1 seed: worst ratio 0.6 |")
    assert summary_row(table, "F2a")[5] == "worst ratio 0.6 (mnist [fair] 4 ep., 1 seed) |"


def test_the_key_number_read_for_the_worst_problem():
    assert CT._key_value("worst ratio 1.8") == 1.8
    assert CT._key_value("KPSVD/KFAC within 1 ± 0.0279") == 0.0279
    assert CT._key_value("largest ×2.67 of KFAC's s/epoch") == 2.67
    assert CT._key_value("") == -math.inf


def test_a_claim_says_on_how_many_problems_it_holds_where_they_disagree(tmp_path, monkeypatch):
    """One problem = one dataset, whatever its budgets: CURVES fails at 8 epochs (seed 0's slow Deflation)
    and holds at 4, MNIST holds -- 1 of 2 problems, not 2 of 3 budgets. Where the problems agree the cell is
    the verdict alone. The row over all problems names each problem it aggregates with its budget."""
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=FAST_SPEC, full=FAST_SPEC))
    runs = tmp_path / "verdict"
    write_problem(runs, {**FAST_SPEC, "deflation": 1.2}, authors_code=[], epochs=8, seed=0, name="s0")
    for seed in (1, 2):
        write_problem(runs, FAST_SPEC, authors_code=[], epochs=4, seed=seed, name=f"s{seed}")
    write_problem(runs, FAST_SPEC, authors_code=[], dataset="mnist", source="genuine")
    write_problem(runs, FAST_SPEC, authors_code="all")
    table = CE.claims_table([runs])
    row = summary_row(table, "F2a")
    assert row[2:5] == ["does not hold (holds on 1 of 2 problems)", "holds", "holds on 2 of 2 problems"]
    overall = table[(table["id"] == "F2a") & (table["problem"] == CE.ALL_PROBLEMS)].set_index("setting")
    assert overall.loc["specification", "verdict"] == C.DOES_NOT_HOLD      # the overall rule is unchanged
    assert overall.loc["specification", "key_number"] == "holds on 1 of 2 problems"
    assert overall.loc["authors' code", "key_number"] == "holds on 1 of 1 problems"
    assert overall.loc["specification", "budget"] == (
        "curves [epochs=4] (generated stand-in) [verdict]: 4 epochs x 16000 examples (252 steps), 3 seeds; "
        "curves [epochs=8] (generated stand-in) [verdict]: 8 epochs x 16000 examples (504 steps), 1 seed; "
        "mnist [verdict]: 4 epochs x 50000 examples (392 steps), 1 seed")
    assert "One problem = one dataset" in overall.loc["specification", "rule"]


def test_problem_verdicts_and_counts():
    rows = [{"problem": "faces [epochs=2] (generated stand-in) [verdict]", "verdict": C.DOES_NOT_HOLD},
            {"problem": "faces [epochs=10] (generated stand-in) [verdict]", "verdict": C.HOLDS},
            {"problem": "mnist [epochs=5] [verdict]", "verdict": C.HOLDS},
            {"problem": "curves (generated stand-in) [verdict]", "verdict": C.NOT_TESTABLE_AT_BUDGET},
            {"problem": "curves [n_train=8000] (generated stand-in) [fair]", "verdict": C.NOT_MEASURED},
            {"problem": "faces [epochs=2] [verdict]", "verdict": C.NOT_MEASURED}]
    by_problem = CE.verdicts_by_problem(rows)
    assert by_problem == {"faces*": C.DOES_NOT_HOLD, "mnist": C.HOLDS, "curves*": C.NOT_TESTABLE_AT_BUDGET}
    assert CE.holds_count(by_problem) == "holds on 1 of 2 problems"
    assert CE.holds_count({"curves*": C.NOT_SHOWN_BY_PAPER}) == ""


def test_the_compact_summary_lines_are_short(tmp_path, monkeypatch):
    """The README's block (compact) keeps every line under README_LINE_LIMIT where the full summary's
    per-problem key numbers (claims.md) are longer."""
    from kfac_bench.reproduce.common import README_LINE_LIMIT
    monkeypatch.setattr(CI, "_reference_curve", fake_published(at_budget=FAST_SPEC, full=FAST_SPEC))
    root = tmp_path / "root"
    slow_on_mnist = {**FAST_SPEC, "deflation": 1.2}      # the problems disagree: the verdict cells count them
    for profile in ("verdict", "fair", "other"):
        for dataset, source in (("curves", "generated"), ("faces", "generated"), ("mnist", "genuine")):
            losses = slow_on_mnist if dataset == "mnist" else FAST_SPEC
            write_problem(root / profile, losses, authors_code=[], dataset=dataset, source=source,
                          name=f"{profile}_{dataset}")
            write_problem(root / profile, losses, authors_code="all", dataset=dataset, source=source)
    table = CE.claims_table([root])
    assert max(len(line) for line in CT.claims_summary_markdown(table, compact=False).splitlines()) > README_LINE_LIMIT
    assert max(len(line) for line in CT.claims_summary_markdown(table).splitlines()) <= README_LINE_LIMIT


def test_a_root_of_profiles_is_read_profile_by_profile(tmp_path):
    """docs/runs/ holds verdict/ and fair/: the same problem at the same horizon in both (MNIST 5 epochs)
    makes two problems, one per profile, never one pool choosing among both profiles' configurations."""
    root = tmp_path / "runs_root"
    write_problem(root / "verdict", FAST_SPEC, authors_code=[])
    write_problem(root / "fair", {**FAST_SPEC, "kfac": 0.9}, authors_code=[])
    problems = CI.collect_problems([root])
    assert sorted(p.label.split(" [")[1] for p in problems) == ["fair]", "verdict]"]
    by_profile = {Path(p.folder).name: p for p in problems}
    assert by_profile["verdict"].curves["kfac"]["loss"].iloc[-1] == 0.5
    assert by_profile["fair"].curves["kfac"]["loss"].iloc[-1] == 0.9
    assert [p.folder for p in CI.collect_problems([root / "verdict"])] == [str(root / "verdict")]
    runs = runs_table(load_results(root))            # the report's tables: one problem per profile too
    assert sorted({json.loads(s)["profile"] for s in runs["setting"]}) == ["fair", "verdict"]
    assert "profile" not in runs_table(load_results(root / "fair"))["setting"].iloc[0]


# ---------------------------------------------------------------------------------- ablation
def test_setting_classes():
    every = relevant_behaviours("kfac")
    assert "frozen_curvature" in every and "nesterov_sgd" not in every
    assert "nesterov_sgd" in relevant_behaviours("sgd") and "frozen_curvature" not in relevant_behaviours("sgd")
    key = lambda v: json.dumps({"dataset.name": "mnist", "authors_code": v})  # noqa: E731
    assert setting_class(json.dumps({"dataset.name": "mnist"}), "kfac") == SPECIFICATION
    assert setting_class(key([]), "kfac") == SPECIFICATION
    assert setting_class(key("all"), "kfac") == AUTHORS_CODE
    assert setting_class(key(list(every)), "kfac") == AUTHORS_CODE
    assert setting_class(key(list(every)[1:]), "kfac") == PARTIAL
    # a behaviour that does not act on SGD leaves it at the specification
    assert setting_class(key(["frozen_curvature"]), "sgd") == SPECIFICATION


def test_order_steps_chain_and_combinations():
    a, b, c = "a", "b", "c"
    chain, extra = order_steps([frozenset(), frozenset({a, b, c}), frozenset({b, c}), frozenset({a, c}),
                                frozenset({c})])
    assert chain == [frozenset({a, b, c}), frozenset({a, c}), frozenset({c}), frozenset()]
    assert extra == [frozenset({b, c})]


def test_ablation_table_orders_and_differences(tmp_path):
    root = tmp_path / "r"
    every = list(relevant_behaviours("kfac"))
    minus_frozen = [b for b in every if b != "frozen_curvature"]
    minus_damping = [b for b in every if b != "authors_damping"]
    hp = {"lr": 0.1, "damping": 0.01}
    make_run(root, "mnist", "kfac", "all", [1.0, 0.6, 0.5, 0.4, 0.3, 0.2], authors_code="all", hp=hp)
    make_run(root, "mnist", "kfac", "all_s1", [1.0, 0.6, 0.5, 0.4, 0.3, 0.4], authors_code="all", hp=hp, seed=1)
    make_run(root, "mnist", "kfac", "nofrozen", [1.0, 0.5, 0.4, 0.3, 0.2, 0.15], authors_code=minus_frozen, hp=hp)
    make_run(root, "mnist", "kfac", "spec", [1.0, 0.4, 0.3, 0.2, 0.1, 0.1], authors_code=[], hp=hp)
    make_run(root, "mnist", "kfac", "nodamping", [1.0, 0.7, 0.6, 0.5, 0.4, 0.35], authors_code=minus_damping, hp=hp)
    # another lr: its single setting is no ablation
    make_run(root, "mnist", "kfac", "other", [1.0, 0.4, 0.3, 0.2, 0.1, 0.1], authors_code=[], hp={"lr": 0.3})
    long = load_results(root)
    table = ablation_table(long, runs_table(long))
    assert list(table["kind"]) == ["chain", "chain", "chain", "combination"]
    assert table["step"].iloc[0] == STEP_ALL and table["seeds"].iloc[0] == 2
    assert table["step"].iloc[1] == "− frozen_curvature"
    assert table["step"].iloc[2].endswith("(specification)") and table["behaviours"].iloc[2] == "[]"
    assert table["step"].iloc[3] == "combination: all − authors_damping"
    # epoch 5 is the last: median of the two seeds of `all` = 0.3
    assert table["train_loss_epoch5"].tolist() == pytest.approx([0.3, 0.15, 0.1, 0.35])
    assert table["delta_train_loss_epoch5"].tolist()[1:] == pytest.approx([-0.15, -0.05, 0.05])
    assert math.isnan(table["delta_train_loss_epoch5"].iloc[0])
    assert table["train_loss_last"].tolist() == pytest.approx([0.3, 0.15, 0.1, 0.35])
    assert table["last_epoch"].iloc[0] == 5


# ------------------------------------------------------------------------ the common target
# (the fair comparison's targets, its performance profile and its README row: tests/test_fair.py)
def _summary(root: Path) -> pd.DataFrame:
    long = load_results(root)
    runs = runs_table(long)
    table, _ = summary_table(long, runs, select_best(runs), {s: "curves" for s in runs["setting"]})
    return table.set_index("method")


def test_a_method_that_never_improves_does_not_set_the_common_target(tmp_path):
    """A method whose loss ends above where it started would make every method 'reach' the target at
    epoch 0: it does not set the common target and never reaches it."""
    root = tmp_path / "r"
    make_run(root, "curves", "sgd", "s0", [1.0, 0.8, 0.6], source="generated")
    make_run(root, "curves", "kron", "k0", [1.0, 1.2, 1.5], source="generated")          # worse than its start
    make_run(root, "curves", "kfac", "f0", [1.0, 0.5, 0.4], source="generated")
    table = _summary(root)
    assert table.loc["sgd", "target_loss"] == pytest.approx(0.6)        # SGD's final, not Kron's 1.5
    assert table.loc["sgd", "epochs_to_target"] == 2 and table.loc["kfac", "epochs_to_target"] == 1
    assert math.isnan(table.loc["kron", "epochs_to_target"])


def test_a_method_that_barely_improves_does_not_set_the_target(tmp_path):
    """The common target is the worst final loss among the methods that removed at least half of the
    largest drop on the problem (TARGET_MIN_SHARE): a method that moved from 1.0 to 0.98 (Shampoo at the
    library's defaults) would otherwise let every method 'reach' the target in its first epoch. One
    that removed just over half of the best drop still sets it; one just under does not."""
    root = tmp_path / "r"
    make_run(root, "curves", "shampoo", "h0", [1.0, 0.99, 0.98], source="generated")   # drop 0.02
    make_run(root, "curves", "kfac", "f0", [1.0, 0.5, 0.2], source="generated")        # drop 0.8: the best
    make_run(root, "curves", "sgd", "s0", [1.0, 0.7, 0.59], source="generated")        # 0.41 >= 0.4: sets it
    make_run(root, "curves", "kron", "k0", [1.0, 0.8, 0.61], source="generated")       # 0.39 < 0.4: does not
    table = _summary(root)
    assert table.loc["kfac", "target_loss"] == pytest.approx(0.59)
    assert table.loc["kfac", "epochs_to_target"] == 1 and table.loc["sgd", "epochs_to_target"] == 2
    assert math.isnan(table.loc["kron", "epochs_to_target"]) and math.isnan(table.loc["shampoo", "epochs_to_target"])


def test_the_authors_setting_of_the_baselines_leaves_out_their_weight_decay():
    """SGD/Adam with every behaviour (first_order_weight_decay included) do not train, while the
    authors' published baselines do: such a run is an ablation step, not "the authors' code"."""
    from kfac_bench.optim.authors_code import applicable, authors_setting
    from kfac_bench.report import ablation as A
    key = lambda v: json.dumps({"authors_code": v})  # noqa: E731
    assert A.setting_class(key("all"), "kfac") == A.AUTHORS_CODE
    assert A.setting_class(key(applicable("kfac")), "kfac") == A.AUTHORS_CODE
    assert A.setting_class(key("all"), "sgd") == A.PARTIAL
    assert A.setting_class(key(authors_setting("sgd")), "sgd") == A.AUTHORS_CODE
    assert "first_order_weight_decay" not in authors_setting("adam") and authors_setting("adam")
    assert A.setting_class(key([]), "adam") == A.SPECIFICATION


def test_a_rule_is_judged_at_the_largest_shorter_horizon_the_published_curves_decide(monkeypatch):
    """Their curves show the effect at 5 epochs but no longer at 20: a 20-epoch run is judged on its
    first 5 epochs (the budget says so); where no horizon shows it, at its own horizon."""
    def published(dataset, method, problem, full_cut):
        last = 200 if full_cut else problem.horizon
        fast = FAST_SPEC[method] if (full_cut or last <= 5) else 1.0
        return curve([(e, fast if method in ("sgd", "adam") or e <= 5 else 1.0, float(e)) for e in range(1, last + 1)])
    monkeypatch.setattr(CI, "_reference_curve", published)
    ours = problem(FAST_SPEC, epochs=20)
    ours.dataset, ours.n_train, ours.batch_size, ours.horizon, ours.seeds = "curves", 16000, 256, 20, 1
    rule = lambda p: C.rule_faster_than_baselines(p, "epoch")   # noqa: E731
    decided, at_budget = CE.decisive_budget(ours, rule)
    assert decided.horizon == 5 and at_budget.holds and int(decided.curves["kfac"]["epoch"].max()) == 5
    assert decided.budget().startswith("5 epochs")
    never = lambda p: CI.Outcome(False, "no")                    # noqa: E731
    same, outcome = CE.decisive_budget(ours, never)
    assert same is ours and outcome.holds is False
