"""Exact-block metrics (Figure 1) against dense float64 oracles on tiny layers: the Gram route, the
spectral-tail identity, both rank-2 eigensolvers, and the error orderings that are theorems."""
import math

import pytest
import torch

from kfac_bench.curvature import KroneckerSum, SampledFisherBlock
from kfac_bench.registry import make_approximation
from kfac_bench.curvature.metrics import (
    FisherReference, fisher_error, fisher_frobenius_sq, fisher_inner, fisher_spectrum, kronecker_sum_frobenius_sq,
    spectrum_error_sq, zigzag_singular_values)
from kfac_bench.curvature.spectrum import kronecker_product_spectrum, kronecker_sum_spectrum

from oracles import DT, dense_fisher, random_stats, zigzag

SHAPES = [(9, 3, 4), (30, 4, 3), (5, 2, 6)]  # (m, d_in, d_g): m below and above n = (d_in + 1) d_g


def _sym(gen, d):
    x = torch.randn(d, d, generator=gen, dtype=DT)
    return x + x.T


def random_ks(d_a, d_g, rank, seed, symmetric=True):
    gen = torch.Generator().manual_seed(seed)
    if symmetric:
        return KroneckerSum([(_sym(gen, d_a), _sym(gen, d_g)) for _ in range(rank)])
    return KroneckerSum([(torch.randn(d_a, d_a, generator=gen, dtype=DT),
                          torch.randn(d_g, d_g, generator=gen, dtype=DT)) for _ in range(rank)])


def dense_ks(ks):
    """Oracle: the explicit matrix, term by term with torch.kron (A-side outer)."""
    return sum(torch.kron(a, g) for a, g in ks.terms)


def dense_spec(x):
    return torch.linalg.eigvalsh(x).flip(0)


def dense_error2(f, fh):
    lam, mu = dense_spec(f), dense_spec(fh)
    return float(torch.linalg.vector_norm(lam - mu) / torch.linalg.vector_norm(lam))


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_gram_route_norms_and_error1_match_dense(m, d_in, d_g, rank):
    abar, g = random_stats(m, d_in, d_g, seed=m)
    block = SampledFisherBlock(abar, g)
    f = dense_fisher(abar, g)
    # non-symmetric factors: a transposed index in any quadratic form shows
    ks = random_ks(d_in + 1, d_g, rank, seed=rank, symmetric=False)
    fh = dense_ks(ks)
    assert fisher_frobenius_sq(block) == pytest.approx(float(torch.sum(f * f)), rel=1e-12)
    assert fisher_inner(block, ks) == pytest.approx(float(torch.sum(f * fh)), rel=1e-11)
    assert kronecker_sum_frobenius_sq(ks) == pytest.approx(float(torch.sum(fh * fh)), rel=1e-12)
    out = fisher_error(block, ks, spectrum=False)
    expected = float(torch.linalg.matrix_norm(f - fh) / torch.linalg.matrix_norm(f))
    assert out["error_frobenius"] == pytest.approx(expected, rel=1e-10)
    assert math.isnan(out["error_spectrum"])
    # a close approximation: the cancellation ||F||^2 - 2<F,Fh> + ||Fh||^2 must keep its digits
    a_k, g_k = block.kfac_factors()
    near = KroneckerSum([(a_k, g_k), (1e-3 * ks.terms[0][0], ks.terms[0][1])])
    fn = dense_ks(near)
    expected = float(torch.linalg.matrix_norm(f - fn) / torch.linalg.matrix_norm(f))
    assert fisher_error(block, near, spectrum=False)["error_frobenius"] == pytest.approx(expected, rel=1e-8)


