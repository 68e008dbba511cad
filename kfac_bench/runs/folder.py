"""What a run folder records about the configuration that produced it, and the check that keeps the
record true.

A run folder is started once: the run that starts it writes ``config.yaml`` (the resolved
configuration) and ``fingerprint.json`` (every setting that can change the result, flattened to
``{"a.b.c": value}``, and their SHA-256). A later command in the same folder may skip the finished
run or resume the interrupted one only when its own settings match the fingerprint; otherwise it is
refused before anything is trained or written (:class:`RunFolderMismatch` lists the differing
settings with both values and the ways out), and the refusal is appended to ``refused.jsonl``.

Not part of the match:

* settings that cannot change a result (:data:`NOT_RESULT_KEYS`: progress bar, threads, device
  choice, folders and data paths, checkpoint/resume switches, the ``tuned`` table whose chosen
  entries are already resolved into ``lr``/``damping``);
* ``trainer.epochs`` (:data:`EXTENSIBLE_KEYS`): a finished run may be extended with more epochs in
  its own folder, and an interrupted one resumed with another target. ``config.yaml`` then records
  the new ``trainer.epochs`` -- the only entry a later command ever changes in it.

One process per folder: :func:`hold_folder` takes an exclusive lock on ``.lock`` in the folder before
anything is read or written there, and a second process is refused at once
(:class:`RunFolderBusy` names the holder's pid and host, read from ``.lock.holder``). The lock is
the operating system's (``flock`` through :mod:`filelock`), not a pid file, so the kernel releases it
when its process dies, even by ``kill -9``, and a killed run never blocks its resume. ``.lock`` and
``.lock.holder`` (:data:`LOCK_FILES`) are no part of the run: neither skipping, resuming, the
fingerprint nor the report reads them, and starting a folder over keeps them.

Folders written before fingerprints existed hold ``config.yaml`` but no ``fingerprint.json``: they
are read as before (skipped when finished, resumed when interrupted) with a warning that their
settings cannot be checked.

This module imports neither torch nor Hydra: the report reads :data:`NOT_RESULT_KEYS` from here.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

FINGERPRINT_FILE = "fingerprint.json"
CONFIG_FILE = "config.yaml"
REFUSALS_FILE = "refused.jsonl"
# the files of one run: starting a folder over removes them (config.yaml and the fingerprint are
# then written anew)
RUN_FILES = ("summary.json", "metrics.csv", "checkpoint.pt", REFUSALS_FILE)
FORMAT = 1
LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"     # pid, host and start of the process that holds the lock
LOCK_FILES = (LOCK_FILE, HOLDER_FILE)

# config entries that cannot change a result (dotted prefixes)
NOT_RESULT_KEYS = ("device", "threads", "data_dir", "results_dir", "trainer.progress", "trainer.checkpoint",
                   "trainer.resume", "trainer.keep_checkpoint", "dataset.path", "dataset.olivetti_path",
                   "optimizer.tuned")
# entries that change a result but may differ between the commands that write one folder
EXTENSIBLE_KEYS = ("trainer.epochs",)

ABSENT = "(not set)"


class RunFolderError(ValueError):
    """A run folder whose contents forbid what the command asked; nothing was trained or changed."""


class RunFolderMismatch(RunFolderError):
    """The folder holds a run made with other settings."""

    def __init__(self, run_dir: Path, differences: list[tuple[str, object, object]]):
        self.run_dir = Path(run_dir)
        self.differences = differences
        super().__init__(mismatch_message(self.run_dir, differences))


class RunFolderBusy(RunFolderError):
    """Another process holds the folder's lock; this one wrote nothing there."""

    def __init__(self, run_dir: Path, holder: dict | None):
        self.run_dir, self.holder = Path(run_dir), holder
        super().__init__(busy_message(self.run_dir, holder))


def busy_message(run_dir: Path, holder: dict | None) -> str:
    if holder:
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, running since "
               f"{holder.get('started', '?')}: {holder.get('command', '?')}")
    else:
        who = f"pid and host not recorded yet in {run_dir / HOLDER_FILE}: it has only just started"
    # the first line says it all: a sweep's closing list of failed jobs shows only that line
    return (f"run folder {run_dir} is in use by another kfac-bench process ({who}); this command was "
            f"refused and wrote nothing in the folder.\n"
            f"One process trains in a run folder at a time. Wait for that process to end and rerun this "
            f"command (it then skips, extends or resumes the run), or train in another folder "
            f"(hydra.run.dir=<folder>; a sweep: hydra.sweep.dir=<folder>). The lock ({run_dir / LOCK_FILE}) is "
            f"the operating system's and ends with its process, even one killed with kill -9, so that process "
            f"is still running.")


