"""Search spaces (issue 33, item 1): every method of the registry declares the ranges its hyperparameters
are tuned over, each a config key its run takes; on_edge finds a tuned value at a bound and extended
moves that bound out."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from torch import nn

from kfac_bench import registry
from kfac_bench.configs import config_dir
from kfac_bench.search_space import Choice, LogUniform, SearchSpace, Uniform, edges, extended, on_edge

ROOT = Path(__file__).resolve().parents[1]


def _sample(dimension) -> object:
    """A value inside ``dimension`` that is not its first (so a default is not mistaken for a pass-through)."""
    if isinstance(dimension, Choice):
        return dimension.values[-1]
    if dimension.scale == "log":
        return math.sqrt(dimension.low * dimension.high)
    return (dimension.low + dimension.high) / 2


def _override(key: str, value) -> str:
    shown = "[" + ",".join(map(repr, value)) + "]" if isinstance(value, tuple) else repr(value)
    return f"optimizer.{key}={shown}"


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    import kfac_bench.cli  # noqa: F401  (registers the config parts and the run-name resolver)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def _held(optimizer, key: str):
    """Where a built optimizer keeps option ``key``: its parameter group, or an attribute (pytorch-optimizer
    keeps its intervals there)."""
    group = optimizer.param_groups[0]
    return group[key] if key in group else getattr(optimizer, key)


def test_every_method_declares_a_search_space():
    for name in registry.method_names():
        space = registry.search_space(name)
        assert isinstance(space, SearchSpace) and "lr" in space, name
        assert all(dimension.source for dimension in space.values()), name
    hash(registry.get_method("ekfac"))       # an entry stays hashable with its space


@pytest.mark.parametrize("method", registry.method_names())
def test_the_learning_rate_spans_at_least_three_decades(method):
    lr = registry.search_space(method)["lr"]
    assert isinstance(lr, LogUniform) and lr.decades >= 3 - 1e-9, (method, lr)


@pytest.mark.parametrize("method", registry.method_names())
def test_every_dimension_is_a_config_key_the_method_passes_to_its_optimizer(method):
    """Every dimension is a key the method's config lists; a value of each, given on the command line as
    optimizer.<key>=<value>, composes, validates, builds the method's optimizer and (pytorch-optimizer's
    classes swallow unknown keywords) reaches it."""
    from omegaconf import OmegaConf

    from kfac_bench.optim.factory import build_optimizer
    entry, space = registry.get_method(method), registry.search_space(method)
    assert [key for key in space if not entry.takes(key)] == []
    assert [key for key in space if key not in entry.listed_options() + ("lr",)] == []
    values = {key: _sample(dimension) for key, dimension in space.items()}
    cfg = _compose([f"optimizer={method}", *(_override(k, v) for k, v in values.items())])
    options = OmegaConf.to_container(cfg.optimizer, resolve=True)
    assert {k: tuple(options[k]) if isinstance(options[k], list) else options[k] for k in values} == values
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 4))
    optimizer = build_optimizer(options, model, "bernoulli")
    if not entry.is_curvature:     # (a curvature optimizer refuses a keyword it does not take)
        held = {k: _held(optimizer, k) for k in values}
        assert {k: tuple(v) if isinstance(v, list) else v for k, v in held.items()} == values


def test_ekfac_damps_below_the_factored_damping_of_the_paper_s_methods():
    """EKFAC adds lam to each eigenvalue of its scaling, the paper's methods about sqrt(lam) to each factor:
    EKFAC's range reaches lower and is wider; its scaling interval is a dimension of its own."""
    ekfac, kfac = registry.search_space("ekfac"), registry.search_space("kfac")
    assert ekfac["damping"].low < kfac["damping"].low and ekfac["damping"].decades > kfac["damping"].decades
    assert isinstance(ekfac["T_scale"], Choice) and ekfac["T_scale"].values == (1, 10, 100)
    for name in registry.paper_method_names(curvature_only=True):
        assert registry.search_space(name)["damping"] == kfac["damping"], name


