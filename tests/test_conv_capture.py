"""The convolutional captures (kfac_bench/curvature/capture.py) against oracles that do not use our
unfold code: per-example gradients from torch.func (functional_call + vmap(grad)) must equal
``DW_n = sum_t g_nt a_nt^T`` built from the capture's per-position statistics, for Conv2d and
ConvTranspose2d over kernels, strides, paddings, channels, image sizes and with and without bias (a
transposed index, a missing position sum or a wrong position count fails them); the treatments'
blocks against dense float64 sums. Float64 throughout."""
import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from kfac_bench.curvature.capture import (ConvTranspose2dBiasCapture, UnsupportedLayer, as_captures,
                                          captures_for)
from kfac_bench.curvature.spatial import spatial_block
from kfac_bench.curvature.stats import collect_statistics, get_likelihood
from kfac_bench.registry import make_approximation

DT = torch.float64


def per_example_loss(out: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A smooth loss of one example's output (nonlinear, so that g varies over positions)."""
    return torch.sum(torch.tanh(out * w) ** 2) + torch.sum(out * w.flip(-1))


def oracle_gradients(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example parameter gradients by torch.func: no unfold anywhere."""
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss_one(p, xn):
        return per_example_loss(functional_call(layer, p, (xn[None],))[0], w)
    return vmap(grad(loss_one), in_dims=(None, 0))(params, x)


def recorded(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The gradient of the summed per-example losses w.r.t. the layer's output (what the hook records)."""
    out = layer(x)
    total = sum(per_example_loss(out[n], w) for n in range(out.shape[0]))
    return torch.autograd.grad(total, out)[0]


def make_layer(kind, c_in, c_out, k, stride, padding, bias, seed=0, **extra):
    torch.manual_seed(seed)
    cls = nn.Conv2d if kind == "conv2d" else nn.ConvTranspose2d
    return cls(c_in, c_out, k, stride=stride, padding=padding, bias=bias, **extra).to(DT)


CASES = [c for c in itertools.product(["conv2d", "conv_transpose2d"], [1, 3], [2, 4], [2, 3], [1, 2], [0, 1],
                                      [True, False], [4, 6]) if c[5] < c[3]]   # padding < kernel


@pytest.mark.parametrize("kind,c_in,c_out,k,stride,padding,bias,size", CASES)
def test_position_statistics_sum_to_the_per_example_gradients_of_torch_func(kind, c_in, c_out, k, stride, padding,
                                                                            bias, size):
    n = 3
    layer = make_layer(kind, c_in, c_out, k, stride, padding, bias, seed=size + k)
    x = torch.randn(n, c_in, size, size, generator=torch.Generator().manual_seed(1), dtype=DT)
    out_shape = layer(x).shape[1:]
    w = torch.randn(out_shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    go = recorded(layer, x, w)
    expected = oracle_gradients(layer, x, w)
    weight_capture, *bias_capture = captures_for(layer, "layer")
    abar, g = weight_capture.position_statistics(x, go)
    positions = go.shape[2] * go.shape[3] if kind == "conv2d" else size * size
    assert abar.shape[:2] == g.shape[:2] == (n, positions)
    dw = g.mT @ abar                                          # (N, d_g, d_a): sum_t g_nt a_nt^T
    assert tuple(dw.shape[1:]) == weight_capture.block_shape
    d_weight = dw[..., :-1] if weight_capture.has_bias_column else dw
    assert torch.allclose(d_weight.reshape(expected["weight"].shape), expected["weight"], rtol=1e-10, atol=1e-12)
    if kind == "conv2d" and bias:
        assert torch.allclose(dw[..., -1], expected["bias"], rtol=1e-10, atol=1e-12)
    if kind == "conv_transpose2d":
        assert len(bias_capture) == int(bias)
        if bias:
            block = bias_capture[0].statistics(x, go)          # a_bar = 1, g_n = the summed output gradient
            assert torch.equal(block.abar, torch.ones(n, 1, dtype=DT))
            assert torch.allclose(block.g, expected["bias"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind,extra,size", [
    ("conv_transpose2d", dict(stride=2, output_padding=1, padding=1), 4),
    ("conv_transpose2d", dict(stride=3, output_padding=2, padding=0), 3),
    ("conv2d", dict(padding="same"), 5),
    ("conv2d", dict(padding="valid", stride=2), 6),
])
def test_output_padding_and_string_paddings(kind, extra, size):
    torch.manual_seed(3)
    cls = nn.Conv2d if kind == "conv2d" else nn.ConvTranspose2d
    layer = cls(2, 3, 3, **extra).to(DT)
    x = torch.randn(2, 2, size, size, generator=torch.Generator().manual_seed(4), dtype=DT)
    w = torch.randn(layer(x).shape[1:], generator=torch.Generator().manual_seed(5), dtype=DT)
    go, expected = recorded(layer, x, w), oracle_gradients(layer, x, w)
    weight_capture, *rest = captures_for(layer, "layer")
    abar, g = weight_capture.position_statistics(x, go)
    dw = g.mT @ abar
    d_weight = dw[..., :-1] if weight_capture.has_bias_column else dw
    assert torch.allclose(d_weight.reshape(expected["weight"].shape), expected["weight"], rtol=1e-10, atol=1e-12)


def conv_stats(kind="conv2d", n=4, seed=0):
    layer = make_layer(kind, 2, 3, 3, 2, 1, True, seed=seed)
    x = torch.randn(n, 2, 5, 5, generator=torch.Generator().manual_seed(seed + 1), dtype=DT)
    w = torch.randn(layer(x).shape[1:], generator=torch.Generator().manual_seed(seed + 2), dtype=DT)
    go = recorded(layer, x, w)
    capture = captures_for(layer, "layer")[0]
    return layer, capture, x, go, w


@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d"])
def test_independent_block_is_the_position_sum_and_its_kfac_factors_are_kfc(kind):
    layer, capture, x, go, _ = conv_stats(kind)
    abar, g = capture.position_statistics(x, go)
    n, t = abar.shape[:2]
    dense = sum(torch.kron(torch.outer(abar[i, s], abar[i, s]), torch.outer(g[i, s], g[i, s]))
                for i in range(n) for s in range(t)) / n
    block = capture.statistics(x, go)                          # the default treatment: independent
    assert torch.allclose(block.to_dense(), dense, rtol=1e-10, atol=1e-13)
    assert torch.allclose(spatial_block(abar, g, "independent").to_dense(), dense, rtol=1e-10, atol=1e-13)
    (a, gg), = make_approximation("kfac").fit(block).approximation.terms
    rows_a, rows_g = abar.reshape(n * t, -1), g.reshape(n * t, -1)
    assert torch.allclose(a, rows_a.T @ rows_a / (n * t), rtol=1e-12)         # KFC's Omega: mean over (n, t)
    assert torch.allclose(gg, rows_g.T @ rows_g / n, rtol=1e-12)              # Gamma times T: sum over t, mean over n


def _exact_or_skip(abar, g):
    try:
        return spatial_block(abar, g, "exact")
    except NotImplementedError as err:
        pytest.skip(f"SpatialFisherBlock is not implemented yet ({err})")


@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d"])
def test_exact_block_is_the_mean_outer_product_of_torch_func_gradients(kind):
    layer, capture, x, go, w = conv_stats(kind, n=3, seed=4)
    abar, g = capture.position_statistics(x, go)
    block = _exact_or_skip(abar, g)
    expected = oracle_gradients(layer, x, w)
    d_g = capture.block_shape[0]
    rows = expected["weight"].reshape(x.shape[0], d_g, -1)
    if capture.has_bias_column:
        rows = torch.cat([rows, expected["bias"][..., None]], dim=2)
    vecs = rows.mT.reshape(x.shape[0], -1)                     # vec stacks columns
    assert torch.allclose(block.to_dense(), vecs.T @ vecs / x.shape[0], rtol=1e-10, atol=1e-13)


def test_conv_transpose_bias_block_is_exact_and_kfac_fits_it_exactly():
    layer, _, x, go, w = conv_stats("conv_transpose2d", n=5, seed=7)
    bias_capture = captures_for(layer, "layer")[1]
    assert isinstance(bias_capture, ConvTranspose2dBiasCapture) and bias_capture.block_shape == (3, 1)
    block = bias_capture.statistics(x, go)
    db = oracle_gradients(layer, x, w)["bias"]
    exact = db.T @ db / x.shape[0]
    assert torch.allclose(block.to_dense(), exact, rtol=1e-12)
    assert torch.allclose(make_approximation("kfac").fit(block).approximation.to_dense(), exact, rtol=1e-12)


def test_collect_statistics_hooks_each_module_once_and_gives_one_block_per_capture():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.ConvTranspose2d(2, 1, 2, stride=2),
                          nn.Flatten()).to(DT)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    caps = as_captures([model[0], model[2], model[2]])         # a module stands for its captures, once
    assert [c.kind for c in caps] == ["conv2d", "conv_transpose2d", "conv_transpose2d_bias"]
    blocks = collect_statistics(model, caps, x, get_likelihood("bernoulli"), torch.Generator().manual_seed(2))
    assert [(b.shape_g, b.shape_a) for b in blocks] == [c.block_shape for c in caps] == [(2, 10), (2, 4), (1, 1)]
    again = collect_statistics(model, [model[0], model[2]], x, get_likelihood("bernoulli"),
                               torch.Generator().manual_seed(2))
    assert all(torch.equal(a.to_dense(), b.to_dense()) for a, b in zip(blocks, again))


@pytest.mark.parametrize("make,setting", [
    (lambda: nn.Conv2d(2, 2, 3, groups=2), "groups=2"),
    (lambda: nn.Conv2d(2, 2, 3, dilation=2), "dilation=(2, 2)"),
    (lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (lambda: nn.Conv2d(2, 2, 2, padding="same"), "padding='same'"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, groups=2), "groups=2"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, dilation=2), "dilation=(2, 2)"),
])
def test_unsupported_settings_are_refused_naming_the_layer_the_setting_and_the_fix(make, setting):
    with pytest.raises(UnsupportedLayer) as err:
        captures_for(make(), "encoder.3")
    assert "'encoder.3'" in str(err.value) and setting in str(err.value) and "layers=" in str(err.value)
