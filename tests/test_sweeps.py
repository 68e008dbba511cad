"""Section 4.2's grid as Hydra sweeps, run through each launcher (sequential, joblib, submitit_local):
a failing or diverging job never stops the others, launcher options never change the run folders,
a rerun skips finished runs; and scripts/reproduce_paper.py plans, estimates, runs and resumes."""
import itertools
import json
import os
import sys
from pathlib import Path

import pytest

import warm_process

ROOT = Path(__file__).resolve().parent.parent
TINY = ["dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100"]
PAPER_VALUES = {0.1, 0.3, 0.01, 0.03, 0.001, 0.003, 0.0001, 0.0003}


def kfac_bench(*args, tmp_path: Path, check=True, timeout=300, fresh=False):
    env = {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "KFAC_BENCH_RESULTS": str(tmp_path / "results"),
           "OMP_NUM_THREADS": "1"}
    proc = warm_process.run("kfac-bench", *args, env=env, timeout=timeout, cwd=tmp_path, fresh=fresh)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def compose(overrides):
    from hydra import compose as hydra_compose, initialize_config_dir
    import kfac_bench.cli  # noqa: F401  (registers the run-name resolver)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def values(spec) -> list[float]:
    return [float(v) for v in str(spec).split(",")]


@pytest.mark.parametrize("method", ["kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected"])
def test_paper_grid_is_section_4_2(method):
    cfg = compose(["+sweep=paper_grid", f"optimizer={method}"])
    params = cfg.hydra.sweeper.params
    assert set(values(params["optimizer.lr"])) == PAPER_VALUES
    assert set(values(params["optimizer.damping"])) == PAPER_VALUES
    assert set(values(params["optimizer.kl_clip"])) == {1e-2, 1e-3}
    assert len(list(itertools.product(*(values(v) for v in params.values())))) == 128
    assert (cfg.optimizer.T1, cfg.optimizer.T2, cfg.optimizer.alpha) == (100, 100, 0.95)


def test_merged_curvature_sweep_composes():
    """A multirun's first composition ignores its sweeps (optimizer=kfac,kpsvd): fixed curvature
    overrides must then still apply, so paper_grid makes a curvature method the default."""
    cfg = compose(["+sweep=paper_grid", "optimizer.damping=0.003", "optimizer.T1=10"])
    assert cfg.optimizer.name == "kfac" and cfg.optimizer.damping == 0.003
    assert compose(["+sweep=paper_grid", "optimizer=lanczos"]).optimizer.name == "lanczos"   # the command line wins


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_first_order_grid_is_lr_only(method):
    cfg = compose(["+sweep=paper_grid_first_order", f"optimizer={method}"])
    params = cfg.hydra.sweeper.params
    assert list(params) == ["optimizer.lr"] and set(values(params["optimizer.lr"])) == PAPER_VALUES
    assert "damping" not in cfg.optimizer


def _statuses(tmp_path):
    runs = tmp_path / "results" / "runs" / "curves" / "sgd"
    return {p.name: json.loads((p / "summary.json").read_text()) for p in runs.iterdir() if p.is_dir()}


def _folder(lr, epochs):
    return ",".join(sorted([*TINY, f"optimizer.lr={lr}", f"trainer.epochs={epochs}"]))