SPACE = SearchSpace({"lr": LogUniform(1e-4, 0.3, "test"), "p": LogUniform(0.03, 1.0, "test", ceiling=1.0),
                     "beta": Uniform(0.5, 0.9, "test", floor=0.0, ceiling=0.99), "T": Choice((1, 10, 100), "test")})


@pytest.mark.parametrize("params, expected", [
    ({"lr": 0.3}, {"lr": "high"}),
    ({"lr": 0.25}, {"lr": "high"}),             # 0.08 decades from 0.3: within 5 % of 3.5 decades
    ({"lr": 0.1}, {}),                          # 0.48 decades from it
    ({"lr": 1.0}, {"lr": "high"}),              # beyond the bound
    ({"lr": 1.2e-4}, {"lr": "low"}),
    ({"lr": 0.01, "p": 0.03, "T": 100, "momentum": 0.9}, {"p": "low"}),   # categorical and foreign keys: no edge
    ({"p": 1.0}, {}),                           # at the option's own limit: nothing lies beyond
    ({"beta": 0.89}, {"beta": "high"}),
    ({"beta": 0.7}, {}),
    ({}, {}),
])
def test_on_edge_finds_the_values_at_a_bound(params, expected):
    assert edges(SPACE, params) == expected
    assert on_edge(SPACE, params) == list(expected)


def test_extended_moves_the_edge_bound_a_decade_out():
    wider = extended(SPACE, edges(SPACE, {"lr": 0.3, "p": 0.03}))
    assert (wider["lr"].low, wider["lr"].high) == (1e-4, pytest.approx(3.0))
    assert (wider["p"].low, wider["p"].high) == (pytest.approx(3e-3), 1.0)
    assert wider["T"] == SPACE["T"] and SPACE["lr"].high == 0.3          # the others, and the original, unchanged
    assert on_edge(wider, {"lr": 0.3, "p": 0.03}) == []


def test_extended_by_names_moves_both_bounds_within_the_option_s_limits():
    wider = extended(SPACE, on_edge(SPACE, {"lr": 0.3, "beta": 0.9}))
    assert (wider["lr"].low, wider["lr"].high) == (pytest.approx(1e-5), pytest.approx(3.0))
    assert (wider["beta"].low, wider["beta"].high) == (pytest.approx(0.1), 0.99)    # a width out, the ceiling kept
    ceilinged = extended(SearchSpace({"p": LogUniform(0.03, 0.5, "test", ceiling=1.0)}), {"p": "high"})
    assert ceilinged["p"].high == 1.0


def test_extended_refuses_a_categorical_dimension_and_an_unknown_side():
    with pytest.raises(ValueError, match="T is categorical"):
        extended(SPACE, ["T"])
    with pytest.raises(ValueError, match="'low' or 'high'"):
        extended(SPACE, {"lr": "up"})
    with pytest.raises(KeyError):
        extended(SPACE, ["momentum"])


def test_a_dimension_refuses_an_empty_or_inverted_range():
    with pytest.raises(ValueError, match="0 < low < high"):
        LogUniform(0.3, 1e-4, "test")
    with pytest.raises(ValueError, match="0 < low < high <= ceiling"):
        LogUniform(0.1, 2.0, "test", ceiling=1.0)
    with pytest.raises(ValueError, match="floor <= low < high"):
        Uniform(-0.1, 0.5, "test", floor=0.0)
    with pytest.raises(ValueError, match="distinct"):
        Choice((1, 1), "test")


def test_the_documented_search_spaces_are_the_registry_s():
    page = (ROOT / "docs" / "usage.md").read_text()
    start = page.index("\n", page.index("<!-- search spaces table")) + 1
    documented = page[start:page.index("<!-- end of search spaces table -->")]
    assert documented == registry.search_space_table(), \
        "docs/usage.md's search spaces are stale: paste kfac_bench.registry.search_space_table() into it"
    assert documented.count("\n| `") == sum(len(registry.search_space(n)) for n in registry.method_names())
