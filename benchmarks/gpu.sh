#!/usr/bin/env bash
# The GPU checks of issue 14, in one run of under 5 minutes on one CUDA device:
#   1. bench_fit on CUDA: fit against the hand-written loop (paired ratio, bar >= 0.95);
#   2. bench_fused on CUDA: K seeds fused against K sequential fit calls (bar >= 8x at K=16, mnist1d CNN);
#   3. a small sweep on one GPU with trials_per_device 1 and then 4: wall time and the ratio.
# Usage, from the repository root on the GPU machine (Python with torch, optuna, hydra-core, mlflow,
# pandas and mnist1d importable, e.g. from wheels carried in .whl/):
#   PYTHON=python3 bash benchmarks/gpu.sh 2>&1 | tee gpu.log
set -u
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" || exit 1

echo "== 1. bench_fit on CUDA (fit / hand-written loop; bar paired >= 0.95)"
timeout 90 "$PY" benchmarks/bench_fit.py --device cuda --repeats 5 --diagnostics on --data-root "$work/data"

echo "== 2. bench_fused on CUDA (fused / sequential; bar >= 8x at K=16 on the mnist1d CNN)"
timeout 120 "$PY" benchmarks/bench_fused.py --device cuda --ks 1 4 8 16 32 --data-root "$work/data"

echo "== 3. a sweep on one GPU: trials_per_device 1 against 4 (depth_mnist1d, 16 trials, no pruning)"
cd "$work" || exit 1
walls=()
for n in 1 4; do
  start=$(date +%s.%N)
  timeout 60 "$PY" -m ablate sweep depth_mnist1d "name=gpu_tpd$n" n_trials=16 pruner=none "devices=[0]" \
    "trials_per_device=$n" data.root="$work/data" trainer.epochs=10 >"sweep$n.log" 2>&1 \
    || { echo "sweep trials_per_device=$n failed:"; tail -5 "sweep$n.log"; }
  end=$(date +%s.%N)
  walls+=("$(echo "$end - $start" | bc)")
  echo "trials_per_device=$n: wall ${walls[-1]} s"
done
echo "trials_per_device 4 / 1 throughput: $(echo "scale=2; ${walls[0]} / ${walls[1]}" | bc)x"
