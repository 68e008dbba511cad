"""Shared pieces of the data layer: the error type, the split container, config access, MD5s,
atomic writes, downloads, MATLAB files and the ``.pt`` tensor cache.

Cache policy (used by every dataset that caches): a cache file is a ``torch.save`` of
``{"data": float32 tensor (n, d), "meta": {...}}`` written atomically (temporary file in the same
folder, then ``os.replace``), so an interrupted write never leaves a half file under the final
name. Its name encodes everything it was built from. When a cache file cannot be read, has the
wrong shape/dtype or was built from different parameters, it is **deleted and rebuilt
automatically** and the log says so; nothing is ever silently reused.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = [
    "DatasetError",
    "DatasetSplits",
    "cfg_get",
    "md5_file",
    "atomic_write",
    "download_url",
    "read_mat_variable",
    "mat_variable_shape",
    "load_cache",
    "save_cache",
    "cached_tensor",
    "split_in_order",
    "check_fits",
    "check_counts",
    "note_other_versions",
]

Log = Callable[[str], Any]


class DatasetError(RuntimeError):
    """Every user-facing data problem. The message names the problem and the fix."""


@dataclass
class DatasetSplits:
    name: str  # "curves" | "mnist" | "faces"
    source: str  # "generated" | "genuine"
    train: torch.Tensor  # (n_train, d) float32, on the requested device
    val: torch.Tensor  # (n_val, d) float32, on the requested device
    description: str  # one line, says GENERATED STAND-IN where it is one
    details: dict = field(default_factory=dict)  # provenance for run summaries
    # class labels (int64, (n,)) of a classification problem (kfac_bench.data.labelled); None for the
    # auto-encoders, whose targets are their inputs
    train_targets: torch.Tensor | None = None
    val_targets: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])


# --------------------------------------------------------------------------------------- config
def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` for an omegaconf DictConfig, a plain dict or None; ``default`` when missing/None."""
    if cfg is None:
        return default
    try:
        value = cfg.get(key, default)
    except AttributeError:
        value = getattr(cfg, key, default)
    return default if value is None else value


