"""Today's Kronecker-factored preconditioners (pytorch-optimizer): each builder trains a tiny MLP, keeps
the library's defaults, and Muon splits weight matrices from biases as the method prescribes."""
import pytest
import torch
from torch import nn

import warm_process
from kfac_bench.optim import baselines


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    return model, x


@pytest.mark.parametrize("name, lr", [("soap", 3e-3), ("shampoo", 1e-3), ("scalable_shampoo", 1e-3), ("muon", 2e-2),
                                     ("kron", 1e-3)])
def test_each_builder_trains_a_tiny_autoencoder(name, lr):
    model, x = _problem()
    opt = getattr(baselines, name)(model.parameters(), lr=lr)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < losses[0], (name, losses[0], losses[-1])   # wiring, not speed: library defaults


def test_muon_on_weight_matrices_adamw_on_biases():
    model, _ = _problem()
    opt = baselines.muon(model.parameters(), lr=0.02)
    muon_group, adamw_group = opt.param_groups
    assert muon_group["use_muon"] and not adamw_group["use_muon"]
    assert [p.ndim for p in muon_group["params"]] == [2, 2]
    assert [p.ndim for p in adamw_group["params"]] == [1, 1]
    assert muon_group["lr"] == 0.02 and adamw_group["lr"] == 3e-4      # the library's AdamW default (adamw_lr)


@pytest.mark.parametrize("choice, device, expected", [("auto", "cpu", torch.float32), ("auto", "cuda", torch.bfloat16),
                                                      ("bfloat16", "cpu", torch.bfloat16),
                                                      ("float32", "cuda", torch.float32)])
def test_muon_s_newton_schulz_dtype(choice, device, expected):
    assert baselines.newton_schulz_dtype(choice, [torch.device(device)]) == expected
    with pytest.raises(ValueError, match="ns_dtype"):
        baselines.newton_schulz_dtype("float16", [torch.device("cpu")])


@pytest.mark.parametrize("choice, expected", [("auto", torch.float32), ("bfloat16", torch.bfloat16)])
def test_muon_steps_its_iteration_in_the_chosen_dtype_and_restores_the_library(choice, expected, monkeypatch):
    """On a CPU `auto` runs the library's Newton-Schulz in float32 (the library fixes bfloat16); the step
    is the library's function with that dtype, and the library's function is back after the step."""
    from pytorch_optimizer.optimizer.muon import base
    seen, library = [], base.zero_power_via_newton_schulz_5

    def spy(g, *args, dtype=torch.bfloat16, **kwargs):
        seen.append(dtype)
        return library(g, *args, dtype=dtype, **kwargs)
    monkeypatch.setattr(base, "zero_power_via_newton_schulz_5", spy)
    model, x = _problem()
    opt = baselines.muon(model.parameters(), lr=0.02, ns_dtype=choice)
    nn.functional.mse_loss(model(x), x).backward()
    opt.step()
    assert seen and set(seen) == {expected}
    assert base.zero_power_via_newton_schulz_5 is spy


def test_library_defaults_are_kept():
    model, _ = _problem()
    soap = baselines.soap(model.parameters(), lr=3e-3)
    assert soap.param_groups[0]["weight_decay"] == 1e-2 and soap.param_groups[0]["precondition_frequency"] == 10


# each pytorch-optimizer family of kfac_bench/options.py and the library class its builder makes
OUR_OPTIONS = {"muon": {"ns_dtype"}}      # options of our builders, not of the library class
LIBRARY_CLASSES = {"soap": "SOAP", "shampoo": "Shampoo", "scalable_shampoo": "ScalableShampoo", "muon": "Muon",
                   "kron": "Kron"}


@pytest.mark.parametrize("name", sorted(LIBRARY_CLASSES))
def test_the_documented_defaults_are_the_library_s(name):
    """Every option of a pytorch-optimizer method (kfac_bench/options.py) defaults to the library's own
    default (the comparison's rule), read from the class's signature (pytorch-optimizer 4.1)."""
    import inspect

    import pytorch_optimizer

    from kfac_bench import registry
    from kfac_bench.options import defaults
    signature = inspect.signature(getattr(pytorch_optimizer, LIBRARY_CLASSES[name]).__init__).parameters
    documented = {k: v for k, v in defaults(registry.get_method(name).family).items()
                  if k not in OUR_OPTIONS.get(name, ())}
    library = {k: list(v) if isinstance(v, tuple) else v
               for k, v in ((k, signature[k].default) for k in documented)}
    assert documented == library


def test_scalable_shampoo_keeps_the_library_s_intervals_and_grafting():
    from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

    from kfac_bench.optim.factory import build_optimizer
    model, _ = _problem()
    opt = build_optimizer({"name": "scalable_shampoo", "lr": 1e-3}, model, "gaussian")
    assert type(opt).__name__ == "ScalableShampoo" and opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert (opt.preconditioning_compute_steps, opt.start_preconditioning_step, opt.block_size) == (1000, 25, 512)
    assert opt.graft_type == LayerWiseGrafting.SGD
    opt = build_optimizer({"name": "scalable_shampoo", "lr": 1e-3, "graft_type": 2,
                           "preconditioning_compute_steps": 10}, model, "gaussian")
    assert (opt.graft_type, opt.preconditioning_compute_steps) == (LayerWiseGrafting.ADAGRAD, 10)


@pytest.mark.parametrize("name", ["soap", "shampoo", "scalable_shampoo", "muon", "kron"])
def test_each_is_one_registry_entry_and_one_config_and_trains_through_the_harness(name, tmp_path):
    """`kfac-bench run optimizer=<name>` on tiny CURVES: the registry entry names the builder, the config
    the library's learning rate; never a claims subject (not a method of the paper)."""
    import json

    from kfac_bench import registry
    entry = registry.get_method(name)
    assert not entry.is_curvature and not entry.in_paper
    assert name not in registry.paper_method_names()
    env = {"KFAC_BENCH_DATA": str(tmp_path / "data"), "KFAC_BENCH_RESULTS": str(tmp_path / "results")}
    import os
    proc = warm_process.run("kfac-bench", "run", f"optimizer={name}", "trainer.epochs=1",
                            "dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100",
                            "trainer.progress=false", "threads=1", env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (summary,) = (tmp_path / "results" / "runs" / "curves" / name).rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "ok"


def test_a_failed_shampoo_svd_names_the_option_to_change():
    """pytorch-optimizer's Shampoo takes a float32 SVD of each preconditioner; when it fails (here NaN
    statistics; on CURVES an ill-conditioned one) the error says which option to change."""
    weight = torch.nn.Parameter(torch.randn(3, 3))
    optimizer = baselines.shampoo([weight], lr=1e-3, matrix_eps=1e-6)
    weight.grad = torch.full((3, 3), float("nan"))
    with pytest.raises(torch.linalg.LinAlgError, match=r"larger optimizer.matrix_eps \(now 1e-06\)"):
        optimizer.step()
