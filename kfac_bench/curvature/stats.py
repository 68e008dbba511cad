"""Per-layer statistics for the Fisher blocks: augmented inputs ``a_bar`` and per-example
pre-activation gradients ``g`` of every captured layer (``nn.Linear``, ``nn.Conv2d``,
``nn.ConvTranspose2d``: :mod:`kfac_bench.curvature.capture` says how each turns its input and output
gradient into a block), from one extra forward/backward pass with targets sampled from the model's
predictive distribution (the true Fisher, Monte-Carlo; paper section 3.1) or, as an option, with the
real targets (the empirical Fisher).

Loss scale (the paper's convention, docs/design.md §3): the per-example loss is the *mean* over output
elements of the element-wise negative log-likelihood, and the training objective is its mean over
examples, so ``g_t`` is the gradient of example t's own per-element-mean loss and the G-side of the
Fisher carries a factor ``1/d_out^2`` relative to the per-case NLL. ``reduction="sum"`` gives the
per-case NLL Fisher instead (``G_sum = d_out^2 G_mean``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .capture import Capture, as_captures, augment, layer_name  # noqa: F401 (augment: its old home)


@dataclass(frozen=True)
class Likelihood:
    """A predictive distribution over targets given the network output ``z``."""

    name: str

    def elementwise_nll(self, z: Tensor, y: Tensor) -> Tensor:
        if self.name == "bernoulli":       # z are logits: sigmoid output + binary cross-entropy
            return F.binary_cross_entropy_with_logits(z, y, reduction="none")
        if self.name == "gaussian":        # z is the mean; the squared error (y - z)^2 is the NLL of
            return (y - z) ** 2            # N(z, 1/2) up to a constant, so its Fisher is its GGN
        if self.name == "categorical":     # z are logits over classes, y class indices
            return F.cross_entropy(z, y, reduction="none")[:, None]
        raise ValueError(self._unknown())

    def per_example_loss(self, z: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        nll = self.elementwise_nll(z, y).reshape(z.shape[0], -1)
        return nll.mean(dim=1) if reduction == "mean" else nll.sum(dim=1)

    def batch_loss(self, z: Tensor, y: Tensor) -> Tensor:
        """The training objective: mean over examples and output elements (the fused ``mean``
        reductions of torch's losses where they exist: the same value, a cheaper backward)."""
        if self.name == "bernoulli":
            return F.binary_cross_entropy_with_logits(z, y)
        if self.name == "gaussian":
            return F.mse_loss(z, y)
        return self.elementwise_nll(z, y).mean()

    @torch.no_grad()
    def sample(self, z: Tensor, generator: torch.Generator | None = None,
               gaussian_std: float | None = None) -> Tensor:
        """Targets drawn from the predictive distribution at ``z``. ``gaussian_std`` overrides the
        Gaussian's standard deviation (``sqrt(1/2)``, the one whose NLL is the squared error): the
        authors' code draws FACES targets with standard deviation 1 (``torch.normal(mean=...)``,
        ``apps/mlp_cnn/train_mlp.py`` line 171 at commit 97105b6), a Fisher twice the GGN."""
        if self.name == "bernoulli":
            return torch.bernoulli(torch.sigmoid(z), generator=generator)
        if self.name == "gaussian":
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            return z + (math.sqrt(0.5) if gaussian_std is None else float(gaussian_std)) * noise
        if self.name == "categorical":
            return torch.multinomial(torch.softmax(z, dim=-1), 1, generator=generator)[:, 0]
        raise ValueError(self._unknown())

    def _unknown(self) -> str:
        return f"unknown likelihood {self.name!r}; choose one of {sorted(LIKELIHOODS)}"


LIKELIHOODS = {name: Likelihood(name) for name in ("bernoulli", "gaussian", "categorical")}


def get_likelihood(name: str) -> Likelihood:
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}") from None


def collect_statistics(
    model: nn.Module,
    layers: list[nn.Module | Capture],
    inputs: Tensor,
    likelihood: Likelihood,
    generator: torch.Generator | None = None,
    targets: Tensor | None = None,
    reduction: str = "mean",
    gaussian_std: float | None = None,
) -> list:
    """One forward and one backward pass of ``model`` on ``inputs`` that record, for every capture
    in ``layers`` (:mod:`kfac_bench.curvature.capture`; a module stands for its captures, each module
    once), the module's input and the per-example gradients w.r.t. its output, and return one
    statistics block per capture (``nn.Linear``: a :class:`SampledFisherBlock`, one row per example;
    a convolution: its treatment's block).

    With ``targets=None`` the targets are sampled from ``likelihood`` at the model's output (true
    Fisher); otherwise they are used as given (empirical Fisher). Parameter ``.grad`` fields are not
    touched (``torch.autograd.grad`` on the layer outputs). One hook per module, however many
    captures it has.
    """
    captures = as_captures(layers)
    modules = list(dict.fromkeys(c.module for c in captures))
    recorded: dict[nn.Module, tuple[Tensor, Tensor]] = {}
    versions: dict[nn.Module, int] = {}

    def hook(module, args, output):
        recorded[module] = (args[0].detach(), output)
        versions[module] = output._version

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        with torch.enable_grad():
            z = model(inputs)
            y = likelihood.sample(z.detach(), generator, gaussian_std) if targets is None else targets
            loss = likelihood.per_example_loss(z, y, reduction).sum()
            _check_recorded(captures, recorded, versions)
            outputs = [recorded[module][1] for module in modules]
            grads = torch.autograd.grad(loss, outputs)
    finally:
        for h in handles:
            h.remove()
    grad_of = dict(zip(modules, grads))
    return [capture.statistics(recorded[capture.module][0], grad_of[capture.module]) for capture in captures]


def _check_recorded(captures: list[Capture], recorded: dict, versions: dict) -> None:
    """Every captured module ran, and nothing overwrote its output in place (``ReLU(inplace=True)``
    after it: the gradient would be the activation's, not the layer's)."""
    def names(found):
        return ", ".join(f"{layer_name(c.path)} ({type(c.module).__name__})" for c in found)
    missing = [c for c in captures if c.module not in recorded]
    if missing:
        raise RuntimeError(f"layer(s) {names(missing)} did not run in the model's forward pass (a module whose "
                           f"parent calls its weights directly, or an unused one): the statistics need its input "
                           f"and output; leave it out with the optimizer's layers= option")
    changed = [c for c in captures if recorded[c.module][1]._version != versions[c.module]]
    if changed:
        raise RuntimeError(f"the output of layer(s) {names(changed)} was changed in place after the layer (e.g. "
                           f"an activation with inplace=True): the statistics need the layer's own output; "
                           f"use the out-of-place activation")
