"""Every product, approximation and inverse against dense float64 oracles on tiny layers."""
import pytest
import torch

from kfac_bench.curvature.approximations import KFAC, KPSVD, Deflation, KFACCorrected, Lanczos
from kfac_bench.registry import APPROXIMATIONS, make_approximation
from kfac_bench.curvature.inverse import damped_first_term, damped_inverse
from kfac_bench.curvature.kronecker import KroneckerSum, SampledFisherBlock, ZigzagOperator, unvec
from kfac_bench.curvature.kronecker import vec as fast_vec
from kfac_bench.curvature.svd import lanczos_svd, power_svd

from oracles import DT, DenseOp, best_rank_r_of_zigzag, dense_fisher, random_stats, vec, zigzag

SHAPES = [(9, 3, 4), (12, 4, 3), (5, 2, 6)]  # (m, d_in, d_g): m both below and above d_a*d_g


def block(m, d_in, d_g, seed=0):
    return SampledFisherBlock(*random_stats(m, d_in, d_g, seed))


def test_vec_conventions():
    x = torch.arange(6, dtype=DT).reshape(2, 3)
    assert torch.equal(fast_vec(x), vec(x))
    assert torch.equal(unvec(vec(x), 2, 3), x)
    a, g = torch.randn(3, 3, dtype=DT), torch.randn(2, 2, dtype=DT)
    # (A kron G) vec(X) = vec(G X A^T)
    assert torch.allclose(torch.kron(a, g) @ vec(x), vec(g @ x @ a.T))


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
def test_dense_block_is_the_fisher_of_vec_dw(m, d_in, d_g):
    abar, g = random_stats(m, d_in, d_g)
    fb = SampledFisherBlock(abar, g)
    # vec(g a^T) = a kron g: the block is E[vec(DW) vec(DW)^T]
    j = torch.stack([vec(torch.outer(g[t], abar[t])) for t in range(m)])
    assert torch.allclose(fb.to_dense(), j.T @ j / m)
    assert torch.allclose(fb.to_dense(), dense_fisher(abar, g))


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
def test_zigzag_products_match_rearranged_dense_block(m, d_in, d_g):
    abar, g = random_stats(m, d_in, d_g, seed=1)
    fb = SampledFisherBlock(abar, g)
    d_a = d_in + 1
    z = zigzag(dense_fisher(abar, g), d_a, d_g)
    gen = torch.Generator().manual_seed(5)
    v = torch.randn(d_g, d_g, generator=gen, dtype=DT)  # NOT symmetric: catches transposes
    u = torch.randn(d_a, d_a, generator=gen, dtype=DT)
    assert torch.allclose(vec(fb.zigzag_matvec(v)), z @ vec(v), rtol=1e-12, atol=1e-12)
    assert torch.allclose(vec(fb.zigzag_rmatvec(u)), z.T @ vec(u), rtol=1e-12, atol=1e-12)


def test_kronecker_sum_products_and_norms():
    gen = torch.Generator().manual_seed(2)
    terms = [(torch.randn(4, 4, generator=gen, dtype=DT), torch.randn(3, 3, generator=gen, dtype=DT))
             for _ in range(2)]
    ks = KroneckerSum(terms)
    dense = torch.kron(*terms[0]) + torch.kron(*terms[1])
    assert torch.allclose(ks.to_dense(), dense)
    x = torch.randn(3, 4, generator=gen, dtype=DT)
    assert torch.allclose(vec(ks.matvec(x)), dense @ vec(x))
    z = zigzag(dense, 4, 3)
    v, u = torch.randn(3, 3, generator=gen, dtype=DT), torch.randn(4, 4, generator=gen, dtype=DT)
    assert torch.allclose(vec(ks.zigzag_matvec(v)), z @ vec(v))
    assert torch.allclose(vec(ks.zigzag_rmatvec(u)), z.T @ vec(u))
    other = KroneckerSum([(torch.randn(4, 4, generator=gen, dtype=DT), torch.randn(3, 3, generator=gen, dtype=DT))])
    assert torch.allclose(ks.frobenius_inner(other), torch.sum(dense * other.to_dense()))
    assert torch.allclose(ks.frobenius_norm(), torch.linalg.norm(dense))


