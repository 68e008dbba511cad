"""Issue 32: the Fisher block of a weight-sharing (convolutional) layer under each treatment of the
position sum, against dense float64 oracles built by loops: the exact block ``(1/N) sum_n vec(DW_n)
vec(DW_n)^T`` (``DW_n = sum_t g_nt a_nt^T``), the authors' banded one, the ``independent`` (KFC) and
``reduce`` blocks; the zigzag products against the rearranged dense block (both product routes and the
authors' ``ZFv_cnn`` transcribed); every approximation and EKFAC fitted to the exact and banded blocks
against the dense optimum; the damped solves; Figure 1's errors against the exact block."""
import math

import pytest
import torch

from kfac_bench.curvature.approximations import (KFAC, KPSVD, Deflation, KFACCorrected, Lanczos, LanczosK,
                                                 averaged_operator, gram_route_is_cheaper)
from kfac_bench.curvature.ekfac import fit_ekfac
from kfac_bench.curvature.inverse import damped_first_term
from kfac_bench.curvature.kronecker import KroneckerSum
from kfac_bench.curvature.metrics import (FisherReference, fisher_error, fisher_frobenius_sq, fisher_inner,
                                          fisher_spectrum, zigzag_singular_values)
from kfac_bench.curvature.spatial import SpatialFisherBlock, band_mask, spatial_block
from kfac_bench.registry import APPROXIMATIONS, make_approximation

from oracles import DT, best_rank_r_of_zigzag, mat, vec, zigzag

# (N, T, d_in, d_g): d_a = d_in + 1 (bias column last); N below and above d_a d_g / T
SHAPES = [(1, 4, 2, 2), (3, 9, 3, 3), (6, 16, 4, 5), (2, 5, 9, 2)]
EXACT_PRODUCTS = ["pairs", "gradients"]


