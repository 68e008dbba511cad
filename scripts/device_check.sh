#!/usr/bin/env bash
# The GPU check (issue 15), one prepared script, under 8 minutes on one GPU:
#   1. the CUDA tests (tests/test_cuda.py: CPU/CUDA agreement, no host sync per step, run folders, resume);
#   2. one epoch of every method on every dataset on CUDA, alone on the GPU (seconds per epoch);
#   3. `kfac-bench bench device=cuda` (every method against SGD) and the ASDL peer bench on CUDA;
#   4. the concurrency scaling: 1, 2, 4, 8, 16 concurrent CURVES runs -> runs per hour;
#   5. one table (device_check.md) with the `cost.cuda` and `concurrency.scaling` entries for
#      conf/profile/gpu.yaml and the profile's estimate with them.
#
# Usage:
#   scripts/device_check.sh --prepare   # HERE (network): wheels + data into device_payload/ (ignored, < 64 MiB)
#   scripts/device_check.sh --dry-run   # list what it would run; checks nothing but the payload's presence
#   scripts/device_check.sh             # ON THE GPU MACHINE (no network): venv, install, run, table
# The GPU machine's python3 must already provide torch (2.4 .. 2.14; 2.11 there), numpy, scipy, pandas,
# matplotlib, h5py, tqdm, joblib, PyYAML, cloudpickle, packaging and setuptools. That python3 is itself
# a venv (/opt/torch/.venv), so a venv made from it with --system-site-packages would NOT see its
# packages (that flag means the base interpreter's): the payload's wheels (hydra-core, omegaconf, antlr4,
# the launchers, submitit, asdfghjkl) and the project (--no-deps) are installed with pip --target into
# one folder put on PYTHONPATH, over python3's own packages. Results go to $OUT when set (the device
# tool's folder), else results/device_check/<time>.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAYLOAD="${KFAC_DEVICE_PAYLOAD:-$ROOT/device_payload}"
MODE=run
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument $arg (use --prepare, --dry-run or nothing)" >&2; exit 2 ;;
  esac
done

# wheels for the GPU machine's python (3.12, x86-64): only what its image lacks (the device tool's
# KINDS.md lists its packages; carrying a second version of one it has would shadow it)
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 hydra-joblib-launcher==1.2.0
        hydra-submitit-launcher==1.2.0 submitit==1.5.4 asdfghjkl==0.1a5)   # the versions the dev venv runs
PAYLOAD_LIMIT_MIB=56      # the whole travelling tree may hold 64 MiB; the checkout itself is ~4 MiB

if [ "$MODE" = prepare ]; then
  set -e
  PY="${PYTHON:-python3}"
  rm -rf "$PAYLOAD"; mkdir -p "$PAYLOAD/wheels"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$PAYLOAD/wheels" "${WHEELS[@]}" 2>/dev/null || {
      # sdist-only packages (antlr4 4.9.3, hydra's launchers are wheels) are built into wheels here
      "$PY" -m pip wheel --quiet --no-deps -w "$PAYLOAD/wheels" "${WHEELS[@]}"; }
  MNIST="${KFAC_BENCH_DATA:-$ROOT/data}/mnist/raw"
  [ -f "$MNIST/train-images-idx3-ubyte" ] || MNIST="$ROOT/data/data/mnist/raw"
  [ -f "$MNIST/train-images-idx3-ubyte" ] || { echo "no MNIST idx files under $MNIST: kfac-bench data fetch mnist" >&2; exit 1; }
  tar -C "$MNIST" -cJf "$PAYLOAD/mnist_raw.tar.xz" train-images-idx3-ubyte train-labels-idx1-ubyte \
    t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
  OLIVETTI="${KFAC_BENCH_OLIVETTI:-$ROOT/kfac_bench/data/olivetti/olivettifaces.mat}"   # default: the shipped copy
  [ -f "$OLIVETTI" ] || { echo "no Olivetti file at $OLIVETTI: set KFAC_BENCH_OLIVETTI" >&2; exit 1; }
  cp "$OLIVETTI" "$PAYLOAD/olivettifaces.mat"
  size_kib=$(du -sk "$PAYLOAD" | cut -f1)
  echo "device_payload: $(ls "$PAYLOAD/wheels" | wc -l) wheels, MNIST, Olivetti: $((size_kib / 1024)) MiB in $PAYLOAD"
  if [ $((size_kib / 1024)) -ge $PAYLOAD_LIMIT_MIB ]; then
    echo "device_payload: over ${PAYLOAD_LIMIT_MIB} MiB: it would not travel with the checkout" >&2; exit 1
  fi
  exit 0
fi

OUTDIR="${OUT:-$ROOT/results/device_check/$(date -u +%Y%m%d-%H%M%S)}"
WORK="${DEVICE_CHECK_WORK:-/tmp/kfac-device-check}"
SITE="$WORK/site"
DATA="$WORK/data"
PYV=python3
KB=("$PYV" -m kfac_bench.cli)
# the paper's methods, from the one list (kfac_bench/registry.py imports nothing heavy)
ALL_METHODS=$(PYTHONPATH="$ROOT" "${PYTHON:-python3}" -c \
  'from kfac_bench.registry import paper_method_names; print(",".join(paper_method_names()))') \
  || { echo "device_check.sh: cannot read the methods from kfac_bench/registry.py" >&2; exit 1; }
FACES_SIZE=(dataset.generator.n_images=25000 dataset.n_train=20000 dataset.n_val=5000)   # x 82800/20000 in the table

