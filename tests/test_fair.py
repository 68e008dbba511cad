"""The fair comparison's report: one problem per dataset at its confirmation budget, the two targets per
problem and each seed's time to them, the performance profile, the tuning table (trials inside the search
space, extensions outside it, the edge flag), the methods' styles and the README row on who gets there
first. Tiny fake run folders and hand-made tables; nothing is trained."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfac_bench.registry import method_names, search_space
from kfac_bench.report.fair import (TARGET_DEFINITIONS, fair_comparison, fair_markdown, fair_table,
                                    first_to_target_rows, leaders, performance_ratios, plot_performance_profile,
                                    problem_budgets, problem_targets, profile_fraction, profile_inputs, standing,
                                    standing_key)
from kfac_bench.report.fair_tuning import NO_SPACE, inside, trials_line, tuning_markdown, tuning_row, tuning_table
from kfac_bench.report.results import load_results, runs_table
from kfac_bench.report.tables import select_best
from test_claims import make_run as claims_make_run


def make_run(root: Path, dataset: str, method: str, name: str, train, *, source="generated", **options):
    """test_claims' run folder, on generated data by default, its running loss the epoch's loss."""
    return claims_make_run(root, dataset, method, name, train, source=source, running=list(train), **options)


def _report_inputs(root: Path):
    long = load_results(root)
    runs = runs_table(long)
    return long, runs, select_best(runs)


# ------------------------------------------------------------------------------------- profile
def test_performance_profile_hand_example():
    # problem P1: A 10 s, B 20 s, C never; problem P2: A 40 s, B 20 s, C 30 s
    times = pd.DataFrame({"A": [10.0, 40.0], "B": [20.0, 20.0], "C": [math.inf, 30.0]}, index=["P1", "P2"])
    ratios = performance_ratios(times)
    assert ratios.loc["P1"].tolist() == [1.0, 2.0, math.inf] and ratios.loc["P2"].tolist() == [2.0, 1.0, 1.5]
    assert profile_fraction(ratios, "A", 1.0) == 0.5 and profile_fraction(ratios, "A", 2.0) == 1.0
    assert profile_fraction(ratios, "B", 1.0) == 0.5 and profile_fraction(ratios, "B", 1.99) == 0.5
    assert profile_fraction(ratios, "B", 2.0) == 1.0
    assert profile_fraction(ratios, "C", 1.49) == 0.0 and profile_fraction(ratios, "C", 4.0) == 0.5


# -------------------------------------------------------------------------------------- problems
def test_one_problem_per_dataset_at_its_confirmation_budget(tmp_path):
    """CURVES has a 500 x 2-epoch tuning problem, a 16,000 x 3-epoch confirmation problem and one run with
    the authors' code; MNIST one problem. Only the largest specification problem of each dataset enters."""
    root = tmp_path / "r"
    make_run(root, "curves", "adam", "tune", [1.0, 0.1, 0.1])                               # 500 x 2
    make_run(root, "curves", "adam", "full", [1.0, 0.5, 0.4, 0.3], n_train=16000)           # 16000 x 3
    make_run(root, "curves", "kfac", "full", [1.0, 0.4, 0.3, 0.2], n_train=16000)
    make_run(root, "curves", "kfac", "authors", [1.0, 0.2, 0.1, 0.1], n_train=16000, authors_code="all")
    make_run(root, "mnist", "adam", "full", [1.0, 0.6, 0.5], source="genuine", n_train=50000)
    long, runs, selection = _report_inputs(root)
    budgets = problem_budgets(runs)
    chosen = budgets[budgets["confirmation"]]
    assert sorted(chosen["short"]) == ["curves* 16000 x 3 ep.", "mnist 50000 x 2 ep."]
    assert sorted(budgets.loc[~budgets["confirmation"], "specification"]) == [False, True]   # authors' code, tuning
    fair = fair_table(long, runs, selection, budgets)
    assert sorted(set(fair["problem"])) == ["curves* 16000 x 3 ep.", "mnist 50000 x 2 ep."]
    assert len(fair) == 2 * 2 + 1 * 2            # (method, target) per problem
    curves_a = fair[(fair["dataset"] == "curves") & (fair["target"] == "a")].set_index("method")
    assert curves_a.loc["adam", "target_loss"] == pytest.approx(0.3)   # the full-size Adam's, not the tuning run's 0.1
    text = fair_markdown(fair, budgets)
    assert "Left out of these tables and of the performance profile" in text
    assert "(a smaller budget)" in text and "(the authors' code)" in text
    written = plot_performance_profile(fair, tmp_path / "performance_profile", formats=("png",), dpi=30)
    assert [p.name for p in written] == ["performance_profile.png"]
    assert list(profile_inputs(fair, "a", "seconds_to_target_median").index) == sorted(set(fair["problem"]))