def spatial_stats(n, t, d_in, d_g, seed=0):
    """Per-position inputs (bias column of ones LAST) and output gradients, ``(N, T, d)``, with the
    gradients' size depending on the input (so KFC's independence is visibly wrong) and a position
    trend (so neighbouring positions differ from distant ones)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, t, d_in, generator=gen, dtype=DT)
    a = a + torch.linspace(-1.0, 1.0, t, dtype=DT)[None, :, None]
    g = torch.randn(n, t, d_g, generator=gen, dtype=DT) * (1.0 + a[..., :1].abs())
    return torch.cat([a, torch.ones(n, t, 1, dtype=DT)], dim=2), g


def dense_from_gradients(abar, g):
    """``(1/N) sum_n vec(DW_n) vec(DW_n)^T`` with ``DW_n = sum_t g_nt a_nt^T`` formed entry by entry."""
    n, t = abar.shape[:2]
    js = []
    for i in range(n):
        dw = sum(torch.outer(g[i, s], abar[i, s]) for s in range(t))
        js.append(vec(dw))
    j = torch.stack(js)
    return j.T @ j / n


def dense_pairs(abar, g, keep=lambda t, s: True):
    """``(1/N) sum_n sum_{(t,s) kept} kron(a_nt a_ns^T, g_nt g_ns^T)`` pair by pair."""
    n, t = abar.shape[:2]
    d = abar.shape[2] * g.shape[2]
    out = torch.zeros(d, d, dtype=DT)
    for i in range(n):
        for p in range(t):
            for q in range(t):
                if keep(p, q):
                    out += torch.kron(torch.outer(abar[i, p], abar[i, q]), torch.outer(g[i, p], g[i, q]))
    return out / n


def banded(radius):
    return lambda t, s: abs(t - s) <= radius


def authors_zfv_cnn(a, g, v, r):
    """``ZFv_cnn`` of the authors' ``utils/optim_utils.py`` (lines 102-135 at commit 97105b6), transcribed
    (their layout: ``a`` ``(N, d_a, T)``, ``g`` ``(N, d_g, T)``)."""
    batch_size, d, t = a.shape
    idx = torch.cartesian_prod(torch.arange(t), torch.arange(t))
    gap = torch.abs(idx[:, 0] - idx[:, 1])
    idx = idx[gap <= r]
    k = torch.bmm(torch.bmm(g.permute(0, 2, 1), v.expand(batch_size, -1, -1)), g)
    k = k.reshape(batch_size, -1)[:, gap <= r].reshape(batch_size, 1, -1).expand(-1, d, -1)
    a_t = a.permute(0, 2, 1)[:, idx[:, 0]]
    a_tpr = a.permute(0, 2, 1)[:, idx[:, 1]]
    return torch.mean(torch.bmm(k * a_t.permute(0, 2, 1), a_tpr), dim=0)


def blocks(abar, g, radius=1):
    """The exact block on both product routes and the banded block of ``radius``, with their dense oracles."""
    t = abar.shape[1]
    exact = dense_from_gradients(abar, g)
    out = [(SpatialFisherBlock(abar, g, products=p), exact) for p in EXACT_PRODUCTS]
    out.append((SpatialFisherBlock(abar, g, band_mask(t, radius, abar)), dense_pairs(abar, g, banded(radius))))
    return out


# ------------------------------------------------------------------------------ 1. the dense block
@pytest.mark.parametrize("n,t,d_in,d_g", SHAPES)
def test_exact_and_banded_blocks_are_their_definitions(n, t, d_in, d_g):
    abar, g = spatial_stats(n, t, d_in, d_g)
    exact = dense_from_gradients(abar, g)
    assert torch.allclose(exact, dense_pairs(abar, g), rtol=1e-12, atol=1e-12)    # the two oracles agree
    for products in EXACT_PRODUCTS:
        assert torch.allclose(SpatialFisherBlock(abar, g, products=products).to_dense(), exact,
                              rtol=1e-12, atol=1e-12)
    assert torch.allclose(spatial_block(abar, g, "exact").to_dense(), exact, rtol=1e-12, atol=1e-12)
    for radius in (0, 1, 2):
        dense = dense_pairs(abar, g, banded(radius))
        assert torch.allclose(spatial_block(abar, g, "banded", radius).to_dense(), dense, rtol=1e-12, atol=1e-12)
    assert torch.allclose(spatial_block(abar, g, "banded", t - 1).to_dense(), exact, rtol=1e-12, atol=1e-12)
    block = SpatialFisherBlock(abar, g)
    assert (block.m, block.shape_a, block.shape_g) == (n, d_in + 1, d_g)


def test_bad_masks_and_products_are_refused():
    abar, g = spatial_stats(2, 5, 2, 2)
    upper = torch.triu(torch.ones(5, 5, dtype=DT))
    with pytest.raises(ValueError, match="symmetric"):
        SpatialFisherBlock(abar, g, upper)
    with pytest.raises(ValueError, match="gradients"):
        SpatialFisherBlock(abar, g, band_mask(5, 1, abar), products="gradients")
    with pytest.raises(ValueError, match="radius"):
        spatial_block(abar, g, "banded")
    with pytest.raises(ValueError, match="same N and T"):
        SpatialFisherBlock(abar, g[:, :4])


# ---------------------------------------------------------------------------- 2. zigzag products
@pytest.mark.parametrize("n,t,d_in,d_g", SHAPES)
@pytest.mark.parametrize("radius", [0, 2])
def test_zigzag_products_match_the_rearranged_dense_block(n, t, d_in, d_g, radius):
    abar, g = spatial_stats(n, t, d_in, d_g, seed=1)
    d_a = d_in + 1
    gen = torch.Generator().manual_seed(5)
    v = torch.randn(d_g, d_g, generator=gen, dtype=DT)   # NOT symmetric: catches transposes
    u = torch.randn(d_a, d_a, generator=gen, dtype=DT)
    for block, dense in blocks(abar, g, radius):
        z = zigzag(dense, d_a, d_g)
        scale = float(torch.linalg.norm(z))
        got_v, got_u = block.zigzag_matvec(v), block.zigzag_rmatvec(u)
        assert got_v.shape == (d_a, d_a) and got_u.shape == (d_g, d_g)
        assert torch.allclose(vec(got_v), z @ vec(v), rtol=0, atol=1e-13 * scale * float(torch.linalg.norm(v)))
        assert torch.allclose(vec(got_u), z.T @ vec(u), rtol=0, atol=1e-13 * scale * float(torch.linalg.norm(u)))


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_banded_products_are_the_authors_zfv_cnn(radius):
    abar, g = spatial_stats(3, 7, 3, 4, seed=2)
    block = spatial_block(abar, g, "banded", radius)
    gen = torch.Generator().manual_seed(6)
    v = torch.randn(4, 4, generator=gen, dtype=DT)
    u = torch.randn(4, 4, generator=gen, dtype=DT)
    a_theirs, g_theirs = abar.permute(0, 2, 1), g.permute(0, 2, 1)
    assert torch.allclose(block.zigzag_matvec(v), authors_zfv_cnn(a_theirs, g_theirs, v, radius), rtol=1e-12, atol=1e-12)
    # ZFTu_cnn is the same code with the roles of a and g swapped
    assert torch.allclose(block.zigzag_rmatvec(u), authors_zfv_cnn(g_theirs, a_theirs, u, radius), rtol=1e-12, atol=1e-12)


def test_auto_products_take_the_cheaper_route():
    small_t = SpatialFisherBlock(*spatial_stats(2, 4, 9, 5))          # d_a d_g = 50 > T^2 = 16: pairs
    large_t = SpatialFisherBlock(*spatial_stats(2, 16, 2, 2))         # d_a d_g = 6 < T^2: gradients
    assert not small_t.uses_gradients() and large_t.uses_gradients()
    assert not spatial_block(*spatial_stats(2, 16, 2, 2), "banded", 1).uses_gradients()


# --------------------------------------------------------------- 3. independent (KFC) and reduce
@pytest.mark.parametrize("n,t,d_in,d_g", SHAPES)
def test_independent_and_reduce_blocks_and_kfc_factors(n, t, d_in, d_g):
    abar, g = spatial_stats(n, t, d_in, d_g, seed=3)
    independent = spatial_block(abar, g, "independent")
    dense = dense_pairs(abar, g, lambda p, q: p == q)
    assert torch.allclose(independent.to_dense(), dense, rtol=1e-12, atol=1e-12)
    assert independent.m == n * t
    # KFC (Grosse & Martens 2016): A = (1/(N T)) sum_nt a a^T, G = (1/N) sum_nt g g^T
    kfc_a = sum(torch.outer(abar[i, s], abar[i, s]) for i in range(n) for s in range(t)) / (n * t)
    kfc_g = sum(torch.outer(g[i, s], g[i, s]) for i in range(n) for s in range(t)) / n
    for block in [independent] + [b for b, _ in blocks(abar, g)]:
        a_f, g_f = block.kfac_factors()
        assert torch.allclose(a_f, kfc_a, rtol=1e-12, atol=1e-12)
        assert torch.allclose(g_f, kfc_g, rtol=1e-12, atol=1e-12)
    reduce = spatial_block(abar, g, "reduce")
    a_mean = [sum(abar[i, s] for s in range(t)) / t for i in range(n)]
    g_sum = [sum(g[i, s] for s in range(t)) for i in range(n)]
    dense_r = sum(torch.kron(torch.outer(a_mean[i], a_mean[i]), torch.outer(g_sum[i], g_sum[i])) for i in range(n)) / n
    assert torch.allclose(reduce.to_dense(), dense_r, rtol=1e-12, atol=1e-12)
    assert reduce.m == n


# ------------------------------------------------------------------------- 4. the approximations
def _transpose_permutation(d):
    """``P vec(X) = vec(X^T)`` for ``d x d`` matrices."""
    p = torch.zeros(d * d, d * d, dtype=DT)
    for i in range(d):
        for j in range(d):
            p[i * d + j, j * d + i] = 1.0
    return p


def symmetric_parts(f, d_a, d_g):
    """``Z(F)`` split into its parts on the symmetric and on the skew matrices: for a symmetric ``F``,
    ``Z(F^T) = P_a Z(F) P_g`` makes ``Z(F) = S_a Z S_g + K_a Z K_g`` (``S = (I + P)/2``, ``K = (I - P)/2``)."""
    z = zigzag(f, d_a, d_g)
    p_a, p_g = _transpose_permutation(d_a), _transpose_permutation(d_g)
    i_a, i_g = torch.eye(d_a * d_a, dtype=DT), torch.eye(d_g * d_g, dtype=DT)
    return z, (i_a + p_a) @ z @ (i_g + p_g) / 4, (i_a - p_a) @ z @ (i_g - p_g) / 4


def best_symmetric_rank_r(f, d_a, d_g, r):
    """The best Kronecker rank-r approximation with symmetric factors: the truncated SVD of ``Z(F)``'s
    part on the symmetric matrices (the solvers start from symmetric matrices, which ``Z(F)`` maps to
    symmetric ones); and that part's singular values."""
    _, z_sym, _ = symmetric_parts(f, d_a, d_g)
    u, s, vt = torch.linalg.svd(z_sym)
    approx = sum(s[k] * torch.kron(mat(u[:, k], d_a, d_a), mat(vt[k], d_g, d_g)) for k in range(r))
    return approx, s


