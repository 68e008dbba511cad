"""What the bench (:mod:`kfac_bench.studies.bench`) and the peer bench (:mod:`kfac_bench.studies.bench_peers`) share:
a method's optimizer config with the bench's settings, the batches every method steps on, the
markdown table of the printed and written results. Both import this module; neither imports the
other's internals (the bench calls the peer bench's entry point, ``run_peers``, and nothing else)."""
from __future__ import annotations

import logging
import math

import pandas as pd
import torch
from omegaconf import OmegaConf

from ..configs import config_dir
from ..options import load_optimizer_config
from ..registry import get_method

log = logging.getLogger("kfac_bench.studies.bench")


def optimizer_config(method: str, bench: dict, rank: int | None = None, spatial: str | None = None,
                     T_scale: int | str | None = None) -> dict:
    """conf/optimizer/<method>.yaml with the bench's lr, damping, T1, T2, rank, treatment of a
    convolution's positions (``spatial``, a curvature method's option; None: the config's), EKFAC's
    scaling schedule (``T_scale``; None: the config's) and overrides."""
    path = config_dir() / "optimizer" / f"{method}.yaml"
    entry = get_method(method)
    node = load_optimizer_config(path) if path.is_file() else OmegaConf.create({"name": method})
    node.lr = bench["lr"]
    if entry.is_curvature:
        node.damping = bench["damping"]
        node.T1, node.T2 = bench["T1"], bench["T2"]
    for k, v in (bench["optimizer_overrides"] or {}).get(method, {}).items():
        node[k] = v
    if rank is not None:
        node[entry.rank_option] = rank
    if spatial is not None and entry.is_curvature:
        node.spatial = spatial
    if T_scale is not None:
        node.T_scale = T_scale
    if "tuned" in node:
        del node["tuned"]
    return OmegaConf.to_container(node, resolve=True)


def input_size(ds: dict) -> int:
    """The length of one flat input: the product of ``model.image_shape`` (a convolutional model
    reshapes the flat vectors itself), else the first of ``layers`` (an MLP's)."""
    shape = (ds.get("model") or {}).get("image_shape")
    return math.prod(int(d) for d in shape) if shape else int(ds["layers"][0])


def bench_batches(ds: dict, bench: dict, data_dir, device, seed: int) -> tuple[list[torch.Tensor], str]:
    """The ``bench.n_batches`` batches every method steps on (uniform random inputs, or the first
    batches of the training split with ``bench.data=dataset``) and their description."""
    bs, d = int(ds["batch_size"]), input_size(ds)
    n = int(bench["n_batches"])
    if bench["data"] == "dataset":
        from ..data import load_dataset
        splits = load_dataset(ds, data_dir, device=device, log=log.info)
        train = splits.train
        if train.shape[0] < bs:
            raise ValueError(f"{ds['name']}: {train.shape[0]} training images, fewer than one batch of {bs}")
        n = max(1, min(n, train.shape[0] // bs))
        return [train[i * bs:(i + 1) * bs].contiguous() for i in range(n)], f"dataset ({splits.source})"
    gen = torch.Generator().manual_seed(seed + 1)
    return [torch.rand(bs, d, generator=gen).to(device) for _ in range(n)], "random U[0,1]"


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "ok" if v else "MISS"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def _clean(v):
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    return v


def markdown_table(df: pd.DataFrame, columns: list[str]) -> str:
    """The columns of ``df`` that exist, as a markdown table (NaN blank, booleans ok / MISS)."""
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(_clean(row[c])) for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["optimizer_config", "bench_batches", "input_size", "markdown_table"]
