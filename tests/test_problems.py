"""The classification problems (conf/dataset/mnist_mlp, mnist_toynet, fashion_mnist_deeplinear,
cifar10_convnet): each config composes, builds the authors' network and trains a short epoch with SGD and
KFAC on small data; a classifier's metrics carry accuracies; the stand-in is labelled as one; the data
checks refuse corrupt files. Small idx files are written here (their MD5 tables patched), as in
tests/test_data.py; the CIFAR stand-in's generator is shrunk."""
from __future__ import annotations

import csv
import gzip
import pathlib
import struct

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from kfac_bench.data import DatasetError, cifar10, fashion_mnist, labelled, load_dataset, mnist
from kfac_bench.data.common import md5_file
from kfac_bench.models import build_model
from kfac_bench.runs.train import run_training

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBLEMS = ("mnist_mlp", "mnist_toynet", "fashion_mnist_deeplinear", "cifar10_convnet")
# smaller networks of the same shapes (the full MLP has 4.1 M parameters)
SMALL_MODELS = {"mnist_mlp": ["+dataset.model.sizes=[784,32,16,10]"],
                "fashion_mnist_deeplinear": ["+dataset.model.depth=4"],
                "cifar10_convnet": ["+dataset.model.channels=[8,8,16]"], "mnist_toynet": []}


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _idx_folder(folder: pathlib.Path, module, monkeypatch, n_train=96, n_test=40) -> pathlib.Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, arr in arrays.items():
        _write_idx(folder / name, arr)
    monkeypatch.setattr(module, "MD5", {n: md5_file(folder / n) for n in arrays})
    return folder


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    """data_dir with small MNIST and Fashion-MNIST idx files and a small CIFAR stand-in."""
    data = tmp_path / "data"
    _idx_folder(data / "mnist" / "raw", mnist, monkeypatch)
    _idx_folder(data / "fashion_mnist" / "raw", fashion_mnist, monkeypatch)
    monkeypatch.setattr(cifar10, "N_TRAIN_IMAGES", 96)
    monkeypatch.setattr(cifar10, "N_TEST_IMAGES", 40)
    return data


