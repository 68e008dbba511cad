"""The GPU path (issue 15): run where CUDA is present, skipped elsewhere (scripts/device_check.sh runs
them on a GPU machine).

* one step of every method agrees on CPU and CUDA within float32 tolerance (empirical Fisher, so
  that no random targets differ between the devices' generators);
* a regular (non-curvature) training step of every method makes no host synchronisation
  (``torch.cuda.set_sync_debug_mode("error")`` raises on any);
* a one-epoch run of each dataset on CUDA writes the usual run folder; resume works on CUDA.

Data: CURVES is generated; MNIST needs its idx files under ``$KFAC_BENCH_DATA/mnist/raw`` and FACES
the Olivetti file (``$KFAC_BENCH_OLIVETTI``); a dataset whose files are absent is skipped.
"""
import csv
import json
import os
from pathlib import Path

import pytest
import torch

from kfac_bench.curvature.stats import get_likelihood
from kfac_bench.optim import as_training_optimizer
from kfac_bench.optim.factory import build_optimizer, optimizer_names
from kfac_bench.registry import curvature_method_names

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

ROOT = Path(__file__).resolve().parent.parent
METHODS = optimizer_names()          # sgd, adam and the five Kronecker-factored methods
LAYERS = [24, 16, 6, 16, 24]


def _model(device):
    torch.manual_seed(0)
    from kfac_bench.models import build_autoencoder
    return build_autoencoder({"name": "tiny", "layers": LAYERS, "likelihood": "bernoulli",
                              "hidden_activation": "relu"}, 0).to(device)


def _optimizer(method, model):
    cfg = {"name": method, "lr": 0.05}
    if method in curvature_method_names():   # the first-order methods (SOAP, Shampoo, ...) take no damping
        cfg.update(damping=1e-2, T1=2, T2=2, fisher="empirical")
    return build_optimizer(cfg, model, "bernoulli", seed=0)


def _step(model, opt, x, kron):
    opt.zero_grad(set_to_none=True)
    loss = get_likelihood("bernoulli").batch_loss(model(x), x)
    loss.backward()
    if kron:
        opt.step(targets=x)
    else:
        opt.step()
    return loss


@pytest.mark.parametrize("method", METHODS)
def test_one_step_agrees_on_cpu_and_cuda(method):
    x = torch.rand(64, LAYERS[0], generator=torch.Generator().manual_seed(1))
    after = {}
    for device in ("cpu", "cuda"):
        model = _model(device)
        opt = _optimizer(method, model)
        _step(model, opt, x.to(device), method not in ("sgd", "adam"))
        after[device] = [p.detach().double().cpu() for p in model.parameters()]
    before = [p.detach().double() for p in _model("cpu").parameters()]
    for p0, cpu, cuda in zip(before, after["cpu"], after["cuda"]):
        update_cpu, update_cuda = cpu - p0, cuda - p0
        assert update_cpu.abs().max() > 0
        torch.testing.assert_close(update_cuda, update_cpu, rtol=2e-3,
                                   atol=2e-4 * float(update_cpu.abs().max()))


@pytest.mark.parametrize("method", METHODS)
def test_a_regular_training_step_makes_no_host_sync(method):
    from kfac_bench.runs.train import _LossTracker
    kron = method not in ("sgd", "adam")
    model = _model("cuda")
    opt = _optimizer(method, model)
    data = torch.rand(256, LAYERS[0], device="cuda")
    perm = torch.randperm(256, device="cuda")
    _step(model, opt, data[:64], kron)           # the first step: curvature update (may sync)
    torch.cuda.synchronize()
    losses = _LossTracker()
    loop_opt = as_training_optimizer(opt)
    torch.cuda.set_sync_debug_mode("error")
    try:
        # what the training loop does between two loss checks (kfac_bench/runs/train.py), through the
        # harness's optimizer interface
        x = data.index_select(0, perm[64:128])
        loop_opt.zero_grad(set_to_none=True)
        loss = get_likelihood("bernoulli").batch_loss(model(x), x)
        losses.add(2, loss, x.shape[0])
        assert not loop_opt.curvature_due()
        loss.backward()
        loop_opt.train_step(targets=x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert losses.flush() is None and losses.seen == 64


def _config(tmp_path, dataset, epochs, extra=()):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    import kfac_bench.cli  # noqa: F401  (registers the run-name resolver)
    sizes = {"curves": ["dataset.generator.n_images=1200", "dataset.n_train=1000", "dataset.n_val=200"],
             "mnist": ["dataset.n_train=2048", "dataset.n_val=512"],
             "faces": ["dataset.generator.n_images=2600", "dataset.n_train=2048", "dataset.n_val=512"]}[dataset]
    data_dir = os.environ.get("KFAC_BENCH_DATA") or str(tmp_path / "data")
    overrides = [f"dataset={dataset}", f"trainer.epochs={epochs}", f"data_dir={data_dir}",
                 f"results_dir={tmp_path / 'results'}", "device=cuda", "trainer.progress=false", *sizes, *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def _skip_without_data(dataset):
    if dataset == "mnist":
        raw = Path(os.environ.get("KFAC_BENCH_DATA") or "data") / "mnist" / "raw"
        if not (raw / "train-images-idx3-ubyte").is_file() and not (raw / "train-images-idx3-ubyte.gz").is_file():
            pytest.skip(f"MNIST idx files absent from {raw} (set KFAC_BENCH_DATA)")
    if dataset == "faces":
        path = os.environ.get("KFAC_BENCH_OLIVETTI")
        if not path or not Path(path).is_file():
            pytest.skip("the Olivetti file is needed for the generated FACES (set KFAC_BENCH_OLIVETTI)")


@pytest.mark.parametrize("dataset", ["curves", "mnist", "faces"])
def test_one_epoch_on_cuda_writes_the_run_folder(tmp_path, dataset):
    from kfac_bench.runs.train import METRIC_COLUMNS, run_training
    _skip_without_data(dataset)
    run_dir = tmp_path / "run"
    summary = run_training(_config(tmp_path, dataset, 1, ["optimizer=kfac", "optimizer.T1=2", "optimizer.T2=2"]),
                           run_dir)
    assert summary["status"] == "ok" and summary["epochs_completed"] == 1
    assert summary["device"].startswith("cuda") and summary["device_name"]
    for name in ("config.yaml", "fingerprint.json", "metrics.csv", "summary.json", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert list(rows[0]) == METRIC_COLUMNS and [r["epoch"] for r in rows] == ["0", "1"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == summary["iterations"] > 0


def test_resume_on_cuda(tmp_path, caplog):
    from kfac_bench.runs.train import run_training
    extra = ["optimizer=kfac", "optimizer.T1=3", "optimizer.T2=3"]
    first = run_training(_config(tmp_path, "curves", 1, extra), tmp_path / "run")
    assert first["epochs_completed"] == 1
    (tmp_path / "run" / "summary.json").unlink()       # as a run killed during epoch 2 leaves it
    with caplog.at_level("INFO", logger="kfac_bench.runs.train"):
        resumed = run_training(_config(tmp_path, "curves", 2, extra), tmp_path / "run")
    assert "from the end of epoch 1" in caplog.text
    assert resumed["status"] == "ok" and resumed["epochs_completed"] == 2
    assert resumed["iterations"] == 2 * first["iterations"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
