"""EKFAC against dense float64 oracles: its scaling is the diagonal of Q^T F Q in KFAC's Kronecker
eigenbasis, its damped solve is the dense one, and its Error 1 is never above KFAC's on the same batch."""
import pytest
import torch

from kfac_bench.curvature.ekfac import (EigenbasisDiagonal, eigenbasis_scaling, ekfac_frobenius_error_sq,
                                        fit_ekfac, kronecker_eigenbasis)
from kfac_bench.curvature.kronecker import SampledFisherBlock

from oracles import DT, dense_fisher, mat, random_stats, vec


def _block(m=40, d_in=4, d_g=3, seed=0):
    abar, g = random_stats(m, d_in, d_g, seed=seed)
    return SampledFisherBlock(abar, g), dense_fisher(abar, g)


def test_scaling_is_the_diagonal_of_f_in_the_kronecker_eigenbasis():
    block, f = _block()
    a = block.abar.mT @ block.abar / block.m
    g = block.g.mT @ block.g / block.m
    q_a, q_g = kronecker_eigenbasis(a, g)
    q = torch.kron(q_a, q_g)                       # a-major, like dense_fisher
    diagonal = torch.diagonal(q.mT @ f @ q)
    s = eigenbasis_scaling(block, q_a, q_g)        # (d_g, d_a)
    d_g, d_a = s.shape
    for i_a in range(d_a):                         # entry (i_g, i_a) scales q_A,i_a (x) q_G,i_g
        for i_g in range(d_g):
            assert s[i_g, i_a] == pytest.approx(float(diagonal[i_a * d_g + i_g]), rel=1e-12, abs=1e-14)
    # and the eigenvectors really are KFAC's: Q^T (A (x) G) Q is diagonal
    kfac = q.mT @ torch.kron(a, g) @ q
    assert torch.allclose(kfac, torch.diag(torch.diagonal(kfac)), atol=1e-12)


