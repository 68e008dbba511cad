"""Options said once (kfac_bench/options.py): the configs' shared parts, validation and the documented
option list all come from the option dataclasses, and an unknown option is an error, never swallowed."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from kfac_bench import cli, registry
from kfac_bench.configs import config_dir
from kfac_bench.curvature.approximations import LanczosK
from kfac_bench.optim import KroneckerFactoredOptimizer
from kfac_bench.optim.factory import build_optimizer, validate_optimizer_config
from kfac_bench.options import (FAMILIES, AdamOptions, CurvatureOptions, SGDOptions, config_nodes, defaults,
                                load_optimizer_config, markdown, option_names)
from kfac_bench.runs.train import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_the_documented_option_list_is_generated_from_the_dataclasses():
    page = (ROOT / "docs" / "usage.md").read_text()
    start = page.index("\n", page.index("<!-- options table")) + 1
    assert page[start:page.index("<!-- end of options table -->")] == markdown(), \
        "docs/usage.md's option table is stale: paste `python -m kfac_bench.options` into it"


@pytest.mark.parametrize("method", registry.method_names())
def test_a_methods_config_holds_only_options_it_takes(method):
    entry = registry.get_method(method)
    composed = _compose([f"optimizer={method}"]).optimizer
    assert composed.name == method
    assert [k for k in composed if not entry.takes(k)] == []
    # the same config read without a run (the bench): the shared parts merged under the method's own
    from omegaconf import OmegaConf
    alone = load_optimizer_config(config_dir() / "optimizer" / f"{method}.yaml")
    assert OmegaConf.to_container(alone) == OmegaConf.to_container(composed)
    own = (config_dir() / "optimizer" / f"{method}.yaml").read_text()
    assert len([x for x in own.splitlines() if x and not x.startswith("#")]) <= 7   # a new method: a few lines


def test_the_shared_parts_are_the_fields_of_one_family_each():
    families = tuple(FAMILIES.values())
    for name, node in config_nodes().items():
        assert name.startswith("_") and any(set(node) <= set(option_names(f)) for f in families)


def test_the_optimizers_own_defaults_are_the_documented_ones():
    documented = defaults(CurvatureOptions)
    for cls in (KroneckerFactoredOptimizer, LanczosK):
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name in documented and p.default is not inspect.Parameter.empty:
                assert p.default == documented[p.name], (cls.__name__, p.name)


def test_an_unknown_option_names_the_known_ones():
    cfg = {**_container("kfac"), "dampin": 1.0}
    with pytest.raises(ValueError, match=r"optimizer\.dampin is not an option of kfac \(did you mean "
                                         r"optimizer\.damping\?\); its options are: lr, damping, .*route"):
        validate_optimizer_config(cfg)
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 4))
    with pytest.raises(ValueError, match="not an option of kfac"):
        build_optimizer(cfg, model, "bernoulli")
    with pytest.raises(ValueError, match=r"optimizer\.k is not an option of deflation"):
        validate_optimizer_config({**_container("deflation"), "k": 3})
    with pytest.raises(ValueError, match=r"optimizer\.damping is not an option of sgd; its options are: lr, "
                                         r"momentum, weight_decay, nesterov"):
        validate_optimizer_config({"name": "sgd", "lr": 0.1, "damping": 1e-3})
    validate_optimizer_config({**_container("lanczos_k"), "k": 4, "route": "gram"})   # its own, and an unlisted one


def _container(method: str) -> dict:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(_compose([f"optimizer={method}", "dataset=curves"]).optimizer, resolve=True)


def test_a_typo_fails_on_the_command_line_before_hydra(capsys):
    assert cli.main(["run", "optimizer=kfac", "optimizer.dampin=1"]) == 2
    err = capsys.readouterr().err
    assert "optimizer.dampin is not an option of kfac (did you mean optimizer.damping?)" in err
    assert "its options are: lr, damping, kl_clip, T1" in err
    # + does not get a typo past it; the default optimizer (sgd) and each one of a sweep are checked
    assert "not an option of kfac" in cli.unknown_optimizer_option(["optimizer=kfac", "+optimizer.dampin=1"])
    assert "not an option of sgd" in cli.unknown_optimizer_option(["optimizer.damping=1e-3"])
    assert "not an option of kfac" in cli.unknown_optimizer_option(["-m", "optimizer=deflation,kfac",
                                                                    "optimizer.second_term=leading"])
    for fine in (["optimizer=lanczos_k", "optimizer.k=4", "+optimizer.route=gram"], ["optimizer=mine", "optimizer.x=1"],
                 ["optimizer=kfac", "optimizer.tuned.curves.lr=0.2", "optimizer.name=kfac"]):
        assert cli.unknown_optimizer_option(fine) is None


def test_a_typo_added_with_plus_fails_before_training():
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(_compose(["optimizer=kfac", "+optimizer.dampin=1"]), resolve=True)
    with pytest.raises(ConfigError, match="optimizer.dampin is not an option of kfac"):
        validate_config(cfg)


def test_a_first_order_option_left_out_takes_its_documented_default():
    model = nn.Sequential(nn.Linear(4, 3))
    sgd = build_optimizer({"name": "sgd", "lr": 0.1}, model, "bernoulli")
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    adam = build_optimizer({"name": "adam", "lr": 0.1}, model, "bernoulli")
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)
