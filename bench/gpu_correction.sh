#!/usr/bin/env bash
# The GPU correction runs of bench/RESULTS.md ("Correction on a GPU"), as run on a lent H100 with no network.
# The machine takes 64 MiB of files per call, so the embedded model travels in parts (fp16, 269 MB) over
# consecutive calls while the machine stays warm, each part kept under /tmp there:
#   here:  python3 bench/gpu_correction.sh split          (writes .xfer/p0 .. .xfer/p4; .xfer/ is git-ignored)
#   there: bash bench/gpu_correction.sh part 0            (carry .gpu and .xfer/p0), then part 1 .. part 4
#   there: bash bench/gpu_correction.sh probe             (assembles the model; times one sweep step)
#   there: bash bench/gpu_correction.sh run SEEDS JOB...  (JOB = scorer:explain:behaviours, one process each)
# Then here: uv run python bench/correction.py --merge <the JSONs of one setting> --tag gpu...
set -uo pipefail
cd "$(dirname "$0")/.."
GPU=/tmp/gpu MODEL=/tmp/smol XFER=/tmp/xfer
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" "$XFER"
export PYTHONPATH="$GPU/lib/python3.11/site-packages:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export WORKBENCH_CACHE_DIR=/tmp/wb-cache HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
case "$1" in
split)  # here, before the calls
  .venv/bin/python - <<'EOF'
import torch
from pathlib import Path
from safetensors.torch import load_file, save_file
from core.model.loading import load_model
lm = load_model(None, "cpu", "float32")  # the embedded model, from its cache
sd = {k: v.to(torch.float16).contiguous() for k, v in lm.model.state_dict().items() if k != "lm_head.weight"}
save_file(sd, "/tmp/smol16.safetensors", metadata={"format": "pt"})
EOF
  mkdir -p .xfer && rm -f .xfer/p*
  head -c 38000000 /tmp/smol16.safetensors > .xfer/p0
  tail -c +38000001 /tmp/smol16.safetensors | split -b 58000000 -d -a 1 - .xfer/q
  for f in .xfer/q*; do mv "$f" ".xfer/p$(( ${f#.xfer/q} + 1 ))"; done
  ls -l .xfer; sha256sum /tmp/smol16.safetensors | cut -c1-16
  ;;
part)
  [ "$2" = 0 ] && rm -rf "$GPU" && cp -r .gpu "$GPU"
  cp ".xfer/p$2" "$XFER/" && ls -l "$XFER" && nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
  ;;
probe)
  mkdir -p "$MODEL" && cp "$GPU"/models/smollm2-config/* "$MODEL"/ && cat "$XFER"/p0 "$XFER"/p1 "$XFER"/p2 "$XFER"/p3 "$XFER"/p4 > "$MODEL/model.safetensors"
  sha256sum "$MODEL/model.safetensors" | cut -c1-16
  python3 - <<'EOF'
import time, torch
from core.model.loading import load_model, quiet_libraries
from core.evaluation import metrics as M
from core.data.prompt_sets import load_prompt_set
quiet_libraries()
lm = load_model("/tmp/smol", "cuda", "float32")
prompts = load_prompt_set("builtin:toxicity").generation_prompts(48)
for n in range(2):
    t = time.perf_counter(); out = M.generations(lm.model, lm.tokenizer, prompts, 50); torch.cuda.synchronize()
    print(f"greedy, {len(prompts)} prompts x 50 tokens: {time.perf_counter() - t:.2f} s; {out[0][1][:60]!r}")
EOF
  ;;
run)
  seeds=$2; shift 2
  [ -f "$MODEL/model.safetensors" ] || { echo "no model: run probe first"; exit 1; }
  for job in "$@"; do
    IFS=: read -r scorer explain behaviours <<< "$job"
    name="$scorer-$explain-${behaviours//,/-}"
    timeout 570 python3 bench/correction.py --size full --seeds "$seeds" --model "$MODEL" --name default --device cuda --dtype float32 \
      --scorers "$scorer" --explain "$explain" --behaviours "$behaviours" --out "/tmp/res/$name" --tag "gpu-$explain" \
      > "/tmp/res-$name.log" 2>&1 &
  done
  wait
  for f in /tmp/res/*/*.json; do cp "$f" "$OUT/$(basename "$(dirname "$f")").json"; done
  tail -n 4 /tmp/res-*.log | grep -v "^$" > "$OUT/logs.txt"; cat "$OUT/logs.txt" | cut -c1-300
  ;;
esac
