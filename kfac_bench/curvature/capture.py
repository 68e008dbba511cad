"""Capture classes: what the curvature code knows of each module type it preconditions, one class per
type (the pattern of kfac-pytorch's module helpers), and the one place where anything dispatches on
the type of an ``nn.Module`` (:data:`CAPTURES`, :data:`PLAIN_STEP_TYPES`).

A capture knows its module (and the module's path in the model), the parameters its curvature block
covers, the block's shape ``(d_g, d_a)`` (docs/design.md §3: ``W = [weight | bias]``, the bias LAST,
``vec`` stacks columns), how to turn the parameters' ``.grad`` into the ``(d_g, d_a - 1)`` weight
matrix and bias vector the blocks solve in (or the ``(d_g, d_a)`` matrix and no bias when the bias
is no column of the block) and the preconditioned direction back into the parameters' shapes, and
how to turn the module's recorded input and output gradient into the block's statistics:

* :class:`LinearCapture` -- ``nn.Linear``: a :class:`~kfac_bench.curvature.kronecker.SampledFisherBlock`
  with one row per example (``a_bar = (a, 1)``, ``g`` the output gradient), exactly the statistics
  :func:`~kfac_bench.curvature.stats.collect_statistics` made before captures existed (the same
  operations in the same order: the MLP runs do not change by one bit).
* :class:`Conv2dCapture` -- ``nn.Conv2d``: per-position statistics ``a_bar (N, T, d_a)`` =
  ``F.unfold(input, kernel, padding, stride)`` transposed, plus a ones column when the layer has a
  bias, and ``g (N, T, c_out)`` the output gradient at each of the ``T`` output positions; the block
  is :func:`~kfac_bench.curvature.spatial.spatial_block` under the layer's treatment (``spatial=``).
  ``F.unfold`` orders a patch ``(channel, kh, kw)``, channel slowest, the order of
  ``weight.reshape(c_out, -1)``: ``DW_n = sum_t g_nt a_nt^T`` is the per-example weight gradient in
  that matrix form (tests/test_conv_capture.py checks it against torch.func).
* :class:`ConvTranspose2dCapture` -- ``nn.ConvTranspose2d``'s weight ``(c_in, c_out, kh, kw)``. Its
  output is ``y[o, p s - pad + k] += x[c, p] W[c, o, k]``, so its per-example weight gradient is
  ``DW_n = sum_p x_np u_np^T`` over the INPUT positions ``p``, with ``x_np`` the input's channel
  vector there (the g-side, ``d_g = c_in``) and ``u_np = F.unfold(grad_output, kernel, padding,
  stride)[..., p]`` (the a-side, ``d_a = c_out kh kw``, ordered as ``weight.reshape(c_in, -1)``);
  the unfold has exactly ``H_in W_in`` positions (``output_padding < stride`` adds none). The block is
  ``spatial_block(u, x)``; it has no bias column.
* :class:`ConvTranspose2dBiasCapture` -- the bias of an ``nn.ConvTranspose2d`` (per output channel,
  summed over the OUTPUT positions, which are not the weight's positions: it does not fold into the
  a-side as a ones column). Its own block, ``(d_g, d_a) = (c_out, 1)``, with ``a_bar = 1`` and
  ``g_n = sum_q grad_output[n, :, q]``: one position, the exact Fisher block of the bias, which every
  method (KFAC included) fits exactly. A ConvTranspose2d with a bias therefore has two blocks.

Refused at construction (:class:`UnsupportedLayer`, naming the layer, the setting and the fix):
``groups > 1``, ``dilation > 1``, ``padding_mode`` other than ``'zeros'`` and ``padding='same'`` with
an even kernel (``'valid'`` is padding 0; ``'same'`` with an odd kernel is its symmetric padding).
Other parameterized modules take the plain step (:func:`plain_step_reason`).

This module imports nothing outside :mod:`kfac_bench.curvature`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kronecker import SampledFisherBlock
from .spatial import SPATIAL_TREATMENTS, spatial_block


class UnsupportedLayer(ValueError):
    """A layer of a supported type with a setting the captures cannot represent; the message names the
    layer, the setting and the fix."""


def augment(a: Tensor, has_bias: bool) -> Tensor:
    """``a_bar = (a, 1)``: the bias column goes LAST (kfac-bench convention)."""
    a = a.reshape(-1, a.shape[-1])
    if not has_bias:
        return a
    return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)


def _shape(p: Tensor | None) -> list[int] | None:
    return None if p is None else list(p.shape)


def layer_name(path: str) -> str:
    """How messages name a module: its path in ``model.named_modules()`` (``'3'``, ``'encoder.0'``)."""
    return repr(path) if path else "(the model itself)"


class Capture:
    """One curvature block of one module (see the module docstring); subclasses per module type."""

    kind = "base"        # the capture's name in reports and in ``layers=`` (e.g. "conv2d")
    family = "base"      # the family ``layers=`` also accepts ("linear", "conv")

    def __init__(self, module: nn.Module, path: str = "", spatial: str = "independent",
                 radius: int | None = None):
        if spatial not in SPATIAL_TREATMENTS:
            raise ValueError(f"unknown spatial treatment {spatial!r}; choose one of {SPATIAL_TREATMENTS}")
        self.module, self.path, self.spatial = module, path, spatial
        self.radius = None if radius is None else int(radius)

    @classmethod
    def applies(cls, module: nn.Module) -> bool:
        """Whether this capture has a block in ``module`` (a ConvTranspose2d without bias has no bias block)."""
        return True

    # the parameters and the block's shape
    @property
    def parameters(self) -> tuple[nn.Parameter, ...]:
        raise NotImplementedError

    @property
    def block_shape(self) -> tuple[int, int]:
        """``(d_g, d_a)`` of the block (``d_a`` counts the bias column)."""
        raise NotImplementedError

    @property
    def has_bias_column(self) -> bool:
        return False

    @property
    def treatment(self) -> str:
        """The treatment of the positions (what :meth:`statistics` hands to the block)."""
        return self.spatial

    def describe(self) -> dict:
        """The capture as the layer report lists it (JSON-ready)."""
        return {"path": self.path, "type": type(self.module).__name__, "capture": self.kind,
                "parameters": {name: _shape(p) for name, p in self._named()},
                "block": list(self.block_shape), "treatment": self.treatment,
                **({"radius": self.band_radius()} if self.treatment == "banded" else {})}

    def _named(self) -> list[tuple[str, Tensor]]:
        return [(name, p) for name, p in self.module.named_parameters(recurse=False)
                if any(p is q for q in self.parameters)]

    def band_radius(self) -> int | None:
        return self.radius

    # gradients in and out of the block's matrix form
    def gradient(self) -> tuple[Tensor | None, Tensor | None]:
        """``(weight matrix, bias)`` of the parameters' ``.grad`` in the block's coordinates: the
        ``(d_g, d_a - 1)`` matrix and the ``(d_g,)`` bias with a bias column, else the ``(d_g, d_a)``
        matrix and None; ``(None, None)`` when the matrix's parameter has no gradient."""
        raise NotImplementedError

    def directions(self, parts: tuple[Tensor, ...]) -> list[tuple[nn.Parameter, Tensor]]:
        """The preconditioned parts (as :meth:`gradient` gave them) back on their parameters' shapes."""
        raise NotImplementedError

    def statistics(self, inputs: Tensor, grad_output: Tensor):
        """The block's statistics from the module's recorded input and the gradient of the summed
        per-example losses with respect to its output."""
        raise NotImplementedError

    @property
    def device_dtype(self) -> dict:
        p = self.parameters[0]
        return {"device": p.device, "dtype": p.dtype}


