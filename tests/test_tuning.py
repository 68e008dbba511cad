"""The tuned comparison's trials (kfac_bench/reproduce/tuning.py): the same quasi-random points on every
call, inside each method's search space, and the extension of a winner on an edge."""
import math

import pytest

from kfac_bench.registry import method_names, search_space
from kfac_bench.reproduce.run_index import winner_seed_losses
from kfac_bench.reproduce.tuning import (covering, edge_flag, extension_point, leaders_within_noise, overrides,
                                         trial_points)
from kfac_bench.search_space import Choice, LogUniform, SearchSpace

SPACE = SearchSpace({"lr": LogUniform(1e-4, 1e-1, "test"), "damping": LogUniform(1e-4, 1e-1, "test"),
                     "T_scale": Choice([1, 10], "test")})


@pytest.mark.parametrize("method", method_names())
def test_every_method_gets_twelve_distinct_points_inside_its_space(method):
    space = search_space(method)
    points = trial_points(space, 12, seed=0)
    assert len(points) == 12 and len({repr(sorted(p.items())) for p in points}) == 12
    for point in points:
        for name, dimension in space.items():
            value = point[name]
            if isinstance(dimension, Choice):
                assert (tuple(value) if isinstance(value, list) else value) in dimension.values
            else:   # 3 significant digits may round a hair past a bound
                assert dimension.low * (1 - 5e-3) <= value <= dimension.high * (1 + 5e-3)
    assert trial_points(space, 12, seed=0) == points          # deterministic: a resumed plan finds the same runs
    assert trial_points(space, 12, seed=1) != points


def test_the_points_spread_over_the_decades():
    lrs = sorted(p["lr"] for p in trial_points(SPACE, 12, seed=0))
    decades = [math.floor(math.log10(v)) for v in lrs]
    assert set(decades) == {-4, -3, -2}          # every decade of [1e-4, 1e-1] holds a trial


def test_overrides_name_the_config_keys():
    assert overrides({"lr": 0.01, "betas": [0.9, 0.99]}) == ["optimizer.lr=0.01", "optimizer.betas=[0.9,0.99]"]


def test_a_winner_on_the_edge_is_followed_out_until_interior_or_diverged():
    tried = [{"lr": 1e-4, "damping": 1e-3, "T_scale": 1}, {"lr": 0.1, "damping": 1e-3, "T_scale": 1}]
    winner = {"lr": 0.1, "damping": 1e-3, "T_scale": 1}
    assert extension_point(SPACE, tried, winner) == {"lr": 1.0, "damping": 1e-3, "T_scale": 1}
    # once lr = 1 has been tried the searched space reaches 1: a winner at 1 goes on to 10, one at 0.1 stops
    tried.append({"lr": 1.0, "damping": 1e-3, "T_scale": 1})
    assert covering(SPACE, tried)["lr"].high == 1.0
    assert extension_point(SPACE, tried, {**winner, "lr": 1.0})["lr"] == 10.0
    assert extension_point(SPACE, tried, winner) is None
    assert extension_point(SPACE, tried, {"lr": 0.01, "damping": 1e-4, "T_scale": 10})["damping"] == 1e-5
    ext = [({**winner, "lr": 1.0}, "ok")]
    assert edge_flag(SPACE, winner, winner, ext) == "edge: lr high -> interior after 1 extension"
    assert edge_flag(SPACE, winner, winner, [({**winner, "lr": 1.0}, "diverged")]) == \
        "edge: lr high -> the extension diverged (1 extension)"
    assert edge_flag(SPACE, winner, {**winner, "lr": 1.0}, ext) == "edge: lr high -> still on the edge after 1 extension"
    assert edge_flag(SPACE, winner, winner, []) == "edge: lr high (not extended)"
    assert edge_flag(SPACE, {"lr": 0.01, "damping": 0.01, "T_scale": 1}, winner, []) == "interior"


def test_two_leaders_within_seed_noise_get_more_seeds():
    """The two lowest medians get more seeds when their seeds' ranges overlap, not when they are apart;
    a diverged seed (inf) widens the range; fewer than two finished methods: nobody."""
    assert leaders_within_noise({"a": [1.0, 1.2, 1.1], "b": [1.15, 1.3, 1.25], "c": [0.5, 9.0, 9.0]}) == ["a", "b"]
    assert leaders_within_noise({"a": [1.0, 1.05, 1.1], "b": [1.2, 1.3, 1.25]}) == []
    assert leaders_within_noise({"a": [1.0, 1.05, math.inf], "b": [1.2, 1.3, 1.25]}) == ["a", "b"]
    assert leaders_within_noise({"a": [1.0], "b": [math.inf]}) == []
    assert leaders_within_noise({"a": [1.0], "b": []}) == []


def test_a_tuning_profile_runs_its_trials_extensions_and_seeds_and_resumes(tmp_path):
    """A profile's `tuning` (instead of a grid): the same number of trials for every method from its search
    space, the extension of an edge winner after them, the winner's seeds after that; a rerun runs nothing."""
    import os
    from pathlib import Path

    import warm_process
    smoke = (Path(__file__).resolve().parent.parent / "conf" / "profile" / "smoke.yaml").read_text()
    grid = smoke[smoke.index("grid:"):smoke.index("extra_seeds:")]
    mine = tmp_path / "tuning.yaml"
    mine.write_text(smoke.replace("name: smoke", "name: tuning").replace(
        grid, "grid: none\ntuning: {trials: 3, max_extensions: 1}\ntie_seeds: [3]\n"))
    env = {**os.environ, "KFAC_BENCH_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    env.pop("KFAC_BENCH_RESULTS", None)
    results = tmp_path / "r"
    args = ("--profile", str(mine), "--results-dir", str(results), "--stages", "data,grid,seeds")
    proc = warm_process.run("reproduce_paper.py", *args, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = {m: list(winner_seed_losses(results, "curves", m, []).values()) for m in ("sgd", "kfac")}
    tied = leaders_within_noise({m: v[:2] for m, v in losses.items()})     # seeds 0, 1: the confirmation's
    for method in ("sgd", "kfac"):
        names = [p.name for p in (results / "runs" / "curves" / method).iterdir()]
        assert sum("seed=3" in n for n in names) == (method in tied)     # the leaders within noise: seed 3
        names = [n for n in names if "seed=3" not in n]
        seeded = [n for n in names if "seed=1" in n]
        assert len(seeded) == 1 and 3 <= len(names) - 1 <= 4      # 3 trials (+ 1 extension where on an edge) + seed 1
        points = trial_points(search_space(method), 3, seed=0)
        assert all(any(o.replace("optimizer.", "") in n for n in names) for o in overrides(points[0]))
    again = warm_process.run("reproduce_paper.py", *args[:-2], "--stages", "grid,seeds", env=env, timeout=600,
                             cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ kfac-bench run" not in again.stdout