def test_deflated_operator_subtracts_the_known_term():
    abar, g = random_stats(10, 3, 4, seed=3)
    fb = SampledFisherBlock(abar, g)
    gen = torch.Generator().manual_seed(4)
    r, s = torch.randn(4, 4, generator=gen, dtype=DT), torch.randn(4, 4, generator=gen, dtype=DT)
    op = ZigzagOperator.of(fb).minus(KroneckerSum([(r, s)]))
    z = zigzag(fb.to_dense() - torch.kron(r, s), 4, 4)
    v = torch.randn(4, 4, generator=gen, dtype=DT)
    assert torch.allclose(vec(op.matvec(v)), z @ vec(v))
    assert torch.allclose(vec(op.rmatvec(v)), z.T @ vec(v))


def test_power_svd_and_lanczos_on_dense_matrix():
    gen = torch.Generator().manual_seed(6)
    q1, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=DT))
    q2, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=DT))
    s = torch.tensor([5.0, 3.0] + [1.0 / (k + 1) for k in range(18)], dtype=DT)
    m = q1[:, :20] * s @ q2.T
    t = power_svd(DenseOp(m), torch.ones(20, dtype=DT), tol=1e-10)
    assert t.converged and abs(t.sigmas[0] - 5.0) < 1e-9
    assert abs(abs(torch.dot(t.left[0], q1[:, 0])) - 1) < 1e-8
    assert torch.allclose(m @ t.right[0], t.sigmas[0] * t.left[0], atol=1e-8)
    for kdim in (3, 6):
        lz = lanczos_svd(DenseOp(m), torch.ones(20, dtype=DT), rank=2, krylov_dim=kdim, tol=1e-10)
        assert lz.converged
        assert abs(lz.sigmas[0] - 5.0) < 1e-8 and abs(lz.sigmas[1] - 3.0) < 1e-8
        for i in range(2):
            assert abs(abs(torch.dot(lz.right[i], q2[:, i])) - 1) < 1e-7
            assert torch.allclose(m.T @ lz.left[i], lz.sigmas[i] * lz.right[i], atol=1e-8)


def test_sums_over_many_rows_are_chunked_in_float64_and_short_ones_untouched():
    """rows_inner: an MLP batch's product is the plain one, bit for bit (no run's number changes); over
    more than TALL_ROWS rows (a conv layer's N T positions) the float32 sum is accurate to float32's
    own precision, which one BLAS sum over ~1e5 rows of a narrow matrix is not (kronecker module)."""
    from kfac_bench.curvature.kronecker import TALL_ROWS, rows_inner
    gen = torch.Generator().manual_seed(11)
    short = torch.rand(1024, 6, generator=gen)
    assert torch.equal(rows_inner(short.mT, short), short.mT @ short)
    g = torch.rand(6 * TALL_ROWS + 7, 6, generator=gen) * 1e-3
    w = torch.rand(g.shape[0], generator=gen)
    exact = (g.double().mT * w.double()) @ g.double()
    chunked = rows_inner(g.mT * w, g)
    assert chunked.dtype == torch.float32
    assert float(torch.linalg.norm(chunked.double() - exact) / torch.linalg.norm(exact)) < 1e-6
    block = SampledFisherBlock(torch.rand(g.shape[0], 3, generator=gen), g)
    block64 = block.to(torch.float64)
    v = torch.eye(6)
    rel = torch.linalg.norm(block.zigzag_matvec(v).double() - block64.zigzag_matvec(v.double())) / torch.linalg.norm(
        block64.zigzag_matvec(v.double()))
    assert float(rel) < 1e-6


