"""Which layers an optimizer preconditions, and the report that accounts for every parameter.

At construction :class:`~kfac_bench.optim.KroneckerFactoredOptimizer` walks ``model.named_modules()``
and asks :mod:`kfac_bench.curvature.capture` (the one place that dispatches on module types) for each
module's captures: ``nn.Linear``, ``nn.Conv2d`` and ``nn.ConvTranspose2d`` (weight and, apart, bias)
get curvature blocks; every other parameter takes the plain step (the optimizer's momentum update on
its gradient): normalisation layers (BatchNorm, LayerNorm, GroupNorm -- the authors' code also sends
BatchNorm through the plain step: ``optimizers/kfac.py`` line 58 at commit 97105b6 lists only
``'Linear'``, ``'Conv2d'`` and ``'ConvTranspose2d'``, their other optimizers only the first two),
embeddings, 1-D and 3-D convolutions, and any layer that ``layers=`` leaves out. A parameterized
module of a type never seen also takes it, with a warning.

``layers=`` (None: every supported layer) is a list of names, each one of

* a kind: ``"linear"``, ``"conv"`` (Conv2d and ConvTranspose2d), ``"conv2d"``, ``"conv_transpose2d"``;
* a module path as ``model.named_modules()`` names it (``"3"``, ``"encoder.0"``), which also selects
  the modules below it (``"encoder"`` selects ``"encoder.0"``, ``"encoder.2"``, ...).

A name that selects no supported layer is an error (a typo would otherwise leave a layer unpreconditioned).

The report (:attr:`LayerPlan.report`, the optimizer's ``layer_report``) is a list of dicts, JSON-ready:
one per curvature block (``preconditioned: true``, ``path``, ``type``, ``capture``, ``parameters``
(name -> shape), ``block`` ``[d_g, d_a]``, ``treatment``, ``radius`` for ``banded``) and one per module
whose own parameters take the plain step (``preconditioned: false``, ``path``, ``type``, ``parameters``,
``reason``); :func:`describe_layers` prints it as a table.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import nn

from ..curvature.capture import Capture, capture_classes, captures_for, layer_name, plain_step_reason

KINDS = ("linear", "conv", "conv2d", "conv_transpose2d")


@dataclass
class LayerPlan:
    """The captures an optimizer preconditions, the parameters that take the plain step, the report."""

    captures: list[Capture] = field(default_factory=list)
    plain: list[nn.Parameter] = field(default_factory=list)
    report: list[dict] = field(default_factory=list)


def _selected(path: str, classes: tuple, select: list[str] | None) -> bool:
    if select is None:
        return True
    names = {c.kind for c in classes} | {c.family for c in classes}
    return any(s in names or s == path or path.startswith(s + ".") for s in select)


def _check_selection(model: nn.Module, select: list[str] | None) -> list[str] | None:
    if select is None:
        return None
    select = [select] if isinstance(select, str) else [str(s) for s in select]
    supported = [(path, capture_classes(m)) for path, m in model.named_modules() if capture_classes(m)]
    unused = [s for s in select if not any(_selected(path, classes, [s]) for path, classes in supported)]
    if unused:
        found = ", ".join(f"{p} ({classes[0].kind})" for p, classes in supported) or "none"
        raise ValueError(f"layers={select}: {unused} select(s) no supported layer; name kinds {list(KINDS)} or "
                         f"module paths (model.named_modules()); the supported layers are: {found}")
    return select


def _plain_entry(path: str, module: nn.Module, params: dict, reason: str) -> dict:
    return {"path": path, "type": type(module).__name__, "preconditioned": False,
            "parameters": {name: list(p.shape) for name, p in params.items()}, "reason": reason}


def plan_layers(model: nn.Module, select=None, spatial: str = "independent",
                radius: int | None = None) -> LayerPlan:
    """Every module of ``model`` accounted for (module docstring). Raises ``ValueError`` when no layer
    is preconditioned, naming what the model holds, and
    :class:`~kfac_bench.curvature.capture.UnsupportedLayer` for a selected layer the captures cannot
    represent."""
    select = _check_selection(model, select)
    plan, covered, unknown = LayerPlan(), set(), []
    for path, module in model.named_modules():
        classes = capture_classes(module)
        chosen = bool(classes) and _selected(path, classes, select)
        if chosen:
            for capture in captures_for(module, path, spatial, radius):
                plan.captures.append(capture)
                covered.update(id(p) for p in capture.parameters)
                plan.report.append({**capture.describe(), "preconditioned": True})
        own = {name: p for name, p in module.named_parameters(recurse=False) if id(p) not in covered}
        if not own:
            continue
        reason = ("a parameter its curvature blocks do not cover" if chosen else "left out by layers="
                  if classes else plain_step_reason(module))
        if reason is None:
            unknown.append(f"{layer_name(path)} ({type(module).__name__})")
            reason = "a module type the optimizer does not know"
        covered.update(id(p) for p in own.values())
        plan.plain += own.values()
        plan.report.append(_plain_entry(path, module, own, reason))
    if not plan.captures:
        kinds = sorted({type(m).__name__ for m in model.modules() if any(True for _ in m.parameters(False))})
        raise ValueError("the model has no layer to precondition (nn.Linear, nn.Conv2d, nn.ConvTranspose2d"
                         + (f" selected by layers={select}" if select is not None else "")
                         + f"); its parameterized modules are: {kinds or 'none'}")
    if unknown:
        warnings.warn(f"the optimizer does not know the module type(s) of {', '.join(unknown)}: their "
                      f"parameters take the plain step (no curvature); opt.describe_layers() lists every layer",
                      stacklevel=3)
    return plan


def describe_layers(report: list[dict]) -> str:
    """The report as a table: one line per curvature block, then one per plain-step module."""
    lines = ["preconditioned (curvature blocks):"]
    for e in (e for e in report if e["preconditioned"]):
        radius = f", r={e['radius']}" if "radius" in e else ""
        shapes = ", ".join(f"{n} {tuple(s)}" for n, s in e["parameters"].items())
        lines.append(f"  {e['path'] or '(model)'}  {e['type']} [{shapes}]  block (d_g, d_a) = "
                     f"{tuple(e['block'])}  {e['treatment']}{radius}")
    plain = [e for e in report if not e["preconditioned"]]
    lines.append("plain step (momentum on the gradient):" + ("" if plain else " none"))
    for e in plain:
        shapes = ", ".join(f"{n} {tuple(s)}" for n, s in e["parameters"].items())
        lines.append(f"  {e['path'] or '(model)'}  {e['type']} [{shapes}]  {e['reason']}")
    return "\n".join(lines)


__all__ = ["KINDS", "LayerPlan", "describe_layers", "plan_layers"]
