"""Convolutional layers in the optimizers (issue 32): one step of every method is the damped solve of
each block computed densely, every parameter is accounted for in the layer report, refusals name the
layer, ``layers=`` restricts, checkpoints round-trip, and ``kfac-bench run`` trains the authors' MNIST
CNN auto-encoder. Float64 where the numbers are compared."""
import io
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kfac_bench.curvature.capture import UnsupportedLayer
from kfac_bench.curvature.inverse import damped_first_term
from kfac_bench.curvature.stats import get_likelihood
from kfac_bench.models import build_autoencoder, build_conv_autoencoder, build_mlp
from kfac_bench.optim import KFAC
from kfac_bench.optim.factory import build_optimizer, validate_optimizer_config
from kfac_bench.registry import OPTIMIZERS

DT = torch.float64
CURVATURE = ["kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected", "lanczos_k", "ekfac"]


class TinyCNN(nn.Module):
    """2x6x6 images: Conv2d (padding 1, bias), Conv2d (stride 2, no bias), ConvTranspose2d (stride 2,
    bias: two blocks), ConvTranspose2d (padding 1, bias); flat in, flat logits out."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 2, stride=2, bias=False),
                                 nn.Tanh(), nn.ConvTranspose2d(4, 3, 2, stride=2), nn.Tanh(),
                                 nn.ConvTranspose2d(3, 2, 3, padding=1))

    def forward(self, x):
        return self.net(x.reshape(-1, 2, 6, 6)).reshape(x.shape[0], -1)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return TinyCNN().to(DT)


def images(n=8, seed=1):
    return torch.rand(n, 72, generator=torch.Generator().manual_seed(seed), dtype=DT)


def block_coordinates(capture, tensors: dict) -> torch.Tensor:
    """``[W | b]`` of the block, from parameter-shaped tensors, through the capture's own map (set as
    .grad, read back by ``capture.gradient()``), as ``vec`` (columns stacked)."""
    saved = [p.grad for p in capture.parameters]
    for p in capture.parameters:
        p.grad = tensors[p]
    weight, bias = capture.gradient()
    for p, g in zip(capture.parameters, saved):
        p.grad = g
    matrix = weight if bias is None else torch.cat([weight, bias[:, None]], dim=1)
    return matrix.T.reshape(-1)


def dense_damped(approx, damping):
    if hasattr(approx, "terms"):      # a Kronecker sum: the paper's pi-damping on the first term
        a, g = approx.terms[0]
        a_d, g_d = damped_first_term(a, g, damping)
        return torch.kron(a_d, g_d) + sum((torch.kron(c, d) for c, d in approx.terms[1:]), torch.zeros(1, dtype=DT))
    dense = approx.to_dense()         # EKFAC: the damping on its eigenvalues
    return dense + damping * torch.eye(dense.shape[0], dtype=DT)


@pytest.mark.parametrize("spatial", ["independent", "reduce", "exact", "banded"])
@pytest.mark.parametrize("name", CURVATURE)
def test_one_step_is_the_damped_solve_of_every_conv_block(name, spatial):
    """Momentum 0, no clipping, T1 = T2 = 1: every block's parameters move by -lr (F_hat + damping)^-1 grad,
    F_hat its fitted estimate made dense (as tests/test_optim.py checks the MLP step)."""
    model, x, damping = tiny_cnn(), images(), 1e-1
    opt = OPTIMIZERS[name](model, lr=0.5, damping=damping, kl_clip=None, momentum=0.0, T1=1, T2=1, weight_decay=0.0,
                           tol=1e-12, max_iter=20000, psd_floor=1e-9, spatial=spatial)
    assert [c.kind for c in opt.captures] == ["conv2d", "conv2d", "conv_transpose2d", "conv_transpose2d_bias",
                                              "conv_transpose2d", "conv_transpose2d_bias"]
    before = {p: p.detach().clone() for p in model.parameters()}
    get_likelihood("bernoulli").batch_loss(model(x), x).backward()
    grads = {p: p.grad.clone() for p in model.parameters()}
    try:
        opt.step()
    except NotImplementedError as err:         # the exact / banded blocks (kfac_bench/curvature/spatial.py)
        pytest.skip(f"spatial={spatial}: {err}")
    moved = {p: before[p] - p.detach() for p in model.parameters()}
    for capture, block in zip(opt.captures, opt.blocks):
        d_g, d_a = capture.block_shape
        dense = dense_damped(block.approximation, damping)
        assert dense.shape == (d_g * d_a, d_g * d_a)
        step = torch.linalg.solve(dense, block_coordinates(capture, grads))
        assert torch.allclose(block_coordinates(capture, moved), 0.5 * step, rtol=1e-6, atol=1e-10), capture.kind


def test_the_layer_report_accounts_for_every_parameter():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Unflatten(1, (1, 2, 6)),
                          nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv1d(2, 2, 1),
                          nn.ConvTranspose2d(2, 1, 2), nn.Flatten(), nn.LayerNorm(21), nn.Linear(21, 3))
    opt = KFAC(model, lr=0.1)
    report = {(e["path"], e.get("capture")): e for e in opt.layer_report}
    assert [e["path"] for e in opt.layer_report if e["preconditioned"]] == ["3", "6", "6", "9"]
    assert report[("3", "conv2d")]["block"] == [2, 10] and report[("3", "conv2d")]["treatment"] == "independent"
    assert report[("6", "conv_transpose2d")]["block"] == [2, 4]
    assert report[("6", "conv_transpose2d_bias")]["parameters"] == {"bias": [1]}
    plain = {e["path"]: e for e in opt.layer_report if not e["preconditioned"]}
    assert set(plain) == {"0", "4", "5", "8"}
    assert plain["4"]["type"] == "BatchNorm2d" and plain["4"]["parameters"] == {"weight": [2], "bias": [2]}
    assert plain["0"]["type"] == "Embedding" and plain["5"]["type"] == "Conv1d"
    covered = [s for e in opt.layer_report for s in e["parameters"].values()]
    assert sorted(map(tuple, covered)) == sorted(tuple(p.shape) for p in model.parameters())
    text = opt.describe_layers()
    assert "BatchNorm2d" in text and "plain step" in text and "(2, 10)" in text
    json.dumps(opt.layer_report)                      # summary.json takes it as it is
    assert {id(p) for p in opt._other_params} == {id(p) for path in plain for p in model[int(path)].parameters()}


def test_an_unknown_parameterized_module_warns_and_takes_the_plain_step():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(nn.Linear(4, 3), Scale())
    with pytest.warns(UserWarning, match=r"'1' \(Scale\)"):
        opt = KFAC(model, lr=0.1)
    assert [e for e in opt.layer_report if not e["preconditioned"]][0]["parameters"] == {"s": [3]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KFAC(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), lr=0.1)     # known types: no warning


def test_layers_restricts_and_refusals_name_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, groups=1), nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 3))
    with pytest.raises(UnsupportedLayer, match=r"'1' \(Conv2d\) has groups=2.*layers="):
        KFAC(model, lr=0.1)
    opt = KFAC(model, lr=0.1, layers=["0", "linear"])
    assert [e["path"] for e in opt.layer_report if e["preconditioned"]] == ["0", "3"]
    assert [e["reason"] for e in opt.layer_report if e["path"] == "1"] == ["left out by layers="]
    assert [c.kind for c in KFAC(model, lr=0.1, layers=["linear"]).captures] == ["linear"]
    with pytest.raises(ValueError, match=r"\['lineer'\] select"):
        KFAC(model, lr=0.1, layers=["lineer"])
    nested = nn.Sequential(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), nn.Linear(3, 3))
    assert [c.path for c in KFAC(nested, lr=0.1, layers=["0"]).captures] == ["0.0", "0.1"]
    with pytest.raises(ValueError, match=r"no layer to precondition.*BatchNorm1d"):
        KFAC(nn.Sequential(nn.BatchNorm1d(3)), lr=0.1)
    for refused in (nn.Conv2d(2, 2, 3, dilation=2), nn.Conv2d(2, 2, 3, padding_mode="reflect")):
        with pytest.raises(UnsupportedLayer, match=r"'0' \(Conv2d\)"):
            KFAC(nn.Sequential(refused), lr=0.1)


def test_options_are_validated_in_configs():
    base = {"name": "kfac", "lr": 0.1, "damping": 1e-3}
    validate_optimizer_config({**base, "spatial": "exact", "spatial_radius": 2, "layers": ["conv"]})
    for bad, field in (({"spatial": "diagonal"}, "spatial"), ({"spatial_radius": -1}, "spatial_radius"),
                       ({"layers": "conv"}, "layers")):
        with pytest.raises(ValueError, match=field):
            validate_optimizer_config({**base, **bad})
    with pytest.raises(ValueError, match="spatial"):
        KFAC(tiny_cnn(), lr=0.1, spatial="diagonal")
    opt = build_optimizer({**base, "name": "kpsvd", "spatial": "banded"}, tiny_cnn(), "bernoulli")
    assert [e.get("radius") for e in opt.layer_report if e["preconditioned"]][:2] == [2, 1]   # min(kernel) - 1
    assert KFAC(tiny_cnn(), lr=0.1, spatial="banded", spatial_radius=0).layer_report[0]["radius"] == 0


def test_state_dict_round_trip_and_a_block_count_mismatch_says_blocks():
    kw = dict(lr=0.05, damping=1e-2, T1=2, T2=2)
    model, x = tiny_cnn(), images(16)

    def steps(opt, model, count):
        for s in range(count):
            xb = x[(s * 4) % 16:][:4]
            opt.zero_grad()
            get_likelihood("bernoulli").batch_loss(model(xb), xb).backward()
            opt.step()
    opt = OPTIMIZERS["kpsvd"](model, **kw)
    steps(opt, model, 3)
    twin = tiny_cnn()
    twin.load_state_dict(model.state_dict())
    resumed = OPTIMIZERS["kpsvd"](twin, **kw)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)            # a copy, as a checkpoint is (the live one shares buffers)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    steps(opt, model, 3)
    steps(resumed, twin, 3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    fewer = OPTIMIZERS["kpsvd"](tiny_cnn(), layers=["conv2d"], **kw)
    with pytest.raises(ValueError, match="6 curvature blocks, this optimizer 2"):
        fewer.load_state_dict(opt.state_dict())


def test_the_authors_cnn_and_the_mlp_builder_unchanged():
    model = build_conv_autoencoder()
    assert [type(m).__name__ for m in model.modules() if any(True for _ in m.parameters(False))] == \
        ["Conv2d", "Conv2d", "ConvTranspose2d", "ConvTranspose2d"]
    assert [tuple(m.weight.shape) for m in model.modules() if hasattr(m, "weight")] == \
        [(6, 1, 5, 5), (16, 6, 5, 5), (16, 6, 5, 5), (6, 1, 5, 5)]
    assert model(torch.rand(2, 784)).shape == (2, 784)
    same = build_autoencoder({"model": {"kind": "conv_autoencoder"}}, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), same.parameters()))
    cfg = {"layers": [6, 4, 6], "hidden_activation": "relu"}
    mlp, ref = build_autoencoder(cfg, seed=3), build_mlp([6, 4, 6], "relu", torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(mlp.parameters(), ref.parameters()))
    with pytest.raises(ValueError, match="kind"):
        build_autoencoder({**cfg, "model": {"kind": "resnet"}})


def _mnist_files(folder):
    """Four small idx files (64 training images) standing in for MNIST, and their MD5s."""
    import struct

    from kfac_bench.data.common import md5_file
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, (64,), dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, (8,), dtype=np.uint8)}
    for name, arr in arrays.items():
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
        (folder / name).write_bytes(header + arr.tobytes())
    return {n: md5_file(folder / n) for n in arrays}


@pytest.mark.parametrize("method", ["kfac", "sgd"])
def test_a_run_on_the_cnn_records_the_layer_treatment(tmp_path, monkeypatch, method, one_thread):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import kfac_bench.cli  # noqa: F401 (registers the optimizer configs' shared parts)
    from kfac_bench.configs import config_dir
    from kfac_bench.data import mnist
    from kfac_bench.runs.train import run_training
    monkeypatch.setattr(mnist, "MD5", _mnist_files(tmp_path / "data" / "mnist" / "raw"))
    overrides = ["dataset=mnist_conv", f"optimizer={method}", "trainer.epochs=1", "dataset.n_train=48",
                 "dataset.n_val=16", "dataset.batch_size=16", f"data_dir={tmp_path / 'data'}", "device=cpu",
                 "trainer.progress=false"] + (["optimizer.T1=2", "optimizer.T2=2"] if method == "kfac" else [])
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
    summary = run_training(cfg, tmp_path / "run")
    assert summary["status"] == "ok" and summary["dataset"] == "mnist"
    layers = summary["curvature_layers"]
    if method == "sgd":
        assert layers == []
        return
    assert [(e["path"], e["type"], e["block"]) for e in layers] == [
        ("encoder.0", "Conv2d", [6, 26]), ("encoder.2", "Conv2d", [16, 151]),
        ("decoder.0", "ConvTranspose2d", [16, 150]), ("decoder.0", "ConvTranspose2d", [6, 1]),
        ("decoder.2", "ConvTranspose2d", [6, 25]), ("decoder.2", "ConvTranspose2d", [1, 1])]
    assert all(e["preconditioned"] for e in layers)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["curvature_layers"] == layers


def test_banded_spatial_is_an_authors_code_behaviour_of_the_methods_with_a_zigzag_solver():
    from kfac_bench.optim import authors_code
    assert "banded_spatial" in authors_code.behaviour_names("all")
    for name in ("kpsvd", "deflation", "lanczos", "kfac_corrected", "lanczos_k"):
        assert authors_code.expand({"name": name}, "all")["spatial"] == "banded", name
        assert "banded_spatial" in authors_code.applicable(name)
    for name in ("kfac", "ekfac", "sgd"):      # KFAC: KFC, as in their code; EKFAC and SGD: not theirs / no blocks
        assert "spatial" not in authors_code.expand({"name": name}, "all"), name
        assert "banded_spatial" not in authors_code.applicable(name)
    # on a Linear layer the treatment changes nothing: the MLP problems are untouched
    x = images(16)[:, :12]
    mlps = [build_mlp([12, 5, 12], "relu", torch.Generator().manual_seed(0)).to(DT) for _ in range(2)]
    for model, spatial in zip(mlps, ("independent", "banded")):
        opt = OPTIMIZERS["kpsvd"](model, lr=0.1, T1=1, T2=1, spatial=spatial)
        get_likelihood("bernoulli").batch_loss(model(x), x).backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(*(m.parameters() for m in mlps)))


def test_an_output_changed_in_place_is_refused():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), nn.Flatten())
    opt = KFAC(model, lr=0.1)
    x = torch.rand(3, 2, 4, 4)
    get_likelihood("bernoulli").batch_loss(model(x), x.reshape(3, -1)).backward()
    with pytest.raises(RuntimeError, match=r"'0' \(Conv2d\) was changed in place"):
        opt.step()