@pytest.mark.slow
def test_sequential_sweep_survives_failures_and_a_rerun_skips_finished_runs(tmp_path):
    # the failing job (negative lr) and the diverging one (lr 1e6) come first: the last one must still run
    args = ["run", "-m", "+sweep=paper_grid_first_order", "optimizer=sgd", "optimizer.lr=-1,1e6,0.1",
            "trainer.epochs=3", *TINY]
    proc = kfac_bench(*args, tmp_path=tmp_path, check=False)
    runs = _statuses(tmp_path)
    assert {name: s["status"] for name, s in runs.items()} == {
        _folder(-1, 3): "failed", _folder(1000000.0, 3): "diverged", _folder(0.1, 3): "ok"}
    assert "Traceback" not in proc.stderr
    # the failed job makes the sweep exit 1 once all have run; the diverged one is a result
    assert proc.returncode == 1, proc.stderr
    named = proc.stderr[proc.stderr.index("1 of 3 jobs of the sweep failed"):]
    assert "job 0 failed:" in named and "optimizer.lr=-1" in named and "1000000" not in named
    finished = {n: s["finished"] for n, s in runs.items()}
    again = kfac_bench(*args, tmp_path=tmp_path, check=False)
    assert again.returncode == 1
    log = again.stdout + again.stderr
    assert log.count("already holds a finished run") == 2    # ok and diverged are skipped ...
    rerun = _statuses(tmp_path)
    assert rerun[_folder(0.1, 3)]["finished"] == finished[_folder(0.1, 3)]
    assert rerun[_folder(1000000.0, 3)]["finished"] == finished[_folder(1000000.0, 3)]
    assert rerun[_folder(-1, 3)]["status"] == "failed"         # ... a failed one is tried again


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_survive_failures(tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    bad = "-1" if launcher == "joblib" else "1e6"     # a failing job with one, a diverging one with the other
    proc = kfac_bench("run", "-m", "+sweep=paper_grid_first_order", "optimizer=sgd", f"optimizer.lr={bad},0.1",
                      "trainer.epochs=3", *TINY, f"hydra/launcher={launcher}", *extra, tmp_path=tmp_path,
                      check=False, fresh=True)
    # the jobs run in other processes: their outcomes still reach the sweep's exit status
    assert proc.returncode == (1 if bad == "-1" else 0), proc.stderr
    runs = _statuses(tmp_path)
    expected = {"-1": "failed", "1e6": "diverged"}[bad]
    assert {name: s["status"] for name, s in runs.items()} == {
        _folder(-1 if bad == "-1" else 1000000.0, 3): expected, _folder(0.1, 3): "ok"}   # same names: the
    assert "Traceback" not in proc.stderr                                                # launcher is not in them


# ------------------------------------------------------------------------------ reproduce_paper.py
def reproduce(*args, tmp_path, env_extra=None, drop_olivetti=False, timeout=600):
    env = {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("KFAC_BENCH_RESULTS", None)
    if drop_olivetti:
        env.pop("KFAC_BENCH_OLIVETTI", None)
    return warm_process.run("reproduce_paper.py", *args, env=env, timeout=timeout, cwd=tmp_path)


def test_reproduce_dry_run_plans_the_paper_protocol(tmp_path):
    olivetti = tmp_path / "olivettifaces.mat"
    olivetti.write_bytes(b"x")
    proc = reproduce("--profile", "paper", "--dry-run", "--olivetti", str(olivetti), "--results-dir",
                     str(tmp_path / "r"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "grid: 1968 runs" in out and "ESTIMATED running time" in out
    assert "+sweep=paper_grid optimizer=kfac,kpsvd,deflation,lanczos,kfac_corrected dataset=curves,mnist,faces" in out
    assert "+sweep=paper_grid_first_order optimizer=sgd,adam dataset=curves,mnist,faces" in out
    assert "trainer.epochs=200" in out
    assert not (tmp_path / "r").exists()
    proc = reproduce("--profile", "fair", "--dry-run", "--olivetti", str(olivetti), "--results-dir",
                     str(tmp_path / "r"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ESTIMATED running time" in proc.stdout and "FAIR" in proc.stdout
    # the same number of trials for every method on every problem, each one run of a point of its space
    runs = [line for line in proc.stdout.splitlines() if "$ kfac-bench run dataset=" in line]
    profile = _reproduce_module().load_profile("fair")
    for method in profile["methods"]:
        for dataset in profile["datasets"]:
            mine = [r for r in runs if f"dataset={dataset} optimizer={method} " in r]
            assert len(mine) == 12 and all("optimizer.lr=" in r for r in mine), (method, dataset)
    assert "tuning: 432 trials (12 per method and problem)" in proc.stdout      # 12 methods x 3 problems x 12
    assert "ties: seeds [3, 4] of the two leaders" in proc.stdout and "without extensions" in proc.stdout


def test_authors_and_ablation_profiles_plan_one_run_per_setting(tmp_path):
    proc = reproduce("--profile", "authors", "--dry-run", "--results-dir", str(tmp_path / "r"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if "$ kfac-bench run " in line]
    assert len(runs) == 7
    # the curvature methods with every behaviour; SGD and Adam without first_order_weight_decay (with
    # it they do not train, and the authors' published baselines do)
    assert sum("authors_code=all trainer.epochs=10" in line for line in runs) == 5
    assert "optimizer=sgd 'authors_code=[nesterov_sgd,reseeded_init]' trainer.epochs=10" in proc.stdout
    assert "optimizer=adam 'authors_code=[reseeded_init]' trainer.epochs=10" in proc.stdout
    assert "fisher dataset=mnist" in proc.stdout
    proc = reproduce("--profile", "ablation", "--dry-run", "--results-dir", str(tmp_path / "r"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if "$ kfac-bench run " in line]
    assert len(runs) == 3 + 3 + 4 + 4 + 5 + 4 + 5       # sgd, adam, kfac, kpsvd, deflation, lanczos, kfac_corrected
    assert sum("'authors_code=[]'" in line for line in runs) == 7     # (quoted for a shell)
    assert not (tmp_path / "r").exists()


def test_ablation_steps_turn_the_preset_off_cumulatively_down_to_the_specification():
    rp = _reproduce_module()
    from kfac_bench.optim.authors_code import applicable
    profile = rp.load_profile("ablation")
    chain = rp.settings_runs(profile, "deflation")
    acting = applicable("deflation")
    assert chain[0] == ("authors' code (all)", "all")
    assert [label for label, _ in chain[1:]] == ["- frozen_curvature", "- authors_damping", "- leading_second_term",
                                                "specification"]
    assert chain[1][1] == "[" + ",".join(n for n in acting if n != "frozen_curvature") + "]"
    assert chain[3][1] == "[" + ",".join(n for n in acting if n not in (
        "frozen_curvature", "authors_damping", "leading_second_term")) + "]"
    assert chain[-1][1] == "[]"
    # a step that turns nothing off for a method is skipped: KFAC has no second term
    assert [label for label, _ in rp.settings_runs(profile, "kfac")] == [
        "authors' code (all)", "- frozen_curvature", "- authors_damping", "specification"]
    assert [label for label, _ in rp.settings_runs(profile, "sgd")] == [
        "authors' code (all)", "- first_order_weight_decay", "specification"]
    # combinations: turned off from the preset together, once
    combo = {**profile, "settings": {**profile["settings"], "combinations": [["frozen_curvature"],
                                                                             ["authors_damping"]]}}
    extra = rp.settings_runs(combo, "kfac")[4:]
    assert extra == [("authors' code - authors_damping",
                      "[" + ",".join(n for n in applicable("kfac") if n != "authors_damping") + "]")]


def test_settings_runs_are_found_finished_by_their_authors_code(tmp_path):
    """A run folder's config.yaml records authors_code as given (``all`` or a list): the plan must
    recognise a finished ablation step and not rerun it."""
    import json
    rp = _reproduce_module()
    folder = tmp_path / "runs" / "mnist" / "kfac" / "x"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\nauthors_code: [authors_damping, reseeded_init]\n"
                                        "trainer: {epochs: 10}\n")
    (folder / "summary.json").write_text(json.dumps({"status": "ok"}))
    index = rp.RunIndex(tmp_path)
    assert index.finished("mnist", "kfac", {"authors_code": "[authors_damping,reseeded_init]", "trainer.epochs": "10"})
    assert not index.finished("mnist", "kfac", {"authors_code": "[reseeded_init]", "trainer.epochs": "10"})
    assert not index.finished("mnist", "kfac", {"authors_code": "all", "trainer.epochs": "10"})
    assert not index.finished("mnist", "kfac", {"authors_code": "[authors_damping,reseeded_init]",
                                               "trainer.epochs": "5"})



def test_a_tuning_run_is_not_taken_for_the_full_size_confirmation_of_its_winner(tmp_path):
    """The fair profile tunes MNIST on 5k examples for 5 epochs and confirms the winner on the full set for
    5 epochs, seeds 0-2: the tuning run names dataset.n_train in its folder, the confirmation does not.
    Matching the confirmation's named values alone took the tuning run for confirmation seed 0."""
    import json
    rp = _reproduce_module()
    tuning = "dataset.n_train=5000,optimizer.lr=0.1,trainer.epochs=5"
    for name, n_train in ((tuning, 5000), ("optimizer.lr=0.1,seed=1,trainer.epochs=5", 50000)):
        folder = tmp_path / "runs" / "mnist" / "ekfac" / name
        folder.mkdir(parents=True)
        seed = 1 if "seed=1" in name else 0
        (folder / "config.yaml").write_text(f"seed: {seed}\ndataset: {{n_train: {n_train}}}\n"
                                            "optimizer: {lr: 0.1}\ntrainer: {epochs: 5}\n")
        (folder / "summary.json").write_text(json.dumps({"status": "ok"}))
    index = rp.RunIndex(tmp_path)
    confirmation = {"optimizer.lr": "0.1", "trainer.epochs": "5"}
    assert not index.finished("mnist", "ekfac", {**confirmation, "seed": "0"})
    assert index.finished("mnist", "ekfac", {**confirmation, "seed": "1"})
    assert index.finished("mnist", "ekfac", {**confirmation, "dataset.n_train": "5000"})
    assert rp.folder_override_keys("authors_code=[a,b],optimizer.lr=0.1") == {"authors_code", "optimizer.lr"}
    assert rp.folder_override_keys("default") == set()

def _reproduce_module():
    """The reproduction logic (scripts/reproduce_paper.py is a thin entry point over it)."""
    from kfac_bench import reproduce
    return reproduce


def test_published_commands_name_no_path_of_this_machine(tmp_path):
    """--publish-docs shows its command in docs/results.md and the README: paths inside the checkout relative
    to it, other absolute paths as <local path> (PROVENANCE.md keeps the command as typed)."""
    rp = _reproduce_module()
    shown = rp.public_command(["--profile", "fair", "--publish-docs", str(tmp_path / "figs"), "--results-dir=/x/y",
                               "--olivetti", "/x/o.mat", "--datasets", "mnist"], root=tmp_path)
    assert shown == ("python scripts/reproduce_paper.py --profile fair --publish-docs figs "
                     "'--results-dir=<local path>' --olivetti '<local path>' --datasets mnist")


def test_reduced_grid_gives_every_curvature_method_kfacs_candidates_too():
    """A grid around each method's authors' settings (`lr_steps`): each method's lr neighbourhood at its
    authors' damping, plus the points of KFAC's reduced grid (its lr neighbourhood at its damping)
    that the method's own grid lacks."""
    rp = _reproduce_module()
    profile = {"name": "around", "grid": {"lr_steps": [-1, 0, 1], "damping_steps": [0], "kl_clip": [0.01],
                                          "also_from": ["kfac"], "faces": {"lr_steps": [-1, 0]}}}
    assert len(rp.grid_for(profile, "faces", "kfac")["optimizer.lr"]) == 2     # a per-dataset change
    assert rp.shared_points(profile, "curves", "kfac") == []           # its own grid
    assert rp.shared_points(profile, "curves", "kpsvd") == []          # same tuned values as KFAC
    assert rp.shared_points(profile, "curves", "sgd") == []
    kfac = rp.grid_for(profile, "curves", "kfac")
    deflation = rp.grid_for(profile, "curves", "deflation")
    assert deflation["optimizer.damping"] == [rp.fmt_value(rp.tuned("deflation", "curves")["damping"])]
    assert kfac["optimizer.damping"] != deflation["optimizer.damping"]
    points = rp.shared_points(profile, "curves", "deflation")
    assert [(p["optimizer.lr"], p["optimizer.damping"]) for p in points] == [
        ([lr], kfac["optimizer.damping"]) for lr in kfac["optimizer.lr"]]
    assert all(p["optimizer.kl_clip"] == deflation["optimizer.kl_clip"] for p in points)
    # a point is run once: KPSVD's candidates are KFAC's, so naming both adds nothing more
    both = {**profile, "grid": {**profile["grid"], "also_from": ["kfac", "kpsvd"]}}
    assert rp.shared_points(both, "curves", "deflation") == points
    bad = {**profile, "grid": {**profile["grid"], "also_from": ["adam"]}}
    with pytest.raises(ValueError, match="also_from"):
        rp.shared_points(bad, "curves", "deflation")


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "conf" / "profile").glob("*.yaml")))
def test_every_profile_dry_run_needs_no_variable(tmp_path, profile):
    """A fresh machine: no KFAC_BENCH_* variable, no --olivetti (FACES uses the shipped faces)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFAC_BENCH_")}
    proc = warm_process.run("reproduce_paper.py", "--profile", profile, "--dry-run", env=env, timeout=300,
                            cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ESTIMATED running time" in proc.stdout and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()   # a dry run writes nothing


def test_a_missing_olivetti_copy_is_refused_with_exit_2(tmp_path):
    missing = reproduce("--profile", "fair", "--dry-run", "--olivetti", str(tmp_path / "none.mat"), tmp_path=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_settings_seeds_plan_the_first_seed_first():
    rp = _reproduce_module()
    profile = {"name": "t", "seeds": {"faces": {0: 10, 1: 5}}}
    assert rp.settings_seeds(profile, "faces") == [(0, 10), (1, 5)]
    assert rp.settings_seeds(profile, "curves") == [(None, None)]
    assert rp.seeded_overrides(["trainer.epochs=3", "dataset.n_train=10"], 1, 5) == [
        "dataset.n_train=10", "trainer.epochs=5", "seed=1"]
    assert rp.seeded_overrides(["trainer.epochs=3"], None, None) == ["trainer.epochs=3"]
    with pytest.raises(SystemExit, match="must map seeds to epochs"):
        rp.settings_seeds({"name": "t", "seeds": {"faces": [0, 1]}}, "faces")
    short_first = rp.Task("a", "settings", 5.0, list, rank=0)
    long_later = rp.Task("b", "settings", 50.0, list, rank=1)
    assert sorted([long_later, short_first], key=rp.Task.order) == [short_first, long_later]


@pytest.mark.slow
def test_reproduce_smoke_profile_runs_end_to_end_and_resumes(tmp_path):
    results = tmp_path / "r"
    readme = tmp_path / "README.md"      # the claims table goes to the README, the profile's tables to the results page
    readme.write_text("intro\n<!-- claims:start -->\nold claims\n<!-- claims:end -->\nend\n")
    page = tmp_path / "results.md"
    page.write_text("intro\n<!-- reproduce:table:start -->\nold\n<!-- reproduce:table:end -->\nend\n")
    # the report stage is left out: --publish-docs runs the same report (small PNGs) into docs/
    proc = reproduce("--profile", "smoke", "--results-dir", str(results), "--stages", "data,grid,seeds,fisher",
                     "--publish-docs", str(tmp_path / "docs"), "--readme", str(readme), "--results-page", str(page),
                     "--drop-checkpoints", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results / "runs" / "curves"
    for method in ("sgd", "kfac"):
        grid = {p.name for p in (runs / method).iterdir()}
        assert len(grid) == 3 and sum("seed=1" in n for n in grid) == 1    # 2 configurations + a seed of the winner
    assert not list(runs.rglob("checkpoint.pt"))                          # --drop-checkpoints
    docs = tmp_path / "docs"            # --publish-docs: small PNGs, the table, the provenance, the README block
    assert {p.name for p in docs.iterdir()} >= {"figure2.png", "summary.md", "summary.csv", "PROVENANCE.md"}
    assert "SMOKE" in (docs / "summary.md").read_text()
    assert "--profile smoke" in (docs / "PROVENANCE.md").read_text()
    assert "git commit (at the start): " in (docs / "PROVENANCE.md").read_text()
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "\nold\n" not in text
    assert "![figure2](docs/figure2.png)" in text and "| KFAC |" in text
    generated = next(line for line in text.splitlines() if line.startswith("_Generated by `"))
    assert "--results-dir '<local path>'" in generated and str(tmp_path) not in generated   # no path of this machine
    claims = readme.read_text()
    assert claims.startswith("intro\n") and claims.endswith("end\n") and "old claims" not in claims
    computed = next(line for line in claims.splitlines() if line.startswith("_Computed by `kfac-bench report`"))
    assert "| KFAC |" not in claims and str(tmp_path) not in computed
    again = reproduce("--profile", "smoke", "--results-dir", str(results), "--stages", "grid,seeds",
                      tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "$ kfac-bench run" not in again.stdout          # nothing left to run: no command started
    assert again.stdout.count("finished already, skipped") == 4     # grid: 2 commands; seeds: 2


def test_task_scheduler_orders_runs_side_by_side_and_records_failures(tmp_path):
    """The reproduction script's scheduler (kfac_bench.reproduce): dependencies first, two commands at a time, a failing
    command recorded without stopping the others, a task with nothing to do skipped."""
    import types
    rp = _reproduce_module()
    stamp = tmp_path / "order.txt"
    runner = types.SimpleNamespace(base=[sys.executable, "-c"], env=dict(os.environ), results_dir=tmp_path, failures=[])

    def write(name, fail=False):
        return lambda: [f"open({str(stamp)!r}, 'a').write('{name}\\n'); raise SystemExit({int(fail)})"]
    tasks = [rp.Task("a", "grid", 2, write("a")), rp.Task("b", "grid", 3, write("b", fail=True)),
             rp.Task("seeds a", "seeds", 1, write("seeds a"), after=["a"]),
             rp.Task("empty", "seeds", 5, lambda: None), rp.Task("c", "fisher", 1, write("c"), after=["missing"])]
    done = []
    rp.run_tasks(tasks, runner, 2, lambda t: done.append(t.what))
    order = stamp.read_text().splitlines()
    assert sorted(order) == ["a", "b", "c", "seeds a"]
    assert order.index("a") < order.index("seeds a")
    assert len(runner.failures) == 1 and runner.failures[0].startswith("b: exit 1")
    assert (tmp_path / "logs" / "b.log").exists()             # side by side: output to log files


def test_confirm_reruns_the_winners_at_their_own_settings(tmp_path):
    """Tune short, confirm long: a profile's `confirm` gives the grid's winners other settings (full data,
    more epochs, the curvature schedule of that size) and seeds, with their own cost table."""
    rp = _reproduce_module()
    profile = {"name": "t", "overrides": {"curves": ["trainer.epochs=5", "dataset.n_train=8000"]},
               "curvature_overrides": {"curves": ["optimizer.T1=50"]},
               "confirm": {"overrides": {"curves": ["trainer.epochs=30"]},
                           "curvature_overrides": {"curves": ["optimizer.T1=100"]}, "seeds": [0, 1, 2]}}
    assert rp.confirm_overrides(profile, "curves", "kfac") == ["trainer.epochs=30", "optimizer.T1=100"]
    assert rp.confirm_overrides(profile, "curves", "sgd") == ["trainer.epochs=30"]
    assert rp.confirm_overrides(profile, "mnist", "kfac") is None
    smoke = (ROOT / "conf" / "profile" / "smoke.yaml").read_text()
    mine = tmp_path / "confirming.yaml"
    mine.write_text(smoke.replace("name: smoke", "name: confirming") + "\nconfirm:\n  overrides:\n"
                    "    curves: [trainer.epochs=3, dataset.generator.n_images=600, dataset.n_train=500, "
                    "dataset.n_val=100]\n  seeds: [0, 1, 2]\n")
    proc = reproduce("--profile", str(mine), "--dry-run", "--results-dir", str(tmp_path / "r"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "confirm curves kfac: seeds [0, 1, 2] of the grid's winner, known after the grid" in proc.stdout


def test_fair_profile_tunes_every_method_alike_at_the_comparison_s_budget():
    """Issue 33: the same number of trials of each method's search space on every problem, at full size
    (CURVES >= 10 epochs, MNIST >= 3), Scalable Shampoo instead of the AdaGrad-style Shampoo, the CNN
    auto-encoder reduced, the winners' seeds and the leaders' tie seeds; no grid, no short tuning."""
    rp = _reproduce_module()
    profile = rp.load_profile("fair")
    assert {"ekfac", "soap", "scalable_shampoo", "muon", "kron"} <= set(profile["methods"])
    assert "shampoo" not in profile["methods"] and len(profile["methods"]) == 12
    assert profile["grid"] == "none" and profile["tuning"]["trials"] >= 12 and "confirm" not in profile
    assert profile["datasets"] == ["curves", "mnist", "mnist_conv"]
    epochs = {d: int(next(o for o in rp.dataset_overrides(profile, d, "kfac") if o.startswith("trainer.epochs="))
                     .split("=")[1]) for d in profile["datasets"]}
    assert epochs["curves"] >= 10 and epochs["mnist"] >= 3
    assert not any(o.startswith("dataset.n_train") for d in ("curves", "mnist")
                   for o in rp.dataset_overrides(profile, d, "kfac"))               # full size
    assert profile["extra_seeds"] == [1, 2] and profile["tie_seeds"] == [3, 4]


# ------------------------------------------------------------------------------ variants (conclusion profile)
def test_variants_put_their_overrides_on_the_winner_where_they_apply():
    """A profile's `variants` run each grid winner again under other settings: the authors' code on every
    problem (their CNN KL clip on the curvature methods of the CNNs), spatial=exact on the CNNs' rank-2
    methods only; a variant's value of a key replaces the winner's and the grid's."""
    rp = _reproduce_module()
    from kfac_bench.reproduce.plan import _merged, variant_overrides
    profile = rp.load_profile("conclusion")
    assert variant_overrides(profile, "authors", "mnist_conv", "kfac") == ["authors_code=all", "optimizer.kl_clip=0.001"]
    # the authors' code as the verdict defines it: SGD and Adam without the weight decay that keeps them on the
    # plateau of the paper's auto-encoders (kfac_bench/optim/authors_code.py authors_setting)
    assert variant_overrides(profile, "authors", "mnist_conv", "sgd") == ["authors_code=[nesterov_sgd,reseeded_init]"]
    assert variant_overrides(profile, "authors", "mnist_mlp", "kfac") == ["authors_code=all"]
    assert variant_overrides(profile, "exact", "cifar10_convnet", "deflation") == ["+optimizer.spatial=exact"]
    assert variant_overrides(profile, "exact", "cifar10_convnet", "kfac") is None       # KFC's factors either way
    assert variant_overrides(profile, "exact", "mnist_mlp", "deflation") is None        # no convolution
    winner = ["optimizer.lr=0.1", "optimizer.kl_clip=0.01"]
    grid = rp.dataset_overrides(profile, "mnist_conv", "kpsvd")
    assert "authors_code=[]" in grid and "+optimizer.spatial=independent" in grid
    merged = _merged(winner, grid, ["authors_code=all", "+optimizer.spatial=exact", "optimizer.kl_clip=0.001"])
    assert merged.count("optimizer.kl_clip=0.001") == 1 and "optimizer.kl_clip=0.01" not in merged
    assert "authors_code=all" in merged and "authors_code=[]" not in merged
    assert "+optimizer.spatial=exact" in merged and "+optimizer.spatial=independent" not in merged
    assert "optimizer.lr=0.1" in merged and "dataset.batch_size=64" in merged
    bad = {**profile, "variants": {"x": {"overides": []}}}
    with pytest.raises(SystemExit, match="unknown keys"):
        variant_overrides(bad, "x", "mnist_conv", "kfac")


def test_conclusion_profile_plans_the_grid_seeds_variants_and_studies(tmp_path):
    proc = reproduce("--profile", "conclusion", "--dry-run", "--stages", "data,grid,seeds,fisher", "--results-dir",
                     str(tmp_path / "r"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    fetched = [line.split("data fetch ")[1].split()[0] for line in out.splitlines() if "$ kfac-bench data fetch" in line]
    assert fetched == ["mnist", "fashion_mnist", "cifar10"]   # the problems' data, each once
    assert "grid: 120 runs in 40 commands" in out            # 5 problems x 8 methods x 3 learning rates
    assert "variant authors: each winner again with seeds [0, 1, 2]" in out and "up to 120 runs" in out
    assert "variant exact: each winner again with seeds [0, 1, 2]" in out and "up to 24 runs" in out
    assert "optimizer=deflation dataset=mnist_conv optimizer.lr=0.001,0.01,0.1 optimizer.damping=0.001" in out
    assert "fisher (Figure 1): mnist_conv, mnist" in out      # mnist: a study only, not a training problem
    commands = [line for line in out.splitlines() if "$ kfac-bench" in line and "data fetch" not in line]
    problems = ["mnist_toynet", "fashion_mnist_deeplinear", "mnist_mlp", "mnist_conv", "cifar10_convnet"]
    # one problem at a time (a plan spanning sessions leaves whole problems behind it); the studies first
    first = [next(i for i, c in enumerate(commands) if f"dataset={p} " in c and " run " in c) for p in problems]
    assert first == sorted(first)
    assert " fisher " in commands[0]


def test_a_variant_runs_the_winner_again_and_a_rerun_skips_it(tmp_path):
    smoke = (ROOT / "conf" / "profile" / "smoke.yaml").read_text()
    mine = tmp_path / "varying.yaml"
    mine.write_text(smoke.replace("name: smoke", "name: varying").replace("methods: [sgd, kfac]", "methods: [sgd]")
                    .replace("extra_seeds: [1]", "extra_seeds: []").replace("  all: [trainer.epochs=2,", "  all: ['authors_code=[]', trainer.epochs=2,")
                    + "variants:\n  authors:\n    authors_code: authors\n    seeds: [0, 1]\n")
    results = tmp_path / "r"
    proc = reproduce("--profile", str(mine), "--results-dir", str(results), "--stages", "data,grid,seeds",
                     tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in (results / "runs" / "curves" / "sgd").iterdir())
    grid = [n for n in names if "authors_code=[]" in n]
    varied = [n for n in names if "authors_code=[nesterov_sgd,reseeded_init]" in n]
    assert len(grid) == 2 and len(varied) == 2 and sum("seed=1" in n for n in varied) == 1
    winner_lr = {n.split("optimizer.lr=")[1].split(",")[0] for n in varied}
    assert len(winner_lr) == 1
    assert sum(f"optimizer.lr={next(iter(winner_lr))}," in n for n in grid) == 1   # a learning rate of the grid
    again = reproduce("--profile", str(mine), "--results-dir", str(results), "--stages", "grid,seeds",
                      tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "$ kfac-bench run" not in again.stdout and "authors curves sgd: finished already, skipped" in again.stdout
