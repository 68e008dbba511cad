"""Kronecker sums ``sum_k A_k (x) G_k`` and the implicit Fisher block of one layer.

Conventions (used everywhere in kfac-bench, written once here):

* A Linear layer with ``d_in`` inputs and ``d_out`` outputs has the combined weight
  ``W = [weight | bias]`` of shape ``(d_out, d_in + 1)``; the augmented input is ``a_bar = (a, 1)``
  (bias LAST).
* ``vec`` stacks columns, so ``vec(g a_bar^T) = a_bar (x) g`` and the layer block is
  ``F = E[(a_bar a_bar^T) (x) (g g^T)]``: the A-side (input side, size ``d_a = d_in + 1``) is the
  outer Kronecker factor, the G-side (output side, ``d_g = d_out``) the inner one.
* ``(A (x) G) vec(X) = vec(G X A^T)`` for ``X`` of shape ``(d_g, d_a)``.
* The zigzag rearrangement ``Z(F)`` (paper section 3.1) maps G-space (``d_g x d_g`` matrices) to
  A-space (``d_a x d_a`` matrices). Vectors of those spaces are kept as matrices, ``V = MAT(v)``
  (column-major), so ``<u, v> = sum(U * V)``. ``Z(A (x) G) = vec(A) vec(G)^T``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .spectrum import kronecker_sum_spectrum


def vec(x: Tensor) -> Tensor:
    """Column-stacking vectorisation of the last two dimensions."""
    return x.mT.reshape(*x.shape[:-2], -1)


def unvec(v: Tensor, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`vec` (``MAT`` in the paper)."""
    return v.reshape(*v.shape[:-1], cols, rows).mT


def matrix_inner(x: Tensor, y: Tensor) -> Tensor:
    """Frobenius inner product ``<vec x, vec y>``."""
    return torch.sum(x * y)


def matrix_inner_float64(x: Tensor, y: Tensor) -> Tensor:
    """``<vec x, vec y>`` formed and summed in float64 (a 0-dim float64 tensor).

    The solvers' norms are square roots of such inner products. In float32 the squares leave the
    representable range long before the vectors do: zigzag products are ~|g|^2 |a|^2, so
    gradients ~1e-12 give entries ~1e-24 whose squares (1e-48) flush to zero, and |a| ~ 1e3 with
    |g| ~ 1e7 gives ~1e20 whose squares (1e40) overflow -- the solvers then see a zero or infinite
    norm and return zero factors. Promoting only the inner products costs O(d^2) per product,
    against the O(m d^2) of the product itself.
    """
    return torch.sum(x.to(torch.float64) * y.to(torch.float64))


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite. One reduction first: a NaN or an infinity anywhere
    makes the sum non-finite, so a finite sum proves it in one pass (``isfinite(x).all()`` takes
    five: ==, abs, !=, and, all); only a non-finite sum, which overflow of finite entries can also
    give, is settled entry by entry."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


