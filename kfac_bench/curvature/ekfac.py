"""EKFAC (George et al. 2018, "Fast approximate natural gradient descent in a Kronecker-factored
eigenbasis"): KFAC's Kronecker eigenbasis, with the eigenvalues re-estimated in it.

KFAC approximates a layer's Fisher block ``F = (1/m) sum_t (a_t a_t^T) (x) (g_t g_t^T)`` by
``A (x) G`` with ``A = E[a a^T] = Q_A L_A Q_A^T`` and ``G = E[g g^T] = Q_G L_G Q_G^T``, i.e. by
``Q diag(L_A (x) L_G) Q^T`` in the basis ``Q = Q_A (x) Q_G``. EKFAC keeps ``Q`` and replaces the
Kronecker-structured eigenvalues with the best diagonal in that basis, the diagonal of ``Q^T F Q``:

    S[i, j] = (1/m) sum_t (q_G,i^T g_t)^2 (q_A,j^T a_t)^2          (laid out like dW: d_g x d_a)

computed from the per-example statistics in ``O(m (d_a^2 + d_g^2 + d_a d_g))``, never forming ``F``.
It is not a sum of Kronecker products: a diagonal in a Kronecker eigenbasis.

Because ``Q^T F_hat Q`` is diagonal for both methods and ``S`` is the diagonal of ``Q^T F Q``,
``||F - F_EKFAC||_F <= ||F - F_KFAC||_F`` whenever both use the same ``Q`` (the factors of the same
statistics): EKFAC's Error 1 is never above KFAC's. With ``F_hat`` the projection of ``F`` on the
diagonal, ``<F, F_hat> = ||F_hat||^2 = ||S||^2``, so ``||F - F_hat||^2 = ||F||^2 - ||S||^2`` and the
eigenvalues of ``F_hat`` are the entries of ``S`` (Figure 1's two errors at the cost of ``S``).

Damping is added to the scaling, ``(Q (diag(S) + lam I) Q^T)^{-1} vec(X) =
vec(Q_G ((Q_G^T X Q_A) / (S + lam)) Q_A^T)`` -- the form of the rank-2 methods' damped inverse
(:class:`.inverse.TwoTermKroneckerInverse` with orthogonal ``K1 = Q_A``, ``K2 = Q_G``), so the solve
costs 4 matrix products per layer and reuses that class.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .inverse import CurvatureError, TwoTermKroneckerInverse, symmetric_eigh
from .kronecker import SampledFisherBlock, all_finite


def kronecker_eigenbasis(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """``(Q_A, Q_G)``: eigenvectors of KFAC's factors ``A`` (d_a x d_a) and ``G`` (d_g x d_g)."""
    return symmetric_eigh(a)[1], symmetric_eigh(g)[1]


def eigenbasis_scaling(block: SampledFisherBlock, q_a: Tensor, q_g: Tensor) -> Tensor:
    """``S = diag(Q^T F Q)`` for ``Q = Q_A (x) Q_G``, as a (d_g, d_a) matrix (``S[i, j]`` scales the
    direction ``q_A,j (x) q_G,i``, the entry ``[i, j]`` of a weight gradient)."""
    g2 = (block.g @ q_g).square()          # (m, d_g): per-example gradients in G's eigenbasis
    a2 = (block.abar @ q_a).square()       # (m, d_a)
    return g2.mT @ a2 / block.m


@dataclass
class EigenbasisDiagonal:
    """``Q diag(vec(S)) Q^T`` with ``Q = Q_A (x) Q_G``: EKFAC's estimate of one layer's block."""

    q_a: Tensor        # (d_a, d_a), orthogonal
    q_g: Tensor        # (d_g, d_g), orthogonal
    scaling: Tensor    # (d_g, d_a), non-negative

    def damped_inverse(self, damping: float) -> TwoTermKroneckerInverse:
        """``(F_hat + damping I)^{-1}``: the damping added to every scaling entry."""
        if damping <= 0:
            raise ValueError(f"EKFAC damping must be positive, got {damping}")
        shifted = self.scaling + damping
        if not all_finite(shifted):
            raise CurvatureError("non-finite EKFAC scaling")
        return TwoTermKroneckerInverse(self.q_a, self.q_g, 1.0 / shifted, 0)

    def frobenius_sq(self) -> float:
        """``||F_hat||_F^2 = ||S||_F^2`` (``Q`` orthogonal)."""
        return float(self.scaling.double().square().sum())

    def spectrum(self) -> Tensor:
        """The eigenvalues of ``F_hat``, decreasing: the entries of ``S``."""
        return torch.sort(self.scaling.reshape(-1), descending=True).values

    def to_dense(self) -> Tensor:
        """The explicit ``n x n`` matrix, index ``(i_a, i_g)`` a-major like :meth:`SampledFisherBlock.to_dense`.
        For tests and tiny problems only."""
        q = torch.kron(self.q_a, self.q_g)
        return q @ torch.diag(self.scaling.mT.reshape(-1)) @ q.mT

    def state(self) -> dict:
        return {"q_a": self.q_a, "q_g": self.q_g, "scaling": self.scaling}

    @classmethod
    def from_state(cls, state: dict) -> "EigenbasisDiagonal":
        return cls(state["q_a"], state["q_g"], state["scaling"])


def fit_ekfac(block: SampledFisherBlock, factors: tuple[Tensor, Tensor] | None = None) -> EigenbasisDiagonal:
    """EKFAC on one batch of statistics: the eigenbasis of ``factors`` (KFAC's ``(A, G)``; default the
    batch's own) and the scaling re-estimated from the batch's per-example gradients."""
    a, g = block.kfac_factors() if factors is None else factors
    q_a, q_g = kronecker_eigenbasis(a, g)
    return EigenbasisDiagonal(q_a, q_g, eigenbasis_scaling(block, q_a, q_g))


def ekfac_frobenius_error_sq(fisher_frobenius_sq: float, estimate: EigenbasisDiagonal) -> float:
    """``||F - F_hat||_F^2 = ||F||^2 - ||S||^2`` when ``S`` was estimated from ``F``'s own statistics
    (the projection identity of the module docstring; clipped at 0 against rounding)."""
    return max(fisher_frobenius_sq - estimate.frobenius_sq(), 0.0)


__all__ = ["EigenbasisDiagonal", "eigenbasis_scaling", "ekfac_frobenius_error_sq", "fit_ekfac",
           "kronecker_eigenbasis"]
