"""scripts/profile_walltime.py: a profile's measured wall time, summed from its runs' summary.json."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "profile_walltime.py"


def _module():
    spec = importlib.util.spec_from_file_location("profile_walltime", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(folder: Path, **fields) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(fields))


def test_wall_and_training_time_are_summed_per_dataset_and_horizon(tmp_path):
    _summary(tmp_path / "runs/curves/kfac/a", dataset="curves", epochs_requested=200, seed=0, status="ok",
             started="2026-12-07T06:00:00+00:00", finished="2026-12-07T07:30:00+00:00", total_time_s=3600.0)
    _summary(tmp_path / "runs/curves/sgd/b", dataset="curves", epochs_requested=200, seed=1, status="failed",
             started="2026-12-07T06:00:00+00:00", finished="2026-12-07T06:30:00+00:00", total_time_s=900.0)
    _summary(tmp_path / "runs/mnist/sgd/c", dataset="mnist", epochs_requested=5, seed=2, status="ok",
             started="2026-12-07T06:00:00+00:00", finished="2026-12-07T06:06:00+00:00", total_time_s=300.0)
    _summary(tmp_path / "fisher/mnist/d", dataset="mnist", started="2026-12-07T06:00:00+00:00",
             finished="2026-12-07T06:12:00+00:00", total_time_s=700.0)
    m = _module()
    runs = m.run_times(tmp_path)
    assert len(runs) == 4 and runs["wall_s"].sum() == pytest.approx((90 + 30 + 6 + 12) * 60)
    table = m.walltime_table(runs).set_index(["kind", "dataset"])
    curves = table.loc[("training run", "curves")]
    assert curves["runs"] == 2 and curves["seeds"] == "0,1"
    assert curves["wall_h"] == pytest.approx(2.0) and curves["training_h"] == pytest.approx(1.25)
    assert "ok 1" in curves["statuses"] and "failed 1" in curves["statuses"]
    assert table.loc[("fisher study", "mnist"), "wall_h"] == pytest.approx(0.2)
    assert table.loc[("training run", "mnist"), "training_h"] == pytest.approx(300 / 3600)