@dataclass
class KroneckerSum:
    """``sum_k A_k (x) G_k`` with ``A_k`` of size ``d_a`` and ``G_k`` of size ``d_g``.

    Behaves like a linear operator on ``vec(X)``, ``X`` of shape ``(d_g, d_a)``; it also exposes the
    zigzag products of itself (``Z(A (x) G) v = <vec G, v> vec A``), which is what deflation and the
    Fisher-space moving average need.
    """

    terms: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return len(self.terms)

    @property
    def shape_a(self) -> int:
        return self.terms[0][0].shape[0]

    @property
    def shape_g(self) -> int:
        return self.terms[0][1].shape[0]

    def __matmul__(self, x: Tensor) -> Tensor:
        return self.matvec(x)

    def matvec(self, x: Tensor) -> Tensor:
        """``(sum_k A_k (x) G_k) vec(X)`` returned as the matrix ``sum_k G_k X A_k^T``."""
        out = torch.zeros_like(x)
        for a, g in self.terms:
            out = out + g @ x @ a.mT
        return out

    def to_dense(self) -> Tensor:
        """The explicit ``(d_a d_g) x (d_a d_g)`` matrix. For tests and tiny problems only."""
        return sum(torch.kron(a, g) for a, g in self.terms)

    def frobenius_inner(self, other: "KroneckerSum") -> Tensor:
        """``<self, other>_F = sum_jk tr(A_j^T A'_k) tr(G_j^T G'_k)``: never forms the matrices."""
        total = self.terms[0][0].new_zeros(())
        for a, g in self.terms:
            for b, h in other.terms:
                total = total + matrix_inner(a, b) * matrix_inner(g, h)
        return total

    def frobenius_norm(self) -> Tensor:
        return torch.sqrt(torch.clamp(self.frobenius_inner(self), min=0))

    def zigzag_matvec(self, v: Tensor) -> Tensor:
        """``Z(self) v = sum_k <G_k, V> A_k``."""
        out = None
        for a, g in self.terms:
            term = matrix_inner(g, v) * a
            out = term if out is None else out + term
        return out

    def zigzag_rmatvec(self, u: Tensor) -> Tensor:
        """``Z(self)^T u = sum_k <A_k, U> G_k``."""
        out = None
        for a, g in self.terms:
            term = matrix_inner(a, u) * g
            out = term if out is None else out + term
        return out

    def is_finite(self) -> bool:
        return all(all_finite(a) and all_finite(g) for a, g in self.terms)

    def to(self, *args, **kwargs) -> "KroneckerSum":
        return KroneckerSum([(a.to(*args, **kwargs), g.to(*args, **kwargs)) for a, g in self.terms])

    # What Figure 1's metrics ask of an estimate (kfac_bench.curvature.estimate.MeasurableEstimate),
    # in float64 (kfac_bench.curvature.metrics has the cost table and the spectrum solvers).
    @property
    def kronecker_rank(self) -> int:
        """Its number of terms: the rank whose best Kronecker approximation (Theorem 3.1) it is
        compared with."""
        return self.rank

    @property
    def spectrum_needs_eigensolve(self) -> bool:
        """A product's spectrum is the products of its factors' eigenvalues; a sum needs a solver."""
        return self.rank >= 2

    def inner_with(self, block: "SampledFisherBlock") -> float:
        """``<F, self>_F = (1/m) sum_k sum_t (a_t^T A_k a_t)(g_t^T G_k g_t)`` against a batch's block."""
        return float(block.to(torch.float64).inner_kronecker(self.to(torch.float64)))

    def frobenius_sq(self) -> float:
        """``||self||_F^2 = sum_jk <A_j, A_k> <G_j, G_k>``."""
        k64 = self.to(torch.float64)
        return float(k64.frobenius_inner(k64))

    def top_spectrum(self, top: int | None = None, **solver: object):
        """The ``top`` largest eigenvalues: :func:`kfac_bench.curvature.spectrum.kronecker_sum_spectrum`
        with the spectrum solver's options."""
        return kronecker_sum_spectrum(self, top, **solver)


# Rows above which a sum over rows is taken in chunks accumulated in float64 (:func:`rows_inner`)
TALL_ROWS = 16384


def rows_inner(xt: Tensor, y: Tensor) -> Tensor:
    """``xt @ y`` for ``xt`` ``(., m)`` and ``y`` ``(m, .)``: a sum over ``m`` rows. Up to :data:`TALL_ROWS` rows (every
    MLP batch) one product, as always; above, chunks of that many rows summed in float64. Why: a conv
    layer under ``spatial="independent"`` has ``N T`` rows (295k on the MNIST CNN's first layer at batch
    512), and one float32 product over them lost ~2e-4 relative on the narrow ``d_g = 6`` side, which
    stalled power iterations at that residual (1000 iterations, sigma wrong in the 4th digit); chunked,
    the residual reaches 1e-6 and sigma float64's to 6 digits, no slower (measured)."""
    m = y.shape[0]
    if m <= TALL_ROWS:
        return xt @ y
    total = torch.zeros(xt.shape[0], y.shape[1], dtype=torch.float64, device=y.device)
    for start in range(0, m, TALL_ROWS):
        total += (xt[:, start:start + TALL_ROWS] @ y[start:start + TALL_ROWS]).double()
    return total.to(torch.promote_types(xt.dtype, y.dtype))


