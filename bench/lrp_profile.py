"""Where LRP scoring's time goes on a GPU: one pass per aggregation, against plain fwd+bwd (TF32 off globally).

    python bench/lrp_profile.py --model FOLDER --seq-len 2048 --samples 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--sweep", action="store_true", help="also with TF32 switched on globally, and a kernel table")
    args = ap.parse_args()
    import torch

    from bench.engine import MODEL, batches_for, plain_pass
    from core.attribution.runner import run_scorer
    from core.attribution.state import ScorerOptions
    from core.model.layers import prunable_layers
    from core.model.loading import load_model, quiet_libraries

    quiet_libraries()
    MODEL.update(source=args.model, device="cuda", dtype="bfloat16")
    lm = load_model(args.model, "cuda", "bfloat16")
    layers = prunable_layers(lm.model)
    batches = batches_for(lm, args.samples, args.seq_len, 1)
    tokens = args.samples * args.seq_len

    def timed(fn) -> float:
        fn()  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t

    plain = timed(lambda: plain_pass(lm, layers, batches))
    print(f"plain fwd+bwd            {tokens / plain:8.0f} tok/s", flush=True)
    for tf32 in (False, True) if args.sweep else (False,):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for agg in ("abs-sample", "token-sq", "sum"):
            t = timed(lambda: run_scorer("lrp", lm.model, layers, batches, ScorerOptions(aggregate=agg)))
            print(f"lrp {agg:10s} tf32={tf32!s:5s} {tokens / t:8.0f} tok/s  {t / plain:5.2f}x plain", flush=True)
        t = timed(lambda: run_scorer("gradient", lm.model, layers, batches, ScorerOptions(aggregate="token-sq")))
        print(f"gradient token-sq tf32={tf32!s:5s} {tokens / t:8.0f} tok/s  {t / plain:5.2f}x plain", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    if not args.sweep:
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
        run_scorer("lrp", lm.model, layers, batches[:1], ScorerOptions(aggregate="token-sq"))
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=50))


if __name__ == "__main__":
    main()