def _cfg(problem: str, method: str, tmp_path, *extra) -> dict:
    from hydra import compose, initialize_config_dir
    import kfac_bench.cli  # noqa: F401  (registers the run-name resolver)
    overrides = [f"dataset={problem}", f"optimizer={method}", "trainer.epochs=1", "trainer.progress=false",
                 f"data_dir={tmp_path / 'data'}", f"results_dir={tmp_path / 'results'}", "device=cpu", "threads=1",
                 "dataset.n_train=64", "dataset.n_val=32", "dataset.batch_size=16", *SMALL_MODELS[problem], *extra]
    if method == "kfac":   # 4 steps: curvature at steps 0 and 2; a learning rate that moves the network
        overrides += ["optimizer.T1=2", "optimizer.T2=2", "optimizer.lr=0.01", "optimizer.damping=0.01"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


def _metrics(run_dir: pathlib.Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("method", ["sgd", "kfac"])
def test_problem_trains_an_epoch_and_records_accuracy(problem, method, small_data, tmp_path):
    cfg = _cfg(problem, method, tmp_path)
    summary = run_training(cfg, tmp_path / "run")
    assert summary["status"] == "ok" and summary["dataset"] == problem and summary["task"] == "classification"
    rows = _metrics(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [0, 1] and int(rows[1]["iteration"]) == 4
    for r in rows:
        assert 0.0 <= float(r["val_accuracy"]) <= 1.0 and 0.0 <= float(r["train_accuracy"]) <= 1.0
        assert np.isfinite(float(r["val_loss"]))
    assert summary["final_val_accuracy"] == float(rows[-1]["val_accuracy"])
    assert float(rows[0]["train_loss"]) == pytest.approx(np.log(10), abs=1.5)   # cross-entropy per example
    if method == "kfac":
        report = summary["curvature_layers"]
        plain = [e["type"] for e in report if not e["preconditioned"]]
        assert all(t.startswith("BatchNorm") for t in plain)
        assert bool(plain) == (problem != "mnist_toynet")        # BatchNorm takes the plain step
        assert summary["iterations"] == 4


def test_stand_in_is_labelled_and_genuine_is_not(small_data, tmp_path):
    summary = run_training(_cfg("cifar10_convnet", "sgd", tmp_path), tmp_path / "cifar")
    assert summary["dataset_source"] == "generated" and summary["dataset_stand_in"] is True
    assert "GENERATED STAND-IN" in summary["dataset_description"]
    assert summary["dataset_generator_version"] == cifar10.GENERATOR_VERSION
    stored = OmegaConf.load(tmp_path / "cifar" / "config.yaml")
    assert stored.dataset.generator_version == cifar10.GENERATOR_VERSION   # in the run folder's settings
    genuine = run_training(_cfg("mnist_toynet", "sgd", tmp_path), tmp_path / "toy")
    assert genuine["dataset_source"] == "genuine" and genuine["dataset_stand_in"] is False
    assert genuine["dataset_generator_version"] is None


def test_splits_follow_the_authors_loaders(small_data):
    cfg = {"name": "mnist_toynet", "data": "mnist", "task": "classification", "n_train": 50, "n_val": 30}
    s = load_dataset(cfg, small_data, log=lambda m: None)
    assert s.train.shape == (50, 784) and s.val.shape == (30, 784) and s.train_targets.dtype == torch.int64
    train = mnist.read_idx(small_data / "mnist" / "raw" / "train-images-idx3-ubyte")
    test = mnist.read_idx(small_data / "mnist" / "raw" / "t10k-images-idx3-ubyte")
    assert torch.equal(s.train, torch.from_numpy(train[:50].reshape(50, -1)).float() / 255)   # first n_train
    assert torch.equal(s.val, torch.from_numpy(test[:30].reshape(30, -1)).float() / 255)      # first n_val of test
    assert s.val_targets.tolist() == [i % 10 for i in range(30)]
    with pytest.raises(DatasetError, match="exceed"):
        load_dataset({**cfg, "n_val": 41}, small_data, log=lambda m: None)


def test_corrupt_file_is_refused_with_a_clear_message(small_data):
    path = small_data / "fashion_mnist" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1] + b"\x07")
    cfg = {"name": "f", "data": "fashion_mnist", "task": "classification"}
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte has MD5 .* expected the published .* corrupt"):
        load_dataset(cfg, small_data, log=lambda m: None)
    mpath = small_data / "mnist" / "raw" / "train-labels-idx1-ubyte"
    mpath.write_bytes(mpath.read_bytes()[:-1] + b"\x0b")
    with pytest.raises(DatasetError, match="corrupt or not the genuine one"):
        load_dataset({**cfg, "data": "mnist"}, small_data, log=lambda m: None)


def test_genuine_cifar_pickles_are_checked(tmp_path):
    folder = tmp_path / "cifar10" / cifar10.GENUINE_FOLDER
    folder.mkdir(parents=True)
    for name in cifar10.GENUINE_MD5:
        (folder / name).write_bytes(b"not the genuine file")
    cfg = {"name": "c", "data": "cifar10", "task": "classification", "source": "genuine"}
    with pytest.raises(DatasetError, match="data_batch_1 has MD5 .* expected the published c99cafc1"):
        load_dataset(cfg, tmp_path, log=lambda m: None)


def test_fashion_debian_route_unpacks_and_verifies(tmp_path, monkeypatch):
    """The Debian route's unpacking, with apt-get and dpkg-deb stubbed by a folder of .gz files."""
    src = _idx_folder(tmp_path / "src", fashion_mnist, monkeypatch)

    def fake_run(cmd, cwd, what, time_limit):
        if cmd[0] == "apt-get":
            (cwd / f"{fashion_mnist.DEBIAN_PACKAGE}_1_all.deb").write_bytes(b"")
        else:
            target = pathlib.Path(cmd[-1]) / fashion_mnist.DEBIAN_FOLDER
            target.mkdir(parents=True)
            for name in fashion_mnist.FILES:
                (target / (name + ".gz")).write_bytes(gzip.compress((src / name).read_bytes()))

    def no_torchvision(tmp, stage, time_limit):
        raise DatasetError("offline")
    monkeypatch.setattr(fashion_mnist, "_run", fake_run)
    monkeypatch.setattr(fashion_mnist, "_route_torchvision", no_torchvision)
    monkeypatch.setattr(fashion_mnist.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    logs = []
    paths = fashion_mnist.fetch_fashion_mnist(tmp_path / "raw", log=logs.append)
    assert [p.name for p in paths] == list(fashion_mnist.FILES)
    assert any("Debian package dataset-fashion-mnist route succeeded" in m for m in logs)


def test_cifar_stand_in_is_deterministic_balanced_and_cached(tmp_path, monkeypatch):
    x, y = cifar10.generate(200, seed=3, split="train")
    x2, y2 = cifar10.generate(200, seed=3, split="train")
    assert torch.equal(x, x2) and torch.equal(y, y2) and x.dtype == torch.uint8 and x.shape == (200, 3072)
    assert torch.bincount(y).tolist() == [20] * 10
    assert not torch.equal(cifar10.generate(200, seed=3, split="test")[0], x)
    monkeypatch.setattr(cifar10, "N_TRAIN_IMAGES", 50)
    monkeypatch.setattr(cifar10, "N_TEST_IMAGES", 20)
    cfg = {"name": "c", "data": "cifar10", "task": "classification", "generator": {"seed": 3}}
    first = load_dataset(cfg, tmp_path, log=lambda m: None)
    monkeypatch.setattr(cifar10, "generate", lambda *a, **k: pytest.fail("the cache was not used"))
    again = load_dataset(cfg, tmp_path, log=lambda m: None)
    assert torch.equal(first.train, again.train) and "GENERATED STAND-IN" in again.description


def test_models_are_the_authors(tmp_path):
    sizes = {"mlp_bn": 4106920, "toynet": 9275, "deep_linear": 16040, "cuda_convnet": 19178}
    for kind, n in sizes.items():
        model = build_model({"model": {"kind": kind}}, seed=0)
        assert sum(p.numel() for p in model.parameters()) == n
        d = 3072 if kind == "cuda_convnet" else 784
        assert model(torch.rand(3, d)).shape == (3, 10)
    a = build_model({"model": {"kind": "toynet"}}, seed=0, init="reseeded_per_layer")
    assert torch.equal(a[0].bias, torch.full((10,), 0.01))
    # the authors' initializer re-seeds before each layer: equal-shaped layers start equal
    b = build_model({"model": {"kind": "deep_linear", "depth": 3}}, seed=0, init="reseeded_per_layer")
    assert torch.equal(b[2].weight, b[4].weight)
    c = build_model({"model": {"kind": "deep_linear", "depth": 3}}, seed=0)
    assert not torch.equal(c[2].weight, c[4].weight)


def test_classification_needs_the_categorical_likelihood(small_data, tmp_path):
    from kfac_bench.runs.train import ConfigError
    cfg = _cfg("mnist_toynet", "sgd", tmp_path, "dataset.likelihood=bernoulli")
    with pytest.raises(ConfigError, match="categorical"):
        run_training(cfg, tmp_path / "bad")


def test_data_describe_covers_the_new_problems(small_data, capsys):
    from kfac_bench.cli import main
    for problem in ("cifar10_convnet", "mnist_toynet"):
        assert main(["data", "describe", problem, "n_train=40", "n_val=20", "--data-dir", str(small_data)]) == 0
    out = capsys.readouterr().out
    assert "GENERATED STAND-IN, generator version 1" in out and "class counts" in out
    assert "genuine files in" in out and "md5          train-images-idx3-ubyte" in out
    assert labelled.TITLES["cifar10"] in out


def test_fisher_study_on_a_classifier_trains_adam_on_the_labels(small_data, tmp_path):
    """`kfac-bench fisher dataset=mnist_mlp`: Adam's loss is the cross-entropy against the labels (it used to
    be handed the inputs as targets and failed), the Fisher's targets are sampled; BatchNorm stays out."""
    from hydra import compose, initialize_config_dir
    from kfac_bench.studies.fisher import run_fisher_study
    overrides = ["dataset=mnist_mlp", *SMALL_MODELS["mnist_mlp"], f"data_dir={tmp_path / 'data'}",
                 "dataset.n_train=64", "dataset.n_val=32", "dataset.batch_size=16", "trainer.epochs=1",
                 "trainer.progress=false", "fisher.max_points=2", "fisher.ranks=0", "fisher.layer=all",
                 "fisher.methods=[kfac,kpsvd]", "threads=1"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("fisher", overrides=overrides), resolve=True)
    df = run_fisher_study(cfg, tmp_path / "study")
    assert sorted(df.layer.unique()) == [1, 2, 3] and set(df.method) == {"kfac", "kpsvd"}
    assert np.isfinite(df.error_frobenius).all() and (df.train_loss > 0).all()
    assert df.train_loss.iloc[0] == pytest.approx(np.log(10), abs=1.5)   # a cross-entropy, not a pixel loss