STEPS=()
step() {   # step NAME TIMEOUT_S COMMAND...: run (or list) one step, its output in $OUTDIR/NAME.log
  local name="$1" limit="$2"; shift 2
  if [ "$MODE" = dry ]; then
    printf '[%s, at most %ss]\n  %s\n' "$name" "$limit" "$*"
    return 0
  fi
  local t0=$SECONDS
  echo "== $name (at most ${limit}s)"
  timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  STEPS+=("$name: exit $rc in $((SECONDS - t0))s")
  echo "   exit $rc in $((SECONDS - t0))s (log $OUTDIR/$name.log)"
  tail -n 3 "$OUTDIR/$name.log" | sed 's/^/   | /'
  return 0
}

if [ "$MODE" = dry ]; then
  echo "device_check.sh --dry-run: what a run on a GPU machine does (results: \$OUT or results/device_check/<time>)"
  for f in wheels/hydra_core-*.whl mnist_raw.tar.xz olivettifaces.mat; do
    compgen -G "$PAYLOAD/$f" >/dev/null && echo "payload: $PAYLOAD/$f present" || echo "payload: $PAYLOAD/$f MISSING (run --prepare here first)"
  done
  printf '[install]\n  %s\n  %s\n' "$PYV -m pip install --no-index --no-deps --target $SITE $PAYLOAD/wheels/*.whl" \
    "$PYV -m pip install --no-index --no-deps --no-build-isolation --target $SITE $ROOT  (else PYTHONPATH=$ROOT); PYTHONPATH=$SITE"
else
  mkdir -p "$OUTDIR" "$WORK" "$DATA/mnist/raw"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUTDIR/gpu.txt"
  for f in wheels/hydra_core-*.whl mnist_raw.tar.xz olivettifaces.mat; do
    compgen -G "$PAYLOAD/$f" >/dev/null || { echo "device_check.sh: $PAYLOAD/$f is missing: run scripts/device_check.sh --prepare where pip works, and carry device_payload" >&2; exit 1; }
  done
  python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
    || { echo "device_check.sh: python3 has no torch with CUDA here" >&2; exit 1; }
  rm -rf "$SITE"
  "$PYV" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$PAYLOAD"/wheels/*.whl \
    || { echo "device_check.sh: installing the payload's wheels failed" >&2; exit 1; }
  # the project itself, built with the image's setuptools; where that fails the checkout runs instead
  if "$PYV" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
       --target "$SITE" "$ROOT" >"$OUTDIR/install.log" 2>&1; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "device_check.sh: pip could not build the project (see $OUTDIR/install.log): running the checkout"
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PATH="$SITE/bin:$PATH"
  "$PYV" -c "import hydra, omegaconf, kfac_bench, torch; print('kfac_bench from', kfac_bench.__file__)" \
    || { echo "device_check.sh: the installed packages do not import" >&2; exit 1; }
  tar -C "$DATA/mnist/raw" -xJf "$PAYLOAD/mnist_raw.tar.xz"
  export KFAC_BENCH_DATA="$DATA" KFAC_BENCH_OLIVETTI="$PAYLOAD/olivettifaces.mat" KFAC_BENCH_RESULTS="$WORK/results"
  export PYTHONUNBUFFERED=1
  cd "$WORK"    # the installed package (or the checkout, above), not the current folder, is what runs
fi

step cuda_tests 100 "$PYV" -m pytest -q -p no:cacheprovider "$ROOT/tests/test_cuda.py" -ra
step epochs_curves_mnist 110 "${KB[@]}" run -m "optimizer=$ALL_METHODS" dataset=curves,mnist trainer.epochs=1 \
  device=cuda trainer.progress=false "hydra.sweep.dir=$WORK/epochs" 'hydra.sweep.subdir=${dataset.name}_${optimizer.name}'
step epochs_faces 70 "${KB[@]}" run -m "optimizer=$ALL_METHODS" dataset=faces trainer.epochs=1 "${FACES_SIZE[@]}" \
  device=cuda trainer.progress=false "hydra.sweep.dir=$WORK/epochs" 'hydra.sweep.subdir=${dataset.name}_${optimizer.name}'
step bench 50 "${KB[@]}" bench device=cuda bench.threads=null bench.rounds=2 "hydra.run.dir=$WORK/bench"
step bench_peers 30 "${KB[@]}" bench device=cuda 'bench.peers=[asdl]' 'bench.datasets=[mnist]' bench.threads=null \
  "hydra.run.dir=$WORK/bench_peers"
step scaling 100 "$PYV" -m kfac_bench.runs.concurrency scaling --ks 1,2,4,8,16 --time-limit 40 --out "$WORK/scaling.json" \
  --work-dir "$WORK/scaling" -- dataset=curves optimizer=kfac trainer.epochs=1 device=cuda threads=1
step table 20 "$PYV" "$ROOT/scripts/device_table.py" --work "$WORK" --out "$OUTDIR/device_check.md" \
  --faces-scale 4.14 --profile "$ROOT/conf/profile/gpu.yaml"

if [ "$MODE" = run ]; then
  printf '%s\n' "${STEPS[@]}" > "$OUTDIR/steps.txt"
  cp "$WORK/bench/bench.md" "$OUTDIR/bench.md" 2>/dev/null
  cp "$WORK/bench_peers/bench_peers.md" "$OUTDIR/bench_peers.md" 2>/dev/null
  cp "$WORK/scaling.json" "$OUTDIR/scaling.json" 2>/dev/null
  echo; cat "$OUTDIR/device_check.md" 2>/dev/null || echo "no table: see $OUTDIR/table.log"
  echo; printf '%s\n' "${STEPS[@]}"
fi
