"""The authors' code behaviours (kfac_bench/optim/authors_code.py): each option does what its
docstring says, against dense float64 oracles where it touches the mathematics; the default stays
the paper's specification."""
import numpy as np
import pytest
import scipy.linalg
import torch

from kfac_bench.registry import make_approximation
from kfac_bench.curvature.inverse import authors_damped_inverse, damped_inverse
from kfac_bench.curvature.kronecker import KroneckerSum, SampledFisherBlock
from kfac_bench.models import build_mlp
from kfac_bench.optim import authors_code
from kfac_bench.registry import OPTIMIZERS
from kfac_bench.optim.factory import build_optimizer

from oracles import DT, best_rank_r_of_zigzag, dense_fisher, random_stats, vec
from test_optim import tiny_autoencoder, tiny_data, train_steps


def _spd(n, seed, shift=0.1):
    x = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return x @ x.T / n + shift * torch.eye(n, dtype=DT)


def _sym(n, seed):
    x = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return 0.5 * (x + x.T)


def _matrix_abs_whitened(m, c, damping):
    """C' = M_h^{-1} |M_h C M_h| M_h^{-1} with M_h = (M + lam I)^{-1/2}, by scipy's sqrtm (|X| = sqrt(X^2)):
    an independent route to the matrix the authors' rank-2 preconditioner inverts."""
    m_d = m.numpy() + damping * np.eye(m.shape[0])
    half = np.real(scipy.linalg.sqrtm(m_d))
    m_h = np.linalg.inv(half)
    w = m_h @ c.numpy() @ m_h
    absw = np.real(scipy.linalg.sqrtm(w @ w))
    return torch.from_numpy(half @ absw @ half)


def test_authors_rank1_damping_is_sqrt_lambda_without_pi():
    a, g = _spd(4, 0) * 7.0, _spd(3, 1) * 0.01     # very different traces: pi would matter
    lam = 1e-2
    inv = authors_damped_inverse(KroneckerSum([(a, g)]), lam)
    dense = torch.kron(a + lam ** 0.5 * torch.eye(4, dtype=DT), g + lam ** 0.5 * torch.eye(3, dtype=DT))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert torch.allclose(vec(inv.solve(x)), torch.linalg.solve(dense, vec(x)), rtol=1e-10, atol=1e-12)
    # and it differs from the paper's pi-damping on this example
    paper = damped_inverse(KroneckerSum([(a, g)]), lam)
    assert not torch.allclose(vec(paper.solve(x)), vec(inv.solve(x)), rtol=1e-3)


def test_authors_rank2_damping_with_psd_second_term_is_a_dense_solve():
    """PSD second term: the absolute values change nothing, the preconditioner is the exact inverse
    of (A + lam I) (x) (G + lam I) + C (x) D -- lam itself, not sqrt(lam), on each factor."""
    a, g, c, d = _spd(4, 3), _spd(3, 4), _spd(4, 5, 0.0), _spd(3, 6, 0.0)
    lam = 3e-2
    inv = damped_inverse(KroneckerSum([(a, g), (c, d)]), lam, convention="authors")
    dense = torch.kron(a + lam * torch.eye(4, dtype=DT), g + lam * torch.eye(3, dtype=DT)) + torch.kron(c, d)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(7), dtype=DT)
    assert torch.allclose(vec(inv.solve(x)), torch.linalg.solve(dense, vec(x)), rtol=1e-9, atol=1e-12)


def test_authors_rank2_damping_with_indefinite_second_term_uses_absolute_values():
    a, g, c, d = _spd(4, 8), _spd(3, 9), _sym(4, 10), _sym(3, 11)
    lam = 1e-2
    inv = damped_inverse(KroneckerSum([(a, g), (c, d)]), lam, convention="authors")
    c_abs, d_abs = _matrix_abs_whitened(a, c, lam), _matrix_abs_whitened(g, d, lam)
    dense = torch.kron(a + lam * torch.eye(4, dtype=DT), g + lam * torch.eye(3, dtype=DT)) + torch.kron(c_abs, d_abs)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(12), dtype=DT)
    assert torch.allclose(vec(inv.solve(x)), torch.linalg.solve(dense, vec(x)), rtol=1e-8, atol=1e-12)
    # the signed matrix would give another answer: the absolute value is doing something here
    signed = torch.kron(a + lam * torch.eye(4, dtype=DT), g + lam * torch.eye(3, dtype=DT)) + torch.kron(c, d)
    assert not torch.allclose(vec(inv.solve(x)), torch.linalg.solve(signed, vec(x)), rtol=1e-3)


