"""Small helpers shared by the harness: device choice, atomic writes, provenance."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, CPU otherwise."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA but none is available here; use device=auto or device=cpu")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously); nothing to do on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (0o644 under umask 022).
    ``tempfile.mkstemp`` makes its files 0o600 whatever the umask, which would hide results and
    run folders from the other users that the umask admits."""
    mask = os.umask(0o022)   # reading the umask means setting it; put back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def git_commit() -> str:
    """The commit of the code that runs (``+dirty`` when the work tree has changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def configure_cpu_eigensolvers() -> int | None:
    """Where the harness starts (CLI, Figure 1 study, tests): the CPU thread count of the error
    metrics' eigensolvers (:func:`kfac_bench.curvature.spectrum.set_cpu_eigen_threads`) from the
    environment -- one thread unless ``OMP_WAIT_POLICY=PASSIVE`` (spinning OpenMP threads stall
    LAPACK's eigensolvers on a shared machine; see the note there), else torch's own setting.
    Returns the count set (None: torch's)."""
    from .curvature.spectrum import set_cpu_eigen_threads
    threads = None if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else 1
    set_cpu_eigen_threads(threads)
    return threads


def cluster_job(environ=None) -> dict | None:
    """The SLURM job this process runs in, read from its environment (``summary.json``'s ``cluster``
    entry): ``job_id``, for an array task also ``array_job_id`` and ``array_task_id`` (``sacct`` shows
    ``<array_job_id>_<array_task_id>``), ``node``, and ``restart_count`` (how many times the job was
    requeued, e.g. by submitit at its time limit: this summary is the last run's). None outside SLURM."""
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        return None
    job = {"scheduler": "slurm", "job_id": env["SLURM_JOB_ID"]}
    if env.get("SLURM_ARRAY_JOB_ID"):
        job["array_job_id"] = env["SLURM_ARRAY_JOB_ID"]
        job["array_task_id"] = env.get("SLURM_ARRAY_TASK_ID")
    job["node"] = env.get("SLURMD_NODENAME") or env.get("SLURM_NODELIST")
    job["restart_count"] = int(env.get("SLURM_RESTART_COUNT") or 0)
    return job