def _well_separated(dense, d_a, d_g, r):
    _, s = best_symmetric_rank_r(dense, d_a, d_g, 1)
    assert all(float(s[k] - s[k + 1]) > 1e-3 * float(s[0]) for k in range(r)), s   # SVD well defined
    return s


@pytest.mark.parametrize("n,t,d_in,d_g", SHAPES[1:])
@pytest.mark.parametrize("seed", [0, 4])
def test_every_approximation_fits_the_dense_optimum(n, t, d_in, d_g, seed):
    """Against the dense optimum with symmetric factors; where the top-r triplets of Z(F) are all
    symmetric (checked: always for r = 1) that is the unrestricted optimum of Theorem 3.1."""
    abar, g = spatial_stats(n, t, d_in, d_g, seed)
    d_a = d_in + 1
    opts = dict(tol=1e-12, max_iter=20000)
    for block, dense in blocks(abar, g, radius=1):
        s = _well_separated(dense, d_a, d_g, 3)
        atol = 1e-10 * float(s[0])
        for method, r in [(KPSVD(**opts), 1), (Deflation(**opts), 2), (Lanczos(**opts), 2), (LanczosK(k=3, **opts), 3)]:
            res = method.fit(block)
            best, _ = best_symmetric_rank_r(dense, d_a, d_g, r)
            assert res.converged
            assert torch.allclose(res.approximation.to_dense(), best, rtol=0, atol=atol), (method.name, r)
            assert abs(res.sigmas[r - 1] - float(s[r - 1])) <= 1e-10 * float(s[0])
            unrestricted, s_all = best_rank_r_of_zigzag(dense, d_a, d_g, r)
            if torch.allclose(s_all[:r], s[:r], rtol=1e-12, atol=0) or r == 1:
                assert torch.allclose(res.approximation.to_dense(), unrestricted, rtol=0, atol=atol)
        # Deflation's second term: the best (symmetric) Kronecker product of F - R (x) S
        res = Deflation(**opts).fit(block)
        first = torch.kron(*res.approximation.terms[0])
        second, _ = best_symmetric_rank_r(dense - first, d_a, d_g, 1)
        assert torch.allclose(torch.kron(*res.approximation.terms[1]), second, rtol=0, atol=atol)
        # KFAC-corrected: KFC's KFAC term plus the best (symmetric) Kronecker product of F - A_KFC (x) G_KFC
        kfac = torch.kron(*block.kfac_factors())
        assert torch.allclose(KFAC().fit(block).approximation.to_dense(), kfac, rtol=1e-12, atol=1e-12)
        res = KFACCorrected(**opts).fit(block)
        corr, s_c = best_symmetric_rank_r(dense - kfac, d_a, d_g, 1)
        assert torch.allclose(torch.kron(*res.approximation.terms[0]), kfac, rtol=1e-12, atol=1e-12)
        assert torch.allclose(torch.kron(*res.approximation.terms[1]), corr, rtol=0, atol=1e-10 * float(s_c[0]))


