"""The Kronecker-factored preconditioners people train with today, from ``pytorch-optimizer`` (4.x):
SOAP, Shampoo, Scalable Shampoo, Muon and PSGD-Kron, as first-order registry entries (:mod:`kfac_bench.registry`).

Each builder takes what the factory gives every first-order optimizer -- the model's parameters, the
learning rate and the options its registry entry lists -- and leaves every other setting at the
library's default (the comparison's rule: their defaults, their learning rate tuned on a grid around
the library's default). They are not methods of the paper: the claims never read them.

Muon orthogonalises the update of weight *matrices* only; it prescribes AdamW for the rest (biases,
gains), so the builder puts parameters with ``ndim >= 2`` in a ``use_muon=True`` group and the others
in a ``use_muon=False`` group at the library's AdamW settings (``adamw_lr`` 3e-4).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


def soap(params: Iterable[torch.Tensor], lr: float, **options) -> torch.optim.Optimizer:
    """SOAP (Vyas et al. 2024): Adam in the eigenbasis of Shampoo's preconditioner."""
    from pytorch_optimizer import SOAP
    return SOAP(params, lr=lr, **options)


def shampoo(params: Iterable[torch.Tensor], lr: float, **options) -> torch.optim.Optimizer:
    """Shampoo (Gupta et al. 2018): a Kronecker-factored preconditioner per weight tensor."""
    from pytorch_optimizer import Shampoo

    class ShampooNamingItsFailures(Shampoo):
        """The library's Shampoo; a failed SVD says which option to change (seen on CURVES)."""

        def step(self, closure=None):
            try:
                return super().step(closure)
            except torch.linalg.LinAlgError as error:
                raise torch.linalg.LinAlgError(
                    f"{error} [pytorch-optimizer's Shampoo takes a float32 SVD of each preconditioner; "
                    f"retry with a larger optimizer.matrix_eps (now {self.defaults['matrix_eps']:g}) or "
                    "another optimizer.lr]") from error

    return ShampooNamingItsFailures(params, lr=lr, **options)


def scalable_shampoo(params: Iterable[torch.Tensor], lr: float, **options) -> torch.optim.Optimizer:
    """Scalable Shampoo (Anil et al. 2020): Shampoo on blocks of each weight tensor, its step taking the
    norm of a grafted first-order step (SGD's by default)."""
    from pytorch_optimizer import ScalableShampoo
    return ScalableShampoo(params, lr=lr, **options)


def kron(params: Iterable[torch.Tensor], lr: float, **options) -> torch.optim.Optimizer:
    """PSGD-Kron (Li 2015-2024): preconditioned SGD with Kronecker-factored preconditioners."""
    from pytorch_optimizer import Kron
    return Kron(params, lr=lr, **options)


def muon(params: Iterable[torch.Tensor], lr: float, **options) -> torch.optim.Optimizer:
    """Muon (Jordan et al. 2024): Newton-Schulz-orthogonalised momentum on weight matrices, AdamW on
    the biases."""
    from pytorch_optimizer import Muon
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "use_muon": True},
              {"params": [p for p in params if p.ndim < 2], "use_muon": False}]
    return Muon([g for g in groups if g["params"]], lr=lr, **options)


__all__ = ["kron", "muon", "scalable_shampoo", "shampoo", "soap"]
