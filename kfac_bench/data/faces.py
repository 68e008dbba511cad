"""FACES: 25x25 face images (Hinton & Salakhutdinov 2006; paper appendix D, problem 2).

Two sources:

* ``genuine`` - ``newfaces_rot_single.mat``, variable ``newfaces_single`` (625 x 165,600, single
  precision, one image per column), fetched from
  http://www.cs.toronto.edu/~jmartens/newfaces_rot_single.mat by ``kfac-bench data fetch faces
  --source genuine`` (needs internet) or put by hand at ``<data_dir>/faces/newfaces_rot_single.mat``
  (or anywhere, with ``dataset.path=...``). The first ``n_train + n_val`` (103,500) columns are
  used in order: 82,800 train, then 20,700 val. MATLAB v5/v7 files are read with scipy, v7.3
  (HDF5, which stores the matrix transposed) with h5py. The selected images are cached as a
  ``.pt`` file (keyed by the source path, size and modification time). Each row of the returned
  tensor is one column of the file, i.e. the MATLAB column-major flattening of a 25x25 image.
  The loader measures the per-pixel mean and std of the training split; a file already on unit
  scale (see :func:`kfac_bench.data.statistics.on_unit_scale`) is used as it is, any other is
  standardised like the stand-in below. The log and the run summary say which.

* ``generated`` - an OFFLINE STAND-IN made by :func:`build_faces` from the 400 Olivetti faces
  (``olivettifaces.mat``, sklearn's copy of "The Database of Faces", AT&T Laboratories Cambridge).
  The package ships that file (``kfac_bench/data/olivetti/``, its SHA-256 checked at every load),
  so the stand-in builds on a fresh machine with nothing to download; ``dataset.olivetti_path``
  (which the config fills from the environment variable ``KFAC_BENCH_OLIVETTI``) points at another
  copy instead. The original views' parameters could not be
  verified (they are recalled as rotations in [-90, 90] degrees and scalings around 1.4-2.0); the
  following are OUR choices, the numbers coming from ``dataset.generator``:

  - each view picks a face uniformly among the 400, an angle uniformly in ``rotation_deg``
    (default [-90, 90] degrees, counter-clockwise positive), a zoom factor uniformly in ``scale``
    (default [1.4, 2.0]; zoom IN: the output shows a window of side 64/zoom input pixels, so the
    face appears larger and is cropped) and a shift of the window centre uniformly in
    ``[-max_shift, max_shift]`` of the image side along each axis (default 0.1, i.e. up to 6.4 px);
  - the affine map (``torch.nn.functional.affine_grid``, ``align_corners=False``) samples the
    upright 64x64 face bilinearly (``grid_sample``) on a 75x75 grid (``SUPERSAMPLE = 3`` times the
    output), then a 3x3 average pool gives the 25x25 view (area downsampling, no aliasing);
  - window parts that fall outside the photograph (corners of rotated views) take the nearest
    border pixel (``padding_mode="border"``);
  - views are built in [0, 1] (Olivetti uint8 / 255) and flattened row-major (y down, x right);
  - all random numbers come from a local ``torch.Generator`` seeded with ``seed`` and are drawn
    before any image is built, so the result does not depend on the chunk size; views are built
    ``CHUNK = 2048`` at a time (about 50 MB peak).

  - loading standardises every pixel to zero mean and unit variance with the training split's
    per-pixel mean and std, applied to both splits (:func:`kfac_bench.data.statistics.standardise_splits`),
    so that the best constant image (the mean face) has a squared error of 1 per element on the
    training split. This is the scale of the genuine set as Hinton and Salakhutdinov's Gaussian-
    visible-unit FACES data is prepared, and the scale the authors' published FACES curves imply
    (epoch-mean MSE 0.42-0.87 at the start, 0.016-0.046 at the end). The raw views of version 1
    (no standardisation: values in [0.02, 0.92], mean 0.547, std 0.142) had a best constant image
    of MSE 0.019, so every method looked converged from the start.

  The raw views are cached at ``<data_dir>/faces/faces_generated_v{V}_seed{S}_n{N}_rot{a}_{b}
  _scale{a}_{b}_shift{s}.pt`` (the statistics depend on ``n_train``, so the standardisation is
  applied at load time, in milliseconds); the cache also records the MD5 of the Olivetti file it
  was built from and is rebuilt when a different Olivetti file is given (a cache is used without
  the Olivetti file when none is configured). ``GENERATOR_VERSION`` (2: standardised; 1: raw
  views) is part of the cache name and metadata, so a cache of another version is never used.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from .common import (
    DatasetError,
    DatasetSplits,
    Log,
    cached_genuine_rows,
    cached_tensor,
    cfg_get,
    check_counts,
    check_fits,
    download_url,
    load_cache,
    mat_variable_shape,
    md5_file,
    note_other_versions,
    read_mat_variable,
    split_in_order,
    to_plain,
)
from .statistics import standardise_splits

SIDE = 25
DIM = SIDE * SIDE
OLIVETTI_SIDE = 64
OLIVETTI_COUNT = 400
OLIVETTI_VAR = "faces"
OLIVETTI_ENV = "KFAC_BENCH_OLIVETTI"
SUPERSAMPLE = 3
CHUNK = 2048
PADDING_MODE = "border"
GENERATOR_VERSION = 2  # 1: the same views, not standardised
DEFAULTS = {"seed": 1234, "n_images": 103500, "rotation_deg": [-90.0, 90.0], "scale": [1.4, 2.0],
            "max_shift": 0.1}

# the copy shipped with the package (credit: AT&T Laboratories Cambridge; olivetti/README.md)
PACKAGED_OLIVETTI = pathlib.Path(__file__).resolve().parent / "olivetti" / "olivettifaces.mat"
PACKAGED_OLIVETTI_SHA256 = "b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d"
# how records name the shipped copy (never the machine's install path)
PACKAGED_OLIVETTI_LABEL = "kfac_bench/data/olivetti/olivettifaces.mat (shipped with the package)"

GENUINE_URL = "http://www.cs.toronto.edu/~jmartens/newfaces_rot_single.mat"
GENUINE_FILE = "newfaces_rot_single.mat"
GENUINE_VAR = "newfaces_single"


# -------------------------------------------------------------------------------------- olivetti
def _olivetti_hint() -> str:
    return (f"To use another copy, set the environment variable {OLIVETTI_ENV}=/path/to/olivettifaces.mat or pass "
            f"dataset.olivetti_path=/path/to/olivettifaces.mat (sklearn's copy of the Olivetti "
            f"faces: MATLAB v5, variable 'faces', uint8 4096x400), or use the genuine data: "
            f"dataset.source=genuine (`kfac-bench data fetch faces --source genuine`, needs internet).")


def load_olivetti(path: str | os.PathLike) -> torch.Tensor:
    """The 400 Olivetti faces as an upright float32 tensor (400, 64, 64) in [0, 1].

    ``faces`` is 4096 x 400 (or 400 x 4096), each image a column-major (MATLAB) flattening of a
    64x64 photograph; integer data is divided by 255, float data must already lie in [0, 1].
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"faces: the Olivetti file {path} does not exist. {_olivetti_hint()}")
    arr = read_mat_variable(path, OLIVETTI_VAR)
    pixels = OLIVETTI_SIDE * OLIVETTI_SIDE
    if arr.shape == (pixels, OLIVETTI_COUNT):
        cols = arr.T  # (400, 4096): one flattened image per row
    elif arr.shape == (OLIVETTI_COUNT, pixels):
        cols = arr
    else:
        raise DatasetError(
            f"faces: variable '{OLIVETTI_VAR}' of {path} has shape {arr.shape}, expected "
            f"({pixels}, {OLIVETTI_COUNT}); it is not sklearn's olivettifaces.mat. {_olivetti_hint()}"
        )
    if np.issubdtype(arr.dtype, np.integer):
        if int(arr.min()) < 0 or int(arr.max()) > 255:
            raise DatasetError(f"faces: '{OLIVETTI_VAR}' of {path} has values outside 0..255; "
                               f"it is not the expected file. {_olivetti_hint()}")
        scale = 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or float(arr.min()) < 0.0 or float(arr.max()) > 1.0:
            raise DatasetError(f"faces: '{OLIVETTI_VAR}' of {path} is floating point outside [0, 1]; "
                               f"it is not the expected file. {_olivetti_hint()}")
        scale = 1.0
    else:
        raise DatasetError(f"faces: '{OLIVETTI_VAR}' of {path} has dtype {arr.dtype}; expected uint8. "
                           f"{_olivetti_hint()}")
    t = torch.from_numpy(np.ascontiguousarray(cols, dtype=np.float32)).div_(scale)
    # column-major 64x64: element r + 64 c is pixel (row r, column c) -> reshape gives [c, r]
    return t.reshape(OLIVETTI_COUNT, OLIVETTI_SIDE, OLIVETTI_SIDE).transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------- builder
