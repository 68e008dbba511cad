"""Labelled data for the classification problems (a dataset config with ``task: classification``):
images as float32 rows in [0, 1] and their class labels (int64), in :class:`DatasetSplits`'
``train_targets`` / ``val_targets``.

``dataset.data`` names the data set (``dataset.name`` is the problem: run folders, summaries, tuned values):

==============  ===========  ==================================================================
data            source       files
==============  ===========  ==================================================================
mnist           genuine      LeCun idx files, MD5-verified (:mod:`kfac_bench.data.mnist`)
fashion_mnist   genuine      Zalando idx files, MD5-verified (:mod:`kfac_bench.data.fashion_mnist`:
                             torchvision, else the Debian package ``dataset-fashion-mnist``)
cifar10         generated    OFFLINE STAND-IN, seeded generator (:mod:`kfac_bench.data.cifar10`)
cifar10         genuine      the python pickles, put by hand, MD5-verified
==============  ===========  ==================================================================

Splits, as the authors' loaders (``utils/data_utils.py`` at commit 97105b6): train = the first ``n_train``
images of the training set, val = the first ``n_val`` images of the TEST set -- ``D_MNIST`` (lines 237-252)
and ``F_MNIST`` (89-105) all 60,000 / 10,000, ``CIFAR10`` (109-130) 50,000 / 10,000,
``MNIST_RESTRICTED`` (255-287) ``Subset(range(5000))`` of each.
"""
from __future__ import annotations

import math
import pathlib
import time

import torch

from . import cifar10, fashion_mnist, mnist
from .common import DatasetError, DatasetSplits, Log, atomic_write, cfg_get, check_counts

LABELLED_DATA = ("mnist", "fashion_mnist", "cifar10")
SOURCES = {"mnist": ("genuine",), "fashion_mnist": ("genuine",), "cifar10": ("generated", "genuine")}
DEFAULT_SOURCE = {"mnist": "genuine", "fashion_mnist": "genuine", "cifar10": "generated"}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def is_classification(cfg) -> bool:
    return str(cfg_get(cfg, "task", "autoencoder")) == "classification"


def data_and_source(cfg) -> tuple[str, str]:
    data = str(cfg_get(cfg, "data", "")).lower()
    if data not in LABELLED_DATA:
        raise DatasetError(f"{cfg_get(cfg, 'name', '?')}: dataset.data={data or None!r}; a classification "
                           f"problem names its data: one of {', '.join(LABELLED_DATA)}")
    source = str(cfg_get(cfg, "source", DEFAULT_SOURCE[data]))
    if source not in SOURCES[data]:
        raise DatasetError(f"{data}: unknown source {source!r}; valid sources: {', '.join(SOURCES[data])} "
                           f"(dataset.source=...)")
    return data, source


def generator_version(cfg) -> int | None:
    data, source = data_and_source(cfg)
    return cifar10.GENERATOR_VERSION if source == "generated" else None


def _idx_pair(folder: pathlib.Path, images: str, labels: str, side: int = 28):
    x = mnist.read_idx(folder / images, mnist.IMAGE_MAGIC)
    y = mnist.read_idx(folder / labels, mnist.LABEL_MAGIC)
    if x.ndim != 3 or x.shape[1:] != (side, side) or y.shape != (x.shape[0],) or (y.size and int(y.max()) > 9):
        raise DatasetError(f"{folder}: {images} / {labels} hold {x.shape} images and {y.shape} labels, expected "
                           f"(n, {side}, {side}) and n labels in 0..9; delete them and fetch again")
    return torch.from_numpy(x.reshape(x.shape[0], -1).copy()), torch.from_numpy(y.astype("int64"))


def _read_mnist(cfg, data_dir: pathlib.Path, log: Log):
    raw = mnist.raw_dir_for(cfg, data_dir)
    if any(mnist._find(raw, name)[0] is None for name in mnist.FILES):
        log(f"mnist: {raw} lacks some idx files; fetching them (first use)")
    paths = mnist.fetch_mnist(raw, log=log)          # verifies every file present, fetches the missing
    if any(p.suffix == ".gz" for p in paths):
        raise DatasetError(f"mnist: {raw} holds .gz files; the classifier reads the uncompressed idx files "
                           f"(gunzip them, or delete them and rerun `kfac-bench data fetch mnist`)")
    md5 = {name: mnist.MD5[name] for name in mnist.FILES}
    return _idx_pair(raw, *mnist.FILES[:2]), _idx_pair(raw, *mnist.FILES[2:]), {"raw_dir": str(raw), "md5": md5}


def _read_fashion(cfg, data_dir: pathlib.Path, log: Log):
    raw = fashion_mnist.raw_dir_for(cfg_get(cfg, "path", None), data_dir)
    fashion_mnist.fetch_fashion_mnist(raw, log=log)   # verifies every file present, fetches the missing
    return (_idx_pair(raw, *fashion_mnist.FILES[:2]), _idx_pair(raw, *fashion_mnist.FILES[2:]),
            {"raw_dir": str(raw), "md5": dict(fashion_mnist.MD5)})


