#!/usr/bin/env bash
# The GPU checks of one session, in one command, each step under its own time limit:
#   1. the tests whose CUDA paths are skipped on CPU (tests/gpu, engine, data, ensembles);
#   2. benchmarks/engine.py --device cuda      (sparse / dense step time, update cost);
#   3. benchmarks/ensemble.py --device cuda    (ensemble / dense inference time; then slim channel
#      tickets, --structure channel, at batch 1 and 256);
#   4. benchmarks/pipeline.py --gpu            (WRN-28-10 training throughput, fp32 / bf16 / compile);
#   5. freetickets demo --quick --device cuda  (every method end to end on the GPU).
# Usage, from the repository root on a machine with one CUDA GPU and PyTorch installed:
#   bash benchmarks/gpu_session.sh [OUTDIR]      (default: $OUT, else gpu-out)
# Each step's full output goes to OUTDIR/<step>.log; the last lines are echoed. Results of the
# sessions that ran it are in docs/benchmarks.md.
set -u
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FREETICKETS_CACHE=${FREETICKETS_CACHE:-$(mktemp -d)}
py=${PYTHON:-python3}

step() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "--- $name: exit $rc after $((SECONDS - t0)) s"
    tail -n "${TAIL:-22}" "$out/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"
step tests_cuda 120 $py -m pytest -q -p no:cacheprovider -rs tests/gpu tests/sparse tests/data tests/ensembles
step engine 75 $py benchmarks/engine.py --device cuda --quick
step ensemble 75 $py benchmarks/ensemble.py --device cuda --rounds 10
step ensemble_channel 60 $py benchmarks/ensemble.py --device cuda --structure channel --rounds 5 --batches 1 256 --cases mlp cnn1d wrn-16-8
step train_gpu 120 $py benchmarks/pipeline.py --gpu --gpu-steps 30
demo_dir=$(mktemp -d)
step demo 100 $py -m freetickets demo --quick --device cuda --out "$demo_dir"
cp "$demo_dir/report.md" "$out/demo_report.md" 2>/dev/null || true
