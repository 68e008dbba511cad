#!/usr/bin/env bash
# The bit-identical check (issues 20, 31): a 2-epoch CURVES run of every registry method, seed 0, one
# thread, then an md5 of each run's epoch, iteration and loss columns (times excluded), one line a method.
# Run it before and after a change that must not change a number, from each checkout, and compare:
#   bash scripts/identical_runs.sh OUT_DIR [PYTHON]     (OUT_DIR/losses.md5 is the comparison file)
# It runs the checkout it is called from (PYTHONPATH=.), with PYTHON (default .venv/bin/python).
# Methods run one after the other (one thread each). PSGD-Kron (kron) is not bit-reproducible on a CPU: the same
# command twice on the same code differs in the 10th digit (measured in issue 31), so compare it to a tolerance.
set -euo pipefail
out=$(realpath -m "$1")
py=${2:-.venv/bin/python}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
methods=$("$py" -c "from kfac_bench.registry import method_names; print(' '.join(method_names()))")
for m in $methods; do
  "$py" -m kfac_bench.cli run optimizer="$m" dataset=curves trainer.epochs=2 seed=0 threads=1 trainer.progress=false \
    trainer.keep_checkpoint=false results_dir="$out/results" data_dir="$out/data" hydra.run.dir="$out/runs/$m" \
    > "$out/$m.log" 2>&1 || echo "$m: run failed (see $out/$m.log)"
done
"$py" - "$out" $methods <<'PY' | tee "$out/losses.md5"
import hashlib, sys, pathlib
import pandas as pd
out = pathlib.Path(sys.argv[1])
for m in sys.argv[2:]:
    path = out / "runs" / m / "metrics.csv"
    if not path.exists():
        print(f"{m:16s} missing"); continue
    frame = pd.read_csv(path)
    cols = [c for c in frame.columns if c in ("epoch", "iteration") or "loss" in c]
    digest = hashlib.md5(frame[cols].to_csv(index=False).encode()).hexdigest()
    print(f"{m:16s} {digest}  {','.join(cols)}  final train {frame['train_loss'].iloc[-1]!r}")
PY
