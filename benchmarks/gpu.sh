#!/usr/bin/env bash
# The GPU checks of issue 14, in one run of under 5 minutes on one CUDA device:
#   1. bench_fit on CUDA: fit against the hand-written loop (paired ratio, bar >= 0.95);
#   2. bench_fused on CUDA: K seeds fused against K sequential fit calls (bar >= 8x at K=16, mnist1d CNN);
#   3. a small sweep on one GPU with trials_per_device 1 and then 4: wall time and the ratio.
# Usage, from the repository root on the GPU machine (Python with torch, optuna, hydra-core, mlflow,
# pandas and mnist1d importable, e.g. from wheels carried in .whl/):
#   PYTHON=python3 bash benchmarks/gpu.sh 2>&1 | tee gpu.log
# DEVICE=cpu SMOKE=1 bash benchmarks/gpu.sh runs the same steps, tiny, on the CPU (a check of the script).
set -u
PY=${PYTHON:-python3}
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # step 3 runs elsewhere
DEVICE=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" || exit 1
  pin=("devices=[0]")
else
  pin=()
fi
if [ "${SMOKE:-0}" = 1 ]; then
  fit_args=(--repeats 1 --epochs 2) fused_args=(--ks 1 4 --epochs 1 --repeats 1 --warmup 0) trials=4 epochs=1
else
  fit_args=(--repeats 5) fused_args=(--ks 1 4 8 16 32) trials=16 epochs=10
fi

echo "== 1. bench_fit on $DEVICE (fit / hand-written loop; bar paired >= 0.95)"
timeout 90 "$PY" benchmarks/bench_fit.py --device "$DEVICE" "${fit_args[@]}" --diagnostics on --data-root "$work/data"

echo "== 2. bench_fused on $DEVICE (fused / sequential; bar >= 8x at K=16 on the mnist1d CNN)"
timeout 120 "$PY" benchmarks/bench_fused.py --device "$DEVICE" "${fused_args[@]}" --data-root "$work/data"

echo "== 3. a sweep on one $DEVICE: trials_per_device 1 against 4 (depth_mnist1d, $trials trials, no pruning)"
cd "$work" || exit 1
walls=()
for n in 1 4; do
  start=$(date +%s.%N)
  timeout 60 "$PY" -m ablate sweep depth_mnist1d "name=gpu_tpd$n" "n_trials=$trials" pruner=none ${pin[@]+"${pin[@]}"} \
    "trials_per_device=$n" "workers=$n" data.root="$work/data" "trainer.epochs=$epochs" >"sweep$n.log" 2>&1 \
    || { echo "sweep trials_per_device=$n failed:"; tail -5 "sweep$n.log"; }
  end=$(date +%s.%N)
  walls+=("$(echo "$end - $start" | bc)")
  echo "trials_per_device=$n: wall ${walls[-1]} s ($(grep -c . "sweep$n.log") log lines)"
done
echo "trials_per_device 4 / 1 throughput: $(echo "scale=2; ${walls[0]} / ${walls[1]}" | bc)x"
