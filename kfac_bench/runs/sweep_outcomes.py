"""The exit status of a sweep (``kfac-bench run -m``): non-zero when any job failed or was refused,
once every job has ended; a diverged run is a result, not a failure.

Why files: Hydra's multirun throws the jobs' return values away (``hydra.main`` returns None), and
the task function catches every error so that one bad job never stops the others, so Hydra itself
sees every job succeed. With the joblib or submitit launchers the jobs run in other processes (with
submitit possibly on other machines), so nothing held in memory reaches the main process either.
Each job therefore writes its outcome to a small JSON file, and the main process reads them once
the launcher has returned. The folder is in the sweep directory, which every job reaches as it
writes its results there, and is named for this one command (two sweeps into the same
``results/runs`` at once keep theirs apart); the :class:`SweepOutcomes` callback (``hydra.callbacks``
in ``conf/config.yaml``) makes it before the jobs start, tells them where it is through
:data:`ENV` (launched processes inherit the environment), and reads and removes it at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback

ENV = "KFAC_BENCH_SWEEP_OUTCOMES"
FAILED = ("failed", "refused")

# the outcomes of the sweep that this process ran last, for cli.main (None: no sweep ran)
finished: list[dict] | None = None


class SweepOutcomes(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        global finished
        finished = None
        folder = Path(str(config.hydra.sweep.dir)) / f".kfac-bench-outcomes-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[ENV] = str(folder)

    def on_multirun_end(self, config, **kwargs) -> None:
        global finished
        folder = os.environ.pop(ENV, None)
        if folder:
            finished = read_outcomes(Path(folder))
            shutil.rmtree(folder, ignore_errors=True)


def record(status: str, reason: str = "") -> None:
    """A sweep job's outcome (``ok``, ``diverged``, ``failed`` or ``refused``); nothing outside a sweep."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:   # a single run started from within a sweep's environment
        return
    entry = {"job": hc.job.num, "overrides": list(hc.overrides.task), "folder": hc.runtime.output_dir,
             "status": status, "reason": reason}
    path = Path(folder) / f"{hc.job.num}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)


def read_outcomes(folder: Path) -> list[dict]:
    out = []
    for path in folder.glob("*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return sorted(out, key=lambda e: e.get("job", 0))


def exit_status() -> int:
    """1 after listing the failed and refused jobs of the last sweep on stderr; else 0."""
    bad = [e for e in finished or [] if e.get("status") in FAILED]
    if not bad:
        return 0
    print(f"kfac-bench: error: {len(bad)} of {len(finished)} jobs of the sweep failed or were refused "
          f"(the others ran to their end):", file=sys.stderr)
    for e in bad:
        reason = (e.get("reason") or "").splitlines()[0] if e.get("reason") else "(no reason recorded)"
        print(f"  job {e.get('job')} {e.get('status')}: {' '.join(e.get('overrides', []))}\n"
              f"    folder {e.get('folder')}\n    {reason}", file=sys.stderr)
    print("Their full messages are in the log above; rerun the same sweep once fixed: finished jobs are "
          "skipped.", file=sys.stderr)
    return 1
