#!/usr/bin/env bash
# The CUDA benchmarks of the SAM stage (issue 7) and the GeoPixel trainer (issue 8), in one command.
#
#   here:   scripts/device_wheels.sh           # once: wheels the GPU machine lacks → .whl/
#   there:  bash scripts/device_bench.sh       # with .whl carried; results also in $OUT (or bench_out/)
#
# Random weights throughout (nothing is downloaded). Prints the GPU, then the SAM table (ours vs stock
# SamPredictor, vit_b and vit_h, 32 tiles of 800² with 50 boxes each) and the GeoPixel-scale training step
# (8,192 tokens, activation checkpointing on and off). Each part is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-bench_out}
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the carried wheels"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT_DIR/device.txt"
timeout "${SAM_BENCH_S:-240}" python3 -m pipeline.sam.bench --models "${SAM_MODELS:-vit_b,vit_h}" --tiles 32 --boxes 50 \
  2>&1 | tee "$OUT_DIR/sam_bench.txt"
sam=${PIPESTATUS[0]}
timeout "${GEOPIXEL_BENCH_S:-300}" python3 -m geopixel.bench 2>&1 | tee "$OUT_DIR/geopixel_bench.txt"
geo=${PIPESTATUS[0]}
echo "exit codes: sam bench $sam, geopixel bench $geo"
[ "$sam" -eq 0 ] && [ "$geo" -eq 0 ]