# --------------------------------------------------------------------------------------- targets
def _targets_problem(root: Path, with_adam: bool = True):
    """Adam 3 seeds (finals 0.5, 0.4, 0.6), KFAC 1 seed (0.3), SOAP 3 seeds (0.2, 0.25, diverged), SGD (0.8)."""
    if with_adam:
        make_run(root, "curves", "adam", "a0", [1.0, 0.6, 0.5], times=[0, 2, 4])
        make_run(root, "curves", "adam", "a1", [1.0, 0.7, 0.4], times=[0, 2, 4], seed=1)
        make_run(root, "curves", "adam", "a2", [1.0, 0.8, 0.6], times=[0, 2, 4], seed=2)
    make_run(root, "curves", "kfac", "k0", [1.0, 0.4, 0.3], times=[0, 3, 6])
    make_run(root, "curves", "soap", "o0", [1.0, 0.3, 0.2], times=[0, 2, 4])
    make_run(root, "curves", "soap", "o1", [1.0, 0.35, 0.25], times=[0, 2, 5], seed=1)
    make_run(root, "curves", "soap", "o2", [1.0, 5.0, 9.0], times=[0, 2, 4], seed=2, status="diverged")
    make_run(root, "curves", "sgd", "s0", [1.0, 0.9, 0.8])


def test_a_final_loss_over_an_even_count_of_seeds_is_reached_by_half_of_them():
    from kfac_bench.report.fair import upper_median
    assert upper_median([0.6, 0.4]) == 0.6 and upper_median([0.5, 0.4, 0.6]) == 0.5
    assert upper_median([0.1, 0.2, 0.3, math.inf]) == 0.3


def test_the_two_targets_and_each_seeds_time_to_them(tmp_path):
    root = tmp_path / "r"
    _targets_problem(root)
    fair = fair_table(*_report_inputs(root))
    a = fair[fair["target"] == "a"].set_index("method")
    b = fair[fair["target"] == "b"].set_index("method")
    # (a): Adam's median final 0.5; (b): the lowest three finals 0.25 (SOAP, its diverged seed counted as
    # inf), 0.3 (KFAC), 0.5 (Adam): their median 0.3
    assert a.loc["soap", "final_loss"] == 0.25 and a.loc["adam", "final_loss"] == 0.5
    assert set(a["target_loss"]) == {0.5} and set(b["target_loss"]) == {0.3}
    assert a.loc["adam", "target_definition"] == TARGET_DEFINITIONS["a"]
    # Adam to its own target: seeds 0, 1 at epoch 2, seed 2 never
    assert a.loc["adam", "seeds"] == 3 and a.loc["adam", "seeds_reaching"] == 2
    assert a.loc["adam", "epochs_to_target_median"] == 2 and math.isinf(a.loc["adam", "epochs_to_target_max"])
    assert a.loc["kfac", "epochs_to_target_median"] == 1 and a.loc["kfac", "seconds_to_target_median"] == 3
    # SOAP to (b) = 0.3: seed 0 at epoch 1 (2 s), seed 1 at epoch 2 (5 s), the diverged seed never
    assert b.loc["soap", "seeds"] == 3 and b.loc["soap", "seeds_reaching"] == 2
    assert (b.loc["soap", "epochs_to_target_median"], b.loc["soap", "seconds_to_target_median"]) == (2, 5)
    assert (b.loc["soap", "epochs_to_target_min"], b.loc["soap", "seconds_to_target_min"]) == (1, 2)
    assert b.loc["kfac", "epochs_to_target_median"] == 2 and b.loc["kfac", "seconds_to_target_median"] == 6
    assert math.isinf(b.loc["adam", "epochs_to_target_median"]) and b.loc["adam", "seeds_reaching"] == 0
    assert math.isinf(b.loc["sgd", "seconds_to_target_median"])
    rows = {tuple(r[:2]): r[2:] for r in first_to_target_rows(fair)}
    assert rows[("curves* 500 x 2 ep.", "(a) 0.5")] == ["SOAP (2/3 seeds): 2.0 s",
                                                       "SOAP (2/3 seeds), KFAC (1/1 seeds): 1 ep."]