def test_dense_form_and_damped_solve_match_the_dense_inverse():
    block, _ = _block(seed=1)
    est = fit_ekfac(block)
    dense = est.to_dense()
    q = torch.kron(est.q_a, est.q_g)
    assert torch.allclose(dense, q @ torch.diag(torch.diagonal(q.mT @ dense @ q)) @ q.mT, atol=1e-12)
    damping = 0.3
    x = torch.randn(block.shape_g, block.shape_a, dtype=DT, generator=torch.Generator().manual_seed(2))
    expected = mat(torch.linalg.solve(dense + damping * torch.eye(dense.shape[0], dtype=DT), vec(x)),
                   block.shape_g, block.shape_a)
    inverse = est.damped_inverse(damping)
    assert torch.allclose(inverse.solve(x), expected, rtol=1e-10, atol=1e-12)
    weight, bias = inverse.solve_with_bias(x[:, :-1], x[:, -1])   # [dW | db], bias column last
    assert torch.allclose(torch.cat([weight, bias[:, None]], dim=1), expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(inverse.dense_inverse(), torch.linalg.inv(dense + damping * torch.eye(dense.shape[0], dtype=DT)),
                          rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        est.damped_inverse(0.0)


def test_error_1_never_above_kfac_on_the_same_batch():
    for seed in range(6):
        block, f = _block(m=25, d_in=3, d_g=4, seed=seed)
        a, g = block.kfac_factors()
        est = fit_ekfac(block)
        ekfac = torch.linalg.norm(f - est.to_dense())
        kfac = torch.linalg.norm(f - torch.kron(a, g))
        assert ekfac <= kfac + 1e-12, seed
        assert ekfac < 0.999 * kfac, seed                 # strictly better on correlated statistics
        # the projection identity: ||F - F_hat||^2 = ||F||^2 - ||S||^2, and the spectrum is S
        assert ekfac_frobenius_error_sq(float(f.square().sum()), est) == pytest.approx(float(ekfac) ** 2, rel=1e-9)
        assert torch.allclose(est.spectrum(), torch.linalg.eigvalsh(est.to_dense()).flip(0), atol=1e-12)


def test_state_round_trip():
    block, _ = _block(seed=3)
    est = fit_ekfac(block)
    again = EigenbasisDiagonal.from_state(est.state())
    assert torch.equal(again.to_dense(), est.to_dense())


# ------------------------------------------------------------------ the method in training
from kfac_bench.curvature import EKFAC, FittedEstimate, MeasurableEstimate, get_likelihood  # noqa: E402
from kfac_bench.curvature.ekfac import EigenbasisBlock  # noqa: E402
from kfac_bench.curvature.metrics import FisherReference, fisher_error  # noqa: E402
from kfac_bench.curvature.stats import collect_statistics  # noqa: E402
from kfac_bench.models import build_mlp  # noqa: E402
from kfac_bench.optim import EKFAC as EKFACOptimizer  # noqa: E402


def _dense_basis(a, g):
    """KFAC's eigenbasis, dense: ``Q = Q_A (x) Q_G`` (a-major, like dense_fisher)."""
    return torch.kron(torch.linalg.eigh(a)[1], torch.linalg.eigh(g)[1])


def _diag_in(q, f):
    """``Q diag(diag(Q^T F Q)) Q^T``: the best diagonal of ``F`` in the basis ``Q``, and that diagonal."""
    s = torch.diagonal(q.mT @ f @ q)
    return q @ torch.diag(s) @ q.mT, s


def _stats(model, x):
    """Per-example statistics of the empirical Fisher (real targets: no sampling, so the oracle sees
    what the optimizer saw): (abar, g, A, G, dense F) per Linear layer."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    blocks = collect_statistics(model, layers, x, get_likelihood("bernoulli"), None, x, "mean")
    out = []
    for b in blocks:
        a, g = b.kfac_factors()
        out.append((a, g, dense_fisher(b.abar, b.g)))
    return layers, out


def test_the_optimizer_step_is_the_dense_damped_solve_through_the_schedule():
    """The schedule before issue 33 (``T_scale="T1"``), T1 = 1, T2 = 2 on a tiny MLP (float64, no
    momentum, no KL clip, empirical Fisher): step 1 fits the batch (its own basis); step 2 averages the
    factors and the scaling (rho = 1/2) in that basis and still uses step 1's inverse; step 3 averages
    again (rho = 2/3), then refreshes the basis, carrying the averaged estimate over as its diagonal in
    the new basis. Every step against dense matrices."""
    damping, lr = 1e-2, 0.1
    model = build_mlp([6, 4, 6], "tanh", torch.Generator().manual_seed(0)).double()
    opt = EKFACOptimizer(model, lr=lr, damping=damping, T1=1, T2=2, momentum=0.0, kl_clip=None,
                         fisher="empirical", T_scale="T1")
    data = torch.rand(3, 10, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    state = None    # per layer: (A, G, Q, F_hat) of the oracle's estimate, and Q, F_hat of its inverse
    for step, x in enumerate(data):
        layers, stats = _stats(model, x)
        opt.zero_grad(set_to_none=True)
        get_likelihood("bernoulli").batch_loss(model(x), x).backward()
        grads = [opt.layer_gradient(layer).clone() for layer in layers]
        before = [torch.cat([l.weight, l.bias[:, None]], 1).detach().clone() for l in layers]
        rho = min(1 - 1 / (step + 1), 0.95)
        new_state = []
        for i, (a_b, g_b, f_b) in enumerate(stats):
            if state is None:
                q = _dense_basis(a_b, g_b)
                a, g, est = a_b, g_b, _diag_in(q, f_b)[0]
            else:
                a0, g0, q, est0, _ = state[i]
                a, g = rho * a0 + (1 - rho) * a_b, rho * g0 + (1 - rho) * g_b
                est = rho * est0 + (1 - rho) * _diag_in(q, f_b)[0]     # the batch measured in the old basis
            used = est if step != 1 else state[i][4]                    # step 2: no inverse update
            if step == 2:                                               # the basis refreshed, S carried over
                q = _dense_basis(a, g)
                est = used = _diag_in(q, est)[0]
            new_state.append((a, g, q, est, used))
        state = new_state
        opt.step(targets=x)
        for i, layer in enumerate(layers):
            n = state[i][4].shape[0]
            direction = torch.linalg.solve(state[i][4] + damping * torch.eye(n, dtype=DT), vec(grads[i]))
            after = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
            expected = before[i] - lr * mat(direction, *grads[i].shape)
            assert torch.allclose(after, expected, rtol=1e-9, atol=1e-12), (step, i)
            assert torch.allclose(opt.blocks[i].to_dense(), state[i][3], atol=1e-10), (step, i)
    assert all(isinstance(b, EigenbasisBlock) and not b.approximation.stale for b in opt.blocks)
    opt.close()


def test_the_basis_refresh_keeps_the_diagonal_of_the_old_estimate():
    block, _ = _block(seed=4)
    other, f2 = _block(seed=5)
    est = fit_ekfac(block).averaged(other, 0.5)
    assert est.stale and torch.equal(est.q_a, fit_ekfac(block).q_a)
    new = est.refreshed()
    q = _dense_basis(est.a, est.g)
    expected, s = _diag_in(q, est.to_dense())
    assert torch.allclose(new.to_dense(), expected, atol=1e-12)
    assert float(new.scaling.sum()) == pytest.approx(float(est.scaling.sum()), rel=1e-12)   # trace kept
    assert new.refreshed() is new and not new.stale


def test_the_averaging_options_are_one_update_and_the_estimate_round_trips():
    block, _ = _block(seed=6)
    other, _ = _block(seed=7)
    fits = []
    for averaging in ("fisher", "factors"):
        est = EKFAC().new_estimate()
        est.update(block, 0.0, averaging)
        est.update(other, 0.5, averaging)
        stale = EKFAC().new_estimate()          # a checkpoint between a statistics and an inverse update
        stale.load_state(est.state())
        assert stale.approximation.stale and torch.equal(stale.to_dense(), est.to_dense())
        est.invert(1e-2)
        stale.invert(1e-2)
        assert torch.equal(stale.inverse.dense_inverse(), est.inverse.dense_inverse())
        fits.append(est)
        again = EKFAC().new_estimate()
        again.load_state(est.state())
        assert torch.equal(again.to_dense(), est.to_dense())
        assert (again.scaling_updates, again.updates) == (est.scaling_updates, est.updates) == (1, 2)
        before_issue_33 = {k: v for k, v in est.state().items() if k != "scaling_updates"}
        again.load_state(before_issue_33)                   # its scaling came with every statistics update
        assert again.scaling_updates == 2
        assert torch.equal(again.solve(block.g.mT @ block.abar), est.solve(block.g.mT @ block.abar))
    assert torch.equal(fits[0].to_dense(), fits[1].to_dense())
    with pytest.raises(ValueError, match="averaging"):
        fits[0].update(block, 0.5, "neither")


# ----------------------------------------- the scaling on its own schedule (issue 33, T_scale)
from torch.func import functional_call, grad, vmap  # noqa: E402

from kfac_bench.curvature.kronecker import SampledFisherBlock as RowBlock  # noqa: E402
from kfac_bench.curvature.spatial import SpatialFisherBlock  # noqa: E402


def _per_example_gradients(model, layers, x):
    """``DW_n = [dW_n | db_n]`` (N, d_g, d_a) of every Linear layer, each example's own loss (real
    targets, per-element mean) differentiated by ``torch.func`` -- no code of the package's statistics --
    and each layer's inputs ``a_bar_n = (a_n, 1)`` (N, d_a), by forward hooks."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    name = {id(p): k for k, p in model.named_parameters()}
    likelihood = get_likelihood("bernoulli")

    def loss(p, xn):
        return likelihood.per_example_loss(functional_call(model, p, (xn[None],)), xn[None], "mean").sum()

    per_example = vmap(grad(loss), in_dims=(None, 0))(params, x)
    inputs = []
    hooks = [layer.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach())) for layer in layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    dws = [torch.cat([per_example[name[id(l.weight)]], per_example[name[id(l.bias)]][..., None]], dim=-1)
           for l in layers]
    abars = [torch.cat([a, torch.ones(a.shape[0], 1, dtype=DT)], dim=1) for a in inputs]
    return dws, abars


