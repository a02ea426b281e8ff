"""Which MLP neurons each contrastive scorer removes first: per-block counts and overlaps.

    uv run python bench/correction_neurons.py --behaviour toxicity --count 100

A diagnostic beside bench/correction.py (same reference, contrastive set and scoring size):
it scores once per scorer, takes the `count` neurons each plan removes, and prints how many
fall in each decoder block and how many any two scorers share. It measures nothing on
held-out prompts, so it decides nothing; it says where the scorers look.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.correction import BEHAVIOURS, REFERENCE, SIZES  # noqa: E402 - after the path insert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--behaviour", choices=list(BEHAVIOURS), default="toxicity")
    ap.add_argument("--model", default="default")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--scorers", default="lrp,gradient,wanda")
    args = ap.parse_args()

    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import ModelSpec, ScoreConfig

    quiet_libraries()
    size = SIZES["ci"]
    lm = load_model(args.model, "auto", "auto")
    wb = Workbench(Session.create(Path(tempfile.mkdtemp(prefix="neurons-")), "neurons"))
    wb.use_model(lm, ModelSpec(args.model))
    chosen: dict[str, set[int]] = {}
    blocks = sorted({p.block for p in wb.layers})
    print(f"{args.count} neurons removed first, {BEHAVIOURS[args.behaviour]} vs {REFERENCE}, model {args.model}")
    print("scorer     " + " ".join(f"{b:>3d}" for b in blocks))
    for scorer in args.scorers.split(","):
        wb.score(ScoreConfig(reference=REFERENCE, contrastive=BEHAVIOURS[args.behaviour], scorer=scorer,
                             samples=size.samples, seq_len=size.seq_len))
        pruner = wb.ensure_pruner()
        units, _ = pruner.units("neuron")
        removed = pruner.removed(SparsityPlan(0.0, granularity="neuron", count=args.count))
        idx = {i for i, r in enumerate(removed.tolist()) if r}
        chosen[scorer] = idx
        per_block = [sum(1 for i in idx if units[i].block == b) for b in blocks]
        print(f"{scorer:10s} " + " ".join(f"{n:>3d}" for n in per_block), flush=True)
    names = list(chosen)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            print(f"shared by {a} and {b}: {len(chosen[a] & chosen[b])} of {args.count}")


if __name__ == "__main__":
    main()
