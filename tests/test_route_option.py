"""``route=`` (docs/usage.md: "The optimizers in your own loop: options") on every optimizer and in the configs: the zigzag route the SVD methods
use. Both routes are the same algorithm in other coordinates, so training with either gives the same
parameters to rounding (float64); KFAC has no solver and ignores it; a bad value names the field."""
import pytest
import torch

from kfac_bench.curvature.approximations import ROUTES
from kfac_bench.curvature.stats import get_likelihood
from kfac_bench.models import build_mlp
from kfac_bench.registry import OPTIMIZERS
from kfac_bench.optim.factory import build_optimizer, validate_optimizer_config


def train(cls, route, steps=6):
    torch.manual_seed(0)
    model = build_mlp([10, 7, 3, 7, 10], "relu", torch.Generator().manual_seed(0)).double()
    x = torch.sigmoid(torch.randn(48, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    opt = cls(model, lr=0.05, damping=1e-2, T1=2, T2=2, route=route, seed=3)
    lik = get_likelihood("bernoulli")
    for s in range(steps):
        xb = x[(s * 16) % 48:][:16]
        opt.zero_grad()
        lik.batch_loss(model(xb), xb).backward()
        opt.step()
    assert opt.method.route == route
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_takes_every_route_and_they_agree(name):
    trained = {route: train(OPTIMIZERS[name], route) for route in ROUTES}
    start = torch.cat([p.detach().flatten() for p in build_mlp([10, 7, 3, 7, 10], "relu",
                                                               torch.Generator().manual_seed(0)).double().parameters()])
    moved = float(torch.linalg.norm(trained["gram"] - start))
    assert moved > 1e-3                                          # the steps did something
    for route in ("direct", "auto"):
        assert float(torch.linalg.norm(trained[route] - trained["gram"])) <= 1e-8 * moved, route


def test_a_bad_route_is_refused_with_the_field_named():
    model = build_mlp([4, 3, 4], "relu", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="route must be one of"):
        OPTIMIZERS["lanczos"](model, route="diagonal")
    with pytest.raises(ValueError, match="optimizer.route"):
        validate_optimizer_config({"name": "deflation", "lr": 0.1, "damping": 0.01, "route": "diagonal"})


def test_the_config_passes_route_to_the_optimizer():
    model = build_mlp([4, 3, 4], "relu", torch.Generator().manual_seed(0))
    opt = build_optimizer({"name": "kpsvd", "lr": 0.1, "damping": 0.01, "route": "direct"}, model, "bernoulli")
    assert opt.method.route == "direct"
    assert build_optimizer({"name": "kpsvd", "lr": 0.1, "damping": 0.01}, model, "bernoulli").method.route == "auto"