def _check_range(value, name, lo=None, hi=None) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in to_plain(value))
    except (TypeError, ValueError):
        raise DatasetError(f"faces: dataset.generator.{name} must be a pair [low, high], "
                           f"got {value!r}") from None
    if a > b or (lo is not None and a < lo) or (hi is not None and b > hi):
        raise DatasetError(f"faces: dataset.generator.{name}={[a, b]} is not a valid range"
                           f"{f' within [{lo}, {hi}]' if lo is not None else ''}")
    return a, b


def build_faces(olivetti_faces: torch.Tensor, n_images: int, seed: int,
                rotation_deg=(-90.0, 90.0), scale=(1.4, 2.0), max_shift: float = 0.1,
                chunk: int = CHUNK) -> torch.Tensor:
    """``(n_images, 625)`` float32 views of the faces (see the module docstring for the recipe).

    ``olivetti_faces``: (k, H, W) upright images in [0, 1] (the 400 Olivetti faces, 64x64).
    """
    faces = olivetti_faces.detach().to("cpu", torch.float32)
    if faces.dim() != 3 or faces.shape[0] < 1:
        raise DatasetError(f"faces: build_faces needs a (k, H, W) tensor, got {tuple(faces.shape)}")
    n_images = int(n_images)
    if n_images < 1:
        raise DatasetError(f"faces: dataset.generator.n_images must be >= 1, got {n_images}")
    rot = _check_range(rotation_deg, "rotation_deg")
    zoom = _check_range(scale, "scale", lo=1e-3)
    max_shift = float(max_shift)
    if not 0.0 <= max_shift <= 1.0:
        raise DatasetError(f"faces: dataset.generator.max_shift={max_shift} must lie in [0, 1]")

    gen = torch.Generator().manual_seed(int(seed))
    k = faces.shape[0]
    which = torch.randint(0, k, (n_images,), generator=gen)
    u = torch.rand(n_images, 4, generator=gen, dtype=torch.float64)
    angle = torch.deg2rad(rot[0] + (rot[1] - rot[0]) * u[:, 0])
    zooms = zoom[0] + (zoom[1] - zoom[0]) * u[:, 1]
    # a shift of `max_shift` of the side is 2 * max_shift in normalised [-1, 1] coordinates
    shift = (2.0 * u[:, 2:] - 1.0) * (2.0 * max_shift)
    cos, sin = torch.cos(angle) / zooms, torch.sin(angle) / zooms
    # affine_grid maps output (x, y) to input coordinates: in = R(angle) out / zoom + shift.
    # With y pointing down, [[c, -s], [s, c]] turns the picture counter-clockwise on screen.
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(torch.float32)

    big = SIDE * SUPERSAMPLE
    out = torch.empty(n_images, DIM, dtype=torch.float32)
    src = faces[:, None]  # (k, 1, H, W)
    for start in range(0, n_images, chunk):
        sl = slice(start, min(start + chunk, n_images))
        m = sl.stop - sl.start
        grid = F.affine_grid(theta[sl], [m, 1, big, big], align_corners=False)
        views = F.grid_sample(src[which[sl]], grid, mode="bilinear", padding_mode=PADDING_MODE,
                              align_corners=False)
        out[sl] = F.avg_pool2d(views, SUPERSAMPLE).reshape(m, DIM)
    return out.clamp_(0.0, 1.0)


