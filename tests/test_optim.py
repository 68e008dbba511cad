"""The torch.optim front: contract, resume, robustness, and that every method trains."""
import io
import math

import pytest
import torch
from torch import nn

from kfac_bench.curvature.kronecker import KroneckerSum
from kfac_bench.curvature.stats import collect_statistics, get_likelihood
from kfac_bench.models import build_mlp
from kfac_bench.optim import KFAC, KPSVD, Deflation, KFACCorrected, Lanczos
from kfac_bench.registry import OPTIMIZERS
from kfac_bench.optim.factory import build_optimizer


METHODS = sorted(OPTIMIZERS)


def tiny_autoencoder(seed=0):
    return build_mlp([12, 8, 3, 8, 12], "relu", torch.Generator().manual_seed(seed))


def tiny_data(n=64, d=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    basis = torch.rand(3, d, generator=gen)
    return torch.sigmoid(4 * (torch.rand(n, 3, generator=gen) @ basis - 0.7))


def train_steps(opt, model, x, steps, batch=16, lik="bernoulli"):
    likelihood = get_likelihood(lik)
    losses = []
    for s in range(steps):
        xb = x[(s * batch) % x.shape[0]:][:batch]
        opt.zero_grad()
        loss = likelihood.batch_loss(model(xb), xb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_public_names():
    assert [OPTIMIZERS[k].__name__ for k in ("kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected")] == \
        ["KFAC", "KPSVD", "Deflation", "Lanczos", "KFACCorrected"]
    model = tiny_autoencoder()
    for cls, name in [(KFAC, "kfac"), (KPSVD, "kpsvd"), (Deflation, "deflation"), (Lanczos, "lanczos"),
                      (KFACCorrected, "kfac_corrected")]:
        opt = cls(model, lr=0.1)
        assert opt.method.name == name  # the authors' code silently ran KPSVD for two of these
        opt.close()


@pytest.mark.parametrize("kwargs,field", [
    (dict(lr=-0.1), "lr"), (dict(lr=0.0), "lr"), (dict(damping=0.0), "damping"), (dict(T1=0), "T1"),
    (dict(kl_clip=-1.0), "kl_clip"), (dict(momentum=1.0), "momentum"), (dict(likelihood="poisson"), "likelihood"),
])
def test_invalid_hyperparameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        KFAC(tiny_autoencoder(), **{"lr": 0.1, **kwargs})


def test_statistics_are_per_example_gradients_of_the_sampled_loss():
    """g_t from collect_statistics equals autograd of example t's own loss with the same targets."""
    torch.manual_seed(0)
    model = tiny_autoencoder().double()
    x = tiny_data(5).double()
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    lik = get_likelihood("bernoulli")
    gen = torch.Generator().manual_seed(3)
    blocks = collect_statistics(model, layers, x, lik, gen)
    y = lik.sample(model(x).detach(), torch.Generator().manual_seed(3))
    for t in range(5):
        outs = {}
        hooks = [l.register_forward_hook(lambda m, a, o, l=l: outs.__setitem__(l, o)) for l in layers]
        z = model(x[t:t + 1])
        for h in hooks:
            h.remove()
        loss = lik.per_example_loss(z, y[t:t + 1]).sum()
        grads = torch.autograd.grad(loss, [outs[l] for l in layers])
        for blk, gr, layer in zip(blocks, grads, layers):
            assert torch.allclose(blk.g[t], gr[0], atol=1e-12)
    # the per-example gradient of the weight is g a_bar^T: the bias column (last) is g itself
    assert torch.allclose(blocks[0].abar[:, -1], torch.ones(5, dtype=torch.float64))
    assert torch.allclose(blocks[0].abar[:, :-1], x)


def test_true_fisher_expectation_matches_ggn_for_bernoulli():
    """Averaged over many sampled targets, the G-side Fisher of the output layer equals
    diag(p(1-p))/d^2 per example (the Bernoulli Fisher of the mean-reduced loss)."""
    model = build_mlp([4, 3], "relu", torch.Generator().manual_seed(0)).double()
    x = torch.rand(1, 4, dtype=torch.float64).repeat(20000, 1)
    lik = get_likelihood("bernoulli")
    (blk,) = collect_statistics(model, [model[0]], x, lik, torch.Generator().manual_seed(1))
    _, g_kfac = blk.kfac_factors()
    with torch.no_grad():
        p = torch.sigmoid(model(x[:1]))[0]
    expected = torch.diag(p * (1 - p)) / 3 ** 2
    # Monte-Carlo error ~1% at 20,000 samples; a missing 1/d^2 or a wrong variance is off by 2x or more
    assert torch.allclose(g_kfac, expected, atol=0.03 * float(expected.max()))


@pytest.mark.parametrize("name", METHODS)
def test_resume_from_state_dict_gives_the_same_next_steps(name):
    x = tiny_data(96)
    kw = dict(lr=0.05, damping=1e-2, T1=3, T2=2, seed=5)
    torch.manual_seed(0)
    model = tiny_autoencoder()
    opt = OPTIMIZERS[name](model, **kw)
    train_steps(opt, model, x, 7)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train_steps(opt, model, x[16:], 5)
    straight = [p.detach().clone() for p in model.parameters()]

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model2 = tiny_autoencoder(seed=99)  # different init: everything must come from the state
    opt2 = OPTIMIZERS[name](model2, **{**kw, "seed": 123})
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    train_steps(opt2, model2, x[16:], 5)
    for a, b in zip(straight, model2.parameters()):
        assert torch.equal(a, b)


def test_state_dict_from_another_method_is_rejected():
    model = tiny_autoencoder()
    opt = KFAC(model, lr=0.1, T1=1)
    train_steps(opt, model, tiny_data(), 1)
    other = Lanczos(tiny_autoencoder(), lr=0.1)
    with pytest.raises(ValueError, match="kfac"):
        other.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("name", METHODS)
def test_preconditioned_step_is_the_damped_solve(name):
    """With momentum 0, no clipping and T1=T2=1, one step moves each layer by -lr (F_hat + damping)^-1 grad
    computed densely from the same statistics (float64)."""
    torch.manual_seed(0)
    model = tiny_autoencoder().double()
    x = tiny_data(16).double()
    opt = OPTIMIZERS[name](model, lr=0.5, damping=1e-1, kl_clip=None, momentum=0.0, T1=1, T2=1,
                           tol=1e-12, max_iter=20000, psd_floor=1e-9)
    before = [l.weight.detach().clone() for l in opt.layers], [l.bias.detach().clone() for l in opt.layers]
    lik = get_likelihood("bernoulli")
    loss = lik.batch_loss(model(x), x)
    loss.backward()
    grads = [torch.cat([l.weight.grad, l.bias.grad[:, None]], 1).clone() for l in opt.layers]
    opt.step()
    for i, layer in enumerate(opt.layers):
        approx = opt.blocks[i].approximation
        if hasattr(approx, "terms"):    # a Kronecker sum: the paper's pi-damping on the first term
            a, g = approx.terms[0]
            from kfac_bench.curvature.inverse import damped_first_term
            a_d, g_d = damped_first_term(a, g, 1e-1)
            dense = torch.kron(a_d, g_d) + sum((torch.kron(c, d) for c, d in approx.terms[1:]),
                                               torch.zeros(1, dtype=torch.float64))
        else:                           # EKFAC: the damping added to its eigenvalues (tests/test_ekfac.py
            dense = approx.to_dense()   # checks its estimate against dense statistics)
            dense = dense + 1e-1 * torch.eye(dense.shape[0], dtype=dense.dtype)
        vec_grad = grads[i].T.reshape(-1)
        step = torch.linalg.solve(dense, vec_grad)
        moved = torch.cat([before[0][i] - layer.weight.detach(), (before[1][i] - layer.bias.detach())[:, None]], 1)
        assert torch.allclose(moved.T.reshape(-1), 0.5 * step, rtol=1e-6, atol=1e-10)


def test_kl_clip_scales_the_step_as_appendix_e():
    torch.manual_seed(0)
    model = tiny_autoencoder().double()
    x = tiny_data(16).double()
    opt = KFAC(model, lr=1.0, damping=1e-1, kl_clip=1e-6, momentum=0.0, T1=1, T2=1)
    get_likelihood("bernoulli").batch_loss(model(x), x).backward()
    grads = [torch.cat([l.weight.grad, l.bias.grad[:, None]], 1).clone() for l in opt.layers]
    w0 = [torch.cat([l.weight, l.bias[:, None]], 1).detach().clone() for l in opt.layers]
    opt.step()
    deltas = [w - torch.cat([l.weight, l.bias[:, None]], 1).detach() for w, l in zip(w0, opt.layers)]
    # nu * Delta_i = deltas (lr = 1); sum |<Delta_i, grad_i>| = (sum |<deltas, grad>|)/nu
    s = sum(float(torch.sum(d * g).abs()) for d, g in zip(deltas, grads))
    nu = opt.last_nu
    assert nu < 1
    assert math.isclose(nu, math.sqrt(1e-6 / (s / nu)), rel_tol=1e-9)


def test_non_finite_factors_keep_the_previous_approximation():
    model = tiny_autoencoder()
    x = tiny_data()
    opt = KPSVD(model, lr=0.05, T1=1, T2=1)
    train_steps(opt, model, x, 1)
    kept = [c.approximation for c in opt.blocks]
    real_fit = opt.method.fit

    def poisoned(block, previous=None, rho=0.0, warm=None):
        res = real_fit(block, previous, rho, warm)
        a, g = res.approximation.terms[0]
        res.approximation = KroneckerSum([(a * float("nan"), g)])
        return res

    opt.method.fit = poisoned
    with pytest.warns(UserWarning, match="non-finite"):
        train_steps(opt, model, x, 1)
    assert all(c.approximation is k for c, k in zip(opt.blocks, kept))
    assert opt.skipped_updates == len(kept)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", METHODS)
def test_each_method_reduces_the_curves_loss(name, tmp_path):
    from kfac_bench.data import load_dataset
    cfg = {"name": "curves", "source": "generated", "path": None, "batch_size": 64,
           "layers": [784, 400, 200, 100, 50, 25, 6, 25, 50, 100, 200, 400, 784],
           "hidden_activation": "relu", "likelihood": "bernoulli", "n_train": 512, "n_val": 88,
           "generator": {"seed": 1, "n_images": 600}}
    data = load_dataset(cfg, tmp_path, "cpu", log=lambda *a: None)
    torch.manual_seed(0)
    from kfac_bench.models import build_autoencoder
    model = build_autoencoder(cfg, seed=0)
    opt = build_optimizer({"name": name, "lr": 0.1, "damping": 3e-2, "kl_clip": 1e-2, "T1": 5, "T2": 5},
                          model, "bernoulli")
    lik = get_likelihood("bernoulli")
    with torch.no_grad():
        start = float(lik.batch_loss(model(data.train), data.train))
    for epoch in range(3):
        for b in range(0, 512, 64):
            xb = data.train[b:b + 64]
            opt.zero_grad()
            lik.batch_loss(model(xb), xb).backward()
            opt.step()
    with torch.no_grad():
        end = float(lik.batch_loss(model(data.train), data.train))
    assert end < start - 0.05, (start, end)


def test_classifier_with_categorical_likelihood_trains():
    gen = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(4, 10, generator=gen)
    labels = torch.randint(0, 4, (400,), generator=gen)
    x = centers[labels] + torch.randn(400, 10, generator=gen)
    model = build_mlp([10, 32, 4], "relu", torch.Generator().manual_seed(1))
    opt = Lanczos(model, lr=0.1, damping=1e-2, likelihood="categorical", T1=10, T2=10)
    lossf = nn.CrossEntropyLoss()
    for epoch in range(5):
        for b in range(0, 400, 40):
            opt.zero_grad()
            lossf(model(x[b:b + 40]), labels[b:b + 40]).backward()
            opt.step()
    acc = float((model(x).argmax(1) == labels).float().mean())
    assert acc > 0.9


def test_empirical_fisher_needs_targets():
    model = tiny_autoencoder()
    opt = KFAC(model, lr=0.1, fisher="empirical")
    x = tiny_data(8)
    get_likelihood("bernoulli").batch_loss(model(x), x).backward()
    with pytest.raises(ValueError, match="targets"):
        opt.step()
    opt.step(targets=x)


def test_readme_example_runs_and_learns(tmp_path, monkeypatch, capsys):
    """The README's library example is executed as written (the MLP, then a small CNN)."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- example:start -->")[1].split("<!-- example:end -->")[0]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    monkeypatch.chdir(tmp_path)                     # the example saves its state in the working folder
    namespace: dict = {}
    exec(compile(code, "README example", "exec"), namespace)
    assert namespace["acc"] > 0.9
    assert namespace["cnn_acc"] > 0.9                # the convolutional case (issue 32)
    assert (tmp_path / "lanczos_state.pt").exists()
