#!/usr/bin/env python
"""Publish the verdict: archive the finished runs of results/verdict into docs/runs/verdict (compact files, no
checkpoints, paths made relative), recompute docs/verdict/ from docs/runs/ with `kfac-bench report`'s code, and
refresh the README's verdict block (:mod:`kfac_bench.reproduce.verdict`). The tuned comparison's runs go the same way
(results/fair into docs/runs/fair; its own report into docs/fair/; the README's row that is not a claim of the paper).

    python scripts/publish_verdict.py [--results results/verdict] [--skip-archive]
    python scripts/publish_verdict.py --results results/fair
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # this checkout's package, installed or not

from kfac_bench.report.archive import archive_runs  # noqa: E402
from kfac_bench.reproduce.verdict import RUNS_ROOT, publish_verdict  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/verdict", help="a profile's results folder (results/verdict, results/fair)")
    parser.add_argument("--data-dir", default=os.environ.get("KFAC_BENCH_DATA", "data"))
    parser.add_argument("--skip-archive", action="store_true", help="recompute from docs/runs/ as committed")
    args = parser.parse_args()
    os.chdir(ROOT)
    if not args.skip_archive and Path(args.results).is_dir():
        written = archive_runs(args.results, Path(RUNS_ROOT) / Path(args.results).name, data_dir=args.data_dir,
                               checkout=Path(args.results).resolve().parent.parent)
        print(f"archived {len(written)} finished run(s) of {args.results} into {RUNS_ROOT}/")
    from kfac_bench.reproduce import load_profile, settings_plan_size  # noqa: E402
    planned = {"verdict": settings_plan_size(load_profile("verdict"))}
    out = publish_verdict(planned)
    print(f"verdict recomputed into {out.relative_to(ROOT)}/ and the README's verdict block")
