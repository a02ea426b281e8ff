"""Prune a model with llm-compressor's oneshot (SparseGPT or Wanda), run in the peer's own environment.

    python bench/peer/prune.py --model DENSE_DIR --calibration windows.json --method sparsegpt --sparsity 0.5 \
        --structure 0:0 --out OUT_DIR

`windows.json` holds the token ids of the calibration windows (a list of lists, one per window), so the peer
calibrates on exactly the workbench's windows. Writes OUT_DIR/model.safetensors (the decoder layers' weights) and
OUT_DIR/run.json (wall and CPU time of oneshot, and the process's peak resident memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--method", choices=["sparsegpt", "wanda"], required=True)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--structure", default="0:0", help="llm-compressor's mask_structure: 0:0 unstructured, 2:4")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    windows = json.loads(Path(args.calibration).read_text())
    data = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    modifier = SparseGPTModifier if args.method == "sparsegpt" else WandaPruningModifier
    recipe = [modifier(sparsity=args.sparsity, mask_structure=args.structure, targets=["Linear"], ignore=["re:.*lm_head"])]
    t0, c0 = time.perf_counter(), time.process_time()
    oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(windows),
            max_seq_length=max(len(w) for w in windows))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
               if ".layers." in k and k.endswith(".weight") and v.dim() == 2}
    save_file(weights, str(out / "model.safetensors"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    zeros = sum(int((v == 0).sum()) for v in weights.values()) / sum(v.numel() for v in weights.values())
    (out / "run.json").write_text(json.dumps({"method": args.method, "sparsity": args.sparsity, "structure": args.structure,
                                              "wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak, "zeros": zeros}))


if __name__ == "__main__":
    main()