def test_zigzag_of_a_spatial_block_has_skew_triplets_the_methods_leave_out():
    """Unlike a SampledFisherBlock's (rows vec(a a^T): nothing on the skew matrices), the Z(F) of a
    weight-sharing layer maps skew matrices to skew ones: ``(g_t^T V g_s) a_t a_s^T`` summed with its
    ``(s, t)`` twin is ``(g_t^T V g_s)(a_t a_s^T - a_s a_t^T)`` for a skew V. Its skew triplets are
    ``K_a (x) K_g`` terms (symmetric, indefinite). The leading triplet is symmetric (a PSD block); here
    the third is skew, and Lanczos of rank 3 finds the third symmetric one (docs/mathematics.md)."""
    abar, g = spatial_stats(3, 9, 3, 3, seed=0)
    dense = dense_from_gradients(abar, g)
    z, z_sym, z_skew = symmetric_parts(dense, 4, 3)
    assert torch.allclose(z, z_sym + z_skew, rtol=0, atol=1e-12 * float(torch.linalg.norm(z)))
    s_all, s_sym, s_skew = (torch.linalg.svdvals(x) for x in (z, z_sym, z_skew))
    assert float(s_skew[0]) > 0.1 * float(s_all[0])                           # a real skew part
    assert float(s_sym[0]) == pytest.approx(float(s_all[0]), rel=1e-12)       # the leading one is symmetric
    assert float(s_skew[0]) == pytest.approx(float(s_all[2]), rel=1e-12)      # the third one is skew
    res = LanczosK(k=3, tol=1e-12, max_iter=20000).fit(spatial_block(abar, g, "exact"))
    assert res.sigmas[2] == pytest.approx(float(s_sym[2]), rel=1e-10)
    sampled = spatial_block(abar, g, "independent").to_dense()
    assert float(torch.linalg.norm(symmetric_parts(sampled, 4, 3)[2])) <= 1e-12 * float(torch.linalg.norm(sampled))


