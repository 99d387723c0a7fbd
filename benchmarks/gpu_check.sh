#!/usr/bin/env bash
# Every GPU measurement the GPU table of docs/speed.md needs, in one call to a GPU machine (7.5 min on an H100, plus
# about a minute to start it; what decides the default comes first):
# single 20-epoch runs timed end to end in fresh processes (capture included), seeds for the accuracy
# distributions, tests/test_cuda.py, training images/s and profiles (eager vs the step replayed as CUDA graphs).
#
# Once, on a machine with the data (the device machine has no network; MNIST travels gzipped, ~11 MB):
#   mkdir -p .gpu && for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > ".gpu/${f##*/}.gz"; done
#   echo /.gpu/ >> .git/info/exclude
# Then run `bash benchmarks/gpu_check.sh` there, carrying .gpu; it writes gpu_check_all.log and results/ (the
# JSON of every run) into $OUT as it goes: a call cut off at its limit still brings back what finished. Only 8
# files come back from a device call: the log holds every run's numbers too. With a device budget too short
# for all of it and a rerun, run `bash benchmarks/gpu_check.sh decide` (5.5 min) first, then `rest` (2 min).
# Rehearse it here on the CPU with tiny settings (~10 min on 2 cores; fp16, slow on a CPU, hits its cap):
#   MNIST_DATA_DIR=... EXTRA="--device cpu --epochs 1 --seeds 1" THROUGHPUT="--device cpu --batches 2
#   --repeats 1 --matmul-size 512" TESTS=tests/test_compile.py bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
EXTRA=${EXTRA:-}            # appended to every full run (argparse: the last value wins)
THROUGHPUT=${THROUGHPUT:-}  # appended to the throughput run
TESTS=${TESTS:-tests/test_cuda.py}
part=${1:-all}              # decide (what #14 needs), rest, or all: their times are in the header
case $part in decide|rest|all) ;; *) echo "usage: bash benchmarks/gpu_check.sh [decide|rest|all]"; exit 2 ;; esac
results=$OUT/results
mkdir -p "$results"
if [ -z "${MNIST_DATA_DIR:-}" ]; then
    export MNIST_DATA_DIR=/tmp/mnist
    mkdir -p "$MNIST_DATA_DIR/MNIST/raw"
    for f in .gpu/*.gz; do gunzip -c "$f" > "$MNIST_DATA_DIR/MNIST/raw/$(basename "$f" .gz)" || exit 1; done
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python=${PYTHON:-python3}

full() {  # full NAME ARGS...: whole runs into $results/NAME.json, each step capped at 4 minutes
    local name=$1; shift
    echo "== full $name: $*"
    local start=$SECONDS
    timeout 240 "$python" benchmarks/bench.py --mode full "$@" --out "$results/$name.json" $EXTRA
    echo "process wall time $((SECONDS - start)) s (python's start and imports included)"
}

decide() {  # what issue #14 is decided by
    # First what decides the default: single 20-epoch runs timed end to end, one fresh process each (what a
    # user's `python train.py` pays, capture or compile included): eager, the default (auto: graphed) and
    # torch.compile's CUDA graphs, all in this one call.
    for mode in off auto cudagraphs; do
        full "time_s5_$mode" --recipe s5 --seeds 1 --compile "$mode"
        full "time_onecycle_$mode" --recipe onecycle --seeds 1 --compile "$mode"
    done
    # Accuracy over 5 seeds (in one process, later seeds reuse the first one's captures).
    full s5_seeds1-5 --recipe s5 --seeds 5
    full s5_eager_seeds1-5 --recipe s5 --seeds 5 --compile off
    full onecycle_seeds1-5 --recipe onecycle --seeds 5
    full onecycle_eager_seeds1-5 --recipe onecycle --seeds 5 --compile off
    full s5_fp16_seeds1-5 --recipe s5 --seeds 5 --precision fp16
    echo "== tests"
    timeout 200 "$python" -m pytest -q -p no:cacheprovider "$TESTS"
    echo "== train.py --dry-run, as a user starts it (it names the step it replays)"
    timeout 60 "$python" train.py --dry-run
}

rest() {  # docs/speed.md's other GPU numbers
    echo "== throughput and profiles"
    timeout 120 "$python" benchmarks/bench.py --compile off $THROUGHPUT
    for mode in off auto; do
        timeout 60 "$python" benchmarks/bench.py --mode profile --compile "$mode" $THROUGHPUT
    done
    full tuned_seeds1-5 --recipe tuned --seeds 5
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv 2>/dev/null
    "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    case $part in
        decide) decide ;;
        rest) rest ;;
        *) decide; rest ;;
    esac
    date -u
} 2>&1 | tee "$OUT/gpu_check_$part.log"
