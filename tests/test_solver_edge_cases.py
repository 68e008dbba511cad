"""The solvers at the edges of their arithmetic, against dense float64 oracles: float32 statistics at
extreme scales on the direct route (whose norms used to under/overflow), and blocks that are exactly
one Kronecker product (whose remainder is zero: the solvers must stop and say so)."""
import pytest
import torch

from kfac_bench.curvature.approximations import KFAC
from kfac_bench.registry import make_approximation
from kfac_bench.curvature.kronecker import SampledFisherBlock

from oracles import DT, best_rank_r_of_zigzag, dense_fisher, random_stats

D_IN, D_G, M = 8, 5, 64


def relative(x, y) -> float:
    return float(torch.linalg.norm(x.to(DT) - y.to(DT)) / torch.linalg.norm(y.to(DT)))


def scaled_block(a_scale, g_scale, seed=1):
    """float32 statistics with inputs ~a_scale and gradients ~g_scale (the bias entry stays 1)."""
    abar, g = random_stats(M, D_IN, D_G, seed)
    abar = torch.cat([abar[:, :-1] * a_scale, abar[:, -1:]], dim=1)
    return SampledFisherBlock(abar.float(), (g * g_scale).float())


@pytest.mark.parametrize("a_scale,g_scale", [(1.0, 1e-12), (1e3, 1e7)])
@pytest.mark.parametrize("name", ["kpsvd", "deflation", "lanczos", "kfac_corrected"])
def test_float32_direct_route_at_extreme_scales_matches_the_gram_route_and_the_oracle(name, a_scale, g_scale):
    block = scaled_block(a_scale, g_scale)
    direct = make_approximation(name, route="direct").fit(block)
    gram = make_approximation(name, route="gram").fit(block)
    assert direct.converged and gram.converged
    assert len(direct.approximation.terms) == len(gram.approximation.terms)
    for (a_d, g_d), (a_g, g_g) in zip(direct.approximation.terms, gram.approximation.terms):
        assert relative(a_d, a_g) <= 1e-4 and relative(g_d, g_g) <= 1e-4     # factor by factor, not only products
    # and both are the mathematics: the dense float64 best approximation of the same block (the
    # SVD methods; KFAC-corrected's first term is KFAC's, its second the remainder's best term)
    f = dense_fisher(block.abar.to(DT), block.g.to(DT))
    if name == "kfac_corrected":
        kfac = KFAC().fit(SampledFisherBlock(block.abar.to(DT), block.g.to(DT))).approximation.to_dense()
        best, _ = best_rank_r_of_zigzag(f - kfac, D_IN + 1, D_G, 1)
        best = best + kfac
    else:
        best, _ = best_rank_r_of_zigzag(f, D_IN + 1, D_G, 1 if name == "kpsvd" else 2)
    assert relative(direct.approximation.to(DT).to_dense(), best) <= 1e-4


def exactly_kronecker(kind: str, dtype, seed=2):
    """``g_t = c_t g0``: F = E[c^2 a a^T] (x) g0 g0^T, one Kronecker product (Deflation's and
    Lanczos's remainder is zero); ``g_t = +-g0``: besides, F equals its KFAC approximation
    (KFAC-corrected's remainder is zero)."""
    abar, g = random_stats(M, D_IN, D_G, seed)
    c = torch.randn(M, 1, generator=torch.Generator().manual_seed(seed), dtype=DT)
    c = torch.sign(c) if kind == "kfac" else c
    return SampledFisherBlock(abar.to(dtype), (c * g[:1]).to(dtype))


@pytest.mark.parametrize("seed", [2, 5, 6])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("route", ["direct", "gram"])
@pytest.mark.parametrize("name,kind,solver", [("deflation", "one", "power_2"), ("lanczos", "one", "lanczos"),
                                              ("kfac_corrected", "kfac", "power_2")])
def test_zero_remainder_stops_at_once_and_is_reported(name, kind, solver, route, dtype, seed):
    block = exactly_kronecker(kind, dtype, seed)
    fit = make_approximation(name, route=route).fit(block)
    # not max_iter (1000) on rounding noise. The Gram route's coefficient basis can amplify the
    # remainder's noise (seen: 20 iterations for Deflation, gram, float64, seed 2 on one CPU, 1 on
    # another; the result is the exact zero either way, asserted below)
    assert fit.iterations[solver] < 50
    assert fit.zero_remainder and fit.converged
    assert fit.sigmas[-1] == 0.0
    a2, g2 = fit.approximation.terms[1]
    assert float(a2.abs().max()) == 0.0 and float(g2.abs().max()) == 0.0
    f = dense_fisher(block.abar.to(DT), block.g.to(DT))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert relative(fit.approximation.to(DT).to_dense(), f) <= tol      # the first term is all of F


@pytest.mark.parametrize("route", ["direct", "gram"])
@pytest.mark.parametrize("name", ["deflation", "lanczos", "kfac_corrected"])
def test_a_genuine_second_term_is_not_taken_for_zero(name, route):
    block = SampledFisherBlock(*[x.float() for x in random_stats(M, D_IN, D_G, 3)])
    fit = make_approximation(name, route=route).fit(block)
    assert not fit.zero_remainder and fit.sigmas[-1] > 1e-3 * fit.sigmas[0]
    f = dense_fisher(block.abar.to(DT), block.g.to(DT))
    if name != "kfac_corrected":
        best, _ = best_rank_r_of_zigzag(f, D_IN + 1, D_G, 2)
        assert relative(fit.approximation.to(DT).to_dense(), best) <= 1e-4
