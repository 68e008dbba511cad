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
