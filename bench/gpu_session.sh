#!/usr/bin/env bash
# One device call that does the GPU work a session owes: install, the `gpu`-marked tests, then the
# benchmarks (quick grids first so something comes back even if a later step runs out of time).
# Usage on the device machine:  bash bench/gpu_session.sh [tests|kernels|train|all]
# (each part fits one 10-minute device call; logs and CSVs go under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/maskedbert-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python3 - <<'PY' | tee "$OUT/env.txt"
import torch, triton, transformers
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, transformers.__version__)
PY
part=${1:-all}
if [[ $part == tests || $part == all ]]; then
timeout 300 python3 -m pytest -m gpu -q -x --no-header -p no:cacheprovider tests 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt"
fi
if [[ $part == kernels || $part == all ]]; then
timeout 180 python3 bench/masked_linear.py --quick --csv "$OUT/masked_linear.csv" 2>&1 | tail -30 | tee "$OUT/bench_masked_linear.txt"
timeout 90 python3 bench/topk.py --csv "$OUT/topk.csv" 2>&1 | tail -20 | tee "$OUT/bench_topk.txt"
fi
if [[ $part == train || $part == all ]]; then
timeout 240 python3 bench/train_step.py --models base --seqs 128 --csv "$OUT/train_step.csv" --plot "$OUT/train_step.png" 2>&1 | tail -20 | tee "$OUT/bench_train_step.txt"
fi