class ScalingOracle:
    """One Linear layer's EKFAC, densely: the factors averaged every T1, the scaling
    ``diag(Q^T F_batch Q)`` of every step's ``F_batch = mean_n vec(DW_n) vec(DW_n)^T`` averaged in the
    basis ``Q = Q_A (x) Q_G`` of the last T2 refresh, carried into the new basis as the diagonal of the
    old estimate there; every running average ``rho = min(1 - 1/k, 0.95)``."""

    def __init__(self, dw, abar):
        self.a, self.g = abar.mT @ abar / len(abar), dw[:, :, -1].mT @ dw[:, :, -1] / len(dw)   # db_n = g_n
        self.q = _dense_basis(self.a, self.g)
        self.s = self.measured(dw)
        self.factor_updates = self.scaling_updates = 1

    def measured(self, dw):
        rows = dw.mT.reshape(len(dw), -1)                                     # vec(DW_n): columns stacked
        return torch.diagonal(self.q.mT @ (rows.mT @ rows / len(dw)) @ self.q)

    def step(self, t, dw, abar, T1, T2):
        self.scaling_updates += 1
        rho = min(1 - 1 / self.scaling_updates, 0.95)
        self.s = rho * self.s + (1 - rho) * self.measured(dw)                 # in the current basis
        if t % T1 == 0:
            self.factor_updates += 1
            rho = min(1 - 1 / self.factor_updates, 0.95)
            self.a = rho * self.a + (1 - rho) * abar.mT @ abar / len(abar)
            self.g = rho * self.g + (1 - rho) * dw[:, :, -1].mT @ dw[:, :, -1] / len(dw)
        if t % T2 == 0:
            q = _dense_basis(self.a, self.g)
            self.s = torch.diagonal(q.mT @ self.q @ torch.diag(self.s) @ self.q.mT @ q)
            self.q = q

    def scaling(self, d_g, d_a):
        """As the code lays it out, ``S[i, j]`` for the direction ``q_A,j (x) q_G,i``."""
        return self.s.reshape(d_a, d_g).mT

    def dense(self):
        return self.q @ torch.diag(self.s) @ self.q.mT


