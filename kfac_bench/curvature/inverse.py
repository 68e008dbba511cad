"""Damped inverses of Kronecker sums: closed forms for one and two terms (sections 2.2 and 3.4),
conjugate gradients preconditioned by the two-term closed form for more (:class:`KroneckerSumInverse`).

Every inverse object has the same interface: ``solve(X)``, ``solve_with_bias(dW, db)`` (the solve of
``X = [dW | db]`` from its parts, without the concatenation, as its weight and bias columns), ``bare_products(X)`` (a callable doing
the solve's matrix products and nothing else, for the benchmark's floor), ``state()`` and the class
method ``from_state(state)`` (checkpoints), ``dense_inverse()`` (tests).

Damping (decisions, documented in docs/mathematics.md):

* The first term ``A (x) G`` (PSD for every method: KFAC's factors and the KPSVD factors with the
  sign of Proposition 3.2) gets factored Tikhonov damping with ``pi`` (section 2.2):
  ``(A + pi sqrt(lam) I) (x) (G + sqrt(lam)/pi I)``, ``pi = sqrt((tr A / d_a) / (tr G / d_g))``.
* The second term ``C (x) D`` of the rank-2 methods is left undamped and is in general indefinite.
  With ``K1 = A_d^{-1/2} E1`` and ``K2 = G_d^{-1/2} E2`` from the eigendecompositions
  ``A_d^{-1/2} C A_d^{-1/2} = E1 S1 E1^T`` and ``G_d^{-1/2} D G_d^{-1/2} = E2 S2 E2^T`` (Martens &
  Grosse's eigen trick), the damped approximation is ``(K1 (x) K2)^{-T} diag(1 + s1 (x) s2)
  (K1 (x) K2)^{-1}``: diagonal in that basis. (Any ``K1`` with ``K1^T A_d K1 = I`` and
  ``K1^T C K1 = S1`` does; we whiten with the Cholesky factor, ``K1 = L^{-T} E1``, one ``eigh`` per
  side instead of two, and fall back to ``A_d^{-1/2}`` when Cholesky fails.) The PSD safeguard is a floor on that diagonal,
  ``max(1 + s1_j s2_i, psd_floor)``: directions where the indefinite correction would cancel the
  damped first term keep at least ``psd_floor`` of it. Where no entry is below the floor the solve
  is exact (tested against ``torch.linalg.solve``).

Both preconditioners cache everything between inverse updates; a preconditioning step costs 2
matrix products per layer (rank 1: ``G_d^{-1} X A_d^{-1}``) or 4 (rank 2:
``K2 ((K2^T X K1) / (1 + s2 s1^T)) K1^T``).

Robustness: matrices are symmetrised before ``eigh``; a failed ``eigh`` is retried in float64; a
non-finite result raises :class:`CurvatureError` so the caller can keep its previous inverse.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .kronecker import KroneckerSum, all_finite


class CurvatureError(RuntimeError):
    """A curvature update produced something unusable (non-finite, failed decomposition)."""


def symmetric_eigh(x: Tensor) -> tuple[Tensor, Tensor]:
    """``eigh`` of the symmetric part of ``x``, retried in float64 if LAPACK fails to converge."""
    if not all_finite(x):
        raise CurvatureError("non-finite matrix given to eigh")
    sym = 0.5 * (x + x.mT)
    try:
        evals, evecs = torch.linalg.eigh(sym)
    except RuntimeError:
        try:
            evals, evecs = torch.linalg.eigh(sym.double())
        except RuntimeError as err:  # pragma: no cover - LAPACK failure in float64 too
            raise CurvatureError(f"eigh failed in float64: {err}") from err
        evals, evecs = evals.to(x.dtype), evecs.to(x.dtype)
    if not (all_finite(evals) and all_finite(evecs)):
        raise CurvatureError("eigh returned non-finite values")
    return evals, evecs


def pi_factor(a: Tensor, g: Tensor) -> float:
    """``pi = sqrt((tr A / d_a) / (tr G / d_g))``; 1 if a trace is not positive."""
    ta = float(torch.trace(a)) / a.shape[0]
    tg = float(torch.trace(g)) / g.shape[0]
    if not (ta > 0 and tg > 0):
        return 1.0
    return (ta / tg) ** 0.5


def add_to_diagonal(x: Tensor, value: float) -> Tensor:
    """``x + value I`` (a copy: one pass, no identity matrix formed)."""
    out = x.clone()
    out.diagonal().add_(value)
    return out


def damped_first_term(a: Tensor, g: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    pi = pi_factor(a, g)
    root = damping ** 0.5
    return add_to_diagonal(a, pi * root), add_to_diagonal(g, root / pi)


def _inverse_and_inverse_sqrt(x: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    evals, evecs = symmetric_eigh(x)
    evals = torch.clamp(evals, min=floor)
    return (evecs / evals) @ evecs.mT, (evecs * evals.rsqrt()) @ evecs.mT


def _spd_cholesky(x: Tensor) -> Tensor | None:
    """Lower Cholesky factor of a damped factor, from its lower triangle (float64 retry); None
    when it is not numerically positive definite (the caller falls back to the eigh route)."""
    if not all_finite(x):
        raise CurvatureError("non-finite matrix given to cholesky")
    # Cholesky reads the lower triangle only: no symmetrisation needed (eigh's route has its own)
    low, info = torch.linalg.cholesky_ex(x)
    if int(info) == 0:
        return low
    low, info = torch.linalg.cholesky_ex(x.double())
    return low.to(x.dtype) if int(info) == 0 else None


def _spd_inverse(x: Tensor, floor: float) -> Tensor:
    """``x^{-1}`` by Cholesky (about d^3 flops instead of an eigendecomposition and 2 products)."""
    low = _spd_cholesky(x)
    return torch.cholesky_inverse(low) if low is not None else _inverse_and_inverse_sqrt(x, floor)[0]


def _whitened_eigh(m_d: Tensor, c: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """``(s, K)`` with ``K^T M_d K = I`` and ``K^T C K = diag(s)`` (the generalised symmetric
    eigenproblem of the eigen trick), by Cholesky whitening: ``M_d = L L^T``,
    ``L^{-1} C L^{-T} = E diag(s) E^T``, ``K = L^{-T} E`` -- one eigh per side instead of two."""
    low = _spd_cholesky(m_d)
    if low is None:
        _, isqrt = _inverse_and_inverse_sqrt(m_d, floor)
        s, e = symmetric_eigh(isqrt @ c @ isqrt)
        return s, isqrt @ e
    t = torch.linalg.solve_triangular(low, c, upper=False)
    s, e = symmetric_eigh(torch.linalg.solve_triangular(low, t.mT, upper=False))
    return s, torch.linalg.solve_triangular(low.mT, e, upper=True)


def left_product_with_bias(left: Tensor, weight_grad: Tensor, bias_grad: Tensor) -> Tensor:
    """``left @ [dW | db]`` without forming ``[dW | db]``: the product is written straight into the
    columns of its output (BLAS takes the output's row stride), the bias column by a matrix-vector
    product. Saves the concatenation's pass over the gradient."""
    out = weight_grad.new_empty(left.shape[0], weight_grad.shape[1] + 1)
    torch.mm(left, weight_grad, out=out[:, :-1])
    out[:, -1] = left @ bias_grad
    return out


def right_product_parts(x: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    """``x @ right`` as its weight columns and its last (bias) column, each a contiguous tensor: the
    main product then has the layer's own width (784, 1000, ...) instead of d_in + 1 (785, 1001,
    ...), which matrix-product kernels handle with fewer partial tiles, and the optimizer updates the
    weight and the bias from them without strided copies."""
    return x @ right[:, :-1], x @ right[:, -1]


@dataclass
class KroneckerInverse:
    """``(A_d (x) G_d)^{-1}`` for a damped single Kronecker product."""

    a_inv: Tensor
    g_inv: Tensor

    def solve(self, x: Tensor) -> Tensor:
        """``(A_d (x) G_d)^{-1} vec(X)`` as ``G_d^{-1} X A_d^{-1}`` (2 matrix products)."""
        return self.g_inv @ x @ self.a_inv

    def solve_with_bias(self, weight_grad: Tensor, bias_grad: Tensor) -> Tensor:
        """:meth:`solve` of ``X = [dW | db]`` from its two parts, returned as its weight columns and
        its bias column (the same products, no concatenation)."""
        return right_product_parts(left_product_with_bias(self.g_inv, weight_grad, bias_grad), self.a_inv)

    @cached_property
    def _factors(self) -> tuple[Tensor, Tensor]:
        return torch.linalg.inv(self.a_inv), torch.linalg.inv(self.g_inv)

    def apply(self, x: Tensor) -> Tensor:
        """``(A_d (x) G_d) vec(X) = G_d X A_d^T`` (the matrix this object inverts)."""
        a_d, g_d = self._factors
        return g_d @ x @ a_d.mT

    def dense_inverse(self) -> Tensor:
        return torch.kron(self.a_inv, self.g_inv)

    def bare_products(self, x: Tensor):
        """A callable doing the solve's matrix products and nothing else, into preallocated outputs
        (the floor a preconditioning step is measured against)."""
        g_inv, a_inv = self.g_inv, self.a_inv
        b1, b2 = torch.empty_like(x), torch.empty_like(x)

        def products():
            torch.mm(g_inv, x, out=b1)
            torch.mm(b1, a_inv, out=b2)
        return products

    def state(self) -> dict:
        return {"a_inv": self.a_inv, "g_inv": self.g_inv}

    @classmethod
    def from_state(cls, state: dict) -> "KroneckerInverse":
        return cls(state["a_inv"], state["g_inv"])


@dataclass
class TwoTermKroneckerInverse:
    """``(A_d (x) G_d + C (x) D)^{-1}`` by the eigen trick, with the PSD floor of the module doc."""

    k1: Tensor          # (d_a, d_a)
    k2: Tensor          # (d_g, d_g)
    inv_diag: Tensor    # (d_g, d_a): 1 / max(1 + s2 s1^T, floor)
    clamped: int        # how many eigen-directions the PSD floor changed

    def solve(self, x: Tensor) -> Tensor:
        """``K2 ((K2^T X K1) * inv_diag) K1^T`` (4 matrix products)."""
        return self.k2 @ ((self.k2.mT @ x @ self.k1) * self.inv_diag) @ self.k1.mT

    def solve_with_bias(self, weight_grad: Tensor, bias_grad: Tensor) -> Tensor:
        """:meth:`solve` of ``X = [dW | db]`` from its two parts, returned as its weight columns and
        its bias column (the same products, no concatenation)."""
        inner = (left_product_with_bias(self.k2.mT, weight_grad, bias_grad) @ self.k1) * self.inv_diag
        return right_product_parts(self.k2 @ inner, self.k1.mT)

    @cached_property
    def _inverse_transposes(self) -> tuple[Tensor, Tensor, Tensor]:
        return torch.linalg.inv(self.k1).mT, torch.linalg.inv(self.k2).mT, 1.0 / self.inv_diag

    def apply(self, x: Tensor) -> Tensor:
        """The matrix this object inverts, applied: ``(K1 (x) K2)^{-T} diag(1 / inv_diag)
        (K1 (x) K2)^{-1} vec(X)`` -- with the PSD floor, so it is positive definite; without a
        clamped direction it is ``A_d (x) G_d + C (x) D`` (4 products, after one inverse of each K)."""
        l1, l2, diag = self._inverse_transposes
        return l2 @ ((l2.mT @ x @ l1) * diag) @ l1.mT

    def dense_inverse(self) -> Tensor:
        k = torch.kron(self.k1, self.k2)
        return k @ torch.diag(vec_cols(self.inv_diag)) @ k.mT

    def bare_products(self, x: Tensor):
        """The solve's 4 matrix products into preallocated outputs (no allocation, no Hadamard
        product with ``inv_diag``)."""
        k1, k2 = self.k1, self.k2
        k1t, k2t = k1.mT, k2.mT
        b1, b2, b3, b4 = (torch.empty_like(x) for _ in range(4))

        def products():
            torch.mm(k2t, x, out=b1)
            torch.mm(b1, k1, out=b2)
            torch.mm(k2, b2, out=b3)
            torch.mm(b3, k1t, out=b4)
        return products

    def state(self) -> dict:
        return {"k1": self.k1, "k2": self.k2, "inv_diag": self.inv_diag}

    @classmethod
    def from_state(cls, state: dict) -> "TwoTermKroneckerInverse":
        return cls(state["k1"], state["k2"], state["inv_diag"], 0)


def vec_cols(x: Tensor) -> Tensor:
    return x.mT.reshape(-1)


DAMPING_CONVENTIONS = ("paper", "authors")
CG_MAX_ITER = 50   # conjugate-gradient iteration cap of KroneckerSumInverse


def damped_inverse(approx: KroneckerSum, damping: float, psd_floor: float = 0.1,
                   convention: str = "paper", cg_tol: float | None = None, cg_max_iter: int = CG_MAX_ITER):
    """The cached damped inverse of a :class:`KroneckerSum` of any rank: the closed form of
    :func:`leading_damped_inverse` for one or two terms, :class:`KroneckerSumInverse` (conjugate
    gradients preconditioned by the closed form of the first two terms) for more."""
    if approx.rank <= 2:
        return leading_damped_inverse(approx, damping, psd_floor, convention)
    return KroneckerSumInverse.build(approx, damping, psd_floor, convention, cg_tol, cg_max_iter)


def leading_damped_inverse(approx: KroneckerSum, damping: float, psd_floor: float = 0.1,
                           convention: str = "paper"):
    """The closed-form damped inverse of a one- or two-term :class:`KroneckerSum`.

    ``convention="paper"`` is the damping of the module docstring (the specification).
    ``convention="authors"`` emulates the authors' code (see :func:`authors_damped_inverse`);
    it is an explicit option for reproducing their curves, not a recommendation.
    """
    if damping <= 0:
        raise ValueError("damping must be positive")
    if convention not in DAMPING_CONVENTIONS:
        raise ValueError(f"unknown damping convention {convention!r}; choose one of {DAMPING_CONVENTIONS}")
    if not approx.is_finite():
        raise CurvatureError("non-finite Kronecker factors")
    if convention == "authors":
        return authors_damped_inverse(approx, damping)
    a, g = approx.terms[0]
    a_d, g_d = damped_first_term(a, g, damping)
    tiny = torch.finfo(a.dtype).tiny
    if approx.rank == 1:
        return KroneckerInverse(_spd_inverse(a_d, tiny), _spd_inverse(g_d, tiny))
    if approx.rank != 2:
        raise ValueError(f"the closed-form damped inverse takes 1 or 2 Kronecker terms, got {approx.rank} "
                         f"(damped_inverse / KroneckerSumInverse take any number)")
    c, d = approx.terms[1]
    s1, k1 = _whitened_eigh(a_d, c, tiny)
    s2, k2 = _whitened_eigh(g_d, d, tiny)
    diag = 1.0 + s2[:, None] * s1[None, :]
    clamped = int((diag < psd_floor).sum())
    inv_diag = 1.0 / torch.clamp(diag, min=psd_floor)
    return TwoTermKroneckerInverse(k1, k2, inv_diag, clamped)


def _authors_inverse_sqrt(x: Tensor, damping: float) -> Tensor:
    """``Q |L + damping|^{-1/2} Q^T`` for ``x = Q L Q^T``: the authors' ``fractional_power``
    (``optimizers/deflation.py`` lines 289-298 at commit 97105b6): the damping is added to the
    eigenvalues and their absolute value taken, so an indefinite factor is silently made definite."""
    evals, evecs = symmetric_eigh(x)
    return (evecs * (evals + damping).abs().rsqrt()) @ evecs.mT


def authors_damped_inverse(approx: KroneckerSum, damping: float):
    """The damped inverse as the authors' code computes it (repository
    ``Abdoulaye-Koroko/natural-gradients``, commit 97105b6), for reproducing their curves.

    * One term (``optimizers/kfac.py`` ``_inv_covs`` lines 352-390, ``optimizers/kpsvd.py`` lines
      285-323, both built with ``pi=False`` by ``apps/mlp_cnn/train_mlp.py`` lines 95-101):
      ``(A + sqrt(lam) I)^{-1} (x) (G + sqrt(lam) I)^{-1}`` -- the factored Tikhonov damping with
      ``pi = 1``.
    * Two terms (``_inv_covs`` of ``optimizers/deflation.py`` lines 285-324, ``lanczos.py`` lines
      276-313, ``kfac_cor.py`` lines 289-326): the first-term factors are damped by ``lam`` itself
      (not ``sqrt(lam)``, no ``pi``), ``A_h = Q_A |L_A + lam|^{-1/2} Q_A^T`` (likewise ``G_h``), the
      whitened second-term factors ``A_h C A_h = E1 S1 E1^T``, ``G_h D G_h = E2 S2 E2^T`` and the
      preconditioner ``K2 ((K2^T X K1) / (1 + |s2| |s1|^T)) K1^T`` with ``K1 = A_h E1``,
      ``K2 = G_h E2``: the absolute values replace any PSD safeguard. When the first-term factors
      are PSD this is the exact inverse of ``(A + lam I) (x) (G + lam I) + C' (x) D'`` with
      ``C' = A_h^{-1} |A_h C A_h| A_h^{-1}`` (matrix absolute value; likewise ``D'``), so ``C' = C``
      whenever the whitened second term is PSD (tested against ``torch.linalg.solve``).
    """
    a, g = approx.terms[0]
    if approx.rank == 1:
        root = damping ** 0.5
        a_d, g_d = add_to_diagonal(a, root), add_to_diagonal(g, root)
        tiny = torch.finfo(a.dtype).tiny
        return KroneckerInverse(_spd_inverse(a_d, tiny), _spd_inverse(g_d, tiny))
    if approx.rank != 2:
        raise ValueError(f"the authors' damping is defined for 1 or 2 Kronecker terms, got {approx.rank}")
    c, d = approx.terms[1]
    a_h, g_h = _authors_inverse_sqrt(a, damping), _authors_inverse_sqrt(g, damping)
    s1, e1 = symmetric_eigh(a_h @ c @ a_h)
    s2, e2 = symmetric_eigh(g_h @ d @ g_h)
    inv_diag = 1.0 / (1.0 + s2.abs()[:, None] * s1.abs()[None, :])
    return TwoTermKroneckerInverse(a_h @ e1, g_h @ e2, inv_diag, 0)


@dataclass
class KroneckerSumInverse:
    """``M^{-1}`` for a damped Kronecker sum of any rank ``k``: ``M = M_2 + sum_{i>=3} C_i (x) D_i``,
    where ``M_2`` is the matrix the closed-form inverse of the first one or two terms inverts
    (``leading``: the damped first term and the eigen trick, *with* its PSD floor, so ``M_2`` is
    positive definite and is ``A_d (x) G_d + C_2 (x) D_2`` where nothing is clamped), by
    conjugate gradients preconditioned by ``leading``. With no term beyond those (``k <= 2``) the
    solve *is* the closed form.

    CG runs in the eigen-trick coordinates ``Y = (K1 (x) K2)^{-1} vec(X)``, where ``M_2`` is the
    diagonal ``Delta = max(1 + s2 s1^T, floor)`` and the further terms are
    ``(K1^T C_i K1) (x) (K2^T D_i K2)`` (formed once per inverse): preconditioned CG with ``M_2^{-1}``
    is CG on ``(K1 (x) K2)^T M (K1 (x) K2)`` with the Jacobi preconditioner ``Delta^{-1}``. A solve
    costs the closed form's 4 matrix products (into and out of the coordinates) plus ``2 (k - 2)``
    per iteration -- at ``k = 3`` and two iterations, twice the rank-2 solve.

    Stopping rule: ``||r|| <= tol ||K^T b||`` for the residual ``r`` in those coordinates, ``tol`` =
    ``cg_tol``, or ``100 eps`` of the dtype when None (float32 1.2e-5, float64 2.2e-14), at most
    ``max_iter`` iterations (one host sync per iteration for the test).

    The higher terms are indefinite and ``M`` can be (the best Kronecker rank-3 sum of a PSD block
    is in general not PSD). Where CG meets a direction of non-positive curvature it stops and
    returns its current iterate -- the preconditioned right-hand side, i.e. the rank-2 solve, if that
    happens at the first iteration (truncated CG, Steihaug 1983) -- and counts it in
    ``negative_curvature``: the PSD safeguard of rank ``k``.
    """

    leading: object                            # KroneckerInverse (k = 1) or TwoTermKroneckerInverse
    extra_terms: list[tuple[Tensor, Tensor]]   # the undamped terms 3..k
    tol: float | None = None
    max_iter: int = CG_MAX_ITER
    iterations: int = 0                  # of the last solve
    negative_curvature: int = 0          # solves stopped by a non-positive curvature direction

    @classmethod
    def build(cls, approx: KroneckerSum, damping: float, psd_floor: float = 0.1, convention: str = "paper",
              cg_tol: float | None = None, cg_max_iter: int = CG_MAX_ITER) -> "KroneckerSumInverse":
        if not approx.is_finite():
            raise CurvatureError("non-finite Kronecker factors")
        leading = leading_damped_inverse(KroneckerSum(approx.terms[:2]), damping, psd_floor, convention)
        return cls(leading, list(approx.terms[2:]), cg_tol, int(cg_max_iter))

    def __post_init__(self):
        if self.extra_terms:
            k1, k2 = self.leading.k1, self.leading.k2
            # the further terms in the eigen-trick coordinates: (K1^T C K1) (x) (K2^T D K2)
            self._rotated = [(k1.mT @ c @ k1, k2.mT @ d @ k2) for c, d in self.extra_terms]
            self._diag = 1.0 / self.leading.inv_diag

    @property
    def clamped(self) -> int:
        return getattr(self.leading, "clamped", 0)

    def matvec(self, x: Tensor) -> Tensor:
        """``M vec(X)`` as ``M_2 vec(X) + sum_i D_i X C_i^T`` (tests; the solve does not use it)."""
        out = self.leading.apply(x)
        for c, d in self.extra_terms:
            out = out + d @ x @ c.mT
        return out

    def _rotated_matvec(self, y: Tensor) -> Tensor:
        out = self._diag * y
        for c, d in self._rotated:
            out = out + d @ y @ c.mT
        return out

    def solve_with_bias(self, weight_grad: Tensor, bias_grad: Tensor) -> Tensor:
        """:meth:`solve` of ``X = [dW | db]`` from its two parts, returned as its weight columns and
        its bias column."""
        if not self.extra_terms:
            self.iterations = 0
            return self.leading.solve_with_bias(weight_grad, bias_grad)
        out = self.solve(torch.cat([weight_grad, bias_grad[:, None]], dim=1))
        return out[:, :-1].contiguous(), out[:, -1].contiguous()

    def solve(self, b: Tensor) -> Tensor:
        if not self.extra_terms:
            self.iterations = 0
            return self.leading.solve(b)
        k1, k2, inv_diag = self.leading.k1, self.leading.k2, self.leading.inv_diag
        rhs = k2.mT @ b @ k1
        tol = self.tol if self.tol is not None else 100.0 * torch.finfo(b.dtype).eps
        rhs_norm = float(torch.linalg.norm(rhs))
        y = torch.zeros_like(rhs)
        if not rhs_norm > 0:
            return k2 @ y @ k1.mT
        r = rhs
        z = r * inv_diag
        p = z
        rz = float(torch.sum(r * z))
        it = 0
        for it in range(1, self.max_iter + 1):
            mp = self._rotated_matvec(p)
            curvature = float(torch.sum(p * mp))
            if not curvature > 0:
                self.negative_curvature += 1
                if it == 1:
                    y = z   # the preconditioner's answer: the closed-form solve of the first two terms
                break
            step = rz / curvature
            y = y + step * p
            r = r - step * mp
            if float(torch.linalg.norm(r)) <= tol * rhs_norm:
                break
            z = r * inv_diag
            rz_new = float(torch.sum(r * z))
            p = z + (rz_new / rz) * p
            rz = rz_new
        self.iterations = it
        return k2 @ y @ k1.mT

    def dense_matrix(self) -> Tensor:
        """``M`` (tiny problems and tests only)."""
        n_g, n_a = self.leading_shape
        eye = torch.eye(n_g * n_a, dtype=self.dtype, device=self.device)
        cols = [vec_cols(self.matvec(eye[:, j].reshape(n_a, n_g).mT)) for j in range(n_g * n_a)]
        return torch.stack(cols, dim=1)

    def dense_inverse(self) -> Tensor:
        """``M^{-1}`` (tiny problems and tests only)."""
        if not self.extra_terms:
            return self.leading.dense_inverse()
        return torch.linalg.inv(self.dense_matrix())

    @property
    def leading_shape(self) -> tuple[int, int]:
        lead = self.leading.state()
        if "k1" in lead:
            return lead["k2"].shape[0], lead["k1"].shape[0]
        return lead["g_inv"].shape[0], lead["a_inv"].shape[0]

    @property
    def dtype(self):
        return next(iter(self.leading.state().values())).dtype

    @property
    def device(self):
        return next(iter(self.leading.state().values())).device

    def bare_products(self, x: Tensor):
        """The matrix products of a solve with one CG iteration: the 4 into and out of the
        eigen-trick coordinates and the ``2 (k - 2)`` of the further terms, into preallocated
        outputs; each further iteration adds ``2 (k - 2)`` (the bench's ``solve_ms`` includes them)."""
        pre = self.leading.bare_products(x)
        if not self.extra_terms:
            return pre
        pairs = [(c.mT, d) for c, d in self._rotated]
        b1, b2 = torch.empty_like(x), torch.empty_like(x)

        def products():
            pre()
            for ct, d in pairs:
                torch.mm(d, x, out=b1)
                torch.mm(b1, ct, out=b2)
        return products

    def state(self) -> dict:
        out = {f"leading.{k}": v for k, v in self.leading.state().items()}
        for i, (c, d) in enumerate(self.extra_terms):
            out[f"term{i + 3}.c"], out[f"term{i + 3}.d"] = c, d
        return out

    @classmethod
    def from_state(cls, state: dict, cg_tol: float | None = None, cg_max_iter: int = CG_MAX_ITER):
        lead = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("leading.")}
        leading = (KroneckerInverse if "a_inv" in lead else TwoTermKroneckerInverse).from_state(lead)
        n_extra = sum(1 for k in state if k.startswith("term") and k.endswith(".c"))
        extra = [(state[f"term{i}.c"], state[f"term{i}.d"]) for i in range(3, 3 + n_extra)]
        return cls(leading, extra, cg_tol, int(cg_max_iter))
