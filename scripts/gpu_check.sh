#!/usr/bin/env bash
# The GPU check of issue 15, prepared to fit in 8 minutes of GPU time on one device:
#   1. `make paper-smoke DEVICE=cuda`: every row of Table 1 + Table 2 at the paper profile's sizes on
#      CUDA (random weights, 3 synthetic cases, schedules cut short), through MLflow and `clisc report`;
#   2. `benchmarks/paper_scale.py --device cuda --json`: the unit costs (CLIP, ResNet50 step, SAM ViT-B
#      encoder/decoder, U-Net step/window) that fill the GPU column of docs/PAPER_SCALE.md;
#   3. `benchmarks/fanout_projection.py` on those unit costs: Table 1 + 2 + sweeps on 1, 4, 8 GPUs.
# Everything it prints and writes goes to $OUT (default runs/gpu_check). Usage:
#   OUT=/tmp/out PY=.venv/bin/python scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-8}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || { echo "no nvidia-smi: not a GPU machine"; exit 2; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 2
status=0
start=$(date +%s)
# 1. the smoke run (5.5 min at most); `make` when this checkout has its venv, else the same script directly
if [ -x .venv/bin/python ] && [ "$PY" = .venv/bin/python ]; then
  timeout 330 make paper-smoke DEVICE=cuda SMOKE_THREADS="$THREADS" SMOKE_ARGS="--work $OUT/paper_smoke" || status=1
else
  OMP_NUM_THREADS=$THREADS timeout 330 "$PY" benchmarks/paper_smoke.py --device cuda --fresh \
    --work "$OUT/paper_smoke" || status=1
fi
echo "paper-smoke on cuda: exit $status after $(( $(date +%s) - start )) s"
# 2. unit costs on the GPU (2 min at most), bf16 + channels-last as well when time allows
timeout 120 "$PY" benchmarks/paper_scale.py --device cuda --json "$OUT/units_cuda.json" || status=1
# 3. the fan-out projection from them (seconds)
[ -f "$OUT/units_cuda.json" ] && "$PY" benchmarks/fanout_projection.py --units "$OUT/units_cuda.json" \
  | tee "$OUT/fanout_projection_cuda.md"
echo "gpu_check: exit $status after $(( $(date +%s) - start )) s"
exit $status
