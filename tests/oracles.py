"""Dense float64 oracles for the curvature tests: everything formed explicitly, by loops where the
point is to be independent of the implementation's index tricks."""
from __future__ import annotations

import torch

DT = torch.float64


def random_stats(m: int, d_in: int, d_g: int, seed: int = 0, correlated: bool = True):
    """Augmented inputs (bias column of ones LAST) and per-example gradients, with a dependence
    between them so that KFAC's independence assumption is visibly wrong."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d_in, generator=gen, dtype=DT)
    g = torch.randn(m, d_g, generator=gen, dtype=DT)
    if correlated:
        g = g * (1.0 + a[:, :1].abs())  # gradient magnitude depends on the activation
    abar = torch.cat([a, torch.ones(m, 1, dtype=DT)], dim=1)
    return abar, g


def dense_fisher(abar, g):
    """(1/m) sum_t kron(a_t a_t^T, g_t g_t^T), example by example."""
    m = abar.shape[0]
    return sum(torch.kron(torch.outer(abar[t], abar[t]), torch.outer(g[t], g[t])) for t in range(m)) / m


def vec(x):
    """Column-major vec by explicit loops."""
    rows, cols = x.shape
    return torch.stack([x[i, j] for j in range(cols) for i in range(rows)])


def mat(v, rows, cols):
    out = torch.empty(rows, cols, dtype=v.dtype)
    for j in range(cols):
        for i in range(rows):
            out[i, j] = v[j * rows + i]
    return out


def zigzag(f, d_a, d_g):
    """The paper's Z(M): row (mu, nu) -- ordered mu fastest -- is vec(M_{mu,nu})^T."""
    rows = []
    for nu in range(d_a):
        for mu in range(d_a):
            block = f[mu * d_g:(mu + 1) * d_g, nu * d_g:(nu + 1) * d_g]
            rows.append(vec(block))
    return torch.stack(rows)


def best_rank_r_of_zigzag(f, d_a, d_g, r):
    """Best rank-r Kronecker approximation (dense) and the singular values of Z(F)."""
    z = zigzag(f, d_a, d_g)
    u, s, vt = torch.linalg.svd(z)
    approx = torch.zeros_like(f)
    for k in range(r):
        approx = approx + s[k] * torch.kron(mat(u[:, k], d_a, d_a), mat(vt[k], d_g, d_g))
    return approx, s


class DenseOp:
    """A dense matrix as an operator for the SVD solvers (vectors are 1-D)."""

    def __init__(self, m):
        self.m = m

    def matvec(self, v):
        return self.m @ v

    def rmatvec(self, u):
        return self.m.mT @ u

    @staticmethod
    def inner_left(x, y):
        return torch.dot(x, y)

    inner_right = inner_left