def test_the_per_step_scaling_is_the_running_average_of_the_dense_diagonal_in_the_last_basis():
    """T_scale = 1 (George et al. 2018, Algorithm 1), T1 = 2, T2 = 3, seven steps on a tiny MLP in float64
    (empirical Fisher: the oracle sees the optimizer's targets): after every step each layer's scaling is
    the oracle's running average of ``diag(Q^T E[vec(DW) vec(DW)^T] Q)`` from ``torch.func`` per-example
    gradients, in the basis of the last T2 refresh, to 1e-10 relative; and the step is the dense damped
    solve with it (the inverse rebuilt every step, the basis only every T2)."""
    damping, lr, T1, T2 = 1e-2, 0.1, 2, 3
    model = build_mlp([6, 4, 6], "tanh", torch.Generator().manual_seed(0)).double()
    opt = EKFACOptimizer(model, lr=lr, damping=damping, T1=T1, T2=T2, momentum=0.0, kl_clip=None,
                         fisher="empirical", T_scale=1)
    layers = opt.layers
    oracles = None
    for t, x in enumerate(torch.rand(7, 10, 6, generator=torch.Generator().manual_seed(1), dtype=DT)):
        dws, abars = _per_example_gradients(model, layers, x)
        if oracles is None:
            oracles = [ScalingOracle(dw, abar) for dw, abar in zip(dws, abars)]
        else:
            for oracle, dw, abar in zip(oracles, dws, abars):
                oracle.step(t, dw, abar, T1, T2)
        opt.zero_grad(set_to_none=True)
        get_likelihood("bernoulli").batch_loss(model(x), x).backward()
        before = [torch.cat([l.weight, l.bias[:, None]], 1).detach().clone() for l in layers]
        opt.step(targets=x)
        for i, (layer, oracle, dw) in enumerate(zip(layers, oracles, dws)):
            d_g, d_a = dw.shape[1:]
            scaling = opt.blocks[i].approximation.scaling
            assert torch.allclose(scaling, oracle.scaling(d_g, d_a), rtol=1e-10, atol=0), (t, i)
            n = d_g * d_a
            direction = torch.linalg.solve(oracle.dense() + damping * torch.eye(n, dtype=DT), vec(dw.mean(0)))
            after = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
            assert torch.allclose(after, before[i] - lr * mat(direction, d_g, d_a), rtol=1e-9, atol=1e-12), (t, i)
    assert [b.scaling_updates for b in opt.blocks] == [7, 7] and [b.updates for b in opt.blocks] == [4, 4]
    opt.close()


