#!/usr/bin/env bash
# The GPU rows of bench/results/gpu.md, as run on a lent H100 with no network.
#   bash bench/gpu_run.sh small   # the embedded model's shape (random weights), device-map tests, both benches
#   bash bench/gpu_run.sh large   # a TinyLlama-1.1B-shaped model (random weights), 2048-token windows
# Needs: python3 with torch, transformers, accelerate; the pure-Python packages and the embedded model's
# config + tokenizer copied under .gpu/ (the machine cannot install; see bench/results/gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.gpu/lib/python3.11/site-packages:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export WORKBENCH_CACHE_DIR=/tmp/wb-cache HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, accelerate, lxt, textual; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'textual', textual.__version__)"
case "${1:-small}" in
small)
  python3 bench/random_model.py --like .gpu/models/smollm2-config --out /tmp/smol-rnd --dtype bfloat16
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_device_map.py 2>&1 | tail -25 | tee "$OUT/device-map-tests.txt"
  timeout 200 python3 bench/engine.py --model /tmp/smol-rnd --device cuda --dtype bfloat16 --quick --long-seq-len 2048 2>&1 \
    | grep -v "Loading weights" | tee "$OUT/engine-smollm2-shape.txt"
  timeout 200 python3 bench/tui.py --model /tmp/smol-rnd 2>&1 | grep -v "Loading weights" | tee "$OUT/tui-smollm2-shape.txt"
  ;;
large)
  python3 bench/random_model.py --like .gpu/models/smollm2-config --out /tmp/smol-rnd --dtype bfloat16
  python3 bench/random_model.py --preset tinyllama-1.1b --tokenizer .gpu/models/smollm2-config --out /tmp/tl-rnd --dtype bfloat16
  python3 -c "from profanity_check import predict_prob; print('profanity_check', predict_prob(['you idiot', 'hello there']))" 2>&1 | tail -1
  timeout 100 python3 bench/engine.py --model /tmp/smol-rnd --device cuda --dtype bfloat16 --quick --long-seq-len 2048 \
    --no-first-apply 2>&1 | grep -v "Loading weights" | tee "$OUT/engine-smollm2-shape.txt"
  timeout 280 python3 bench/engine.py --model /tmp/tl-rnd --device cuda --dtype bfloat16 --quick --samples 4 --seq-len 2048 \
    --batch-size 1 --long-seq-len 2048 --no-first-apply 2>&1 | grep -v "Loading weights" | tee "$OUT/engine-tinyllama-shape.txt"
  timeout 170 python3 bench/tui.py --idle-only --model /tmp/tl-rnd 2>&1 | grep -v "Loading weights" | tee "$OUT/tui-tinyllama-shape.txt"
  ;;
esac
