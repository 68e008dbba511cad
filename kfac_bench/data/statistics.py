"""Pixel statistics of a dataset: per-pixel standardisation and what ``kfac-bench data describe`` prints.

Losses follow the training convention (per-element means, :mod:`kfac_bench.runs.train`):

* **best constant image** - the loss of predicting the training split's per-pixel mean for every
  image. It is the loss an auto-encoder reaches by ignoring its input, so a run that has not gone
  well below it has learnt nothing about the images. For squared error on data standardised per
  pixel it is exactly 1 on the training split. For binary cross-entropy (targets in [0, 1]) it is
  ``mean_j H(p_j)``, ``H`` the binary entropy and ``p_j`` the pixel's mean.
* **entropy floor** (binary cross-entropy only) - ``mean_ij H(x_ij)``: the loss of a perfect
  reconstruction, as the cross-entropy of soft (grey) targets cannot reach 0.

Everything is computed in float64, a chunk of rows at a time.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .common import Log

__all__ = ["pixel_moments", "value_summary", "best_constant_loss", "entropy_floor", "on_unit_scale",
           "standardise_splits", "describe_splits", "format_description", "UNIT_SCALE_TOLERANCE"]

# A file counts as already standardised when the root-mean-square over pixels of its per-pixel means
# and of (per-pixel std - 1) are both within this: a file standardised on all its images and read
# in part (the first 103,500 of FACES' 165,600) deviates by far less, a [0, 1] image file by ~0.5.
UNIT_SCALE_TOLERANCE = 0.05
# Pixels whose training-split std is below this are only centred (dividing would blow up noise).
MIN_PIXEL_STD = 1e-6
_CHUNK = 8192
_EPS = 1e-7  # probabilities clamped into [_EPS, 1 - _EPS] for the cross-entropy of a constant


def _chunks(x: torch.Tensor):
    for start in range(0, x.shape[0], _CHUNK):
        yield x[start:start + _CHUNK].to(torch.float64)


def pixel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation (population, ddof 0) of ``x`` (n, d), float64."""
    n = x.shape[0]
    if n < 1:
        raise ValueError("pixel_moments needs at least one row")
    mean = sum(c.sum(0) for c in _chunks(x)) / n
    var = sum(((c - mean) ** 2).sum(0) for c in _chunks(x)) / n
    return mean, var.sqrt()


def value_summary(x: torch.Tensor) -> dict[str, float]:
    """Range, mean and std (over every element) of ``x``."""
    n = x.numel()
    mean = float(sum(c.sum() for c in _chunks(x))) / n
    var = float(sum(((c - mean) ** 2).sum() for c in _chunks(x))) / n
    return {"min": float(x.min()), "max": float(x.max()), "mean": mean, "std": math.sqrt(var)}


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    # x log x -> 0 at x = 0 and 1: xlogy gives exactly 0 there
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def best_constant_loss(x: torch.Tensor, constant: torch.Tensor, likelihood: str) -> float:
    """Per-element mean loss of predicting the image ``constant`` (d,) for every row of ``x``."""
    constant = constant.to(torch.float64)
    total = 0.0
    if likelihood == "gaussian":
        for c in _chunks(x):
            total += float(((c - constant) ** 2).sum())
    elif likelihood == "bernoulli":
        p = constant.clamp(_EPS, 1 - _EPS)
        log_p, log_q = p.log(), (1 - p).log()
        for c in _chunks(x):
            total -= float((c * log_p + (1 - c) * log_q).sum())
    else:
        raise ValueError(f"best_constant_loss: no loss for likelihood {likelihood!r} "
                         f"(use 'gaussian' or 'bernoulli')")
    return total / x.numel()


def entropy_floor(x: torch.Tensor) -> float:
    """Per-element mean binary cross-entropy of a perfect reconstruction of ``x`` (values in [0, 1])."""
    return float(sum(_binary_entropy(c.clamp(0.0, 1.0)).sum() for c in _chunks(x))) / x.numel()


def on_unit_scale(mean: torch.Tensor, std: torch.Tensor, tolerance: float = UNIT_SCALE_TOLERANCE) -> bool:
    """Whether per-pixel statistics say the data are already standardised (zero mean, unit std)."""
    rms_mean = float(mean.pow(2).mean().sqrt())
    rms_std = float((std - 1).pow(2).mean().sqrt())
    return rms_mean <= tolerance and rms_std <= tolerance