def test_the_gram_route_is_refused_and_auto_takes_the_direct_one():
    abar, g = spatial_stats(3, 6, 2, 3)
    for block in (spatial_block(abar, g, "exact"), spatial_block(abar, g, "banded", 1)):
        assert not gram_route_is_cheaper(block)
        assert type(averaged_operator(block, None, 0.0, "auto")).__name__ == "ZigzagOperator"
        with pytest.raises(ValueError, match="SpatialFisherBlock"):
            KPSVD(route="gram").fit(block)
    assert gram_route_is_cheaper(spatial_block(abar, g, "independent")) in (True, False)   # a SampledFisherBlock


# --------------------------------------------------------------------------- 5. the damped solves
def _damped_dense(approx, damping):
    """What a method's damped inverse inverts: pi-damped first term plus the others (tests/test_curvature.py),
    or EKFAC's eigenvalues plus the damping."""
    if not isinstance(approx, KroneckerSum):
        dense = approx.to_dense()
        return dense + damping * torch.eye(dense.shape[0], dtype=DT)
    a_d, g_d = damped_first_term(*approx.terms[0], damping)
    return torch.kron(a_d, g_d) + sum((torch.kron(c, d) for c, d in approx.terms[1:]), torch.zeros(()))


@pytest.mark.parametrize("name", sorted(APPROXIMATIONS))
def test_damped_solve_of_an_estimate_of_the_exact_block_is_the_dense_solve(name):
    abar, g = spatial_stats(4, 9, 3, 4, seed=7)
    method = make_approximation(name, tol=1e-12, max_iter=20000)
    approx = method.fit(spatial_block(abar, g, "exact")).approximation
    damping = 50.0             # ~7% of sigma_1 here: every damped estimate positive definite, nothing floored
    inv = method.damped_inverse(approx, damping, psd_floor=1e-12)
    dense = _damped_dense(approx, damping)
    assert float(torch.linalg.eigvalsh(0.5 * (dense + dense.T)).min()) > 0 and getattr(inv, "clamped", 0) == 0
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(8), dtype=DT)
    got = vec(inv.solve(x))
    assert torch.linalg.norm(dense @ got - vec(x)) <= 1e-10 * torch.linalg.norm(dense) * torch.linalg.norm(got)
    assert torch.allclose(got, torch.linalg.solve(dense, vec(x)), rtol=1e-9, atol=1e-14)


# ------------------------------------------------------------------------------ 6. Figure 1 errors
def _dense_errors(f, f_hat):
    err1 = torch.linalg.norm(f - f_hat) / torch.linalg.norm(f)
    lam = torch.linalg.eigvalsh(f).flip(0)
    mu = torch.linalg.eigvalsh(0.5 * (f_hat + f_hat.T)).flip(0)
    return float(err1), float(torch.linalg.norm(lam - mu) / torch.linalg.norm(lam))


@pytest.mark.parametrize("n,t,d_in,d_g", SHAPES)
def test_errors_against_the_exact_block_are_the_dense_ones(n, t, d_in, d_g):
    abar, g = spatial_stats(n, t, d_in, d_g, seed=5)
    for products in EXACT_PRODUCTS:
        block = SpatialFisherBlock(abar, g, products=products)
        f = dense_from_gradients(abar, g)
        lam = torch.linalg.eigvalsh(f).flip(0)
        assert torch.allclose(fisher_spectrum(block, full=True), lam, rtol=0, atol=1e-12 * float(lam[0]))
        assert fisher_frobenius_sq(block) == pytest.approx(float(torch.sum(f * f)), rel=1e-12)
        ref = FisherReference.from_block(block, zigzag_sigmas=False)
        for name in ("kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected", "ekfac"):
            approx = make_approximation(name, tol=1e-12, max_iter=20000).fit(block).approximation
            f_hat = approx.to_dense()
            assert fisher_inner(block, approx) == pytest.approx(float(torch.sum(f * f_hat)), rel=1e-11), name
            err1, err2 = _dense_errors(f, f_hat)
            for source in (block, ref):
                out = fisher_error(source, approx)
                assert out["error_frobenius"] == pytest.approx(err1, rel=1e-9, abs=1e-12), name
                assert out["error_spectrum"] == pytest.approx(err2, rel=1e-9, abs=1e-12), name


