"""The table of scripts/device_check.sh: what its steps measured on the GPU, and the entries of
conf/profile/gpu.yaml that follow from it.

    python scripts/device_table.py --work /tmp/kfac-device-check --out device_check.md \
        [--faces-scale 4.14] [--profile conf/profile/gpu.yaml]

Reads, under ``--work``: ``epochs/<dataset>_<method>/metrics.csv`` (one epoch of each run alone on
the GPU: training time + evaluation time of epoch 1; FACES ran on a subset and is multiplied by
``--faces-scale``), ``bench/bench.csv`` (``kfac-bench bench device=cuda``),
``bench_peers/bench_peers.csv`` and ``scaling.json`` (runs per hour at K concurrent CURVES runs).

From the scaling it takes K as the reproduction script would (:func:`kfac_bench.runs.concurrency.jobs_from_scaling`)
and the slowdown of one run among K, ``K x rph(1) / rph(K)``; ``cost.cuda`` is then the seconds per
epoch of one run among K concurrent ones (alone x slowdown), which is what the profile's estimate
(``sum of run costs / K``) needs. With ``--profile`` it prints that profile's estimate with these
entries (``reproduce_paper.py --dry-run`` on a copy). Missing inputs are reported, not fatal.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ["sgd", "adam", "kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected"]
DATASETS = ["curves", "mnist", "faces"]


def _bench_cell(row: dict | None) -> str:
    """One method's bench cell: its ratio to SGD and step, ``failed`` where the bench's failure column says
    it left the bench, ``-`` where it was not timed."""
    if row is None:
        return "-"
    if row.get("failure"):
        return "failed"
    return f"{float(row['ratio_sgd']):.2f} ({float(row['step_ms']):.1f} ms)"


ROOT = Path(__file__).resolve().parent.parent


def epoch_seconds(work: Path, faces_scale: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for d in DATASETS:
        for m in METHODS:
            path = work / "epochs" / f"{d}_{m}" / "metrics.csv"
            if not path.is_file():
                continue
            rows = [r for r in csv.DictReader(open(path)) if r["epoch"] == "1"]
            if not rows:
                continue
            seconds = float(rows[0]["time_s"]) + float(rows[0]["eval_time_s"])
            out.setdefault(d, {})[m] = seconds * (faces_scale if d == "faces" else 1.0)
    return out


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path))) if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--faces-scale", type=float, default=1.0)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from kfac_bench.runs.concurrency import jobs_from_scaling

    work = Path(args.work)
    lines = ["# device_check", ""]
    alone = epoch_seconds(work, args.faces_scale)
    scaling_path = work / "scaling.json"
    scaling = ({int(k): float(v) for k, v in json.loads(scaling_path.read_text())["runs_per_hour"].items()}
               if scaling_path.is_file() else {})
    k = jobs_from_scaling(scaling) if scaling else 1
    slowdown = k * scaling[1] / scaling[k] if scaling and 1 in scaling else 1.0

    lines += ["## Seconds per epoch, one run alone on the GPU (training + evaluation; FACES x "
              f"{args.faces_scale:g} from its subset)", ""]
    if alone:
        lines += ["| dataset | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
        for d, per in alone.items():
            lines.append(f"| {d} | " + " | ".join(f"{per[m]:.2f}" if m in per else "-" for m in METHODS) + " |")
    else:
        lines.append(f"(no epochs/*/metrics.csv under {work})")

    lines += ["", "## Concurrency: CURVES KFAC runs (1 epoch) at K concurrent runs", ""]
    if scaling:
        lines += ["| K | runs per hour | per-run slowdown |", "|---|---|---|"]
        for kk in sorted(scaling):
            lines.append(f"| {kk} | {scaling[kk]:.0f} | {kk * scaling[1] / scaling[kk]:.2f} |" if 1 in scaling
                         else f"| {kk} | {scaling[kk]:.0f} | - |")
        lines.append(f"\nK chosen (smallest within 5 % of the best): {k}; one run among {k} is {slowdown:.2f}x slower")
    else:
        lines.append(f"(no {scaling_path})")

    bench = read_csv(work / "bench" / "bench.csv")
    lines += ["", "## kfac-bench bench device=cuda (amortised step / SGD step)", ""]
    if bench:
        lines += ["| dataset | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
        for d in DATASETS:
            per = {r["method"]: r for r in bench if r["dataset"] == d}
            if per:
                lines.append(f"| {d} | " + " | ".join(_bench_cell(per.get(m)) for m in METHODS) + " |")
    else:
        lines.append("(no bench/bench.csv)")
    peers = read_csv(work / "bench_peers" / "bench_peers.csv")
    if peers:
        lines += ["", "## Peer bench on CUDA (ASDL)", "", "| dataset | ours KFAC/SGD | ASDL KFAC/SGD | ours/ASDL KFAC |",
                  "|---|---|---|---|"]
        for r in peers:
            lines.append(f"| {r['dataset']} | {float(r['ours_ratio']):.2f} | {float(r['asdl_ratio']):.2f} | "
                         f"{float(r['ours_over_asdl']):.2f} |")

    cost = {d: {m: round(s * slowdown, 3) for m, s in per.items()} for d, per in alone.items()}
    snippet = ["cost:", "  cuda:   # seconds per epoch of one run among K concurrent (alone x slowdown)"]
    snippet += [f"    {d}: {{{', '.join(f'{m}: {v}' for m, v in per.items())}}}" for d, per in cost.items()]
    snippet += ["concurrency:", f"  scaling: {{{', '.join(f'{kk}: {v:.0f}' for kk, v in sorted(scaling.items()))}}}"]
    lines += ["", "## For conf/profile/gpu.yaml", "", "```yaml", *snippet, "```"]

    if args.profile and cost:
        from omegaconf import OmegaConf
        profile = OmegaConf.to_container(OmegaConf.load(args.profile), resolve=True)
        profile["cost"]["cuda"] = cost
        profile.setdefault("concurrency", {})["scaling"] = {kk: v for kk, v in scaling.items()} or None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gpu_measured.yaml"
            OmegaConf.save(OmegaConf.create(profile), path)
            olivetti = os.environ.get("KFAC_BENCH_OLIVETTI")   # FACES is planned only with its source file
            where = ["--olivetti", olivetti] if olivetti else ["--datasets", "curves,mnist"]
            proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce_paper.py"), "--profile",
                                   str(path), "--device", "cuda", "--dry-run", "--results-dir", str(Path(tmp) / "r"),
                                   *where], capture_output=True, text=True)
        found = [ln for ln in proc.stdout.splitlines() if "ESTIMATED" in ln or "jobs auto" in ln]
        lines += ["", "## The gpu profile's estimate with these entries", "", *(found or [proc.stderr.strip()[-500:]])]

    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