class _WeightWithBiasColumn:
    """A layer whose bias is the last column of its block (``abar = (a, 1)``): Linear and Conv2d."""

    @property
    def parameters(self):
        m = self.module
        return (m.weight,) if m.bias is None else (m.weight, m.bias)

    @property
    def has_bias_column(self) -> bool:
        return self.module.bias is not None


class LinearCapture(_WeightWithBiasColumn, Capture):
    """``nn.Linear``: rows are examples (module docstring)."""

    kind = family = "linear"

    @property
    def block_shape(self):
        return self.module.out_features, self.module.in_features + self.has_bias_column

    @property
    def treatment(self) -> str:
        return "rows are examples"

    def gradient(self):
        m = self.module
        grad = m.weight.grad
        if grad is None or m.bias is None:
            return grad, None
        return grad, m.bias.grad if m.bias.grad is not None else torch.zeros_like(m.bias)

    def directions(self, parts):
        return list(zip(self.parameters, parts))

    def statistics(self, inputs, grad_output):
        return SampledFisherBlock(augment(inputs, self.module.bias is not None),
                                  grad_output.detach().reshape(-1, grad_output.shape[-1]))


def _check_conv(module: nn.Module, path: str) -> tuple[int, int]:
    """The symmetric padding of a 2-D convolution the captures can represent, or :class:`UnsupportedLayer`."""
    name, kind = layer_name(path), type(module).__name__
    fix = (f"give it the plain step with the optimizer's layers= option (list the layers to precondition, "
           f"without {path or 'it'}), or change the layer")
    if module.groups != 1:
        raise UnsupportedLayer(f"layer {name} ({kind}) has groups={module.groups}: grouped convolutions are not "
                               f"supported (one Kronecker block per group is not implemented); {fix}")
    if tuple(module.dilation) != (1, 1):
        raise UnsupportedLayer(f"layer {name} ({kind}) has dilation={tuple(module.dilation)}: only dilation 1 is "
                               f"supported; {fix}")
    if module.padding_mode != "zeros":
        raise UnsupportedLayer(f"layer {name} ({kind}) has padding_mode={module.padding_mode!r}: only 'zeros' is "
                               f"supported (the unfolded patches would not be the layer's); {fix}")
    padding = module.padding
    if padding == "valid":
        return 0, 0
    if padding == "same":
        if any(k % 2 == 0 for k in module.kernel_size):
            raise UnsupportedLayer(f"layer {name} ({kind}) has padding='same' with the even kernel "
                                   f"{tuple(module.kernel_size)}: torch pads it asymmetrically, which F.unfold "
                                   f"cannot; use an odd kernel or explicit padding; {fix}")
        return tuple((k - 1) // 2 for k in module.kernel_size)
    return tuple(int(p) for p in padding)


def _batched(x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """An unbatched ``(C, H, W)`` call as a batch of one."""
    return (x[None], g[None]) if x.dim() == 3 else (x, g)


class Conv2dCapture(_WeightWithBiasColumn, Capture):
    """``nn.Conv2d``: unfolded input patches and output gradients per output position (module docstring)."""

    kind, family = "conv2d", "conv"

    def __init__(self, module, path="", spatial="independent", radius=None):
        super().__init__(module, path, spatial, radius)
        self.padding = _check_conv(module, path)

    @property
    def block_shape(self):
        w = self.module.weight
        return w.shape[0], w[0].numel() + self.has_bias_column

    def band_radius(self) -> int:
        """The band of ``spatial="banded"``: the option, else the authors' ``min(kernel) - 1``."""
        return min(self.module.kernel_size) - 1 if self.radius is None else self.radius

    def gradient(self):
        m = self.module
        if m.weight.grad is None:
            return None, None
        grad = m.weight.grad.reshape(m.weight.shape[0], -1)
        if m.bias is None:
            return grad, None
        return grad, m.bias.grad if m.bias.grad is not None else torch.zeros_like(m.bias)

    def directions(self, parts):
        return [(p, d.reshape(p.shape)) for p, d in zip(self.parameters, parts)]

    def position_statistics(self, inputs: Tensor, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        """``(a_bar (N, T, d_a), g (N, T, c_out))``: the unfolded patches (ones column last with a
        bias) and the output gradient at each of the ``T`` output positions."""
        x, go = _batched(inputs.detach(), grad_output.detach())
        m = self.module
        abar = F.unfold(x, m.kernel_size, dilation=1, padding=self.padding, stride=m.stride).transpose(1, 2)
        if m.bias is not None:
            abar = torch.cat([abar, abar.new_ones(abar.shape[0], abar.shape[1], 1)], dim=2)
        g = go.flatten(2).transpose(1, 2)
        if g.shape[1] != abar.shape[1]:
            raise RuntimeError(f"layer {layer_name(self.path)}: {abar.shape[1]} unfolded patches for "
                               f"{g.shape[1]} output positions")
        return abar, g

    def statistics(self, inputs, grad_output):
        abar, g = self.position_statistics(inputs, grad_output)
        return spatial_block(abar, g, self.spatial, self.band_radius())


class ConvTranspose2dCapture(Conv2dCapture):
    """``nn.ConvTranspose2d``'s weight: the input's channel vectors (g-side) and the unfolded output
    gradient (a-side) per INPUT position (module docstring); no bias column."""

    kind = "conv_transpose2d"

    @property
    def parameters(self):
        return (self.module.weight,)

    @property
    def has_bias_column(self) -> bool:
        return False

    @property
    def block_shape(self):
        w = self.module.weight                  # (c_in, c_out, kh, kw)
        return w.shape[0], w[0].numel()

    def gradient(self):
        m = self.module
        return (None if m.weight.grad is None else m.weight.grad.reshape(m.weight.shape[0], -1)), None

    def position_statistics(self, inputs, grad_output):
        """``(u (N, T_in, c_out kh kw), x (N, T_in, c_in))`` over the ``T_in`` input positions."""
        x, go = _batched(inputs.detach(), grad_output.detach())
        m = self.module
        u = F.unfold(go, m.kernel_size, dilation=1, padding=self.padding, stride=m.stride).transpose(1, 2)
        g = x.flatten(2).transpose(1, 2)
        if u.shape[1] != g.shape[1]:
            raise RuntimeError(f"layer {layer_name(self.path)}: {u.shape[1]} unfolded output-gradient patches "
                               f"for {g.shape[1]} input positions")
        return u, g


class ConvTranspose2dBiasCapture(Capture):
    """``nn.ConvTranspose2d``'s bias: its own exact ``c_out x 1`` block (module docstring)."""

    kind, family = "conv_transpose2d_bias", "conv"

    @classmethod
    def applies(cls, module) -> bool:
        return module.bias is not None

    @property
    def parameters(self):
        return (self.module.bias,)

    @property
    def block_shape(self):
        return self.module.bias.shape[0], 1

    @property
    def treatment(self) -> str:
        return "exact (one position)"

    def gradient(self):
        grad = self.module.bias.grad
        return (None if grad is None else grad[:, None]), None

    def directions(self, parts):
        return [(self.module.bias, parts[0].reshape(self.module.bias.shape))]

    def statistics(self, inputs, grad_output):
        _, go = _batched(inputs.detach(), grad_output.detach())
        g = go.flatten(2).sum(dim=2)                                   # (N, c_out): summed over output positions
        return SampledFisherBlock(g.new_ones(g.shape[0], 1), g)


# The one table of module types with curvature blocks: a module's captures are those of the first
# class of its MRO found here (subclasses of nn.Linear are Linear layers, as isinstance would say).
CAPTURES: dict[type, tuple[type[Capture], ...]] = {
    nn.Linear: (LinearCapture,),
    nn.Conv2d: (Conv2dCapture,),
    nn.ConvTranspose2d: (ConvTranspose2dCapture, ConvTranspose2dBiasCapture),
}

# Parameterized module types known to take the plain step (the optimizer warns about any other), with
# why; the authors' code also sends BatchNorm and the rest through the plain step.
PLAIN_STEP_TYPES: dict[type, str] = {
    nn.modules.batchnorm._NormBase: "normalisation layer (plain step, as in the authors' code)",
    nn.LayerNorm: "normalisation layer", nn.GroupNorm: "normalisation layer",
    nn.Embedding: "embedding (plain step)", nn.EmbeddingBag: "embedding (plain step)",
    nn.modules.conv._ConvNd: "convolution of a kind without a capture (1-D, 3-D, transposed 1-D/3-D)",
    nn.PReLU: "activation parameter", nn.MultiheadAttention: "attention projections (plain step)",
    **({nn.RMSNorm: "normalisation layer"} if hasattr(nn, "RMSNorm") else {}),
}


def _lookup(table: dict, module: nn.Module):
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


def capture_classes(module: nn.Module) -> tuple[type[Capture], ...]:
    """The capture classes of ``module``'s blocks (empty: a type with no curvature block)."""
    return tuple(c for c in (_lookup(CAPTURES, module) or ()) if c.applies(module))


def captures_for(module: nn.Module, path: str = "", spatial: str = "independent",
                 radius: int | None = None) -> list[Capture]:
    """``module``'s captures (raises :class:`UnsupportedLayer` for a setting they cannot represent)."""
    return [cls(module, path, spatial, radius) for cls in capture_classes(module)]


def layers_of_kind(model: nn.Module, kind: str) -> list[nn.Module]:
    """The modules of ``model`` whose first capture is of ``kind`` (``"linear"``: every ``nn.Linear``,
    subclasses included), in ``model.modules()`` order."""
    return [m for m in model.modules() if capture_classes(m)[:1] and capture_classes(m)[0].kind == kind]


def plain_step_reason(module: nn.Module) -> str | None:
    """Why a parameterized module without capture takes the plain step; None for a type never seen
    (the optimizer warns)."""
    return _lookup(PLAIN_STEP_TYPES, module)


def as_captures(layers) -> list[Capture]:
    """Captures as given, modules turned into theirs (each module once, default treatment)."""
    out: list[Capture] = []
    seen: set[int] = set()
    for layer in layers:
        if isinstance(layer, Capture):
            out.append(layer)
        elif id(layer) not in seen:
            seen.add(id(layer))
            found = captures_for(layer)
            if not found:
                raise TypeError(f"{type(layer).__name__} has no curvature capture; supported: "
                                f"{[t.__name__ for t in CAPTURES]}")
            out += found
    return out


__all__ = ["CAPTURES", "PLAIN_STEP_TYPES", "Capture", "Conv2dCapture", "ConvTranspose2dBiasCapture",
           "ConvTranspose2dCapture", "LinearCapture", "UnsupportedLayer", "as_captures", "augment",
           "capture_classes", "captures_for", "layer_name", "layers_of_kind", "plain_step_reason"]
