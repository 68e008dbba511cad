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
    """T1 = 1, T2 = 2 on a tiny MLP (float64, no momentum, no KL clip, empirical Fisher): step 1 fits
    the batch (its own basis); step 2 averages the factors and the scaling (rho = 1/2) in that basis and
    still uses step 1's inverse; step 3 averages again (rho = 2/3), then refreshes the basis, carrying
    the averaged estimate over as its diagonal in the new basis. Every step against dense matrices."""
    damping, lr = 1e-2, 0.1
    model = build_mlp([6, 4, 6], "tanh", torch.Generator().manual_seed(0)).double()
    opt = EKFACOptimizer(model, lr=lr, damping=damping, T1=1, T2=2, momentum=0.0, kl_clip=None,
                         fisher="empirical")
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
        assert torch.equal(again.solve(block.g.mT @ block.abar), est.solve(block.g.mT @ block.abar))
    assert torch.equal(fits[0].to_dense(), fits[1].to_dense())
    with pytest.raises(ValueError, match="averaging"):
        fits[0].update(block, 0.5, "neither")


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