@pytest.mark.parametrize("route", ["direct", "gram"])
def test_leading_second_term_repeats_the_kpsvd_term(route):
    abar, g = random_stats(12, 3, 4, seed=21)
    block = SampledFisherBlock(abar, g)
    kpsvd = make_approximation("kpsvd", tol=1e-12, max_iter=20000, route=route).fit(block).approximation
    defl = make_approximation("deflation", tol=1e-12, max_iter=20000, route=route, second_term="leading").fit(block)
    (r1, s1), (r2, s2) = defl.approximation.terms
    assert torch.allclose(r1, r2) and torch.allclose(s1, s2)
    assert torch.allclose(torch.kron(r1, s1), kpsvd.to_dense(), atol=1e-9)
    # the paper's deflation differs: its second term is the best rank-1 of the remainder
    f = dense_fisher(abar, g)
    best2, _ = best_rank_r_of_zigzag(f, 4, 4, 2)
    spec = make_approximation("deflation", tol=1e-12, max_iter=20000, route=route).fit(block).approximation
    assert torch.allclose(spec.to_dense(), best2, atol=1e-8)
    assert not torch.allclose(defl.approximation.to_dense(), best2, atol=1e-3)


@pytest.mark.parametrize("route", ["direct", "gram"])
def test_leading_correction_of_kfac_corrected_is_the_kpsvd_term(route):
    abar, g = random_stats(12, 3, 4, seed=22)
    block = SampledFisherBlock(abar, g)
    kpsvd = make_approximation("kpsvd", tol=1e-12, max_iter=20000, route=route).fit(block).approximation
    res = make_approximation("kfac_corrected", tol=1e-12, max_iter=20000, route=route,
                             second_term="leading").fit(block).approximation
    kfac = make_approximation("kfac").fit(block).approximation
    (a, gk), (c, d) = res.terms
    assert torch.allclose(torch.kron(a, gk), kfac.to_dense())
    assert torch.allclose(torch.kron(c, d), kpsvd.to_dense(), atol=1e-9)


def test_unknown_second_term_is_rejected():
    with pytest.raises(ValueError, match="second_term"):
        make_approximation("deflation", second_term="banana")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_frozen_schedule_fits_once_and_never_again(name):
    torch.manual_seed(0)
    model = tiny_autoencoder()
    opt = OPTIMIZERS[name](model, lr=0.05, damping=1e-2, T1=2, T2=2, curvature_schedule="frozen_after_first")
    fits, inverses = [], []
    real_fit, real_inv = opt.update_curvature, opt.update_inverses
    opt.update_curvature = lambda *a, **k: (fits.append(opt.steps), real_fit(*a, **k))
    opt.update_inverses = lambda *a, **k: (inverses.append(opt.steps), real_inv(*a, **k))
    train_steps(opt, model, tiny_data(), 9)
    assert fits == [0] and inverses == [0]
    assert not opt.curvature_due() and not opt.inverse_due()
    # the periodic (paper) schedule refits every T1 steps
    model2 = tiny_autoencoder()
    opt2 = OPTIMIZERS[name](model2, lr=0.05, damping=1e-2, T1=2, T2=2)
    fits2 = []
    real2 = opt2.update_curvature
    opt2.update_curvature = lambda *a, **k: (fits2.append(opt2.steps), real2(*a, **k))
    train_steps(opt2, model2, tiny_data(), 9)
    assert fits2 == [0, 2, 4, 6, 8]


