"""The zigzag operator in the coordinates of its own low-rank factorisation (the "Gram route").

A batch block has ``Z(F) = (1/m) sum_t vec(a_t a_t^T) vec(g_t g_t^T)^T``: rank at most m, with the
left basis ``psi_t = vec(a_t a_t^T)`` and the right basis ``phi_t = vec(g_t g_t^T)``. Adding
Kronecker terms ``c_k A_k (x) G_k`` (the previous approximation of the moving average, deflated
terms) adds basis vectors ``vec(A_k)``, ``vec(G_k)``. So ``Z = L_A W L_G^T`` with a small dense
``W``, and every vector the solvers touch lives in ``span(L_A)`` or ``span(L_G)`` once the first
product is taken (the start vector is added to the right basis with a zero column of ``W``).

In coefficients, ``Z v = L_A (W K_G beta)`` and ``Z^T u = L_G (W^T K_A alpha)`` with the Gram
matrices ``K_A = L_A^T L_A`` and ``K_G = L_G^T L_G``, whose entries are cheap:

* ``<psi_s, psi_t> = (a_s . a_t)^2`` -- the squared input Gram matrix, O(m^2 d_a) once;
* ``<psi_t, vec M> = a_t^T M a_t`` -- O(m d_a^2) per extra matrix;
* ``<vec M, vec N> = sum(M * N)``.

Each power/Lanczos iteration then costs O(r^2) (``r = m + #terms``) instead of the O(m d^2) of
Proposition 3.1's products; the factors are assembled once at the end,
``MAT(L_A alpha) = A^T diag(alpha) A + sum_k alpha_k A_k`` (O(m d^2)). The iterates are *the same
vectors* as on the direct route (same algorithm, other coordinates), so iteration counts and
results agree to rounding; the tests check both routes against the dense oracle. Everything in
coefficient space is float64 (it is small).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kronecker import KroneckerSum, SampledFisherBlock, matrix_inner

F64 = torch.float64


class _Side:
    """One side (A or G) of the factorisation: the batch rows plus extra matrices, and their Gram."""

    def __init__(self, rows: Tensor):
        self.rows = rows                        # (m, d): a_t or g_t
        # in float64 even for float32 rows: the products of float32 numbers are exact there, and the
        # coefficient space amplifies a float32 Gram's rounding (a block that is exactly one
        # Kronecker product otherwise shows a spurious remainder ~1e-4 of sigma_1)
        rows64 = rows.to(F64)
        gram = rows64 @ rows64.mT
        self.gram = gram * gram                 # <psi_s, psi_t> = (x_s . x_t)^2
        self.mats: list[Tensor] = []

    def copy(self) -> "_Side":
        new = _Side.__new__(_Side)
        new.rows, new.gram, new.mats = self.rows, self.gram, list(self.mats)
        return new

    @property
    def size(self) -> int:
        return self.gram.shape[0]

    def add(self, mat: Tensor) -> int:
        """Append ``vec(mat)`` to the basis; returns its index."""
        quad = torch.sum((self.rows @ mat) * self.rows, dim=1).to(F64)   # x_t^T M x_t
        cross = [float(matrix_inner(m, mat)) for m in self.mats]
        col = torch.cat([quad, torch.tensor(cross, dtype=F64, device=quad.device),
                         torch.tensor([float(matrix_inner(mat, mat))], dtype=F64, device=quad.device)])
        n = self.size
        gram = torch.zeros(n + 1, n + 1, dtype=F64, device=quad.device)
        gram[:n, :n] = self.gram
        gram[:n, n] = col[:n]
        gram[n, :n] = col[:n]
        gram[n, n] = col[n]
        self.gram = gram
        self.mats.append(mat)
        return n

    def to_matrix(self, coef: Tensor) -> Tensor:
        m = self.rows.shape[0]
        c = coef.to(self.rows.dtype)
        out = (self.rows.mT * c[:m]) @ self.rows
        for k, mat in enumerate(self.mats):
            out = out + c[m + k] * mat
        return out


class GramZigzagOperator:
    """``Z(c_b F_batch + sum_i c_i KroneckerSum_i)`` in low-rank coordinates (module doc)."""

    def __init__(self, batch: SampledFisherBlock, weight: float = 1.0,
                 terms: list[tuple[float, KroneckerSum]] | None = None):
        if not getattr(batch, "supports_gram_route", False):
            raise ValueError(f"the Gram route needs a block with one rank-one term per row (SampledFisherBlock); "
                             f"a {type(batch).__name__} has none: use route='direct' (or 'auto', which picks it)")
        self.batch = batch
        self.left = _Side(batch.abar)
        self.right = _Side(batch.g)
        m = batch.m
        self.w = torch.zeros(m, m, dtype=F64, device=batch.abar.device)
        self.w.diagonal().fill_(weight / m)
        # KFAC factors of the operator, as coefficients: A = c_b A^T A / m + c_1 A_old (and G alike)
        self._kfac = torch.zeros(m, dtype=F64, device=self.w.device) + weight / m
        first = True
        for c, ks in terms or []:
            start = self.left.size
            self._add_terms(c, ks)
            if first and ks.rank:
                self._kfac = torch.cat([self._kfac, torch.zeros(self.left.size - m, dtype=F64, device=self.w.device)])
                self._kfac[start] = c
            first = False

    def _grow(self) -> None:
        if self.w.shape == (self.left.size, self.right.size):
            return
        w = torch.zeros(self.left.size, self.right.size, dtype=F64, device=self.w.device)
        w[:self.w.shape[0], :self.w.shape[1]] = self.w
        self.w = w

    def _add_terms(self, c: float, ks: KroneckerSum) -> None:
        for a, g in ks.terms:
            i, j = self.left.add(a), self.right.add(g)
            self._grow()
            self.w[i, j] += c

    def copy(self) -> "GramZigzagOperator":
        new = GramZigzagOperator.__new__(GramZigzagOperator)
        new.batch, new.left, new.right, new.w = self.batch, self.left.copy(), self.right.copy(), self.w.clone()
        new._kfac = self._kfac
        return new

    def minus_kfac(self, kfac: KroneckerSum) -> "GramZigzagOperator":
        """``Z - A_kfac (x) G_kfac`` where ``kfac`` holds the averaged KFAC factors of this operator's
        own parts (``c_b E_batch[a a^T] + c_1 A_old``): both factors are in the span, so this is a
        rank-1 update of W with no new basis vectors."""
        new = self.copy()
        a = self._pad(self._kfac, self.left.size)
        g = self._pad(self._kfac, self.right.size)
        new.w = new.w - torch.outer(a, g)
        return new

    @property
    def shape_a(self) -> int:
        return self.batch.shape_a

    @property
    def shape_g(self) -> int:
        return self.batch.shape_g

    # --- the solver interface -------------------------------------------------------------
    def start_vector(self, *mats: Tensor) -> Tensor:
        """Coefficients of ``sum(mats)`` as a right start vector. A matrix that already is a basis
        vector (the previous approximation's G-factor: the natural warm start) costs nothing;
        another joins the right basis with a zero column of W (one O(m d_g^2) quadratic form)."""
        cols = []
        for v0 in mats:
            j = next((k for k, mat in enumerate(self.right.mats) if mat is v0), None)
            cols.append(self.batch.m + j if j is not None else self.right.add(v0))
        self._grow()
        e = torch.zeros(self.right.size, dtype=F64, device=self.w.device)
        for j in cols:
            e[j] += 1.0
        return e

    def minus_triplet(self, sigma: float, alpha: Tensor, beta: Tensor) -> "GramZigzagOperator":
        """``Z - sigma u v^T`` for a triplet found in these coordinates: a rank-1 update of W
        (deflation needs no new basis vectors)."""
        new = self.copy()
        new.w = new.w - sigma * torch.outer(self._pad(alpha, self.left.size), self._pad(beta, self.right.size))
        return new

    def _pad(self, x: Tensor, n: int) -> Tensor:
        return x if x.shape[0] == n else torch.cat([x, x.new_zeros(n - x.shape[0])])

    def matvec(self, beta: Tensor) -> Tensor:
        return self.w @ (self.right.gram @ self._pad(beta, self.right.size))

    def rmatvec(self, alpha: Tensor) -> Tensor:
        return self.w.mT @ (self.left.gram @ self._pad(alpha, self.left.size))

    def inner_left(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ (self.left.gram @ y)

    def inner_right(self, x: Tensor, y: Tensor) -> Tensor:
        n = self.right.size
        return self._pad(x, n) @ (self.right.gram @ self._pad(y, n))

    def left_matrix(self, alpha: Tensor) -> Tensor:
        return self.left.to_matrix(alpha)

    def right_matrix(self, beta: Tensor) -> Tensor:
        return self.right.to_matrix(self._pad(beta, self.right.size))