class NoisyOp(DenseOp):
    """Products carrying a relative rounding error of ``level`` (a float32 sum over ~10^5 rows)."""

    def __init__(self, m, level, seed=0):
        super().__init__(m)
        self.level, self.gen = level, torch.Generator().manual_seed(seed)

    def _noisy(self, x):
        return x + self.level * torch.linalg.norm(x) * torch.randn(x.shape, generator=self.gen, dtype=x.dtype) / x.numel() ** 0.5

    def matvec(self, v):
        return self._noisy(super().matvec(v))

    def rmatvec(self, u):
        return self._noisy(super().rmatvec(u))


def spectrum_matrix(gap=0.6):
    gen = torch.Generator().manual_seed(6)
    q1, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=DT))
    q2, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=DT))
    s = torch.tensor([1.0, gap] + [gap / (k + 2) for k in range(18)], dtype=DT)
    return q1[:, :20] * s @ q2.T, q1[:, 0]


def test_power_svd_stops_at_the_rounding_level_of_its_products():
    """A residual stalled above tol but within half the dtype's digits (float32: 3.5e-4) is as good as
    the products allow: stop there, converged and flagged, not at max_iter (svd module doc)."""
    m, u1 = spectrum_matrix()
    t = power_svd(NoisyOp(m, 2e-5), torch.ones(20, dtype=DT), tol=1e-6, max_iter=1000, precision=torch.float32)
    assert t.converged and t.stalled and t.iterations < 100
    assert abs(t.sigmas[0] - 1.0) < 1e-4 and abs(abs(torch.dot(t.left[0], u1)) - 1) < 1e-6
    # the same noise in float64 is far above its half digits (1.5e-8): not a rounding stall
    t64 = power_svd(NoisyOp(m, 2e-5), torch.ones(20, dtype=DT), tol=1e-6, max_iter=200)
    assert not t64.converged and not t64.stalled and t64.iterations == 200
    # noise above float32's half digits: never called converged
    loud = power_svd(NoisyOp(m, 3e-3), torch.ones(20, dtype=DT), tol=1e-6, max_iter=200, precision=torch.float32)
    assert not loud.converged and not loud.stalled and loud.iterations == 200


def test_power_svd_slow_but_steady_convergence_is_not_a_stall():
    """sigma_2 / sigma_1 = 0.995: the residual falls ~1 % an iteration, setting a new low each time, down
    through float32's half digits: it must reach tol, not be called stalled."""
    m, _ = spectrum_matrix(gap=0.995)
    t = power_svd(DenseOp(m), torch.ones(20, dtype=DT), tol=1e-6, max_iter=5000, precision=torch.float32)
    assert t.converged and not t.stalled and t.residuals[0] <= 1e-6 * t.sigmas[0]


def frob_error(f, approx: KroneckerSum):
    return float(torch.linalg.norm(f - approx.to_dense()))


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
def test_kfac_is_equation_1(m, d_in, d_g):
    abar, g = random_stats(m, d_in, d_g)
    res = KFAC().fit(SampledFisherBlock(abar, g))
    a = sum(torch.outer(abar[t], abar[t]) for t in range(m)) / m
    gg = sum(torch.outer(g[t], g[t]) for t in range(m)) / m
    assert torch.allclose(res.approximation.to_dense(), torch.kron(a, gg))