def test_a_failed_seed_counts_for_the_time_to_target_but_has_no_final_loss(tmp_path):
    """A failed seed of the winning configuration stays a seed of its time to target (here one that reached
    it before failing, one that did not); its last loss is no final loss."""
    root = tmp_path / "r"
    make_run(root, "curves", "adam", "a0", [1.0, 0.8, 0.6])
    make_run(root, "curves", "kfac", "f0", [1.0, 0.5, 0.4])
    make_run(root, "curves", "kfac", "f1", [1.0, 0.5], seed=1, status="failed", epochs=2)   # reached 0.6, then failed
    make_run(root, "curves", "kfac", "f2", [1.0, 0.9], seed=2, status="failed", epochs=2)   # failed before it
    a = fair_table(*_report_inputs(root)).query("target == 'a'").set_index("method")
    assert a.loc["kfac", "final_loss"] == 0.4 and a.loc["adam", "target_loss"] == 0.6
    assert a.loc["kfac", "seeds"] == 3 and a.loc["kfac", "seeds_reaching"] == 2
    assert a.loc["kfac", "epochs_to_target_median"] == 1 and math.isinf(a.loc["kfac", "epochs_to_target_max"])


def test_without_adam_target_a_is_not_measured(tmp_path):
    root = tmp_path / "r"
    _targets_problem(root, with_adam=False)
    fair = fair_table(*_report_inputs(root))
    a, b = fair[fair["target"] == "a"], fair[fair["target"] == "b"]
    assert a["target_loss"].isna().all() and a["epochs_to_target_median"].isna().all()
    assert set(b["target_loss"]) == {0.3}              # 0.25, 0.3, 0.8: the median 0.3
    assert profile_inputs(fair, "a", "seconds_to_target_median").empty
    text = fair_markdown(fair, problem_budgets(runs_table(load_results(root))))
    section_a = text[text.index("## Target (a)"):text.index("## Target (b)")]
    assert section_a.count("not measured") == 3 * len(a)
    assert "| (a) not measured |" in text


def test_problem_targets():
    finals = {"adam": 0.5, "kfac": 0.1, "soap": 0.2, "sgd": 0.9, "muon": math.inf}
    assert problem_targets(finals) == {"a": 0.5, "b": 0.2}          # the median of 0.1, 0.2 and Adam's 0.5
    no_adam = problem_targets({"kfac": 0.1, "soap": 0.2})
    assert math.isnan(no_adam["a"]) and no_adam["b"] == pytest.approx(0.15)
    assert math.isnan(problem_targets({})["b"])


# ---------------------------------------------------------------------------------------- tuning
def test_inside_the_search_space():
    space = search_space("kfac")          # lr, damping in [1e-4, 0.3] (log); kl_clip in {1e-3, 1e-2}
    point = {"lr": 0.3, "damping": 1e-4, "kl_clip": 0.01}
    assert inside(space, point)
    assert inside(space, {**point, "lr": 0.3 * (1 + 1e-10)})              # within the relative tolerance
    assert not inside(space, {**point, "lr": 0.3 * (1 + 1e-6)})
    assert not inside(space, {**point, "kl_clip": 0.1}) and not inside(space, {"lr": 0.01, "damping": 0.01})
    assert inside(search_space("adam"), {"lr": 1e-3, "betas": [0.9, 0.999]})      # a list among tuple choices
    assert not inside(search_space("adam"), {"lr": 1e-3, "betas": [0.9, 0.9]})


