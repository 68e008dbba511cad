"""scripts/device_check.sh (issue 15) on a machine without a GPU: --dry-run lists every step, a bad
argument is refused, and the table script turns measured files into the gpu profile's entries."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.sh"


def test_dry_run_lists_every_step_and_the_missing_payload(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "KFAC_DEVICE_PAYLOAD": str(tmp_path / "payload")})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in ("cuda_tests", "epochs_curves_mnist", "epochs_faces", "bench", "bench_peers", "scaling", "table"):
        assert f"[{step}, at most" in out, step
    assert "tests/test_cuda.py" in out
    from kfac_bench.registry import paper_method_names
    assert f"optimizer={','.join(paper_method_names())}" in out          # the list comes from the registry
    # the GPU image's python3 is a venv: the wheels go to a --target folder on PYTHONPATH, not a new venv
    assert "[install]" in out and "--target /tmp/kfac-device-check/site" in out and "venv" not in out
    assert "bench device=cuda" in out and "bench.peers=[asdl]" in out
    assert "scaling --ks 1,2,4,8,16" in out
    assert out.count("MISSING (run --prepare here first)") == 3


def test_unknown_argument_is_refused():
    proc = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument --gpu" in proc.stderr


def _metrics(path: Path, time_s: float, eval_s: float) -> None:
    path.mkdir(parents=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "time_s", "eval_time_s"])
        w.writeheader()
        w.writerow({"epoch": 0, "time_s": 0, "eval_time_s": 0.5})
        w.writerow({"epoch": 1, "time_s": time_s, "eval_time_s": eval_s})


def test_table_turns_measurements_into_profile_entries(tmp_path):
    work = tmp_path / "work"
    _metrics(work / "epochs" / "curves_sgd", 1.5, 0.5)       # 2 s an epoch alone
    _metrics(work / "epochs" / "faces_kfac", 1.0, 0.0)       # x faces-scale 4
    (work / "scaling.json").write_text(json.dumps({"runs_per_hour": {"1": 100, "2": 180, "4": 200}}))
    (work / "bench").mkdir()
    (work / "bench" / "bench.csv").write_text("dataset,method,step_ms,ratio_sgd\ncurves,sgd,2.0,1.0\ncurves,kfac,5.0,2.5\n")
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_table.py"), "--work", str(work), "--out",
                           str(out), "--faces-scale", "4", "--profile", str(ROOT / "conf" / "profile" / "gpu.yaml")],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                               if k != "KFAC_BENCH_OLIVETTI"})
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    # K = 4 (200 runs/h, the best; K = 2 is 10 % below it); one run among 4 is 4 x 100 / 200 = 2x slower
    assert "K chosen (smallest within 5 % of the best): 4" in text
    assert "curves: {sgd: 4.0}" in text and "faces: {kfac: 8.0}" in text
    assert "scaling: {1: 100, 2: 180, 4: 200}" in text
    assert "| curves | 1.00 (2.0 ms) | - | 2.50 (5.0 ms) |" in text
    assert "jobs auto: 4 concurrent runs on cuda" in text and "ESTIMATED running time" in text