@pytest.mark.parametrize("route", ["direct", "gram"])
@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kpsvd_is_the_leading_triplet(m, d_in, d_g, seed, route):
    abar, g = random_stats(m, d_in, d_g, seed)
    f = dense_fisher(abar, g)
    best, s = best_rank_r_of_zigzag(f, d_in + 1, d_g, 1)
    res = KPSVD(tol=1e-12, route=route).fit(SampledFisherBlock(abar, g))
    assert abs(res.sigmas[0] - float(s[0])) <= 1e-9 * float(s[0])
    assert torch.allclose(res.approximation.to_dense(), best, atol=1e-9 * float(s[0]))
    r, q = res.approximation.terms[0]
    for x in (r, q):
        assert torch.allclose(x, x.T)
        assert float(torch.linalg.eigvalsh(x).min()) >= -1e-9 * float(torch.linalg.norm(x))
    kfac = KFAC().fit(SampledFisherBlock(abar, g)).approximation
    assert frob_error(f, res.approximation) <= frob_error(f, kfac) + 1e-12
    # ||F - R kron S||^2 = ||Z(F)||^2 - sigma_1^2 (Theorem 3.1)
    assert abs(frob_error(f, res.approximation) ** 2 - float((s ** 2).sum() - s[0] ** 2)) < 1e-9 * float(s[0]) ** 2


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
@pytest.mark.parametrize("method", [Deflation, Lanczos])
@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("route", ["direct", "gram"])
def test_rank2_methods_match_best_rank2(m, d_in, d_g, method, seed, route):
    abar, g = random_stats(m, d_in, d_g, seed)
    f = dense_fisher(abar, g)
    best, s = best_rank_r_of_zigzag(f, d_in + 1, d_g, 2)
    res = method(tol=1e-12, max_iter=20000, route=route).fit(SampledFisherBlock(abar, g))
    assert res.converged
    assert abs(res.sigmas[1] - float(s[1])) <= 1e-8 * float(s[0])
    assert torch.allclose(res.approximation.to_dense(), best, atol=1e-7 * float(s[0]))
    optimal = float((s ** 2).sum() - s[0] ** 2 - s[1] ** 2) ** 0.5
    assert abs(frob_error(f, res.approximation) - optimal) <= 1e-7 * float(s[0])


@pytest.mark.parametrize("m,d_in,d_g", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("route", ["direct", "gram"])
def test_kfac_corrected_is_never_worse_than_kfac(m, d_in, d_g, seed, route):
    abar, g = random_stats(m, d_in, d_g, seed)
    f = dense_fisher(abar, g)
    fb = SampledFisherBlock(abar, g)
    kfac = KFAC().fit(fb).approximation
    res = KFACCorrected(tol=1e-12, max_iter=20000, route=route).fit(fb)
    # the correction is the best rank-1 of Z(F - KFAC), computed densely
    resid = f - kfac.to_dense()
    best_corr, s = best_rank_r_of_zigzag(resid, d_in + 1, d_g, 1)
    assert torch.allclose(res.approximation.to_dense(), kfac.to_dense() + best_corr, atol=1e-8 * float(s[0]))
    assert frob_error(f, res.approximation) <= frob_error(f, kfac)


def _damped_dense(approx: KroneckerSum, damping):
    """The matrix a method's damped inverse inverts, formed densely: the first Kronecker term with the
    paper's pi-damping; an estimate that is not a Kronecker sum (EKFAC) has the damping added to its
    eigenvalues."""
    if not isinstance(approx, KroneckerSum):
        dense = approx.to_dense()
        return dense + damping * torch.eye(dense.shape[0], dtype=dense.dtype)
    a, g = approx.terms[0]
    a_d, g_d = damped_first_term(a, g, damping)
    dense = torch.kron(a_d, g_d)
    for c, d in approx.terms[1:]:
        dense = dense + torch.kron(c, d)
    return dense


def test_pi_damping_formula():
    a = torch.diag(torch.tensor([4.0, 2.0, 0.0], dtype=DT))
    g = torch.diag(torch.tensor([1.0, 1.0], dtype=DT))
    a_d, g_d = damped_first_term(a, g, 0.01)
    pi = ((6.0 / 3) / (2.0 / 2)) ** 0.5
    assert torch.allclose(a_d, a + pi * 0.1 * torch.eye(3, dtype=DT))
    assert torch.allclose(g_d, g + 0.1 / pi * torch.eye(2, dtype=DT))


@pytest.mark.parametrize("name", sorted(APPROXIMATIONS))
@pytest.mark.parametrize("damping", [1e-3, 1e-1])
def test_damped_solve_matches_dense_solve(name, damping):
    abar, g = random_stats(11, 3, 4, seed=7)
    method = make_approximation(name, tol=1e-12, max_iter=20000)
    approx = method.fit(SampledFisherBlock(abar, g)).approximation
    inv = method.damped_inverse(approx, damping, psd_floor=1e-12)   # the method's own (EKFAC's is not a sum's)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(8), dtype=DT)
    dense = _damped_dense(approx, damping)
    positive_definite = float(torch.linalg.eigvalsh(dense).min()) > 0
    if approx.rank == 2:
        assert inv.clamped == 0 or not positive_definite
    if approx.rank > 2 and not positive_definite:
        # an indefinite rank-k sum (the rule here: m = 11 examples) has no damped solve to match; the
        # truncated CG stops at negative curvature with a finite answer (test_rank_k.py has the PD cases)
        assert torch.isfinite(inv.solve(x)).all() and inv.negative_curvature >= 1
    elif getattr(inv, "clamped", 0) == 0:
        expected = torch.linalg.solve(dense, vec(x))
        got = vec(inv.solve(x))
        # backward error at machine level, forward error within what the conditioning allows
        assert torch.linalg.norm(dense @ got - vec(x)) <= 1e-10 * torch.linalg.norm(dense) * torch.linalg.norm(got)
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-9)
        assert torch.allclose(inv.dense_inverse() @ dense, torch.eye(16, dtype=DT), atol=1e-6)


