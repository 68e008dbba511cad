"""The Fisher block of a layer that shares its weights over positions (``nn.Conv2d``,
``nn.ConvTranspose2d``), under a named treatment of the position sum (``spatial=``).

A weight-sharing layer's per-example weight gradient is a sum over positions ``t = 1..T``:
``DW_n = sum_t g_nt a_nt^T`` (for a Conv2d ``a_nt`` is the unfolded, bias-augmented input patch and
``g_nt`` the output gradient at output position t; for a ConvTranspose2d the roles its adjoint gives
them, :mod:`kfac_bench.curvature.capture`). The exact block is

    F = (1/N) sum_n vec(DW_n) vec(DW_n)^T = (1/N) sum_n sum_{t,s} (a_nt a_ns^T) (x) (g_nt g_ns^T).

The treatments (docs/mathematics.md, "Convolutional layers", derives each):

* ``independent`` (default; Grosse & Martens 2016, KFC; Eschenhagen et al. 2023's KFAC-expand):
  spatially uncorrelated derivatives drop the ``t != s`` terms, ``F ~ (1/N) sum_n sum_t (a a^T) (x) (g g^T)``,
  which is a :class:`SampledFisherBlock` of the ``N T`` position rows with ``g`` scaled by ``sqrt(T)``:
  its KFAC factors are ``A = mean_nt a a^T`` and ``G = T mean_nt g g^T`` (KFC's ``Omega`` and ``Gamma``
  up to where the ``T`` sits), and every approximation fits this implied block.
* ``reduce`` (Eschenhagen et al. 2023's KFAC-reduce): ``a_n = mean_t a_nt``, ``g_n = sum_t g_nt``, a
  :class:`SampledFisherBlock` of ``N`` rows; exact when the inputs do not vary over positions.
* ``exact``: the exact block, :class:`SpatialFisherBlock` with every ``(t, s)`` pair.
* ``banded`` (the authors' code, ``utils/optim_utils.py`` ``ZFv_cnn``/``ZFTu_cnn`` lines 102-176 at
  commit 97105b6): the pairs with ``|t - s| <= r`` on the flattened position index only, ``r`` =
  min(kernel) - 1 there; a named authors'-code behaviour, off by default.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .kronecker import SampledFisherBlock

SPATIAL_TREATMENTS = ("independent", "reduce", "exact", "banded")


def spatial_block(abar: Tensor, g: Tensor, treatment: str = "independent", radius: int | None = None):
    """The Fisher block of one weight-sharing layer from per-position statistics.

    ``abar``: ``(N, T, d_a)``, the augmented inputs of each example at each position; ``g``:
    ``(N, T, d_g)``, the per-example gradients of the (per-element-mean) loss at each position.
    ``radius`` is the band of ``treatment="banded"`` (required there, ignored elsewhere).
    """
    if abar.dim() != 3 or g.dim() != 3 or abar.shape[:2] != g.shape[:2]:
        raise ValueError(f"per-position statistics must be (N, T, d) with the same N and T; got abar "
                         f"{tuple(abar.shape)} and g {tuple(g.shape)}")
    n, t = abar.shape[:2]
    if treatment == "independent":
        return SampledFisherBlock(abar.reshape(n * t, -1), g.reshape(n * t, -1) * math.sqrt(t))
    if treatment == "reduce":
        return SampledFisherBlock(abar.mean(dim=1), g.sum(dim=1))
    if treatment == "exact":
        return SpatialFisherBlock(abar, g)
    if treatment == "banded":
        if radius is None or int(radius) < 0:
            raise ValueError(f"spatial='banded' needs a radius >= 0, got {radius!r}")
        return SpatialFisherBlock(abar, g, band_mask(t, int(radius), abar))
    raise ValueError(f"unknown spatial treatment {treatment!r}; choose one of {SPATIAL_TREATMENTS}")


def band_mask(positions: int, radius: int, like: Tensor) -> Tensor:
    """``M_ts = 1`` where ``|t - s| <= radius`` on the flattened position index, else 0 (``(T, T)``)."""
    idx = torch.arange(positions, device=like.device)
    return ((idx[:, None] - idx[None, :]).abs() <= radius).to(like.dtype)


PRODUCTS = ("auto", "pairs", "gradients")


class SpatialFisherBlock:
    """``F = (1/N) sum_n sum_{t,s} M_ts (a_nt a_ns^T) (x) (g_nt g_ns^T)``: the exact block of a
    weight-sharing layer (``mask=None``: every pair, ``M`` all ones) or the authors' banded one
    (``mask`` a symmetric ``(T, T)`` 0/1 band). ``abar`` ``(N, T, d_a)``, ``g`` ``(N, T, d_g)``; ``m = N``
    (examples, not positions). Nothing of size ``(d_a d_g)^2`` is formed except by :meth:`to_dense`.

    With ``A_n = abar[n]`` (``T x d_a``), ``G_n = g[n]`` (``T x d_g``) and ``DW_n = G_n^T A_n`` (the
    per-example weight gradient, ``d_g x d_a``), the zigzag products (docs/mathematics.md,
    "Convolutional layers") go one of two ways:

    * ``pairs`` (any mask): ``Z(F) v = (1/N) sum_n A_n^T ((G_n V G_n^T) o M) A_n`` through the
      position-by-position Grams ``G_n V G_n^T`` (``T x T``): ``O(N (T^2 (d_a + d_g) + T (d_a^2 +
      d_g^2)))`` per product, ``N T^2`` memory -- the authors' ``ZFv_cnn``;
    * ``gradients`` (exact block only): ``M`` all ones gives ``A_n^T G_n V G_n^T A_n``, so
      ``Z(F) v = (1/N) sum_n DW_n^T V DW_n`` from the per-example gradients (``O(N T d_a d_g)`` once,
      ``N d_a d_g`` memory), then ``O(N d_a d_g (d_a + d_g))`` per product: ``T`` only once, linearly.

    ``products="auto"`` takes the cheaper by a flop count (:meth:`uses_gradients`).

    KFAC's factors (:meth:`kfac_factors`) are KFC's (Grosse & Martens 2016), the ``independent``
    treatment's: under a weight-sharing layer they ARE KFAC's spatial assumptions. So KFAC-corrected on
    the exact block is KFC's KFAC term plus the best Kronecker correction of the exact remainder
    ``F - A_KFC (x) G_KFC``, and EKFAC keeps KFC's eigenbasis with the scaling measured on ``F``.

    ``Z(F)`` is not zero on the skew matrices: the ``(t, s)`` and ``(s, t)`` terms give
    ``(g_t^T V g_s)(a_t a_s^T - a_s a_t^T)`` for a skew ``V``. Its skew singular triplets are
    ``K_a (x) K_g`` terms (symmetric, indefinite); the approximations fit the best Kronecker sum with
    symmetric factors (:class:`.kronecker.ZigzagOperator` restricts the solvers to the symmetric
    matrices, ``zigzag_skew_part``), which is Theorem 3.1's optimum where the top triplets are symmetric
    (always the leading one of a PSD block, Proposition 3.2).

    The Gram route of the SVD solvers (:mod:`.gram`) needs one rank-one term per row
    (:class:`SampledFisherBlock`); here ``supports_gram_route`` is False and ``route="auto"`` takes the
    direct route. Figure 1's metrics against the exact block come from its ``N x N`` Gram
    ``K_nm = <DW_n, DW_m> / N`` (:meth:`gram`); a banded block is not of that form (not PSD in general)
    and has none.
    """

    supports_gram_route = False
    # Z(F) maps skew matrices to skew ones (the (t, s) and (s, t) terms), unlike a batch block's:
    # ZigzagOperator keeps the solvers on the symmetric matrices
    zigzag_skew_part = True

    def __init__(self, abar: Tensor, g: Tensor, mask: Tensor | None = None, products: str = "auto"):
        if abar.dim() != 3 or g.dim() != 3 or abar.shape[:2] != g.shape[:2]:
            raise ValueError(f"per-position statistics must be (N, T, d) with the same N and T; got abar "
                             f"{tuple(abar.shape)} and g {tuple(g.shape)}")
        t = abar.shape[1]
        if mask is not None and (mask.shape != (t, t) or not torch.equal(mask, mask.mT)):
            raise ValueError(f"the mask must be a symmetric ({t}, {t}) matrix, got shape {tuple(mask.shape)}")
        if products not in PRODUCTS or (products == "gradients" and mask is not None):
            raise ValueError(f"products={products!r}: choose one of {PRODUCTS}; 'gradients' needs the exact "
                             "block (mask=None)")
        self.abar, self.g, self.mask, self.products = abar, g, mask, products
        self.m = abar.shape[0]
        self.positions = t
        self._gradients: Tensor | None = None

    @property
    def shape_a(self) -> int:
        return self.abar.shape[2]

    @property
    def shape_g(self) -> int:
        return self.g.shape[2]

    @property
    def is_exact(self) -> bool:
        return self.mask is None

    def uses_gradients(self, iterations: int = 4) -> bool:
        """Whether the zigzag products go through the per-example gradients: always for
        ``products="gradients"``, never for a banded block; on ``auto`` when ``iterations`` products
        cost less that way, ``N T d_a d_g + it N d_a d_g (d_a + d_g)`` against
        ``it N (T^2 (d_a + d_g) + T (d_a^2 + d_g^2))``."""
        if self.mask is not None or self.products == "pairs":
            return False
        if self.products == "gradients":
            return True
        t, da, dg = self.positions, self.shape_a, self.shape_g
        return t * da * dg + iterations * da * dg * (da + dg) <= iterations * (t * t * (da + dg) + t * (da * da + dg * dg))

    def per_example_gradients(self) -> Tensor:
        """``DW_n = G_n^T A_n = sum_t g_nt a_nt^T`` (``(N, d_g, d_a)``, computed once): the exact block is
        ``(1/N) sum_n vec(DW_n) vec(DW_n)^T``. ``O(N T d_a d_g)``."""
        if self._gradients is None:
            self._gradients = self.g.mT @ self.abar
        return self._gradients

    def _masked(self, k: Tensor) -> Tensor:
        return k if self.mask is None else k * self.mask

    # the zigzag products (Proposition 3.1's analogue): F and Z(F) never formed
    def zigzag_matvec(self, v: Tensor) -> Tensor:
        """``Z(F) v = (1/N) sum_n sum_{t,s} M_ts (g_nt^T V g_ns) a_nt a_ns^T``, ``d_a x d_a`` for a
        ``d_g x d_g`` ``V``: ``(1/N) sum_n A_n^T ((G_n V G_n^T) o M) A_n``, or ``(1/N) sum_n DW_n^T V DW_n``."""
        if self.uses_gradients():
            dw = self.per_example_gradients()
            return (dw.mT @ v @ dw).sum(dim=0) / self.m
        k = self._masked(self.g @ v @ self.g.mT)                     # (N, T, T): g_nt^T V g_ns
        return (self.abar.mT @ k @ self.abar).sum(dim=0) / self.m

    def zigzag_rmatvec(self, u: Tensor) -> Tensor:
        """``Z(F)^T u = (1/N) sum_n sum_{t,s} M_ts (a_nt^T U a_ns) g_nt g_ns^T``, ``d_g x d_g``:
        ``(1/N) sum_n G_n^T ((A_n U A_n^T) o M) G_n``, or ``(1/N) sum_n DW_n U DW_n^T``."""
        if self.uses_gradients():
            dw = self.per_example_gradients()
            return (dw @ u @ dw.mT).sum(dim=0) / self.m
        k = self._masked(self.abar @ u @ self.abar.mT)               # (N, T, T): a_nt^T U a_ns
        return (self.g.mT @ k @ self.g).sum(dim=0) / self.m

    def kfac_factors(self) -> tuple[Tensor, Tensor]:
        """KFC's factors, the ``independent`` block's: ``A = (1/(N T)) sum_nt a a^T`` and
        ``G = (1/N) sum_nt g g^T`` (``T`` times the mean over the ``N T`` rows). KFAC's spatial
        assumptions (class docstring), whatever the mask."""
        rows_a = self.abar.reshape(-1, self.shape_a)
        rows_g = self.g.reshape(-1, self.shape_g)
        return rows_a.mT @ rows_a / rows_a.shape[0], rows_g.mT @ rows_g / self.m

    def _require_exact(self, what: str) -> None:
        if self.mask is not None:
            raise ValueError(f"{what} of a banded block: it is not a Gram form (not PSD in general); Figure 1's "
                             "metrics are computed against the exact block (spatial='exact', mask=None)")

    def gram(self) -> Tensor:
        """``K_nm = <DW_n, DW_m> / N`` (``N x N``, exact block only): ``F = J^T J / N`` with rows
        ``J_n = vec(DW_n)``, so ``spec(F)`` is ``spec(K)`` padded with zeros and ``||F||_F = ||K||_F``.
        ``O(N T d_a d_g + N^2 d_a d_g)``."""
        self._require_exact("the Gram matrix")
        j = self.per_example_gradients().reshape(self.m, -1)
        return j @ j.mT / self.m

    def inner_kronecker(self, ks) -> Tensor:
        """``<F, sum_k A_k (x) G_k>_F``: ``(1/N) sum_n <DW_n, G_k DW_n A_k^T>`` for the exact block
        (``(A (x) G) vec(X) = vec(G X A^T)``), ``(1/N) sum_n sum((A_n A_k A_n^T) o (G_n G_k G_n^T) o M)``
        for a banded one."""
        total = self.abar.new_zeros(())
        for a, g in ks.terms:
            if self.mask is None:
                dw = self.per_example_gradients()
                total = total + torch.sum(dw * (g @ dw @ a.mT)) / self.m
            else:
                qa, qg = self.abar @ a @ self.abar.mT, self.g @ g @ self.g.mT   # (N, T, T)
                total = total + torch.sum(qa * qg * self.mask) / self.m
        return total

    def eigenbasis_second_moment(self, q_a: Tensor, q_g: Tensor) -> Tensor:
        """``diag(Q^T F Q)`` for ``Q = Q_A (x) Q_G`` as a ``(d_g, d_a)`` matrix (EKFAC's scaling; entry
        ``[i, j]`` scales ``q_A,j (x) q_G,i``). With ``x = G_n Q_G``, ``y = A_n Q_A``:
        ``S_ij = (1/N) sum_n sum_{t,s} M_ts x_nti x_nsi y_ntj y_nsj``; for the exact block
        ``(1/N) sum_n ((Q_G^T DW_n Q_A)_ij)^2``, ``O(N d_a d_g (T + d_a + d_g))``; for a banded one over
        the ``P`` pairs the mask keeps, ``O(N P d_a d_g)``."""
        if self.mask is None:
            return (q_g.mT @ self.per_example_gradients() @ q_a).square().sum(dim=0) / self.m
        x, y = self.g @ q_g, self.abar @ q_a                          # (N, T, d_g), (N, T, d_a)
        t, s = torch.nonzero(self.mask, as_tuple=True)
        w = self.mask[t, s]
        return torch.einsum("npi,npj->ij", x[:, t] * x[:, s] * w[:, None], y[:, t] * y[:, s]) / self.m

    def to_dense(self) -> Tensor:
        """The explicit block ``(1/N) sum_n J_n^T M J_n`` with rows ``J_nt = a_nt (x) g_nt``. For tests
        and tiny problems only."""
        n, t = self.m, self.positions
        j = (self.abar[..., :, None] * self.g[..., None, :]).reshape(n, t, -1)   # a-major, like SampledFisherBlock
        mask = torch.ones(t, t, dtype=j.dtype, device=j.device) if self.mask is None else self.mask
        return (j.mT @ mask @ j).sum(dim=0) / n

    def to(self, *args, **kwargs) -> "SpatialFisherBlock":
        mask = None if self.mask is None else self.mask.to(*args, **kwargs)
        return SpatialFisherBlock(self.abar.to(*args, **kwargs), self.g.to(*args, **kwargs), mask, self.products)


__all__ = ["PRODUCTS", "SPATIAL_TREATMENTS", "SpatialFisherBlock", "band_mask", "spatial_block"]