class SampledFisherBlock:
    """The Monte-Carlo Fisher block of one layer from one batch of statistics.

    ``F = (1/m) sum_t (a_t a_t^T) (x) (g_t g_t^T)`` with ``abar`` of shape ``(m, d_a)`` (augmented
    inputs, one row per example) and ``g`` of shape ``(m, d_g)`` (per-example pre-activation
    gradients). Nothing of size ``(d_a d_g)^2`` is ever formed except by :meth:`to_dense`.

    A weight-sharing layer's exact (or banded) block, with a sum over position pairs per example, is
    :class:`kfac_bench.curvature.spatial.SpatialFisherBlock`; it offers the same products and metrics.
    """

    # Z(F) = (1/m) sum_t vec(a_t a_t^T) vec(g_t g_t^T)^T: one rank-one term per row, the factorisation
    # the Gram route (kfac_bench.curvature.gram) and the exact zigzag singular values
    # (kfac_bench.curvature.metrics.zigzag_singular_values) work in
    supports_gram_route = True
    # and Z(F) is zero on the skew matrices (ZigzagOperator)
    zigzag_skew_part = False

    def __init__(self, abar: Tensor, g: Tensor):
        if abar.shape[0] != g.shape[0]:
            raise ValueError(f"abar has {abar.shape[0]} rows but g has {g.shape[0]}")
        self.abar = abar
        self.g = g
        self.m = abar.shape[0]

    @property
    def shape_a(self) -> int:
        return self.abar.shape[1]

    @property
    def shape_g(self) -> int:
        return self.g.shape[1]

    # Proposition 3.1: O(m d^2) each, F and Z(F) never formed.
    def zigzag_matvec(self, v: Tensor) -> Tensor:
        """``Z(F) v = (1/m) sum_t (g_t^T V g_t) a_t a_t^T``."""
        w = torch.sum((self.g @ v) * self.g, dim=1) / self.m
        return rows_inner(self.abar.mT * w, self.abar)

    def zigzag_rmatvec(self, u: Tensor) -> Tensor:
        """``Z(F)^T u = (1/m) sum_t (a_t^T U a_t) g_t g_t^T``."""
        w = torch.sum((self.abar @ u) * self.abar, dim=1) / self.m
        return rows_inner(self.g.mT * w, self.g)

    def kfac_factors(self) -> tuple[Tensor, Tensor]:
        """``(E[a a^T], E[g g^T])``: the KFAC factors of equation (1)."""
        return rows_inner(self.abar.mT, self.abar) / self.m, rows_inner(self.g.mT, self.g) / self.m

    def gram(self) -> Tensor:
        """``J J^T / m`` with ``J_t = vec(g_t a_t^T)``: ``(a_s.a_t)(g_s.g_t)/m``. Its non-zero
        spectrum is that of ``F``; ``||F||_F^2 = ||gram||_F^2``."""
        return (self.abar @ self.abar.mT) * (self.g @ self.g.mT) / self.m

    def inner_kronecker(self, ks: KroneckerSum) -> Tensor:
        """``<F, sum_k A_k (x) G_k>_F = (1/m) sum_k sum_t (a_t^T A_k a_t)(g_t^T G_k g_t)``."""
        total = self.abar.new_zeros(())
        for a, g in ks.terms:
            qa = torch.sum((self.abar @ a) * self.abar, dim=1)
            qg = torch.sum((self.g @ g) * self.g, dim=1)
            total = total + torch.dot(qa, qg) / self.m
        return total

    def eigenbasis_second_moment(self, q_a: Tensor, q_g: Tensor) -> Tensor:
        """``diag(Q^T F Q)`` for ``Q = Q_A (x) Q_G`` as a ``(d_g, d_a)`` matrix (EKFAC's scaling):
        ``S[i, j] = (1/m) sum_t (q_G,i^T g_t)^2 (q_A,j^T a_t)^2``, the entry ``[i, j]`` of a weight
        gradient scaling the direction ``q_A,j (x) q_G,i``. ``O(m (d_a^2 + d_g^2 + d_a d_g))``."""
        g2 = (self.g @ q_g).square()          # (m, d_g): per-example gradients in G's eigenbasis
        a2 = (self.abar @ q_a).square()       # (m, d_a)
        return rows_inner(g2.mT, a2) / self.m

    def to_dense(self) -> Tensor:
        """The explicit block. For tests and tiny problems only."""
        j = (self.abar[:, :, None] * self.g[:, None, :]).reshape(self.m, -1)  # rows vec(g a^T) = a (x) g
        return j.mT @ j / self.m

    def to(self, *args, **kwargs) -> "SampledFisherBlock":
        return SampledFisherBlock(self.abar.to(*args, **kwargs), self.g.to(*args, **kwargs))