def test_psd_floor_clamps_only_in_the_eigenbasis():
    gen = torch.Generator().manual_seed(9)
    a = torch.eye(3, dtype=DT) + 0.1 * torch.ones(3, 3, dtype=DT)
    g = 2 * torch.eye(2, dtype=DT)
    c = torch.diag(torch.tensor([1.0, -1.0, 0.5], dtype=DT))
    d = torch.diag(torch.tensor([3.0, 0.2], dtype=DT))  # -1 * 3 makes 1 + s1 s2 negative
    approx = KroneckerSum([(a, g), (c, d)])
    inv = damped_inverse(approx, 1e-4, psd_floor=0.1)
    assert inv.clamped >= 1
    # the clamped preconditioner is the inverse of the matrix with the floored eigenvalues: PSD
    m = torch.linalg.inv(inv.dense_inverse())
    assert float(torch.linalg.eigvalsh(0.5 * (m + m.T)).min()) > 0
    # it agrees with the exact inverse on directions away from the clamped ones: K (x) diag K^T
    k = torch.kron(inv.k1, inv.k2)
    exact = _damped_dense(approx, 1e-4)
    lam = torch.diag(k.T @ exact @ k)  # the unclamped diagonal 1 + s1 s2
    assert torch.allclose(k.T @ exact @ k, torch.diag(lam), atol=1e-10)  # K diagonalises it
    floored = torch.clamp(lam, min=0.1)
    x = torch.randn(2, 3, generator=gen, dtype=DT)
    assert torch.allclose(vec(inv.solve(x)), k @ ((k.T @ vec(x)) / floored))


@pytest.mark.parametrize("name", sorted(APPROXIMATIONS))
@pytest.mark.parametrize("route", ["direct", "gram"])
def test_constant_stream_reproduces_single_batch(name, route):
    abar, g = random_stats(10, 3, 4, seed=11)
    fb = SampledFisherBlock(abar, g)
    method = make_approximation(name, tol=1e-13, max_iter=50000, route=route)
    single = method.fit(fb).approximation
    previous, warm = single, {}
    for _ in range(3):
        previous = method.fit(fb, previous=previous, rho=0.95, warm=warm).approximation
    scale = float(torch.linalg.norm(single.to_dense()))
    assert torch.allclose(previous.to_dense(), single.to_dense(), atol=1e-7 * scale)