def generator_params(cfg=None) -> dict:
    gen_cfg = cfg_get(cfg, "generator", None)
    rot = _check_range(cfg_get(gen_cfg, "rotation_deg", DEFAULTS["rotation_deg"]), "rotation_deg")
    zoom = _check_range(cfg_get(gen_cfg, "scale", DEFAULTS["scale"]), "scale", lo=1e-3)
    return {
        "seed": int(cfg_get(gen_cfg, "seed", DEFAULTS["seed"])),
        "n_images": int(cfg_get(gen_cfg, "n_images", DEFAULTS["n_images"])),
        "rotation_deg": [rot[0], rot[1]],
        "scale": [zoom[0], zoom[1]],
        "max_shift": float(cfg_get(gen_cfg, "max_shift", DEFAULTS["max_shift"])),
        "generator_version": GENERATOR_VERSION,
    }


def generated_cache_path(data_dir, params: dict) -> pathlib.Path:
    r, s = params["rotation_deg"], params["scale"]
    name = (f"faces_generated_v{params['generator_version']}_seed{params['seed']}_n{params['n_images']}"
            f"_rot{r[0]:g}_{r[1]:g}_scale{s[0]:g}_{s[1]:g}_shift{params['max_shift']:g}.pt")
    return pathlib.Path(data_dir) / "faces" / name