def test_trials_extensions_and_the_edge_flag(tmp_path):
    """KFAC's trials' winner sits on lr's upper edge and its extension diverged; KPSVD's extension ran and
    lost, which leaves the winner interior to the space searched; a seed-1 run is no trial."""
    root = tmp_path / "r"
    kfac_like = {"damping": 0.01, "kl_clip": 0.01}
    for method in ("kfac", "kpsvd"):
        make_run(root, "curves", method, "t_hi", [1.0, 0.5, 0.2], hp={"lr": 0.3, **kfac_like})
        make_run(root, "curves", method, "t_lo", [1.0, 0.7, 0.5], hp={"lr": 0.01, **kfac_like})
        make_run(root, "curves", method, "t_hi_seed1", [1.0, 0.5, 0.25], seed=1, hp={"lr": 0.3, **kfac_like})
    make_run(root, "curves", "kfac", "ext", [1.0, 9.0, 9.0], hp={"lr": 3.0, **kfac_like}, status="diverged")
    make_run(root, "curves", "kpsvd", "ext", [1.0, 0.6, 0.4], hp={"lr": 3.0, **kfac_like})
    long, runs, selection = _report_inputs(root)
    tuning = tuning_table(runs, selection, problem_budgets(runs)).set_index("method")
    assert tuning.loc["kfac", "trials"] == 2 and tuning.loc["kfac", "extensions"] == 1
    assert tuning.loc["kfac", "extensions_diverged"] == 1 and tuning.loc["kpsvd", "extensions_ok"] == 1
    assert tuning.loc["kfac", "winner"] == "lr=0.3, damping=0.01, kl_clip=0.01"
    assert tuning.loc["kfac", "edge"] == "edge: lr high -> the extension diverged (1 extension)"
    assert tuning.loc["kpsvd", "edge"] == "edge: lr high -> interior after 1 extension"
    text = tuning_markdown(tuning.reset_index())
    assert "**2 trials for every method on every problem.**" in text


def test_no_search_space_and_differing_trial_counts():
    runs = pd.DataFrame({"status": ["ok"], "final_train_loss": [0.1], "hyperparameters": ['{"lr": 0.1}'],
                         "run_dir": ["x"], "seed": [0]})
    assert tuning_row(runs, "mystery", '{"lr": 0.1}')["edge"] == NO_SPACE
    tuning = pd.DataFrame({"problem": ["p", "p", "p", "q", "q"], "method": ["kfac", "soap", "muon", "kfac", "soap"],
                           "trials": [12, 12, 11, 12, 12], "edge": ["interior"] * 5})
    assert trials_line(tuning) == ("Trials differ between methods or problems: p: 12 trials, but Muon 11; "
                                   "q: 12 trials for every method.")
    assert trials_line(tuning[tuning["method"] != "muon"]) == "12 trials for every method on every problem."


# ---------------------------------------------------------------------------------------- styles
def test_every_method_has_its_own_style_and_the_fair_methods_their_own_colour():
    from matplotlib.colors import to_hex

    from kfac_bench.report.figure2 import method_colour, method_style
    from kfac_bench.reproduce.profiles import load_profile
    styles = {m: (to_hex(method_colour(m)), method_style(m)) for m in method_names()}
    assert len(set(styles.values())) == len(styles), styles
    # every method but Lanczos rank k (Lanczos' colour, its own style) is drawn beside the others: the `fair`
    # profile's and the thirteen of issue 33 (Shampoo too)
    side_by_side = set(load_profile("fair")["methods"]) | (set(method_names()) - {"lanczos_k"})
    colours = [styles[m][0] for m in side_by_side]
    assert len(side_by_side) >= 13 and len(set(colours)) == len(colours)
    assert method_style("sgd") == method_style("adam") == ":" and method_style("kfac") == "--"


# ------------------------------------------------------------------------------- the README row
def _fair_frame(rows) -> pd.DataFrame:
    """A fair table from (problem, target, method, seconds, epochs, seeds reaching, seeds); target NaN where
    ``seconds`` is None."""
    return pd.DataFrame([{"problem": p, "target": t, "method": m, "target_loss": math.nan if s is None else 0.1,
                          "seconds_to_target_median": math.inf if s is None else s,
                          "epochs_to_target_median": math.inf if e is None else e,
                          "seeds_reaching": r, "seeds": n} for p, t, m, s, e, r, n in rows])