def test_what_the_exact_block_does_not_have_is_refused_clearly():
    abar, g = spatial_stats(3, 6, 2, 3)
    exact = spatial_block(abar, g, "exact")
    with pytest.raises(NotImplementedError, match="zigzag_sigmas=False"):
        FisherReference.from_block(exact, zigzag_sigmas=True)
    with pytest.raises(NotImplementedError, match="SpatialFisherBlock"):
        zigzag_singular_values(exact)
    band = spatial_block(abar, g, "banded", 1)
    with pytest.raises(ValueError, match="exact block"):
        band.gram()
    with pytest.raises(ValueError, match="exact block"):
        fisher_error(band, KFAC().fit(band).approximation)


def test_inner_product_with_a_kronecker_sum_on_both_blocks():
    abar, g = spatial_stats(3, 7, 3, 2, seed=9)
    gen = torch.Generator().manual_seed(10)
    ks = KroneckerSum([(torch.randn(4, 4, generator=gen, dtype=DT), torch.randn(2, 2, generator=gen, dtype=DT))
                       for _ in range(2)])                 # not symmetric: (A (x) G) vec X = vec(G X A^T)
    for block, dense in blocks(abar, g, radius=2):
        assert float(block.inner_kronecker(ks)) == pytest.approx(float(torch.sum(dense * ks.to_dense())), rel=1e-12)


def test_float32_block_moves_to_float64_for_the_metrics():
    abar, g = spatial_stats(3, 8, 3, 2, seed=11)
    b32 = spatial_block(abar.float(), g.float(), "exact")
    b64 = b32.to(DT)
    assert b64.g.dtype == DT and b64.products == b32.products
    assert fisher_frobenius_sq(b32) == pytest.approx(fisher_frobenius_sq(spatial_block(abar, g, "exact")), rel=1e-6)
    band = spatial_block(abar.float(), g.float(), "banded", 1).to(DT)
    assert band.mask.dtype == DT


# -------------------------------------------------------------------------------------- 7. EKFAC
@pytest.mark.parametrize("n,t,d_in,d_g", SHAPES)
def test_ekfac_scaling_is_the_diagonal_of_the_block_in_kfcs_eigenbasis(n, t, d_in, d_g):
    abar, g = spatial_stats(n, t, d_in, d_g, seed=6)
    d_a = d_in + 1
    for block, dense in blocks(abar, g, radius=1):
        est = fit_ekfac(block)
        a_f, g_f = block.kfac_factors()
        for q, factor in ((est.q_a, a_f), (est.q_g, g_f)):   # the eigenvectors of KFC's factors
            rotated = q.T @ factor @ q
            assert torch.allclose(rotated, torch.diag(torch.diagonal(rotated)), rtol=0, atol=1e-12 * float(factor.norm()))
        q = torch.kron(est.q_a, est.q_g)
        diagonal = torch.diagonal(q.T @ dense @ q)
        expected = mat(diagonal, d_g, d_a)                   # entry (i_g, i_a) at index i_a d_g + i_g
        assert torch.allclose(est.scaling, expected, rtol=0, atol=1e-12 * float(diagonal.abs().max()))


def test_ekfac_on_the_exact_block_has_its_figure1_routes():
    abar, g = spatial_stats(4, 9, 3, 3, seed=12)
    block = spatial_block(abar, g, "exact")
    est = fit_ekfac(block)
    f = block.to_dense()
    assert est.inner_with(block) == pytest.approx(float(torch.sum(f * est.to_dense())), rel=1e-11)
    assert est.inner_with(block) == pytest.approx(est.frobenius_sq(), rel=1e-11)   # the projection identity
    err1 = float(torch.linalg.norm(f - est.to_dense()) / torch.linalg.norm(f))
    assert fisher_error(block, est)["error_frobenius"] == pytest.approx(err1, rel=1e-9)
    assert not math.isnan(fisher_error(block, est)["error_spectrum"])
