"""Many runs on one GPU: how many concurrent training processes (K) a device takes, and the
measurement that decides it.

The paper's auto-encoders are small (at most 6.6 M parameters, batches of 256-1024): one run
leaves a modern GPU mostly idle, waiting on kernel launches and Python. K runs side by side, each
its own process with its own CUDA context, fill it; the reproduction script starts them
(``--jobs auto`` or a profile's ``jobs: auto``, e.g. ``conf/profile/gpu.yaml``: Hydra's joblib
launcher with ``n_jobs = K``).

K is the smaller of two bounds:

* **memory**: ``free device memory x (1 - headroom) / per-run memory``; a run holds its CUDA
  context (about 0.5 GiB), its training set on the device (CURVES 63 MB, MNIST 157 MB, FACES
  259 MB at full size), the model, gradients, momentum, the curvature factors and the allocator's
  cache, taken together as ``per_run_gib`` (default 2 GiB, generous);
* **measured scaling**: runs per hour at K = 1, 2, 4, 8, 16 concurrent CURVES runs, measured by
  :func:`measure_scaling` (``scripts/device_check.sh`` does it and prints the table). K is the
  smallest K whose throughput is within ``tolerance`` (5 %) of the best measured: past the knee
  more processes only add memory and contention. Without a measurement K = ``default`` (8), and
  the choice says so.

Command line (used by scripts/device_check.sh)::

    python -m kfac_bench.runs.concurrency scaling --ks 1,2,4,8,16 --out scaling.json [-- overrides]
    python -m kfac_bench.runs.concurrency choose [--scaling scaling.json] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

GIB = 1024 ** 3
DEFAULTS = {"per_run_gib": 2.0, "headroom": 0.1, "tolerance": 0.05, "default": 8, "max_jobs": 32,
            "scaling": None}


def _settings(concurrency: Mapping | None) -> dict:
    out = dict(DEFAULTS)
    unknown = set(concurrency or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"concurrency: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    out.update({k: v for k, v in (concurrency or {}).items() if v is not None})
    for key in ("per_run_gib",):
        if not (isinstance(out[key], (int, float)) and out[key] > 0):
            raise ValueError(f"concurrency.{key} must be a positive number, got {out[key]!r}")
    for key in ("headroom", "tolerance"):
        if not (isinstance(out[key], (int, float)) and 0 <= out[key] < 1):
            raise ValueError(f"concurrency.{key} must be in [0, 1), got {out[key]!r}")
    for key in ("default", "max_jobs"):
        if not (isinstance(out[key], int) and out[key] >= 1):
            raise ValueError(f"concurrency.{key} must be an integer >= 1, got {out[key]!r}")
    return out


def _scaling_table(scaling) -> dict[int, float]:
    """``{K: runs per hour}`` from a mapping or a scaling.json path (as :func:`measure_scaling` writes)."""
    if scaling is None:
        return {}
    if isinstance(scaling, (str, os.PathLike)):
        path = Path(scaling)
        if not path.is_file():
            raise ValueError(f"concurrency.scaling: {path} does not exist (run scripts/device_check.sh, or "
                             f"python -m kfac_bench.runs.concurrency scaling --out {path})")
        scaling = json.loads(path.read_text()).get("runs_per_hour", {})
    table = {}
    for k, v in dict(scaling).items():
        try:
            k, v = int(k), float(v)
        except (TypeError, ValueError):
            raise ValueError(f"concurrency.scaling must map K to runs per hour, got {k!r}: {v!r}") from None
        if k < 1 or not v > 0:
            raise ValueError(f"concurrency.scaling: K must be >= 1 and runs per hour > 0, got {k}: {v}")
        table[k] = v
    return table


def jobs_from_scaling(table: Mapping[int, float], tolerance: float = 0.05) -> int:
    """The smallest K whose measured throughput is within ``tolerance`` of the best."""
    best = max(table.values())
    return min(k for k, v in table.items() if v >= (1 - tolerance) * best)


def free_memory_bytes(device: str) -> int | None:
    """Free memory of a CUDA device; None on CPU or where no CUDA device is present (a GPU plan
    printed on a CPU machine)."""
    import torch
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


def choose_jobs(device: str, concurrency: Mapping | None = None, free_bytes: int | None = None,
                log: Callable[[str], None] | None = None) -> int:
    """Concurrent runs for one device (see the module doc). ``free_bytes``: the device's free memory
    (read from the device when None). On a CPU: ``os.cpu_count() // threads`` is the caller's
    business, so this returns the number of cores."""
    cfg = _settings(concurrency)
    say = log or (lambda msg: None)
    if not str(device).startswith("cuda"):
        k = max(os.cpu_count() or 1, 1)
        say(f"jobs auto: {k} (a CPU: one run per core)")
        return k
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    if free is None:
        by_memory, memory_text = cfg["max_jobs"], "no CUDA device here to read its free memory"
    else:
        by_memory = max(1, int(free * (1 - cfg["headroom"]) / (cfg["per_run_gib"] * GIB)))
        memory_text = f"memory {free / GIB:.1f} GiB free allows {by_memory} at {cfg['per_run_gib']} GiB a run"
    table = _scaling_table(cfg["scaling"])
    if table:
        by_scaling = jobs_from_scaling(table, cfg["tolerance"])
        why = (f"measured scaling {', '.join(f'{k}: {v:.0f}' for k, v in sorted(table.items()))} runs/h "
               f"-> {by_scaling}")
    else:
        by_scaling = cfg["default"]
        why = f"no measured scaling (concurrency.scaling), default {by_scaling}"
    k = max(1, min(by_memory, by_scaling, cfg["max_jobs"]))
    say(f"jobs auto: {k} concurrent runs on {device} ({why}; {memory_text}; at most {cfg['max_jobs']})")
    return k


# ------------------------------------------------------------------------------- measurement
def training_command(run_dir: Path, overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "kfac_bench.cli", "run", f"hydra.run.dir={run_dir}", "trainer.progress=false",
            *overrides]


def measure_scaling(ks: Sequence[int], overrides: Sequence[str], work_dir: Path,
                    env: Mapping[str, str] | None = None, log: Callable[[str], None] = print,
                    time_limit_s: float = 600.0, on_level: Callable[[dict], None] | None = None) -> dict:
    """Runs per hour with K concurrent copies of one training run, for each K in ``ks``: K
    processes started together, each in its own folder, timed to the last one's end (start-up
    included, as in a sweep). A failed run is reported and makes the measurement fail."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    out = {"ks": list(ks), "overrides": list(overrides), "wall_s": {}, "runs_per_hour": {}}
    for k in ks:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"concurrency levels must be integers >= 1, got {k!r}")
        procs, logs = [], []
        t0 = time.perf_counter()
        for i in range(k):
            run_dir = work_dir / f"k{k}" / f"run{i}"
            handle = open(work_dir / f"k{k}_run{i}.log", "w")
            logs.append(handle)
            procs.append(subprocess.Popen(training_command(run_dir, overrides), env=env, stdout=handle,
                                          stderr=subprocess.STDOUT))
        failed = []
        try:
            for i, p in enumerate(procs):
                left = max(1.0, time_limit_s - (time.perf_counter() - t0))
                try:
                    rc = p.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    p.kill()
                    rc = "timeout"
                if rc != 0:
                    failed.append(f"run {i}: exit {rc} (log {work_dir / f'k{k}_run{i}.log'})")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for handle in logs:
                handle.close()
        wall = time.perf_counter() - t0
        if failed:
            raise RuntimeError(f"K={k}: " + "; ".join(failed))
        out["wall_s"][k] = wall
        out["runs_per_hour"][k] = 3600.0 * k / wall
        log(f"K={k:3d}: {wall:7.1f} s for {k} runs -> {out['runs_per_hour'][k]:8.1f} runs/h")
        if on_level is not None:      # the levels measured so far survive a later one's kill
            on_level(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfac_bench.runs.concurrency", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sc = sub.add_parser("scaling", help="runs per hour at K concurrent runs")
    sc.add_argument("--ks", default="1,2,4,8,16", help="comma-separated K values (default 1,2,4,8,16)")
    sc.add_argument("--out", required=True, help="scaling.json to write")
    sc.add_argument("--work-dir", default=None, help="run folders (default: a temporary folder)")
    sc.add_argument("--time-limit", type=float, default=600.0, help="seconds per K before its runs are killed")
    sc.add_argument("overrides", nargs="*", help="kfac-bench run overrides (after --), e.g. dataset=curves device=cuda")
    ch = sub.add_parser("choose", help="K for a device from its free memory and a scaling.json")
    ch.add_argument("--device", default="cuda")
    ch.add_argument("--scaling", default=None, help="scaling.json written by `scaling`")
    ch.add_argument("--per-run-gib", type=float, default=None)
    args = parser.parse_args(argv)
    if args.verb == "scaling":
        try:
            ks = [int(k) for k in args.ks.split(",") if k.strip()]
        except ValueError:
            parser.error(f"--ks must be comma-separated integers, got {args.ks!r}")
        work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="kfac-scaling-"))
        try:
            result = measure_scaling(ks, args.overrides, work, time_limit_s=args.time_limit,
                                     on_level=lambda res: Path(args.out).write_text(json.dumps(res, indent=2) + "\n"))
        except (RuntimeError, ValueError) as err:
            print(f"concurrency scaling: error: {err}", file=sys.stderr)
            return 1
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {args.out}")
        return 0
    try:
        k = choose_jobs(args.device, {"scaling": args.scaling, "per_run_gib": args.per_run_gib}, log=print)
    except ValueError as err:
        print(f"concurrency choose: error: {err}", file=sys.stderr)
        return 2
    print(k)
    return 0


__all__ = ["choose_jobs", "jobs_from_scaling", "measure_scaling", "free_memory_bytes", "DEFAULTS"]


if __name__ == "__main__":
    sys.exit(main())

