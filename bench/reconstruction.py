"""Reconstruction after a mask: perplexity of the pruned model with the mask alone, with SparseGPT's update of
the kept weights, and with that update refined to the least-squares optimum (`prune --reconstruct`).

    uv run python bench/reconstruction.py                 # default model, LRP, 50 % row-wise and 2:4
    uv run python bench/reconstruction.py --scorer wanda --windows 64

Calibration: the score's own reference windows (builtin:fortunes' scoring split); perplexity on windows of
its evaluation split, which nothing scored or calibrated on. Prints one table; ratios are to the mask alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scorer", default="lrp")
    ap.add_argument("--samples", type=int, default=32, help="calibration (= scoring) windows of 128 tokens")
    ap.add_argument("--windows", type=int, default=32, help="held-out perplexity windows")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    import core.pruning.reconstruct as R
    from core.engine import Workbench
    from core.evaluation import metrics as M
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import ModelSpec, ScoreConfig

    with tempfile.TemporaryDirectory() as tmp:
        wb = Workbench(Session.create(Path(tmp), "reconstruction"))
        wb.load(ModelSpec(args.model, args.device, args.dtype))
        t0 = time.perf_counter()
        wb.score(ScoreConfig(scorer=args.scorer, samples=args.samples))
        score_s = time.perf_counter() - t0
        lm = wb.lm
        windows = wb.prompt_set("builtin:fortunes").windows(lm.tokenizer, "eval", 128)[: args.windows]

        def perplexity() -> float:
            with wb.lock, wb.weights(pruned=True):
                return M.perplexity(lm.model, lm.tokenizer, windows)

        dense = None
        with wb.weights(pruned=False):
            dense = M.perplexity(lm.model, lm.tokenizer, windows)
        rows = []
        for label, plan in (("50 % row-wise, prune's default allocation", wb.plan_for(0.5)),
                            ("2:4", SparsityPlan(0.5, [], "2:4"))):
            wb.prune(plan)
            mask_only = perplexity()
            row = [label, mask_only]
            for refine in (0, R.REFINE):
                R.REFINE, saved = refine, R.REFINE
                t0 = time.perf_counter()
                rec = wb.reconstruct(choose="plan")  # the update of the plan's own mask (SparseGPT choosing: compression.py)
                row += [perplexity(), time.perf_counter() - t0, rec.error]
                R.REFINE = saved
            rows.append(row)
        print(f"model {args.model}, scorer {args.scorer}, calibration {args.samples} x 128 tokens "
              f"(scoring took {score_s:.0f} s), perplexity on {len(windows)} held-out windows; dense {dense:.2f}")
        print(f"| plan | mask only | SparseGPT update | / mask | + least squares ({R.REFINE} CG steps) | / mask | "
              "time SparseGPT / + LS | output error left SparseGPT / + LS |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, m, s_ppl, s_t, s_e, l_ppl, l_t, l_e in rows:
            print(f"| {label} | {m:.2f} | {s_ppl:.2f} | {s_ppl / m:.3f} | {l_ppl:.2f} | {l_ppl / m:.3f} | "
                  f"{s_t:.0f} s / {l_t:.0f} s | {s_e:.1%} / {l_e:.1%} |")


if __name__ == "__main__":
    main()
