#!/usr/bin/env python
"""Copy the compact files of the finished runs of a results folder (no checkpoints), with machine-local
paths made relative, e.g. into the repository's ``docs/runs/`` (:mod:`kfac_bench.report.archive`).

    python scripts/archive_runs.py results/verdict docs/runs/verdict [--data-dir data]
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # this checkout's package, installed or not

from kfac_bench.report.archive import archive_runs  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", help="a profile's results folder, e.g. results/verdict")
    parser.add_argument("dest", help="where the compact copies go, e.g. docs/runs/verdict")
    parser.add_argument("--data-dir", default=os.environ.get("KFAC_BENCH_DATA", "data"),
                        help="the data folder the runs read (its path becomes 'data')")
    args = parser.parse_args()
    if not Path(args.results_dir).is_dir():
        parser.error(f"{args.results_dir} is not a folder")
    written = archive_runs(args.results_dir, args.dest, data_dir=args.data_dir, checkout=Path.cwd())
    print(f"archived {len(written)} finished run(s) from {args.results_dir} into {args.dest}")