def read_holder(run_dir: Path) -> dict | None:
    """What the holder recorded about itself; None while it has not yet (or the file is unreadable)."""
    try:
        holder = json.loads((Path(run_dir) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _write_holder(run_dir: Path) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # replaced whole, so that a refused process never reads half of it; plain open() honours the umask
    tmp = Path(run_dir) / f"{HOLDER_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(holder) + "\n")
    os.replace(tmp, Path(run_dir) / HOLDER_FILE)


@contextmanager
def hold_folder(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process, or raise :class:`RunFolderBusy` at once (no waiting: a
    second command on a busy folder is a mistake to report, not a queue) having written nothing."""
    from filelock import FileLock, Timeout
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusy(run_dir, read_holder(run_dir)) from None
    try:
        _write_holder(run_dir)
        yield
    finally:
        # .lock itself stays: deleting it would let a waiter lock a file that is no longer the folder's
        (run_dir / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


def flatten(obj, prefix: str = "") -> dict:
    """Nested mappings -> ``{"a.b.c": value}``; lists stay values."""
    out = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = obj
    return out


def _listed(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in prefixes)


def result_settings(cfg: Mapping) -> dict:
    """The settings of a resolved config that decide a run's result and must match to reuse its
    folder, as JSON values (tuples become lists, so a config and its YAML/JSON copy compare equal)."""
    flat = {k: v for k, v in flatten(cfg).items()
            if not _listed(k, NOT_RESULT_KEYS) and not _listed(k, EXTENSIBLE_KEYS)}
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def settings_hash(settings: Mapping) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def fingerprint(cfg: Mapping) -> dict:
    settings = result_settings(cfg)
    return {"format": FORMAT, "sha256": settings_hash(settings), "settings": settings,
            "not_compared": list(NOT_RESULT_KEYS + EXTENSIBLE_KEYS),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def read_fingerprint(run_dir: Path) -> dict | None:
    """The folder's fingerprint; None for a folder that has none (started before fingerprints)."""
    path = Path(run_dir) / FINGERPRINT_FILE
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored.get("settings"), dict):
            raise ValueError("no 'settings' mapping")
    except (OSError, ValueError, AttributeError) as err:
        raise RunFolderError(
            f"{path} cannot be read ({err}), so the settings of the run in {run_dir} cannot be checked; "
            f"nothing was trained or changed. Restore the file, or start the run over with "
            f"trainer.resume=false, or train in another folder (hydra.run.dir=...)") from None
    return stored


def differences(stored: Mapping, current: Mapping) -> list[tuple[str, object, object]]:
    """``(key, value in the folder, value now)`` for every setting that differs, sorted by key."""
    keys = sorted(set(stored) | set(current))
    return [(k, stored.get(k, ABSENT), current.get(k, ABSENT)) for k in keys
            if stored.get(k, ABSENT) != current.get(k, ABSENT)]


def _show(value) -> str:
    return value if value == ABSENT else json.dumps(value)


def mismatch_message(run_dir: Path, diffs: list[tuple[str, object, object]]) -> str:
    width = max(len(k) for k, _, _ in diffs)
    lines = [f"run folder {run_dir} holds a run made with other settings, so it is neither resumed nor "
             f"skipped; nothing was trained and its run files are unchanged. Differing settings "
             f"(the folder's, then this command's):"]
    lines += [f"  {k.ljust(width)}  {_show(old)} (folder)  ->  {_show(new)} (now)" for k, old, new in diffs]
    lines += [
        "Ways out:",
        "  * train these settings in another folder: hydra.run.dir=<folder> (a sweep: hydra.sweep.dir=<folder>),",
        "    or leave the folder to the default naming (results_dir/runs/<dataset>/<optimizer>/<overrides>);",
        "  * trainer.resume=false starts over: with hydra.run.dir naming this folder it replaces the run in it",
        "    (its metrics, summary and checkpoint are deleted);",
        f"  * to extend the folder's run, repeat its own settings ({run_dir / CONFIG_FILE}) with a larger "
        "trainer.epochs (trainer.epochs is never compared).",
    ]
    return "\n".join(lines)


def check_folder(run_dir: Path, cfg: Mapping) -> bool:
    """Raise :class:`RunFolderMismatch` unless ``cfg`` matches the folder's fingerprint. Returns
    False for a folder without one (nothing to check against: an old folder)."""
    stored = read_fingerprint(run_dir)
    if stored is None:
        return False
    diffs = differences(stored["settings"], result_settings(cfg))
    if diffs:
        raise RunFolderMismatch(run_dir, diffs)
    return True


def start_folder(run_dir: Path, cfg: Mapping) -> None:
    """Make ``run_dir`` the folder of the run ``cfg``: remove an earlier run's files, then write
    ``config.yaml`` and ``fingerprint.json``."""
    from omegaconf import OmegaConf

    from ..utils import atomic_write_json, atomic_write_text
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(dict(cfg))))
    atomic_write_json(run_dir / FINGERPRINT_FILE, fingerprint(cfg))


def record_epochs(run_dir: Path, epochs: int) -> None:
    """A run continued with another ``trainer.epochs`` (extension, resume): ``config.yaml`` records it."""
    from omegaconf import OmegaConf

    from ..utils import atomic_write_text
    path = Path(run_dir) / CONFIG_FILE
    try:
        node = OmegaConf.load(path)
    except Exception:  # noqa: BLE001 - a missing or damaged config.yaml is left as it is
        return
    if OmegaConf.select(node, "trainer.epochs") != epochs:
        OmegaConf.update(node, "trainer.epochs", epochs, force_add=True)
        atomic_write_text(path, OmegaConf.to_yaml(node))


def record_refusal(run_dir: Path, err: RunFolderMismatch) -> None:
    """Append the refused command and its differences to ``refused.jsonl`` (the run's own files
    stay untouched)."""
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
             "differences": {k: {"folder": old, "now": new} for k, old, new in err.differences}}
    try:
        with open(Path(run_dir) / REFUSALS_FILE, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
    except OSError:
        pass   # the refusal is also in the log and on stderr


__all__ = ["RunFolderError", "RunFolderMismatch", "RunFolderBusy", "LOCK_FILE", "HOLDER_FILE", "LOCK_FILES",
           "hold_folder", "read_holder", "NOT_RESULT_KEYS", "EXTENSIBLE_KEYS", "FINGERPRINT_FILE",
           "CONFIG_FILE", "REFUSALS_FILE", "flatten", "result_settings", "fingerprint", "read_fingerprint",
           "differences", "check_folder", "start_folder", "record_epochs", "record_refusal"]
