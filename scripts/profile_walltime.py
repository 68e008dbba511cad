#!/usr/bin/env python
"""The measured wall time of a profile's runs, from their ``summary.json`` (what a closing note reports as a
profile's cost): per dataset and horizon, the number of runs by status, the summed run wall time (started ->
finished; a resumed run counts from its last start) and the summed training time (``total_time_s``), and in
total the machine time at ``--jobs`` runs side by side.

    python scripts/profile_walltime.py docs/runs/verdict [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def run_times(root: str | Path) -> pd.DataFrame:
    """One row per run folder under ``root`` holding a summary.json."""
    rows = []
    root = Path(root)
    for path in sorted(root.rglob("summary.json")):
        s = json.loads(path.read_text())
        wall = (pd.Timestamp(s["finished"]) - pd.Timestamp(s["started"])).total_seconds() \
            if s.get("started") and s.get("finished") else float("nan")
        kind = "fisher study" if "fisher" in path.relative_to(root).parts[:1] else "training run"
        rows.append({"kind": kind, "dataset": s.get("dataset"), "epochs": s.get("epochs_requested"), "seed": s.get("seed"),
                     "status": s.get("status"), "wall_s": wall, "training_s": s.get("total_time_s") or 0.0})
    runs = pd.DataFrame(rows, columns=["kind", "dataset", "epochs", "seed", "status", "wall_s", "training_s"])
    return runs.astype({"epochs": "Int64", "seed": "Int64"}).fillna({"status": "-"})


def walltime_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, dataset, horizon): runs, their statuses, seeds, summed wall and training hours."""
    grouped = runs.groupby(["kind", "dataset", "epochs"], dropna=False)
    table = grouped.agg(runs=("status", "size"), seeds=("seed", lambda s: ",".join(map(str, sorted(set(s.dropna()))))),
                        wall_h=("wall_s", "sum"), training_h=("training_s", "sum"))
    table["statuses"] = grouped["status"].agg(lambda s: ", ".join(f"{k} {v}" for k, v in s.value_counts().items()))
    table[["wall_h", "training_h"]] /= 3600
    return table.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a profile's results folder (results/verdict, docs/runs/verdict)")
    parser.add_argument("--jobs", type=int, default=2, help="runs that trained side by side (the profile's jobs)")
    args = parser.parse_args()
    runs = run_times(args.results)
    if runs.empty:
        raise SystemExit(f"no summary.json under {args.results}: nothing to sum")
    print(walltime_table(runs).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    wall, training = runs["wall_s"].sum() / 3600, runs["training_s"].sum() / 3600
    print(f"all: {len(runs)} runs, run wall time {wall:.2f} h, training {training:.2f} h; "
          f"at {args.jobs} side by side about {wall / args.jobs:.2f} h of the machine")


if __name__ == "__main__":
    main()