def _train(steps=12, **options):
    """``steps`` steps of EKFAC on a tiny MLP (float64, sampled Fisher, seed 0): per step, whether every
    block's scaling changed, whether none did, whether every factor A did, and the phases timed."""
    model = build_mlp([6, 4, 3, 6], "tanh", torch.Generator().manual_seed(0)).double()
    opt = EKFACOptimizer(model, lr=0.1, damping=1e-2, record_timings=True, **options)

    def moved(before, attribute):
        return [old is None or not torch.equal(old, getattr(b.approximation, attribute))
                for old, b in zip(before, opt.blocks)]
    history = []
    for x in torch.rand(steps, 12, 6, generator=torch.Generator().manual_seed(1), dtype=DT):
        scalings = [b.approximation and b.approximation.scaling for b in opt.blocks]
        factors = [b.approximation and b.approximation.a for b in opt.blocks]
        opt.zero_grad(set_to_none=True)
        get_likelihood("bernoulli").batch_loss(model(x), x).backward()
        report = opt.train_step()
        history.append({"scaling": all(moved(scalings, "scaling")), "unchanged": not any(moved(scalings, "scaling")),
                        "factors": all(moved(factors, "a")), "phases": set(report.phases)})
    return history, opt


def test_T_scale_5_re_estimates_the_scaling_on_steps_0_5_10_only():
    """T_scale = 5 with T1 = 3 and no basis refresh after step 0 (T2 = 100): the scaling changes on steps
    0, 5 and 10 and on no other (the factor updates on 3, 6, 9 leave it alone); the statistics pass of a
    scaling-only step is timed as ``scaling``, not ``statistics`` (it is a regular step)."""
    history, opt = _train(T_scale=5, T1=3, T2=100)
    assert [t for t, h in enumerate(history) if h["scaling"]] == [0, 5, 10]
    assert all(h["unchanged"] for t, h in enumerate(history) if t not in (0, 5, 10))
    assert [t for t, h in enumerate(history) if h["factors"]] == [0, 3, 6, 9]
    assert [t for t, h in enumerate(history) if "scaling" in h["phases"]] == [0, 5, 10]
    assert [t for t, h in enumerate(history) if "statistics" in h["phases"]] == [0, 3, 6, 9]
    assert all(b.scaling_updates == 3 for b in opt.blocks)
    opt.close()