@pytest.mark.parametrize("name", ["kpsvd", "deflation", "lanczos", "kfac_corrected"])
@pytest.mark.parametrize("route", ["direct", "gram"])
def test_sign_flip_of_previous_factors_changes_nothing(name, route):
    abar, g = random_stats(10, 3, 4, seed=12)
    abar2, g2 = random_stats(10, 3, 4, seed=13)
    method = make_approximation(name, tol=1e-13, max_iter=50000, route=route)
    previous = method.fit(SampledFisherBlock(abar, g)).approximation
    flipped = KroneckerSum([(-a, -q) if i > 0 or name != "kfac_corrected" else (a, q)
                            for i, (a, q) in enumerate(previous.terms)])
    new = SampledFisherBlock(abar2, g2)
    r1 = method.fit(new, previous=previous, rho=0.5).approximation
    r2 = method.fit(new, previous=flipped, rho=0.5).approximation
    assert torch.allclose(r1.to_dense(), r2.to_dense(), atol=1e-8 * float(torch.linalg.norm(r1.to_dense())))
    p1, p2 = damped_inverse(r1, 1e-2), damped_inverse(r2, 1e-2)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=DT)
    assert torch.allclose(p1.solve(x), p2.solve(x), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("route", ["direct", "gram"])
def test_averaging_is_a_convex_combination_in_fisher_space(route):
    abar, g = random_stats(10, 3, 4, seed=14)
    abar2, g2 = random_stats(10, 3, 4, seed=15)
    f2 = dense_fisher(abar2, g2)
    method = KPSVD(tol=1e-13, max_iter=50000, route=route)
    prev = method.fit(SampledFisherBlock(abar, g)).approximation
    res = method.fit(SampledFisherBlock(abar2, g2), previous=prev, rho=0.3).approximation
    best, _ = best_rank_r_of_zigzag(0.3 * prev.to_dense() + 0.7 * f2, 4, 4, 1)
    assert torch.allclose(res.to_dense(), best, atol=1e-8 * float(torch.linalg.norm(best)))


@pytest.mark.parametrize("name", ["kpsvd", "deflation", "lanczos", "kfac_corrected"])
def test_gram_and_direct_routes_take_the_same_iterates(name):
    """Same algorithm in other coordinates: same iteration counts, same factors (warm start too)."""
    abar, g = random_stats(40, 6, 5, seed=21)
    abar2, g2 = random_stats(40, 6, 5, seed=22)
    results = {}
    for route in ("direct", "gram"):
        method = make_approximation(name, tol=1e-8, route=route)
        warm = {}
        first = method.fit(SampledFisherBlock(abar, g), warm=warm)
        second = method.fit(SampledFisherBlock(abar2, g2), previous=first.approximation, rho=0.5, warm=warm)
        results[route] = (first, second)
    for a, b in zip(results["direct"], results["gram"]):
        assert a.iterations == b.iterations
        assert torch.allclose(a.approximation.to_dense(), b.approximation.to_dense(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["kpsvd", "deflation", "lanczos"])
def test_cold_start_ignores_every_previous_vector_and_reaches_the_same_answer(name):
    """warm_start=False (the benchmark's cold timing): neither the stored vectors nor the previous
    approximation's factors seed the solver, so the solve is the same whatever they hold; the answer
    is still the dense best rank-r approximation of the averaged block."""
    abar, g = random_stats(40, 6, 5, seed=31)
    noise_a, noise_g = random_stats(40, 6, 5, seed=32)
    abar2, g2 = abar + 0.05 * noise_a, g + 0.05 * noise_g   # a nearby batch: the warm start pays off
    warm_method = make_approximation(name, tol=1e-10, max_iter=20000)
    warm = {}
    prev = warm_method.fit(SampledFisherBlock(abar, g), warm=warm).approximation
    cold_method = make_approximation(name, tol=1e-10, max_iter=20000, warm_start=False)
    garbage = {k: torch.randn_like(v) for k, v in warm.items()}
    cold_a = cold_method.fit(SampledFisherBlock(abar2, g2), previous=prev, rho=0.5, warm=dict(garbage))
    cold_b = cold_method.fit(SampledFisherBlock(abar2, g2), previous=prev, rho=0.5, warm={})
    assert cold_a.iterations == cold_b.iterations
    assert torch.equal(cold_a.approximation.to_dense(), cold_b.approximation.to_dense())
    warm_fit = warm_method.fit(SampledFisherBlock(abar2, g2), previous=prev, rho=0.5, warm=warm)
    assert sum(warm_fit.iterations.values()) < sum(cold_a.iterations.values())
    best, _ = best_rank_r_of_zigzag(0.5 * prev.to_dense() + 0.5 * dense_fisher(abar2, g2), abar.shape[1], g.shape[1],
                                    warm_method.rank)
    scale = float(torch.linalg.norm(best))
    for fit in (cold_a, warm_fit):
        assert torch.allclose(fit.approximation.to_dense(), best, atol=1e-6 * scale)


def test_failed_eigh_is_retried_in_float64(monkeypatch):
    from kfac_bench.curvature import inverse as inv_mod
    real = torch.linalg.eigh
    calls = []

    def flaky(x):
        calls.append(x.dtype)
        if x.dtype == torch.float32:
            raise torch.linalg.LinAlgError("simulated non-convergence")
        return real(x)

    monkeypatch.setattr(inv_mod.torch.linalg, "eigh", flaky)
    x = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    evals, evecs = inv_mod.symmetric_eigh(x)
    assert calls == [torch.float32, torch.float64]
    assert evals.dtype == torch.float32
    assert torch.allclose(evecs @ torch.diag(evals) @ evecs.T, x, atol=1e-5)


def test_non_finite_matrix_raises_curvature_error():
    from kfac_bench.curvature.inverse import CurvatureError, symmetric_eigh
    with pytest.raises(CurvatureError):
        symmetric_eigh(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("name", sorted(APPROXIMATIONS))
@pytest.mark.parametrize("convention", ["paper", "authors"])
def test_solve_from_the_gradient_parts_is_the_solve_of_their_concatenation(name, convention):
    """``solve_with_bias(dW, db)`` (the optimizer's path for a layer with a bias: no concatenation,
    the bias column apart) returns the two parts of ``solve([dW | db])``; d_a = 5 != d_g = 3 so a
    transposed index or a misplaced bias column shows."""
    abar, g = random_stats(30, 4, 3, seed=12)
    method = make_approximation(name, tol=1e-12, max_iter=20000)
    approx = method.fit(SampledFisherBlock(abar, g)).approximation
    inv = method.damped_inverse(approx, 1e-2, psd_floor=1e-12, convention=convention)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(13), dtype=DT)
    weight_part, bias_part = inv.solve_with_bias(x[:, :-1].contiguous(), x[:, -1].contiguous())
    assert weight_part.shape == (3, 4) and bias_part.shape == (3,) and weight_part.is_contiguous()
    expected = inv.solve(x)
    assert torch.allclose(torch.cat([weight_part, bias_part[:, None]], 1), expected, rtol=1e-12,
                          atol=1e-14 * float(expected.abs().max()))


def test_all_finite_is_exact_even_when_the_sum_overflows():
    from kfac_bench.curvature.kronecker import all_finite
    big = torch.full((4, 4), 3e38, dtype=torch.float32)           # finite entries, the sum overflows
    assert all_finite(big) and all_finite(torch.zeros(0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.ones(3, 3, dtype=DT)
        x[1, 2] = bad
        assert not all_finite(x)
    mixed = torch.tensor([float("inf"), -float("inf"), 1.0])      # inf - inf: the sum is NaN
    assert not all_finite(mixed)
