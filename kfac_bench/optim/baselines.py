"""The Kronecker-factored preconditioners people train with today, from ``pytorch-optimizer`` (4.x):
SOAP, Shampoo, Scalable Shampoo, Muon and PSGD-Kron, as first-order registry entries (:mod:`kfac_bench.registry`).

Each builder takes what the factory gives every first-order optimizer -- the model's parameters, the
learning rate and the options its registry entry lists -- and leaves every other setting at the
library's default (the comparison's rule: their defaults, their learning rate tuned on a grid around
the library's default). They are not methods of the paper: the claims never read them.

Muon orthogonalises the update of weight *matrices* only; it prescribes AdamW for the rest (biases,
gains), so the builder puts parameters with ``ndim >= 2`` in a ``use_muon=True`` group and the others
in a ``use_muon=False`` group at the library's AdamW settings (``adamw_lr`` 3e-4). Its Newton-Schulz
iteration runs in bfloat16 on CUDA, as the library's, and in float32 on a CPU (``ns_dtype``).
"""
from __future__ import annotations

import contextlib
import functools
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


def muon(params: Iterable[torch.Tensor], lr: float, ns_dtype: str = "auto", **options) -> torch.optim.Optimizer:
    """Muon (Jordan et al. 2024): Newton-Schulz-orthogonalised momentum on weight matrices, AdamW on
    the biases; the iteration in ``ns_dtype`` (:func:`newton_schulz_dtype`)."""
    from pytorch_optimizer import Muon
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "use_muon": True},
              {"params": [p for p in params if p.ndim < 2], "use_muon": False}]

    class MuonWithItsIterationDtype(Muon):
        """The library's Muon, its Newton-Schulz iteration in the chosen dtype."""

        def step(self, closure=None):
            devices = [p.device for g in self.param_groups for p in g["params"]]
            with newton_schulz_in(newton_schulz_dtype(ns_dtype, devices)):
                return super().step(closure)

    return MuonWithItsIterationDtype([g for g in groups if g["params"]], lr=lr, **options)


NEWTON_SCHULZ_DTYPES = ("auto", "bfloat16", "float32")


def newton_schulz_dtype(choice: str, devices: Iterable[torch.device]) -> torch.dtype:
    """The dtype of Muon's Newton-Schulz iteration: ``bfloat16`` (the library's and Jordan et al.'s, fast
    on GPUs), ``float32``, or ``auto``: bfloat16 on CUDA, float32 elsewhere -- a CPU without bfloat16
    units emulates it, 50-100 times slower (26 s a step on MNIST on the 2-core development machine,
    0.3 s in float32), and float32 is the more exact iteration."""
    if choice not in NEWTON_SCHULZ_DTYPES:
        raise ValueError(f"optimizer.ns_dtype={choice!r}: choose one of {list(NEWTON_SCHULZ_DTYPES)}")
    if choice == "auto":
        return torch.bfloat16 if any(d.type == "cuda" for d in devices) else torch.float32
    return getattr(torch, choice)


@contextlib.contextmanager
def newton_schulz_in(dtype: torch.dtype):
    """pytorch-optimizer's Muon with its quintic Newton-Schulz iteration in ``dtype``: the library fixes it
    to bfloat16 (pytorch_optimizer/optimizer/utils/matrix.py zero_power_via_newton_schulz_5, 4.1.0) and
    its Muon offers no option, so the function Muon calls (muon/base.py) is replaced for one step."""
    from pytorch_optimizer.optimizer.muon import base
    original = base.zero_power_via_newton_schulz_5
    base.zero_power_via_newton_schulz_5 = functools.partial(original, dtype=dtype)
    try:
        yield
    finally:
        base.zero_power_via_newton_schulz_5 = original


__all__ = ["kron", "muon", "scalable_shampoo", "shampoo", "soap"]