# HEAD before issue 33 (commit 3892393), float64 on CPU: the checksums of _checksums() after 8 steps of
# EKFAC with T1 = 2, T2 = 3 (statistics on 0, 2, 4, 6; basis refreshes on 0, 3, 6) -- the old code's
# numbers, which T_scale="T1" must give bit for bit
BEFORE_ISSUE_33 = {
    "scaling": [["0x1.a7548c9a31384p-5", "0x1.5132245a58adfp+0"], ["0x1.dad409b5daf37p-6", "0x1.701c76b4733d1p-2"],
                ["0x1.cdc51b1fd895ep-5", "0x1.b68a437d89ac8p-1"]],
    "params": [["-0x1.0bcd7f1b90edfp-3", "0x1.f2186588960d1p+3"], ["0x1.16e49c3955b48p-1", "0x1.465954959505ep+0"],
               ["-0x1.1950ea4e6a656p+1", "-0x1.a20b061844882p+4"], ["-0x1.f5a17fcaa4ad2p-3", "-0x1.956347e671eb9p-1"],
               ["0x1.683790ce0b8c7p+0", "0x1.4322561957e39p+4"], ["0x1.3ebd99a0daba0p-3", "0x1.0c24a617b3729p+0"]],
}


def _checksums(opt):
    """Two float64 sums per tensor (plain and index-weighted), as exact hex: every block's scaling and
    every parameter of the model."""
    def pair(t):
        flat = t.detach().reshape(-1)
        weights = torch.arange(1, flat.numel() + 1, dtype=flat.dtype)
        return [float(flat.sum()).hex(), float((flat * weights).sum()).hex()]
    return {"scaling": [pair(b.approximation.scaling) for b in opt.blocks],
            "params": [pair(p) for p in opt.model.parameters()]}


def test_T_scale_T1_is_the_schedule_before_issue_33_bit_for_bit(one_thread):
    _, old = _train(steps=8, T1=2, T2=3, T_scale="T1")
    assert _checksums(old) == BEFORE_ISSUE_33
    _, new = _train(steps=8, T1=2, T2=3)                  # the default, T_scale = 1, is another schedule
    assert _checksums(new)["scaling"] != BEFORE_ISSUE_33["scaling"]
    old.close()
    new.close()


@pytest.mark.parametrize("T_scale", [0, -1, 2.5, True, "T2", None])
def test_an_invalid_T_scale_is_rejected(T_scale):
    model = build_mlp([6, 4, 6], "tanh", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"T_scale must be an integer >= 1 or 'T1'"):
        EKFACOptimizer(model, T_scale=T_scale)


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(),
                                       torch.nn.ConvTranspose2d(3, 2, 2, stride=2))

    def forward(self, x):
        return self.net(x.reshape(-1, 2, 4, 4)).reshape(x.shape[0], -1)


@pytest.mark.parametrize("spatial", ["independent", "reduce", "exact", "banded"])
def test_the_per_step_scaling_of_a_convolution_is_its_treatments_estimate(spatial):
    """On every treatment of a convolution's positions the per-step scaling is the same estimator as
    the statistics update's: the step's block of that treatment (rows for independent and reduce, the
    position-pair block for exact and banded), projected by its own ``eigenbasis_second_moment`` on the
    current basis and averaged in (rho = 1/2 at the second estimate)."""
    torch.manual_seed(0)
    model = TinyCNN().double()
    opt = EKFACOptimizer(model, lr=0.1, damping=1e-2, T1=100, T2=100, fisher="empirical", spatial=spatial)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 6, 32, generator=gen, dtype=DT), torch.rand(2, 6, 128, generator=gen, dtype=DT)
    likelihood = get_likelihood("bernoulli")
    for t in range(2):
        if t == 1:   # the step's statistics, and the estimate and basis they are measured in
            first = [b.approximation.scaling.clone() for b in opt.blocks]
            basis = [(b.approximation.q_a, b.approximation.q_g) for b in opt.blocks]
            batches = collect_statistics(model, opt.captures, x[t], likelihood, None, y[t], "mean")
        opt.zero_grad(set_to_none=True)
        likelihood.batch_loss(model(x[t]), y[t]).backward()
        opt.step(targets=y[t])
    kinds = {"independent": RowBlock, "reduce": RowBlock, "exact": SpatialFisherBlock, "banded": SpatialFisherBlock}
    for block, batch, s0, (q_a, q_g) in zip(opt.blocks, batches, first, basis):
        expected = 0.5 * s0 + 0.5 * batch.eigenbasis_second_moment(q_a, q_g)
        assert torch.allclose(block.approximation.scaling, expected, rtol=1e-12, atol=0)
        assert block.scaling_updates == 2 and block.updates == 1
    # the convolutions' blocks are the treatment's (a ConvTranspose2d's bias block has rows whatever it is)
    assert [type(b) for b in batches] == [kinds[spatial], kinds[spatial], RowBlock]
    opt.close()