class ZigzagOperator:
    """``Z(sum_i c_i X_i)`` for blocks ``X_i`` that are :class:`SampledFisherBlock`, a weight-sharing
    layer's :class:`~kfac_bench.curvature.spatial.SpatialFisherBlock` or :class:`KroneckerSum` (anything
    with ``zigzag_matvec``, ``zigzag_rmatvec``, ``shape_a``, ``shape_g``), as the implicit operator the
    SVD solvers need.

    Used for the Fisher-space moving average ``Z(rho F_old + (1 - rho) F_batch)`` and for deflation
    ``Z(F - R (x) S)``: a known Kronecker term costs one inner product per product, not O(m d^2).

    The operator is ``Z`` on the symmetric matrices, where the factors live (Proposition 3.2; the damped
    inverses need symmetric factors). For a symmetric ``F``, ``Z(F)`` maps symmetric matrices to
    symmetric ones and skew to skew. A batch block's is zero on the skew ones, but a weight-sharing
    layer's is not (its skew triplets are ``K_a (x) K_g`` terms, docs/mathematics.md "Convolutional
    layers"): when a part says so (``zigzag_skew_part``), the products' outputs are symmetrised,
    ``Sym(Z v) = Z_sym Sym(v)``, so the rounding noise of the skew part cannot grow into the iterates of
    a solver whose target lies below a skew singular value (a deflated remainder).
    """

    def __init__(self, parts: list[tuple[float, object]]):
        self.parts = [(float(c), x) for c, x in parts if c != 0.0]
        if not self.parts:
            raise ValueError("ZigzagOperator needs at least one non-zero part")
        self.symmetrize = any(getattr(x, "zigzag_skew_part", False) for _, x in self.parts)

    @classmethod
    def of(cls, block) -> "ZigzagOperator":
        return block if isinstance(block, ZigzagOperator) else cls([(1.0, block)])

    def minus(self, ks: KroneckerSum) -> "ZigzagOperator":
        return ZigzagOperator(self.parts + [(-1.0, ks)])

    @property
    def shape_a(self) -> int:
        return self.parts[0][1].shape_a

    @property
    def shape_g(self) -> int:
        return self.parts[0][1].shape_g

    def matvec(self, v: Tensor) -> Tensor:
        out = None
        for c, x in self.parts:
            term = c * x.zigzag_matvec(v)
            out = term if out is None else out + term
        return 0.5 * (out + out.mT) if self.symmetrize else out

    def rmatvec(self, u: Tensor) -> Tensor:
        out = None
        for c, x in self.parts:
            term = c * x.zigzag_rmatvec(u)
            out = term if out is None else out + term
        return 0.5 * (out + out.mT) if self.symmetrize else out

    # Vectors of both spaces are matrices; the inner product is the Frobenius one (in float64:
    # matrix_inner_float64), and the conversions the Gram route needs (kfac_bench.curvature.gram)
    # are identities here.
    inner_left = staticmethod(matrix_inner_float64)
    inner_right = staticmethod(matrix_inner_float64)

    @staticmethod
    def start_vector(*mats: Tensor) -> Tensor:
        return sum(mats[1:], mats[0])

    def minus_kfac(self, kfac: KroneckerSum) -> "ZigzagOperator":
        """``Z - A_kfac (x) G_kfac`` (KFAC-corrected)."""
        return self.minus(kfac)

    def minus_triplet(self, sigma: float, u: Tensor, v: Tensor) -> "ZigzagOperator":
        """``Z - sigma u v^T`` (deflation by a found triplet)."""
        return self.minus(KroneckerSum([(sigma * u, v)]))

    @staticmethod
    def left_matrix(u: Tensor) -> Tensor:
        return u

    @staticmethod
    def right_matrix(v: Tensor) -> Tensor:
        return v