def to_plain(value: Any) -> Any:
    """omegaconf containers -> plain python (lists, dicts), leave everything else alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def check_counts(n_train: Any, n_val: Any, name: str) -> tuple[int, int]:
    try:
        n_train, n_val = int(n_train), int(n_val)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{name}: dataset.n_train and dataset.n_val must be integers, got {n_train!r} and "
            f"{n_val!r}; fix them in conf/dataset/{name}.yaml or on the command line"
        ) from None
    if n_train < 1 or n_val < 0:
        raise DatasetError(
            f"{name}: need dataset.n_train >= 1 and dataset.n_val >= 0, got {n_train} and {n_val}"
        )
    return n_train, n_val


def check_fits(n: int, n_train: int, n_val: int, name: str, what: str, fix: str) -> None:
    """DatasetError when ``n_train + n_val`` images do not fit in the ``n`` of the source."""
    if n_train + n_val > n:
        raise DatasetError(
            f"{name}: dataset.n_train + dataset.n_val = {n_train} + {n_val} = {n_train + n_val} "
            f"exceeds the {n} images of {what}; {fix}"
        )


def split_in_order(data: torch.Tensor, n_train: int, n_val: int, name: str, what: str, fix: str):
    """First ``n_train`` rows -> train, the next ``n_val`` -> val."""
    check_fits(int(data.shape[0]), n_train, n_val, name, what, fix)
    return data[:n_train], data[n_train : n_train + n_val]


# ------------------------------------------------------------------------------------ files, md5
def md5_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class atomic_write:
    """``with atomic_write(dest) as tmp_path: write tmp_path`` -> ``os.replace(tmp_path, dest)``.

    The temporary file sits in the destination folder (same file system, so the replace is
    atomic) and is removed if the block raises.
    """

    def __init__(self, dest: str | os.PathLike):
        self.dest = pathlib.Path(dest)

    def __enter__(self) -> pathlib.Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = pathlib.Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual mode
            os.replace(self.tmp, self.dest)
        else:
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass
        return False


def download_url(url: str, dest: str | os.PathLike, timeout: float = 10.0, log: Log = print,
                 manual_hint: str = "") -> pathlib.Path:
    """Download ``url`` to ``dest`` atomically; DatasetError (with ``manual_hint``) on failure."""
    dest = pathlib.Path(dest)
    log(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(dest) as tmp:
            with open(tmp, "wb") as out:
                while True:
                    block = response.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DatasetError(
            f"could not download {url} ({exc}): the internet is probably unreachable from this "
            f"machine. {manual_hint}"
        ) from exc
    return dest


# ------------------------------------------------------------------------------------ MATLAB I/O
def _mat_version(path: pathlib.Path) -> tuple[int, int]:
    from scipy.io.matlab import matfile_version

    try:
        with open(path, "rb") as f:
            return tuple(matfile_version(f))
    except Exception as exc:  # scipy raises ValueError / MatReadError for non-MAT files
        raise DatasetError(
            f"{path} is not a readable MATLAB .mat file ({exc}); replace it with a valid copy"
        ) from exc


def _import_h5py(path):
    try:
        import h5py
    except ImportError:
        raise DatasetError(
            f"{path} is a MATLAB v7.3 (HDF5) file and reading it needs h5py: "
            f"`pip install h5py` (or `.venv/bin/pip install h5py`), or re-save the file in "
            f"MATLAB with save(..., '-v7')"
        ) from None
    return h5py


def mat_variable_shape(path: str | os.PathLike, var: str) -> tuple[int, ...]:
    """Shape of MATLAB variable ``var`` (MATLAB orientation) without loading the data."""
    path = pathlib.Path(path)
    if _mat_version(path)[0] == 2:
        h5py = _import_h5py(path)
        with h5py.File(path, "r") as f:
            if var not in f:
                raise DatasetError(
                    f"{path} has no variable '{var}' (it holds {sorted(f.keys())}); "
                    f"it is not the expected file"
                )
            return tuple(reversed(f[var].shape))
    from scipy.io import whosmat

    entries = {name: shape for name, shape, _ in whosmat(str(path))}
    if var not in entries:
        raise DatasetError(
            f"{path} has no variable '{var}' (it holds {sorted(entries)}); it is not the expected file"
        )
    return tuple(entries[var])


def read_mat_variable(path: str | os.PathLike, var: str) -> np.ndarray:
    """Variable ``var`` of a MATLAB v5/v7 (scipy) or v7.3/HDF5 (h5py) file, in MATLAB orientation
    (HDF5 stores MATLAB arrays transposed; this undoes it)."""
    path = pathlib.Path(path)
    if _mat_version(path)[0] == 2:
        h5py = _import_h5py(path)
        with h5py.File(path, "r") as f:
            if var not in f:
                raise DatasetError(
                    f"{path} has no variable '{var}' (it holds {sorted(f.keys())}); "
                    f"it is not the expected file"
                )
            return np.asarray(f[var][()]).T
    from scipy.io import loadmat

    try:
        contents = loadmat(str(path), variable_names=[var])
    except Exception as exc:
        raise DatasetError(f"{path} could not be read as a MATLAB file ({exc}); replace it") from exc
    if var not in contents:
        shape_hint = ""
        try:
            from scipy.io import whosmat

            shape_hint = f" (it holds {sorted(n for n, _, _ in whosmat(str(path)))})"
        except Exception:
            pass
        raise DatasetError(f"{path} has no variable '{var}'{shape_hint}; it is not the expected file")
    return np.asarray(contents[var])


# ----------------------------------------------------------------------------------------- cache
def save_cache(path: str | os.PathLike, data: torch.Tensor, meta: Mapping[str, Any]) -> pathlib.Path:
    path = pathlib.Path(path)
    with atomic_write(path) as tmp:
        torch.save({"data": data.contiguous(), "meta": dict(meta)}, tmp)
    return path


def load_cache(path: str | os.PathLike, shape: tuple[int, int] | None = None,
               meta: Mapping[str, Any] | None = None) -> tuple[torch.Tensor | None, str, dict]:
    """(tensor, "", stored meta) if ``path`` is a valid cache for ``shape``/``meta``;
    (None, reason, {}) otherwise."""
    path = pathlib.Path(path)
    if not path.exists():
        return None, "missing", {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / corrupt zip, pickle errors, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"unreadable ({type(exc).__name__}: {first})", {}
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), torch.Tensor):
        return None, "not a kfac-bench cache file", {}
    data = obj["data"]
    stored = obj.get("meta", {})
    stored = dict(stored) if isinstance(stored, dict) else {}
    if data.dtype != torch.float32 or data.dim() != 2:
        return None, f"wrong content (dtype {data.dtype}, shape {tuple(data.shape)})", {}
    if shape is not None and tuple(data.shape) != tuple(shape):
        return None, f"wrong shape {tuple(data.shape)}, expected {tuple(shape)}", {}
    if meta is not None:
        for key, value in meta.items():
            if stored.get(key) != value:
                return None, (f"built from different parameters ({key}: {stored.get(key)!r} "
                              f"!= {value!r})"), {}
    return data, "", stored


def cached_tensor(path: str | os.PathLike, build: Callable[[], torch.Tensor], *,
                  shape: tuple[int, int] | None, meta: Mapping[str, Any], what: str,
                  log: Log = print) -> tuple[torch.Tensor, bool]:
    """Load ``path`` if it is a valid cache, else ``build()`` and save it. Returns (data, built)."""
    path = pathlib.Path(path)
    data, reason, _ = load_cache(path, shape, meta)
    if data is not None:
        return data, False
    if reason != "missing":
        log(f"cache file {path} is {reason}: deleting it and rebuilding {what}")
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    data = build()
    if shape is not None and tuple(data.shape) != tuple(shape):  # pragma: no cover - builder bug
        raise DatasetError(f"internal error: {what} has shape {tuple(data.shape)}, expected {shape}")
    try:
        save_cache(path, data, meta)
    except OSError as exc:
        log(f"warning: could not write the cache {path} ({exc}); continuing without it")
    return data, True


def cached_genuine_rows(name: str, path: pathlib.Path, data_dir, n: int, dim: int, read: Callable[[], torch.Tensor],
                        *, count_key: str, what: str, log: Log = print) -> tuple[torch.Tensor, pathlib.Path, dict]:
    """The first ``n`` examples of a genuine ``.mat`` file, ``(n, dim)``, through a ``.pt`` cache in
    ``<data_dir>/<name>/`` (reading a large .mat takes seconds; the cache loads in milliseconds). The
    cache is keyed by the file's resolved path, size and modification time, so a replaced file is read
    again. Returns (data, cache path, the cache's metadata)."""
    st = path.stat()
    meta = {"source_path": str(path.resolve()), "source_size": int(st.st_size),
            "source_mtime_ns": int(st.st_mtime_ns), count_key: int(n)}
    key = hashlib.md5(str(path.resolve()).encode()).hexdigest()[:8]
    cache = pathlib.Path(data_dir) / name / f"{name}_genuine_{path.stem}_{key}_n{n}.pt"
    data, built = cached_tensor(cache, read, shape=(n, dim), meta=meta, what=what, log=log)
    log(f"{name}: genuine data {'read from ' + str(path) if built else 'loaded from cache ' + str(cache)}")
    return data, cache, meta


def note_other_versions(current: pathlib.Path, version_key: str, log: Log = print) -> list[pathlib.Path]:
    """Log (and return) the cache files beside ``current`` that differ from it only in their
    generator version (the ``_v{N}_`` part of the name): they are never used, and the user should
    know that the data changed and that the old files only take space."""
    current = pathlib.Path(current)
    marker = f"_v{version_key}_"
    if marker not in current.name:
        return []
    head, tail = current.name.split(marker, 1)
    others = sorted(p for p in current.parent.glob(f"{head}_v*_{tail}") if p != current)
    for path in others:
        version = path.name[len(head) + 2:].split("_", 1)[0]
        log(f"note: {path} was made by generator version {version}, this code makes version "
            f"{version_key}: it is not used (delete it to free the space)")
    return others


def fetch_through_routes(dataset: str, routes, files, missing, raw_dir: pathlib.Path, verify, log: Log) -> list[str] | None:
    """Try each ``(label, route)`` in turn until one works: ``route(tmp, stage)`` leaves the ``files`` in
    ``stage`` (its own scratch folder ``tmp`` under ``raw_dir``, removed after), ``verify(path, name, label)``
    checks each, then the ``missing`` ones move into ``raw_dir`` atomically. None on success, else each
    route's error (the caller's message says how to place the files by hand)."""
    errors = []
    for label, route in routes:
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".fetch-") as tmp_name:
            tmp = pathlib.Path(tmp_name)
            stage = tmp / "stage"
            stage.mkdir()
            t0 = time.perf_counter()
            log(f"{dataset}: fetching through {label} ...")
            try:
                route(tmp, stage)
                for name in files:
                    verify(stage / name, name, label)
            except DatasetError as exc:
                log(f"{dataset}: {label} route failed after {time.perf_counter() - t0:.1f} s: {exc}")
                errors.append(f"{label}: {exc}")
                continue
            for name in missing:
                os.replace(stage / name, raw_dir / name)
            log(f"{dataset}: {label} route succeeded in {time.perf_counter() - t0:.1f} s; "
                f"{len(missing)} file(s) verified and moved to {raw_dir}")
            return None
    return errors
