"""Reading sessions written by earlier releases.

Format 1 (up to 2026-11-22) stored fp32 score sums per prompt set and bit-packed masks;
format 2 stores a compact ranking and per-row counts (core/pruning/ranking.py). Migration
happens in two steps:

1. `manifest_v1` in core/session/manifest.py (pure JSON, no torch) renames and reshapes
   fields. What needs tensor work is kept in `Legacy`, so a torch-free listing can still
   read the session.
2. `finish_v1` here (torch): complete score sums become the ranking they rank the same as, and the
   masks of the current plan become counts; then `Legacy` is dropped and the session saved.

Scores, plan, masks, undo/redo, history and UI settings survive; incomplete score sums stay
resumable. The dense-metric cache is dropped (its keys changed); the next `eval` refills it.
"""

from __future__ import annotations

from typing import Any, Callable

from core.session.manifest import Legacy, Manifest


def finish_v1(manifest: Manifest, legacy: Legacy, read: Callable[[str], dict], write: Callable[..., str]) -> None:
    """Turn complete format-1 sums into a ranking, and the current plan's masks into counts."""
    import torch

    from core.attribution.keys import ranking_key, set_key
    from core.attribution.combine import ranking_values
    from core.pruning.ranking import Ranking
    from core.session.manifest import CountsRecord, RankingRecord

    cfg = manifest.score_config
    source = manifest.model.spec.source if manifest.model else "default"
    for which, rec in manifest.sums.items():  # incomplete sums keep their old inputs: a new `score` restarts them
        rec.key = {**set_key(cfg, which, source), "inputs": "format-1 windows (no BOS)"} if cfg else {}
        if cfg is not None and cfg.scorer == "wanda":
            old = read(rec.file)
            rec.file = write(f"sums-{which}", {k.removeprefix("__wanda_sumsq__."): v for k, v in old.items()})
    if legacy.scores and cfg is not None and "reference" in legacy.scores:
        means = {}
        for which, entry in legacy.scores.items():
            sums = read(entry["file"])
            # format 1 stored every scorer's finished score times the sample count (Wanda included)
            means[which] = {k: v.float() / max(int(entry["samples"]), 1) for k, v in sums.items()}
        values = ranking_values(means["reference"], means.get("contrastive"), cfg.reduce, cfg.normalize)
        mass = {k: float(v.double().abs().sum()) for k, v in means["reference"].items()}
        ranking = Ranking.from_values(values, mass)
        file = write("ranking", ranking.tensors(), {"migrated": "format 1 score sums"})
        key = ranking_key(cfg, source)
        for set_key_ in key["sets"].values():
            if "inputs" in set_key_:
                set_key_["inputs"] = "format-1 windows (no BOS)"  # scored before windows began with BOS
        manifest.ranking = RankingRecord(
            file=file, key=key, samples={w: int(e["samples"]) for w, e in legacy.scores.items()},
            tokens={w: int(e.get("tokens", 0)) for w, e in legacy.scores.items()},
            unscored_layers=[k for k, v in means["reference"].items() if not bool(v.any())])
        masks = legacy.masks
        if masks and manifest.plan is not None and masks.get("plan") == _plan_json(manifest.plan):
            import numpy as np

            packed = read(masks["file"])
            counts = {}
            for name, lr in ranking.layers.items():
                out, inn = lr.shape
                bits = np.unpackbits(packed[name].numpy())[: out * inn].astype(bool).reshape(out, inn)
                counts[name] = torch.from_numpy(bits.sum(axis=1).astype(np.int32))
            file = write("counts", counts, {"migrated": "format 1 masks"})
            manifest.counts = CountsRecord(file=file, plan=manifest.plan, sparsity=float(masks.get("sparsity", 0.0)))


def _plan_json(plan) -> dict:
    return {"default": plan.default, "overrides": [list(o) for o in plan.overrides], "granularity": plan.granularity}