def olivetti_path_for(cfg=None, olivetti_path=None) -> pathlib.Path:
    """The Olivetti file to build from: an explicit path, ``dataset.olivetti_path``, $KFAC_BENCH_OLIVETTI,
    else the copy shipped with the package."""
    path = olivetti_path or cfg_get(cfg, "olivetti_path", None) or os.environ.get(OLIVETTI_ENV) or None
    return pathlib.Path(path).expanduser() if path else PACKAGED_OLIVETTI


def check_packaged_olivetti(path: pathlib.Path = PACKAGED_OLIVETTI) -> None:
    """Raise :class:`DatasetError` unless the shipped Olivetti file is there with its SHA-256."""
    if not path.is_file():
        raise DatasetError(f"faces: the Olivetti file shipped with the package is missing ({PACKAGED_OLIVETTI_LABEL}); "
                           f"reinstall kfac-bench (pip install --force-reinstall kfac-bench, or make install). "
                           f"{_olivetti_hint()}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PACKAGED_OLIVETTI_SHA256:
        raise DatasetError(f"faces: the Olivetti file shipped with the package is corrupt (SHA-256 {digest}, expected "
                           f"{PACKAGED_OLIVETTI_SHA256}); reinstall kfac-bench, or use a good copy. {_olivetti_hint()}")


def olivetti_label(path: pathlib.Path) -> str:
    """How run records name the Olivetti file: the shipped copy by its package path, others as given."""
    return PACKAGED_OLIVETTI_LABEL if path == PACKAGED_OLIVETTI else str(path)


def _generated(cfg, data_dir, log: Log, olivetti_path=None) -> tuple[torch.Tensor, dict, str]:
    params = generator_params(cfg)
    path = generated_cache_path(data_dir, params)
    shape = (params["n_images"], DIM)
    oli = olivetti_path_for(cfg, olivetti_path)
    if oli == PACKAGED_OLIVETTI:
        check_packaged_olivetti(oli)
    elif not oli.is_file():
        raise DatasetError(f"faces: the Olivetti file {oli} does not exist. {_olivetti_hint()}")
    oli_md5 = md5_file(oli)

    def build():
        note_other_versions(path, str(GENERATOR_VERSION), log)
        faces = load_olivetti(oli)
        log(f"faces: building the OFFLINE STAND-IN, generator version {GENERATOR_VERSION} "
            f"({params['n_images']} views of the "
            f"{faces.shape[0]} Olivetti faces, seed {params['seed']}) -> {path}")
        t0 = time.perf_counter()
        data = build_faces(faces, params["n_images"], params["seed"], params["rotation_deg"],
                           params["scale"], params["max_shift"])
        log(f"faces: built in {time.perf_counter() - t0:.1f} s")
        return data

    data, built = cached_tensor(path, build, shape=shape, meta={**params, "olivetti_md5": oli_md5},
                                what="the generated FACES set", log=log)
    if not built:
        log(f"faces: loaded the generated stand-in from {path}")
    details = {
        "cache_file": str(path),
        "builder": "kfac_bench.data.faces.build_faces",
        **params,
        "olivetti_path": olivetti_label(oli),
        "olivetti_md5": oli_md5,
        "supersample": SUPERSAMPLE,
        "padding_mode": PADDING_MODE,
        "interpolation": "bilinear grid_sample on 75x75, then 3x3 average pool to 25x25",
    }
    desc = (f"FACES — GENERATED STAND-IN (25x25 views of the 400 Olivetti faces, generator "
            f"v{GENERATOR_VERSION}, seed {params['seed']}, standardised per pixel), not the genuine "
            f"{GENUINE_FILE}")
    return data, details, desc


# --------------------------------------------------------------------------------------- genuine
def genuine_path(cfg, data_dir) -> pathlib.Path:
    path = cfg_get(cfg, "path", None)
    return pathlib.Path(path) if path else pathlib.Path(data_dir) / "faces" / GENUINE_FILE


def _manual_hint(path) -> str:
    return (f"Download {GENUINE_URL} elsewhere and put it at {path} (or pass dataset.path=...), "
            f"or use the offline stand-in: dataset.source=generated (with {OLIVETTI_ENV} set).")


def load_faces_mat(path, n_images: int | None = None) -> torch.Tensor:
    """The first ``n_images`` columns of ``newfaces_single`` as float32 rows ``(n, 625)``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"faces: {path} does not exist. {_manual_hint(path)}")
    arr = read_mat_variable(path, GENUINE_VAR)
    if arr.ndim != 2 or arr.shape[0] != DIM:
        raise DatasetError(
            f"faces: variable '{GENUINE_VAR}' of {path} has shape {arr.shape}, expected "
            f"({DIM}, n) (625 x 165600 in newfaces_rot_single.mat); it is not the expected file"
        )
    if n_images is not None:
        if n_images > arr.shape[1]:
            raise DatasetError(f"faces: {n_images} images requested but '{GENUINE_VAR}' of {path} "
                               f"holds {arr.shape[1]}; lower dataset.n_train + dataset.n_val")
        arr = arr[:, :n_images]
    data = torch.from_numpy(np.ascontiguousarray(arr.T, dtype=np.float32))
    if not bool(torch.isfinite(data).all()):
        raise DatasetError(f"faces: '{GENUINE_VAR}' of {path} has non-finite values; it is corrupt, "
                           f"delete it and fetch it again")
    return data


def _genuine(cfg, data_dir, n_images: int, log: Log) -> tuple[torch.Tensor, dict, str]:
    path = genuine_path(cfg, data_dir)
    if not path.is_file():
        if cfg_get(cfg, "path", None):
            raise DatasetError(f"faces: {path} (dataset.path) does not exist. {_manual_hint(path)}")
        log(f"faces: {path} is missing; fetching the genuine file")
        fetch_faces(data_dir, source="genuine", log=log)
    data, cache, meta = cached_genuine_rows("faces", path, data_dir, n_images, DIM,
                                            lambda: load_faces_mat(path, n_images), count_key="n_images",
                                            what=f"the columns of {path}", log=log)
    details = {"file": str(path), "variable": GENUINE_VAR, "columns_used": n_images,
               "cache_file": str(cache), "source_size": meta["source_size"],
               "pixel_order": "MATLAB column-major 25x25 (as stored in the file)"}
    desc = f"FACES — genuine {path.name} ('{GENUINE_VAR}' columns in order)"
    return data, details, desc


# ------------------------------------------------------------------------------------------- API
def load_faces(cfg, data_dir, log: Log = print) -> DatasetSplits:
    source = str(cfg_get(cfg, "source", "generated"))
    n_train, n_val = check_counts(cfg_get(cfg, "n_train", 82800), cfg_get(cfg, "n_val", 20700), "faces")
    if source == "generated":
        params = generator_params(cfg)
        # fail before building anything
        check_fits(params["n_images"], n_train, n_val, "faces", "the generated FACES set",
                   f"lower them or raise dataset.generator.n_images (currently {params['n_images']})")
        data, details, desc = _generated(cfg, data_dir, log)
        what, fix = "the generated FACES set", "lower them or raise dataset.generator.n_images"
    elif source == "genuine":
        path = genuine_path(cfg, data_dir)
        if path.is_file():
            shape = mat_variable_shape(path, GENUINE_VAR)
            cols = shape[1] if len(shape) == 2 else 0
            check_fits(cols, n_train, n_val, "faces", str(path), "lower them")
        data, details, desc = _genuine(cfg, data_dir, n_train + n_val, log)
        what, fix = str(path), "lower them"
    else:
        raise DatasetError(f"faces: unknown dataset.source={source!r}; use 'generated' or 'genuine'")
    train, val = split_in_order(data, n_train, n_val, "faces", what, fix)
    # the stand-in is always standardised; a genuine file only when it is not on unit scale yet
    train, val, scaling = standardise_splits(train, val, "faces", always=source == "generated", log=log)
    details = {**details, "n_train": n_train, "n_val": n_val, "standardisation": scaling,
               "split": f"images [0, {n_train}) train, [{n_train}, {n_train + n_val}) val"}
    return DatasetSplits("faces", source, train, val, desc, details)


def fetch_faces(data_dir, source: str = "generated", cfg=None, olivetti_path=None,
                log: Log = print) -> list[pathlib.Path]:
    if source == "generated":
        _generated(cfg, data_dir, log, olivetti_path=olivetti_path)
        return [generated_cache_path(data_dir, generator_params(cfg))]
    if source != "genuine":
        raise DatasetError(f"faces: unknown source {source!r}; use 'generated' or 'genuine'")
    path = pathlib.Path(data_dir) / "faces" / GENUINE_FILE
    if not path.is_file():
        download_url(GENUINE_URL, path, timeout=10.0, log=log, manual_hint=_manual_hint(path))
    shape = mat_variable_shape(path, GENUINE_VAR)
    if len(shape) != 2 or shape[0] != DIM:
        raise DatasetError(
            f"faces: '{GENUINE_VAR}' of {path} has shape {shape}, expected ({DIM}, 165600); delete "
            f"{path} and rerun `kfac-bench data fetch faces --source genuine`"
        )
    log(f"faces: {path} holds '{GENUINE_VAR}' {shape[0]} x {shape[1]}")
    return [path]