def test_quarter_batch_with_replacement_uses_drawn_rows():
    """Statistics of stats_sampling=with_replacement are those of the drawn rows (repeats allowed)."""
    torch.manual_seed(0)
    model = tiny_autoencoder().double()
    x = tiny_data(16).double()
    opt = OPTIMIZERS["kfac"](model, lr=0.1, T1=1, T2=1, stats_fraction=0.25, stats_sampling="with_replacement",
                            fisher="empirical", seed=3)
    seen = []
    import kfac_bench.optim.kronecker_optimizer as ko
    real = ko.collect_statistics
    ko.collect_statistics = lambda model_, layers, inputs, *a, **k: (seen.append(inputs.clone()), real(model_, layers, inputs, *a, **k))[1]
    try:
        model(x)
        opt.update_curvature(targets=x)
    finally:
        ko.collect_statistics = real
    rows = seen[0]
    assert rows.shape == (4, 12)
    expected_idx = torch.randint(16, (4,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(rows, x[expected_idx])


def test_factor_averaging_averages_each_factor_with_the_authors_counter():
    torch.manual_seed(0)
    model = tiny_autoencoder().double()
    x = tiny_data(48).double()
    opt = OPTIMIZERS["kpsvd"](model, lr=1e-9, T1=1, T2=1, averaging="factors", tol=1e-12, max_iter=20000,
                             fisher="empirical", alpha=0.95)
    assert [opt.averaging_weight(k) for k in (1, 2, 3, 4)] == [0.0, 0.0, 0.5, pytest.approx(2 / 3)]
    for step in range(4):
        xb = x[step * 12:(step + 1) * 12]
        opt.zero_grad()
        model(xb)
        before = opt.blocks[0].approximation
        # the batch's own KPSVD factors (what the authors' power_svd_mlp returns for the batch alone)
        from kfac_bench.curvature.stats import collect_statistics
        blocks = collect_statistics(model, opt.layers, xb, opt.likelihood, None, xb)
        alone = make_approximation("kpsvd", tol=1e-12, max_iter=20000).fit(blocks[0]).approximation
        opt.update_curvature(targets=xb)
        after = opt.blocks[0].approximation
        rho = opt.averaging_weight(step + 1)
        if before is None or rho == 0.0:
            expected = alone.terms[0]
        else:
            expected = tuple(rho * o + (1 - rho) * n for o, n in zip(before.terms[0], alone.terms[0]))
        assert torch.allclose(after.terms[0][0], expected[0], atol=1e-9)
        assert torch.allclose(after.terms[0][1], expected[1], atol=1e-9)


def test_nesterov_sgd_and_reseeded_init():
    model = build_mlp([6, 4, 6], "relu", torch.Generator().manual_seed(0))
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, model, "bernoulli")
    assert opt.param_groups[0]["nesterov"] is True
    with pytest.raises(ValueError, match="nesterov"):
        build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": True}, model, "bernoulli")
    # reseeded: both layers draw the same stream, so a 4x6 and a 6x4 layer share their numbers
    re = build_mlp([6, 4, 6], "relu", torch.Generator().manual_seed(5), init="reseeded_per_layer", seed=0)
    w1, w2 = re[0].weight.detach(), re[2].weight.detach()
    assert torch.equal(w1.reshape(-1), w2.reshape(-1))      # the same bound sqrt(6/10) for both
    torch.manual_seed(0)
    ref = torch.empty(4, 6)
    torch.nn.init.xavier_uniform_(ref)
    assert torch.allclose(w1, ref)                           # what the authors' initializer gives
    plain = build_mlp([6, 4, 6], "relu", torch.Generator().manual_seed(0))
    assert not torch.equal(plain[0].weight.reshape(-1), plain[2].weight.reshape(-1))


def test_preset_expands_per_method_and_rejects_unknown_names():
    assert authors_code.behaviour_names("all") == list(authors_code.BEHAVIOURS)
    assert authors_code.behaviour_names([]) == []
    with pytest.raises(ValueError, match="unknown behaviour"):
        authors_code.behaviour_names(["frozen_curvatur"])
    lanczos = authors_code.expand({"name": "lanczos", "lr": 0.1, "weight_decay": 0.0}, "all")
    assert lanczos["curvature_schedule"] == "frozen_after_first" and lanczos["damping_convention"] == "authors"
    assert lanczos["stats_fraction"] == 0.25 and lanczos["weight_decay"] == 1e-3 and "nesterov" not in lanczos
    sgd = authors_code.expand({"name": "sgd", "lr": 0.3}, "all")
    assert sgd == {"name": "sgd", "lr": 0.3, "weight_decay": 1e-3, "nesterov": True}
    adam = authors_code.expand({"name": "adam", "lr": 1e-3}, ["frozen_curvature", "nesterov_sgd", "weight_decay"])
    assert adam == {"name": "adam", "lr": 1e-3}
    assert authors_code.expand({"name": "adam", "lr": 1e-3}, ["first_order_weight_decay"])["weight_decay"] == 1e-3
    assert "weight_decay" not in authors_code.expand({"name": "kfac", "lr": 1e-3}, ["first_order_weight_decay"])
    assert authors_code.model_options("all") == {"init": "reseeded_per_layer"}
    assert authors_code.model_options(["weight_decay"]) == {}
    # every behaviour cites the authors' file
    assert all(".py" in b.source for b in authors_code.BEHAVIOURS.values())


def test_defaults_are_the_specification():
    model = tiny_autoencoder()
    for name, cls in OPTIMIZERS.items():
        opt = cls(model, lr=0.1)
        assert (opt.curvature_schedule, opt.damping_convention, opt.stats_sampling, opt.averaging,
                opt.method.second_term) == ("periodic", "paper", "prefix", "fisher", "deflated")
        opt.close()


def test_unit_variance_gaussian_targets_double_the_sampled_fisher():
    from kfac_bench.curvature.stats import collect_statistics, get_likelihood
    lik = get_likelihood("gaussian")
    z = torch.zeros(200000, dtype=DT)
    gen = torch.Generator().manual_seed(0)
    assert float(lik.sample(z, gen).std()) == pytest.approx(0.5 ** 0.5, rel=1e-2)
    assert float(lik.sample(z, gen, gaussian_std=1.0).std()) == pytest.approx(1.0, rel=1e-2)
    # through the statistics pass: the G-side second moment doubles (the A side is unchanged)
    model = build_mlp([5, 3, 5], "relu", torch.Generator().manual_seed(1)).double()
    x = torch.randn(4000, 5, generator=torch.Generator().manual_seed(2), dtype=DT)
    layers = [model[0], model[2]]
    g_default = collect_statistics(model, layers, x, lik, torch.Generator().manual_seed(3))[1].g
    g_unit = collect_statistics(model, layers, x, lik, torch.Generator().manual_seed(3), gaussian_std=1.0)[1].g
    ratio = float((g_unit ** 2).mean() / (g_default ** 2).mean())
    assert ratio == pytest.approx(2.0, rel=1e-9)    # same noise stream, scaled by sqrt(2)


def test_per_tensor_kl_clip_sums_weight_and_bias_parts_separately():
    import math
    torch.manual_seed(0)
    x = tiny_data(16).double()
    nus = {}
    for terms in ("layer", "tensor"):
        model = tiny_autoencoder().double()
        opt = OPTIMIZERS["kfac"](model, lr=1.0, damping=1e-1, kl_clip=1e-6, momentum=0.0, T1=1, T2=1,
                                 kl_clip_terms=terms)
        from kfac_bench.curvature.stats import get_likelihood
        get_likelihood("bernoulli").batch_loss(model(x), x).backward()
        grads = [opt.layer_gradient(l).clone() for l in opt.layers]
        opt.step()
        deltas = [c.inverse.solve(g) for c, g in zip(opt.blocks, grads)]   # the inverse the step used
        if terms == "layer":
            s = sum(abs(float(torch.sum(d * g))) for d, g in zip(deltas, grads))
        else:
            s = sum(abs(float(torch.sum(d[:, :-1] * g[:, :-1]))) + abs(float(torch.sum(d[:, -1] * g[:, -1])))
                    for d, g in zip(deltas, grads)) + 1e-8
        assert opt.last_nu == pytest.approx(min(1.0, math.sqrt(1e-6 / s)), rel=1e-9)
        nus[terms] = opt.last_nu
    assert nus["tensor"] <= nus["layer"]


def test_behaviours_act_through_the_options_a_method_takes():
    """The registry shape (issue 14): a behaviour names options, each method's registry entry the
    options it takes; nothing in authors_code lists methods."""
    from pathlib import Path

    from kfac_bench.registry import get_method, method_names
    for name in method_names():
        expanded = authors_code.expand({"name": name}, "all")
        assert set(expanded) - {"name"} <= set(get_method(name).options), name
        for b in authors_code.BEHAVIOURS.values():
            assert (b.name in authors_code.applicable(name)) == bool(b.options_for(name) or b.model)
    assert "leading_second_term" in authors_code.applicable("deflation")
    assert "leading_second_term" in authors_code.applicable("kfac_corrected")
    assert "leading_second_term" not in authors_code.applicable("lanczos")
    assert "nesterov_sgd" in authors_code.applicable("sgd") and "nesterov_sgd" not in authors_code.applicable("adam")
    source = Path(authors_code.__file__).read_text()
    # (names in single quotes inside the citations of the authors' code are theirs, not a list)
    assert not [n for n in method_names() if f'"{n}"' in source]
    # an option a method does not take is refused, naming the method's own options
    with pytest.raises(TypeError, match="second_term"):
        OPTIMIZERS["lanczos"](tiny_autoencoder(), lr=0.1, second_term="leading")
