"""The training loop reads its losses from the device only every few steps on CUDA (issue 15):
the running loss and the divergence check must come out exactly as with a read after every step.
On CPU the interval is 1; here it is forced to 4 so that the deferred path runs on a CPU too."""
import math

import pytest
import torch

from kfac_bench.runs import train
from kfac_bench.runs.train import _LossTracker

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_tracker_reads_the_values_in_order_and_stops_at_the_first_non_finite():
    t = _LossTracker()
    for i, v in enumerate([0.5, 0.25, float("nan"), 0.125, float("inf")], start=1):
        t.add(i, torch.tensor(v), 10)
    assert len(t) == 5
    assert t.flush() == 3
    assert (t.running, t.seen, t.last) == (0.5 * 10 + 0.25 * 10, 20, 0.25) and len(t) == 0
    assert t.flush() is None


def _config(tmp_path, method, lr):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    import kfac_bench.cli  # noqa: F401
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    overrides = [f"optimizer={method}", "trainer.epochs=2", f"optimizer.lr={lr}", f"data_dir={tmp_path / 'data'}",
                 "device=cpu", "trainer.progress=false", "dataset.generator.n_images=600", "dataset.n_train=500",
                 "dataset.n_val=100"]
    if method != "sgd":
        overrides += ["optimizer.T1=3", "optimizer.T2=3"]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


@pytest.mark.parametrize("method,lr", [("kfac", 0.1), ("sgd", 1e15)])
def test_deferred_checks_give_the_same_run(tmp_path, monkeypatch, method, lr):
    """Same metrics, status, error and iteration count with reads every 4 steps as every step
    (SGD at lr=1e15 diverges inside an epoch, between two reads)."""
    every_step = train.run_training(_config(tmp_path, method, lr), tmp_path / "every")
    monkeypatch.setattr(train, "loss_check_interval", lambda device: 4)
    deferred = train.run_training(_config(tmp_path, method, lr), tmp_path / "deferred")
    for key in ("status", "error", "iterations", "epochs_completed", "final_train_loss", "final_val_loss"):
        assert deferred[key] == every_step[key], key
    rows = [(tmp_path / d / "metrics.csv").read_text().splitlines() for d in ("every", "deferred")]
    strip = lambda lines: [",".join(c for i, c in enumerate(l.split(",")) if i not in (2, 6)) for l in lines]
    assert strip(rows[0]) == strip(rows[1])
    if lr > 1:
        assert every_step["status"] == "diverged" and "non-finite training loss" in every_step["error"]
    else:
        assert every_step["status"] == "ok" and math.isfinite(every_step["final_train_loss"])
