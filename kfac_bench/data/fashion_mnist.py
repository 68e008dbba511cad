"""Fashion-MNIST: the four idx files of Zalando Research, MD5-verified (the authors' ``F_MNIST`` problem).

Fetch (``kfac-bench data fetch fashion_mnist``, or automatically on the first load):

1. torchvision's downloader (``torchvision.datasets.FashionMNIST(download=True)``) in a child process with
   a 10 s socket timeout and a hard limit, so that a machine without internet falls through in seconds;
2. otherwise the Debian package ``dataset-fashion-mnist`` (``apt-get download``, version
   0.0~git20200523.55506a9-1 when this was written, unpacked with ``dpkg-deb -x``), which ships the four
   files gzipped under ``usr/share/datasets/fashion-mnist/``. Debian recompressed them (their ``.gz`` MD5s
   differ from the published ones), so the check is on the uncompressed files.

Every file is checked against the MD5 of the uncompressed genuine file (:data:`MD5`; the values that
torchvision-style loaders list as ``raw_data`` and that match the published ``.gz`` checksums
``8d4fb7e6...``, ``25c81989...``, ``bef4ecab...``, ``bb300cfd...`` once decompressed) before it is moved
atomically into ``<data_dir>/fashion_mnist/raw`` (or ``dataset.path``). A file with a wrong MD5 is never used.
"""
from __future__ import annotations

import gzip
import pathlib
import shutil
import subprocess
import sys

from .common import DatasetError, Log, fetch_through_routes, md5_file

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = "usr/share/datasets/fashion-mnist"
TIME_LIMIT_S = 120.0

_TORCHVISION_SCRIPT = r"""
import socket, sys
socket.setdefaulttimeout(10.0)
import torchvision
torchvision.datasets.FashionMNIST(sys.argv[1], train=True, download=True)
torchvision.datasets.FashionMNIST(sys.argv[1], train=False, download=True)
"""


def raw_dir_for(cfg_path, data_dir) -> pathlib.Path:
    return pathlib.Path(cfg_path) if cfg_path else pathlib.Path(data_dir) / "fashion_mnist" / "raw"


def verify(path: pathlib.Path, name: str) -> str:
    """The file's MD5 when it is the genuine uncompressed ``name``; DatasetError naming the fix otherwise."""
    actual = md5_file(path)
    if actual != MD5[name]:
        raise DatasetError(f"fashion_mnist: {path} has MD5 {actual}, expected the published {MD5[name]} (of the "
                           f"uncompressed genuine file): the file is corrupt or not the genuine one. Delete it and "
                           f"rerun `kfac-bench data fetch fashion_mnist`.")
    return actual


def _run(cmd, cwd, what: str, time_limit: float) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        raise DatasetError(f"{what} gave no result within {time_limit:.0f} s") from None
    except OSError as exc:
        raise DatasetError(f"{what} could not start ({exc})") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise DatasetError(f"{what} failed: {tail[0]}")


def _gunzip_into(folder: pathlib.Path, stage: pathlib.Path, what: str) -> None:
    for name in FILES:
        gz = folder / (name + ".gz")
        if not gz.is_file():
            raise DatasetError(f"{what} did not produce {gz.name}")
        with gzip.open(gz, "rb") as src, open(stage / name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _route_torchvision(tmp: pathlib.Path, stage: pathlib.Path, time_limit: float) -> None:
    _run([sys.executable, "-c", _TORCHVISION_SCRIPT, str(tmp)], tmp, "torchvision download", time_limit)
    _gunzip_into(tmp / "FashionMNIST" / "raw", stage, "torchvision download")


def _route_debian(tmp: pathlib.Path, stage: pathlib.Path, time_limit: float) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DatasetError(f"{tool} is not on PATH (a Debian system is needed for this route)")
    _run(["apt-get", "download", DEBIAN_PACKAGE], tmp, f"`apt-get download {DEBIAN_PACKAGE}`", time_limit)
    debs = sorted(tmp.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise DatasetError(f"`apt-get download {DEBIAN_PACKAGE}` left no .deb")
    unpacked = (tmp / "deb").resolve()
    _run(["dpkg-deb", "-x", str(debs[0].resolve()), str(unpacked)], tmp, f"dpkg-deb -x {debs[0].name}", time_limit)
    _gunzip_into(unpacked / DEBIAN_FOLDER, stage, debs[0].name)


def fetch_fashion_mnist(raw_dir, log: Log = print, time_limit: float = TIME_LIMIT_S) -> list[pathlib.Path]:
    """Make ``raw_dir`` hold the four MD5-verified idx files (uncompressed). Files already there are
    verified, not fetched again; a present file with a wrong MD5 is an error (never replaced silently)."""
    raw_dir = pathlib.Path(raw_dir).resolve()
    missing = [name for name in FILES if not (raw_dir / name).is_file()]
    for name in FILES:
        if name not in missing:
            verify(raw_dir / name, name)
    if not missing:
        log(f"fashion_mnist: the four idx files in {raw_dir} are present and match the published MD5s")
        return [raw_dir / name for name in FILES]
    raw_dir.mkdir(parents=True, exist_ok=True)
    routes = (("torchvision", _route_torchvision), (f"Debian package {DEBIAN_PACKAGE}", _route_debian))
    errors = fetch_through_routes("fashion_mnist", [(label, lambda t, s, r=route: r(t, s, time_limit))
                                                    for label, route in routes],
                                  FILES, missing, raw_dir, lambda path, name, label: verify(path, name), log)
    if errors is None:
        return [raw_dir / name for name in FILES]
    raise DatasetError("fashion_mnist: could not fetch the idx files (" + "; ".join(errors) + "). Put the four "
                       f"files {', '.join(FILES)} (uncompressed) in {raw_dir} by hand (e.g. from the Debian "
                       f"package {DEBIAN_PACKAGE}, {DEBIAN_FOLDER}/*.gz, gunzipped), then rerun "
                       f"`kfac-bench data fetch fashion_mnist` to verify them.")


__all__ = ["DEBIAN_PACKAGE", "FILES", "MD5", "fetch_fashion_mnist", "raw_dir_for", "verify"]