def standardise_splits(train: torch.Tensor, val: torch.Tensor, name: str, *, always: bool,
                       log: Log = print) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(x - m) / s`` per pixel, ``m``, ``s`` the training split's per-pixel mean and std, applied to
    both splits. ``always=False`` leaves data that :func:`on_unit_scale` finds standardised as they
    are. Returns the two splits and a record (raw statistics, decision) for the run summary."""
    mean, std = pixel_moments(train)
    raw = value_summary(train)
    raw["best_constant_mse"] = float(std.pow(2).mean())  # the per-pixel mean's squared error
    already = on_unit_scale(mean, std)
    record: dict[str, Any] = {
        "method": "per pixel: (x - train-split pixel mean) / train-split pixel std, both splits",
        "statistics_from": f"train split ({train.shape[0]} images)",
        "raw_train": raw,
        "raw_pixel_mean_range": [float(mean.min()), float(mean.max())],
        "raw_pixel_std_range": [float(std.min()), float(std.max())],
        "unit_scale_tolerance": UNIT_SCALE_TOLERANCE,
    }
    stats = (f"train split: values [{raw['min']:.3g}, {raw['max']:.3g}], mean {raw['mean']:.4g}, "
             f"std {raw['std']:.4g}, best constant image MSE {raw['best_constant_mse']:.4g}")
    if already and not always:
        record.update(applied=False, decision="already on unit scale (per-pixel mean ~0, std ~1): used as is")
        log(f"{name}: {stats}; already standardised per pixel (within {UNIT_SCALE_TOLERANCE}): used as is")
        return train, val, record
    flat = std < MIN_PIXEL_STD
    scale = torch.where(flat, torch.ones_like(std), std)
    m32, s32 = mean.to(torch.float32), scale.to(torch.float32)
    train = (train - m32) / s32
    val = (val - m32) / s32
    record.update(applied=True, constant_pixels_centred_only=int(flat.sum()),
                  decision=("standardised (generated stand-in: always)" if always else
                            "standardised (the file is not on unit scale)"))
    log(f"{name}: {stats}; standardised per pixel with the train split's statistics (both splits)"
        + (f"; {int(flat.sum())} constant pixels only centred" if bool(flat.any()) else ""))
    return train.contiguous(), val.contiguous(), record


# ------------------------------------------------------------------------------------- describe
def describe_splits(splits, likelihood: str) -> dict[str, Any]:
    """The numbers ``kfac-bench data describe`` prints, for a :class:`DatasetSplits`."""
    train_mean, _ = pixel_moments(splits.train)
    out: dict[str, Any] = {
        "name": splits.name,
        "source": splits.source,
        "description": splits.description,
        "generator_version": splits.details.get("generator_version"),
        "file": splits.details.get("file", splits.details.get("cache_file")),
        "likelihood": likelihood,
        "standardisation": splits.details.get("standardisation"),
        "splits": {},
    }
    for split, x in (("train", splits.train), ("val", splits.val)):
        if x.shape[0] == 0:
            continue
        entry: dict[str, Any] = {"shape": list(x.shape), **value_summary(x),
                                 "best_constant_loss": best_constant_loss(x, train_mean, likelihood)}
        if likelihood == "bernoulli":
            entry["entropy_floor"] = entropy_floor(x)
        out["splits"][split] = entry
    return out


def _number(value: float, digits: int = 4) -> str:
    """``value`` to ``digits`` decimals, without the sign of a negative that rounds to zero."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_description(d: dict[str, Any]) -> str:
    """Human-readable table of :func:`describe_splits`' result."""
    loss = {"gaussian": "squared error", "bernoulli": "binary cross-entropy"}.get(d["likelihood"], d["likelihood"])
    if d["source"] == "generated":
        source = (f"GENERATED STAND-IN, generator version {d['generator_version']} "
                  f"(cache {d.get('file')}), not the genuine file")
    else:
        source = f"genuine file {d.get('file')}"
    lines = [f"dataset      {d['name']}",
             f"source       {source}",
             f"description  {d['description']}",
             f"loss         {loss}, per element (mean over pixels and images)"]
    std = d.get("standardisation")
    if std:
        raw = std["raw_train"]
        lines.append(f"scaling      {std['decision']}")
        lines.append(f"raw train    values [{raw['min']:.4f}, {raw['max']:.4f}], mean {_number(raw['mean'])}, "
                     f"std {raw['std']:.4f}, best constant image MSE {raw['best_constant_mse']:.4f} "
                     f"(before the scaling)")
    splits = d["splits"]
    names = list(splits)
    rows = [("shape", lambda e: " x ".join(str(v) for v in e["shape"])),
            ("min", lambda e: f"{e['min']:.4f}"), ("max", lambda e: f"{e['max']:.4f}"),
            ("mean", lambda e: _number(e["mean"])), ("std", lambda e: f"{e['std']:.4f}"),
            ("best constant image loss", lambda e: f"{e['best_constant_loss']:.4f}")]
    if d["likelihood"] == "bernoulli":
        rows.append(("entropy floor", lambda e: f"{e['entropy_floor']:.4f}"))
    width = max(len(r[0]) for r in rows) + 2
    lines.append("")
    lines.append(" " * width + "".join(f"{n:>16}" for n in names))
    for label, fmt in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{fmt(splits[n]):>16}" for n in names))
    lines.append("")
    lines.append("best constant image = the train split's per-pixel mean, predicted for every image"
                 + ("; entropy floor = the loss of a perfect reconstruction of these soft targets"
                    if d["likelihood"] == "bernoulli" else ""))
    return "\n".join(lines)