def _cifar_cache(cfg, data_dir: pathlib.Path, log: Log):
    """The generated stand-in, through a uint8 cache file keyed by version, seed and noise."""
    gen = cfg_get(cfg, "generator", {}) or {}
    seed, noise = int(cfg_get(gen, "seed", cifar10.DEFAULT_SEED)), float(cfg_get(gen, "noise", cifar10.DEFAULT_NOISE))
    meta = {"generator_version": cifar10.GENERATOR_VERSION, "seed": seed, "noise": noise}
    path = data_dir / "cifar10" / f"cifar10_generated_v{cifar10.GENERATOR_VERSION}_seed{seed}_noise{noise:g}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
            if stored.get("meta") == meta and stored["train_x"].shape == (cifar10.N_TRAIN_IMAGES, cifar10.DIM):
                return (stored["train_x"], stored["train_y"]), (stored["test_x"], stored["test_y"]), meta, path
            log(f"cifar10: cache {path} was built from other parameters: deleting it and rebuilding")
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
            log(f"cifar10: cache {path} cannot be read ({type(err).__name__}): deleting it and rebuilding")
        path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    train = cifar10.generate(cifar10.N_TRAIN_IMAGES, seed, noise, "train")
    test = cifar10.generate(cifar10.N_TEST_IMAGES, seed, noise, "test")
    with atomic_write(path) as tmp:
        torch.save({"train_x": train[0], "train_y": train[1], "test_x": test[0], "test_y": test[1], "meta": meta}, tmp)
    log(f"cifar10: generated the stand-in (version {cifar10.GENERATOR_VERSION}, seed {seed}, noise {noise:g}) in "
        f"{time.perf_counter() - t0:.1f} s; cached in {path}")
    return train, test, meta, path


def _read(cfg, data: str, source: str, data_dir: pathlib.Path, log: Log):
    """((train images uint8, labels), (test images, labels), provenance details)."""
    if data == "mnist":
        return _read_mnist(cfg, data_dir, log)
    if data == "fashion_mnist":
        return _read_fashion(cfg, data_dir, log)
    if source == "genuine":
        folder = pathlib.Path(cfg_get(cfg, "path", None) or data_dir / "cifar10" / cifar10.GENUINE_FOLDER)
        train, test, md5 = cifar10.read_genuine(folder, log)
        return train, test, {"folder": str(folder), "md5": md5}
    train, test, meta, path = _cifar_cache(cfg, data_dir, log)
    return train, test, {**meta, "cache_file": str(path),
                         "calibration": "noise set so that a linear softmax classifier reaches about the "
                                        "genuine CIFAR-10's linear accuracy (docs/usage.md)"}


def load_labelled(cfg, data_dir, log: Log = print) -> DatasetSplits:
    """The classification problem's splits (module docstring); images / 255 as float32."""
    data, source = data_and_source(cfg)
    name = str(cfg_get(cfg, "name", data))
    (tx, ty), (vx, vy), details = _read(cfg, data, source, pathlib.Path(data_dir), log)
    n_train, n_val = check_counts(cfg_get(cfg, "n_train", tx.shape[0]), cfg_get(cfg, "n_val", vx.shape[0]), name)
    if n_train > tx.shape[0] or n_val > vx.shape[0]:
        raise DatasetError(f"{name}: dataset.n_train={n_train} / dataset.n_val={n_val} exceed the {tx.shape[0]} "
                           f"training / {vx.shape[0]} test images of {TITLES[data]}; lower them")
    stand_in = source == "generated"
    what = (f"{TITLES[data]} — GENERATED STAND-IN (version {cifar10.GENERATOR_VERSION}), not the genuine data"
            if stand_in else f"{TITLES[data]} — genuine files (MD5-verified)")
    desc = f"{what}: train = first {n_train} of {tx.shape[0]} training images, val = first {n_val} of " \
           f"{vx.shape[0]} test images, {int(ty.max()) + 1} classes"
    details = {**details, "task": "classification", "data": data, "n_train": n_train, "n_val": n_val,
               "n_classes": int(ty.max()) + 1, "split": "train = training images [0, n_train), val = test images "
                                                      "[0, n_val) (the authors' utils/data_utils.py)"}
    if stand_in:
        details["generator_version"] = cifar10.GENERATOR_VERSION
    return DatasetSplits(name, source, tx[:n_train].float().div_(255.0), vx[:n_val].float().div_(255.0), desc,
                         details, train_targets=ty[:n_train].clone(), val_targets=vy[:n_val].clone())


def describe_labelled(splits: DatasetSplits) -> str:
    """What ``kfac-bench data describe`` prints for a classification problem."""
    d = splits.details
    if splits.source == "generated":
        source = f"GENERATED STAND-IN, generator version {d.get('generator_version')} (cache {d.get('cache_file')}), " \
                 f"not the genuine data"
    else:
        source = f"genuine files in {d.get('raw_dir', d.get('folder'))}, MD5-verified"
    lines = [f"dataset      {splits.name} ({TITLES[d['data']]}, classification, {d['n_classes']} classes)",
             f"source       {source}", f"description  {splits.description}"]
    for name, md5 in (d.get("md5") or {}).items():
        lines.append(f"md5          {name}  {md5}")
    lines.append("")
    for split, x, y in (("train", splits.train, splits.train_targets), ("val", splits.val, splits.val_targets)):
        if x.shape[0] == 0:
            continue
        counts = torch.bincount(y, minlength=d["n_classes"]).tolist()
        prior = torch.tensor(counts, dtype=torch.float64) / max(len(y), 1)
        entropy = float(-(prior[prior > 0] * prior[prior > 0].log()).sum())
        lines.append(f"{split:<6} {x.shape[0]} x {x.shape[1]}, values [{float(x.min()):.3f}, {float(x.max()):.3f}], "
                     f"mean {float(x.mean()):.4f}; class counts {counts}; best constant prediction (the class "
                     f"frequencies) cross-entropy {entropy:.4f} (log 10 = {math.log(10):.4f}), accuracy "
                     f"{max(counts) / max(len(y), 1):.4f}")
    return "\n".join(lines)


__all__ = ["LABELLED_DATA", "data_and_source", "describe_labelled", "generator_version", "is_classification",
           "load_labelled"]