def test_the_bench_times_ekfac_under_both_scaling_schedules(tmp_path):
    """``bench.T_scale=[1, T1]``: EKFAC once per schedule in the same interleaved rounds, beside KFAC; the
    per-step scaling is inside EKFAC's regular step (``scaling_ms``), the T1 schedule has none."""
    import math
    import pandas as pd
    from kfac_bench.studies.bench import run_bench
    tiny = {"name": "tiny_bce", "layers": [12, 8, 3, 8, 12], "batch_size": 16, "likelihood": "bernoulli"}
    cfg = {"seed": 0, "device": "cpu", "bench": {"datasets": [tiny], "methods": ["kfac", "ekfac"], "T_scale": [1, "T1"],
                                                  "steps": 2, "rounds": 2, "update_rounds": 1, "n_batches": 2,
                                                  "product_target_ms": 0.5, "refit": False}}
    df = run_bench(cfg, tmp_path)
    assert list(zip(df["method"], df["T_scale"])) == [("sgd", None), ("kfac", None), ("ekfac", 1), ("ekfac", "T1")]
    per_step, with_statistics = df.iloc[2], df.iloc[3]
    assert per_step["scaling_ms"] > 0 and math.isnan(with_statistics["scaling_ms"])
    for row in (per_step, with_statistics):
        assert row["step_ms"] > 0 and math.isfinite(row["ratio_kfac"]) and row["timed_steps"] == 4
    layers = pd.read_csv(tmp_path / "bench_layers.csv")
    assert sorted(layers.loc[layers["method"] == "ekfac", "T_scale"].unique()) == ["1", "T1"]
    with pytest.raises(ValueError, match="bench.T_scale"):
        run_bench({**cfg, "bench": {**cfg["bench"], "T_scale": [1, 1]}}, tmp_path)


# ------------------------------------------------------------------------------- Figure 1
@pytest.mark.parametrize("own", [True, False])
def test_the_metrics_errors_are_the_dense_ones(own):
    """Error 1 and Error 2 of ``fisher_error`` (the estimate's own routes: ``<S, diag(Q^T F Q)>``,
    ``||S||^2``, the entries of S) against dense matrices and eigvalsh; ``own=False``: an estimate
    from other statistics (no projection identity to lean on)."""
    block, f = _block(m=12, d_in=4, d_g=3, seed=8)
    est = fit_ekfac(block if own else _block(m=12, d_in=4, d_g=3, seed=9)[0])
    assert isinstance(est, FittedEstimate) and isinstance(est, MeasurableEstimate)
    err = fisher_error(FisherReference.from_block(block), est)
    dense = est.to_dense()
    e1 = float(torch.linalg.norm(f - dense) / torch.linalg.norm(f))
    lam, mu = torch.linalg.eigvalsh(f).flip(0), torch.linalg.eigvalsh(dense).flip(0)
    e2 = float(torch.linalg.norm(lam - mu) / torch.linalg.norm(lam))
    assert err["error_frobenius"] == pytest.approx(e1, rel=1e-9)
    assert err["error_spectrum"] == pytest.approx(e2, rel=1e-9)
    assert err["spectrum_solver"] == "diagonal" and est.kronecker_rank is None