STANDING_CASE = [
    # target (a): SOAP first per second on P1, P2; Muon first per epoch everywhere
    ("P1", "a", "soap", 10, 3, 3, 3), ("P1", "a", "muon", 20, 2, 3, 3), ("P1", "a", "kfac", 30, 4, 2, 3),
    ("P2", "a", "soap", 10, 2, 3, 3), ("P2", "a", "muon", 15, 1, 3, 3), ("P2", "a", "kfac", 12, 3, 3, 3),
    ("P3", "a", "soap", 8, 2, 3, 3), ("P3", "a", "muon", 5, 1, 3, 3), ("P3", "a", "kfac", math.inf, None, 0, 3),
    # target (b): KFAC first on P1, Deflation per second and SOAP per epoch on P2; P3 not measured
    ("P1", "b", "kfac", 5, 2, 3, 3), ("P1", "b", "soap", 10, 3, 3, 3), ("P1", "b", "muon", math.inf, None, 0, 3),
    ("P2", "b", "kfac", 8, 2, 3, 3), ("P2", "b", "deflation", 6, 2, 3, 3), ("P2", "b", "soap", 9, 1, 3, 3),
    ("P3", "b", "soap", None, None, 0, 3), ("P3", "b", "kfac", None, None, 0, 3),
]


def test_who_reaches_each_target_first():
    fair = _fair_frame(STANDING_CASE)
    assert leaders(fair, "a", "seconds") == ([("soap", 2, 9, 9)], 3)
    assert leaders(fair, "b", "seconds") == ([("kfac", 1, 6, 6), ("deflation", 1, 3, 3)], 2)
    verdict, key = standing(fair)
    # (b): on P1 KFAC is ahead of SOAP in both units; on P2 Deflation per second (6 s < SOAP's 9), not per epoch
    assert verdict == "(b) paper's fastest first on 2 of 2 per second, 1 of 2 per epoch"
    assert key == ("(a) s: SOAP 2/3 (9/9 seeds), ep.: Muon 3/3 (9/9); (b) s: KFAC 1/2 (6/6) and Deflation 1/2 "
                   "(3/3), ep.: SOAP 1/2 (6/6) and KFAC 1/2 (6/6)")
    assert standing_key(fair, 100) == ("(a) s: SOAP 2/3 (9/9 seeds), ep.: Muon 3/3 (9/9); (b) s: KFAC 1/2 (6/6) +1, "
                                       "ep.: SOAP 1/2 (6/6) +1")
    assert standing_key(fair, 70) == "(a) s: SOAP 2/3, ep.: Muon 3/3; (b) s: KFAC 1/2 +1, ep.: SOAP 1/2 +1"
    assert len(standing_key(fair, 40)) == 40


def test_standing_on_run_folders(tmp_path):
    root = tmp_path / "fair"
    assert standing(fair_comparison(root))[0].startswith("not measured")
    big = dict(n_train=16000)
    make_run(root, "curves", "kfac", "tune", [1.0, 0.1, 0.1])                        # 500 x 2: left out
    make_run(root, "curves", "adam", "full", [1.0, 0.5, 0.45, 0.4], times=[0, 1, 2, 3], **big)
    make_run(root, "curves", "kfac", "full", [1.0, 0.5, 0.3, 0.2], times=[0, 3, 6, 9], **big)
    make_run(root, "curves", "deflation", "full", [1.0, 0.4, 0.2, 0.2], times=[0, 10, 20, 30], **big)
    make_run(root, "curves", "soap", "full", [1.0, 0.3, 0.25, 0.2], times=[0, 2, 4, 6], **big)
    # (a) 0.4: KFAC at epoch 2 (6 s), Deflation 1 (10 s), SOAP 1 (2 s); (b) 0.2: KFAC 3 (9 s), Deflation 2, SOAP 3 (6 s)
    verdict, key = standing(fair_comparison(root))
    assert verdict == "(b) paper's fastest first on 0 of 1 per second, 1 of 1 per epoch"
    assert key == ("(a) s: SOAP 1/1 (1/1 seeds), ep.: SOAP 1/1 (1/1) and Deflation 1/1 (1/1); (b) s: SOAP 1/1 (1/1), "
                   "ep.: Deflation 1/1 (1/1)")
    assert np.isfinite(fair_comparison(root)["target_loss"]).all()