def test_float32_statistics_are_promoted_before_the_cancellation():
    abar, g = random_stats(20, 4, 5, seed=3)
    b32 = SampledFisherBlock(abar.float(), g.float())
    ks = make_approximation("deflation", tol=1e-7).fit(b32).approximation
    f = dense_fisher(abar.float().double(), g.float().double())
    fh = dense_ks(KroneckerSum([(a.double(), s.double()) for a, s in ks.terms]))
    expected = float(torch.linalg.matrix_norm(f - fh) / torch.linalg.matrix_norm(f))
    assert fisher_error(b32, ks, spectrum=False)["error_frobenius"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
def test_spectrum_of_f_through_the_gram_matrix(m, d_in, d_g):
    abar, g = random_stats(m, d_in, d_g, seed=2)
    block = SampledFisherBlock(abar, g)
    lam = dense_spec(dense_fisher(abar, g))
    n = (d_in + 1) * d_g
    got = fisher_spectrum(block, full=True)
    assert got.shape == (n,)
    assert torch.allclose(got, lam, rtol=0, atol=1e-12 * float(lam[0]))
    assert fisher_spectrum(block).numel() == min(m, n)
    assert FisherReference.from_block(block).frobenius_sq == pytest.approx(float(torch.sum(lam ** 2)), rel=1e-12)


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
def test_spectral_tail_identity(m, d_in, d_g):
    abar, g = random_stats(m, d_in, d_g, seed=4)
    f = dense_fisher(abar, g)
    ks = random_ks(d_in + 1, d_g, 2, seed=5)          # symmetric, indefinite
    fh = dense_ks(ks)
    lam, mu = dense_spec(f), dense_spec(fh)
    r = min(m, lam.numel())
    full = float(torch.sum((lam - mu) ** 2))
    tail = float(torch.sum(fh * fh)) - float(torch.sum(mu[:r] ** 2))
    assert float(torch.sum((lam[:r] - mu[:r]) ** 2)) + tail == pytest.approx(full, rel=1e-11)
    assert spectrum_error_sq(lam[:r], mu[:r], float(torch.sum(fh * fh))) == pytest.approx(full, rel=1e-11)
    assert torch.allclose(lam[r:], torch.zeros_like(lam[r:]), atol=1e-12 * float(lam[0]))


def test_rank1_spectrum_from_the_factors_keeps_signs():
    gen = torch.Generator().manual_seed(0)
    a, g = _sym(gen, 4), _sym(gen, 3)  # both indefinite
    expected = dense_spec(torch.kron(a, g))
    assert torch.allclose(kronecker_product_spectrum(a, g), expected, atol=1e-12)
    res = kronecker_sum_spectrum(KroneckerSum([(a, g)]), top=5)
    assert res.solver == "factors" and torch.allclose(res.values, expected[:5], atol=1e-12)


@pytest.mark.parametrize("solver", ["dense", "subspace"])
def test_top_eigenvalues_of_a_kronecker_sum(solver):
    ks = random_ks(8, 9, 2, seed=7)                   # n = 72, indefinite
    expected = dense_spec(dense_ks(ks))
    res = kronecker_sum_spectrum(ks, top=10, solver=solver, rtol=1e-14, max_iter=3000)
    assert res.solver == solver and res.values.shape == (10,)
    assert torch.allclose(res.values, expected[:10], rtol=0, atol=1e-9 * float(expected.abs().max()))
    if solver == "subspace":
        assert res.converged and res.basis.shape[0] == 72 and res.basis.shape[1] >= 10 + 16
        # warm start from its own basis: already converged, two Rayleigh-Ritz steps
        again = kronecker_sum_spectrum(ks, top=10, solver=solver, rtol=1e-12, basis=res.basis)
        assert again.iterations == 2 and torch.allclose(again.values, expected[:10], atol=1e-9 * float(expected.abs().max()))
    full = kronecker_sum_spectrum(ks, solver="auto")
    assert full.solver == "dense" and torch.allclose(full.values, expected, atol=1e-10)


def test_subspace_solver_with_many_large_negative_eigenvalues():
    # F_hat = A (x) G - c B (x) I with c above the 10th eigenvalue: dozens of negative eigenvalues
    # are larger in magnitude than the wanted ones; the block must widen to keep the top 10.
    gen = torch.Generator().manual_seed(21)
    d_a, d_g = 10, 12
    qa, _ = torch.linalg.qr(torch.randn(d_a, d_a, generator=gen, dtype=DT))
    qg, _ = torch.linalg.qr(torch.randn(d_g, d_g, generator=gen, dtype=DT))
    a = qa @ torch.diag(torch.linspace(0.05, 1.0, d_a, dtype=DT)) @ qa.T
    g = qg @ torch.diag(torch.linspace(0.05, 1.0, d_g, dtype=DT)) @ qg.T
    b = torch.eye(d_a, dtype=DT) + 0.2 * _sym(gen, d_a) / d_a
    ks = KroneckerSum([(a, g), (-0.45 * b, torch.eye(d_g, dtype=DT))])
    expected = dense_spec(dense_ks(ks))
    assert int(torch.sum(expected < -expected[9])) > 16  # more than the default oversampling
    res = kronecker_sum_spectrum(ks, top=10, solver="subspace", rtol=1e-13, max_iter=3000)
    assert res.converged and res.basis.shape[1] > 26
    assert torch.allclose(res.values, expected[:10], rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["deflation", "lanczos", "kfac_corrected", "random"])
@pytest.mark.parametrize("solver", ["dense", "subspace"])
def test_error2_route_equals_dense_computation(method, solver):
    m, d_in, d_g = 12, 7, 9                           # n = 72 > m + oversampling: a real subspace
    abar, g = random_stats(m, d_in, d_g, seed=11)
    block = SampledFisherBlock(abar, g)
    if method == "random":
        ks = random_ks(d_in + 1, d_g, 2, seed=12)
    else:
        ks = make_approximation(method, tol=1e-12, max_iter=5000).fit(block).approximation
    f, fh = dense_fisher(abar, g), dense_ks(ks)
    out = fisher_error(block, ks, solver=solver, rtol=1e-13, max_iter=3000)
    assert out["spectrum_solver"] == solver and out["spectrum_converged"]
    assert out["error_spectrum"] == pytest.approx(dense_error2(f, fh), rel=1e-8)
    # Hoffman-Wielandt: the sorted-spectrum distance never exceeds the Frobenius distance
    assert out["error_spectrum"] <= out["error_frobenius"] * (1 + 1e-12)


def _medium_layer(seed: int):
    """A layer big enough for the subspace route (n = 192, m = 40): its block, reference and dense F."""
    abar, g = random_stats(40, 15, 12, seed=seed)
    block = SampledFisherBlock(abar, g)
    return block, FisherReference.from_block(block), dense_fisher(abar, g)


def test_subspace_error2_is_accurate_at_default_tolerance_and_warm_starts():
    block, ref, f = _medium_layer(seed=13)
    warm = {}
    fits = [make_approximation(name, tol=1e-10).fit(block).approximation
            for name in ("deflation", "lanczos", "kfac_corrected")]
    results = [fisher_error(ref, ks, solver="subspace", warm=warm) for ks in fits]
    for ks, out in zip(fits, results):
        exact = dense_error2(f, dense_ks(ks))
        assert out["error_spectrum"] == pytest.approx(exact, rel=1e-4)
        assert out["error_spectrum"] >= exact * (1 - 1e-9)   # Ritz values from below: an upper bound
    assert warm["basis"].shape == (192, 40 + 16)
    assert results[1]["spectrum_iterations"] <= results[0]["spectrum_iterations"]  # Lanczos ~ Deflation


def test_no_dense_matrix_is_formed_on_the_subspace_route(monkeypatch):
    abar, g = random_stats(16, 9, 11, seed=14)       # n = 110
    block = SampledFisherBlock(abar, g)
    ks = make_approximation("deflation", tol=1e-10).fit(block).approximation
    expected = dense_error2(dense_fisher(abar, g), dense_ks(ks))

    def forbidden(*args, **kwargs):
        raise AssertionError("an n x n matrix was formed")

    monkeypatch.setattr(torch, "kron", forbidden)
    monkeypatch.setattr(SampledFisherBlock, "to_dense", forbidden)
    monkeypatch.setattr(KroneckerSum, "to_dense", forbidden)
    out = fisher_error(block, ks, solver="subspace", rtol=1e-12, max_iter=2000)
    assert out["error_spectrum"] == pytest.approx(expected, rel=1e-8)
    with pytest.raises(AssertionError):
        fisher_error(block, ks, solver="dense")


@pytest.mark.parametrize("m,d_in,d_g", SHAPES + [(7, 5, 5)])
def test_zigzag_singular_values_through_gram_matrices(m, d_in, d_g):
    abar, g = random_stats(m, d_in, d_g, seed=6)
    block = SampledFisherBlock(abar, g)
    z = zigzag(dense_fisher(abar, g), d_in + 1, d_g)
    expected = torch.linalg.svdvals(z)
    got = zigzag_singular_values(block)
    # squared through Gram matrices: sigma_k is exact to ~eps sigma_1^2 / sigma_k (fine for the leading ones)
    big = int(torch.sum(expected > 1e-6 * expected[0]))
    assert big >= 2 and got.numel() >= big
    assert torch.allclose(got[:big], expected[:big], rtol=1e-9, atol=0)
    assert torch.all(got[big:] <= 1e-6 * float(expected[0]))
    ref = FisherReference.from_block(block, zigzag_sigmas=True)
    f2 = ref.frobenius_sq
    assert ref.optimal_error(2) == pytest.approx(math.sqrt(max(f2 - float(expected[0] ** 2 + expected[1] ** 2), 0) / f2),
                                                 rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("m,d_in,d_g", [(40, 5, 6), (20, 6, 7), (9, 3, 4)])
def test_error1_orderings_that_are_theorems(m, d_in, d_g):
    slack = 1e-9  # solvers at tol 1e-12 in float64: Error 1 is within ~1e-12 of its limit
    for seed in range(5):
        abar, g = random_stats(m, d_in, d_g, seed=100 + seed, correlated=seed % 2 == 0)
        block = SampledFisherBlock(abar, g)
        ref = FisherReference.from_block(block, zigzag_sigmas=True)
        e1, e2 = {}, {}
        for name in ("kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected"):
            ks = make_approximation(name, tol=1e-12, max_iter=20000, max_restarts=2000).fit(block).approximation
            out = fisher_error(ref, ks)
            e1[name], e2[name] = out["error_frobenius"], out["error_spectrum"]
            assert e2[name] <= e1[name] + slack, name  # Hoffman-Wielandt
        assert e1["kpsvd"] <= e1["kfac"] + slack
        assert e1["deflation"] <= e1["kpsvd"] + slack
        assert e1["lanczos"] <= e1["kpsvd"] + slack
        assert e1["kfac_corrected"] <= e1["kfac"] + slack
        # and the SVD methods reach the exact optimum of Theorem 3.1
        assert e1["kpsvd"] == pytest.approx(ref.optimal_error(1), abs=1e-7)
        assert e1["deflation"] == pytest.approx(ref.optimal_error(2), abs=1e-7)
        assert e1["lanczos"] == pytest.approx(ref.optimal_error(2), abs=1e-7)


def test_trusted_basis_of_the_same_target_costs_one_step():
    # Deflation and Lanczos both give the best Kronecker rank 2: one Rayleigh-Ritz step on the
    # other's converged basis is enough
    block, ref, f = _medium_layer(seed=17)
    warm = {}
    first = make_approximation("deflation", tol=1e-8).fit(block).approximation
    second = make_approximation("lanczos", tol=1e-8).fit(block).approximation
    fisher_error(ref, first, solver="subspace", warm=warm)
    out = fisher_error(ref, second, solver="subspace", warm=warm, trust_warm=True)
    assert out["spectrum_iterations"] == 1 and out["spectrum_converged"]
    assert out["error_spectrum"] == pytest.approx(dense_error2(f, dense_ks(second)), rel=1e-4)


def test_a_trusted_warm_dict_that_is_still_empty_gets_filled():
    block, ref, _ = _medium_layer(seed=18)
    warm = {}
    first = make_approximation("deflation", tol=1e-8).fit(block).approximation
    out = fisher_error(ref, first, solver="subspace", warm=warm, trust_warm=True)  # no basis yet: cold
    assert out["spectrum_iterations"] > 1 and warm["basis"].shape == (192, 56)
