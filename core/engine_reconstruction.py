"""The engine's reconstruction: the current plan's kept weights updated so each layer's output on the
reference's scoring windows changes as little as possible (core/pruning/reconstruct.py), stored in the
session with the plan they belong to."""

from __future__ import annotations

import threading
from dataclasses import replace


from core.attribution.registry import scorer as scorer_info
from core.attribution.samples import scoring_batches
from core.errors import WorkbenchError
from core.pruning.reconstruct import reconstruct_model
from core.pruning.registry import granularity
from core.session.manifest import ReconstructionRecord
from core.settings import ScoreConfig
from core.engine_model import EngineService, ModelService
from core.results import Reconstruction
from core.engine_pruning import PruningService, sparsegpt_chooses
from core.engine_rankings import RankingStore


#: who picks the pruned weights when reconstructing (`prune --choose`)
CHOOSERS = {
    "plan": "the plan's own mask; the kept weights are updated (SparseGPT's update)",
    "sparsegpt": "the plan's counts per row, layer or N:M group; SparseGPT's OBS saliency picks the weights as its "
                 "update proceeds (SparseGPT itself)",
    "wanda": "the plan's counts; Wanda's metric re-measured on the already pruned blocks' outputs picks the weights, "
             "and nothing is updated (llm-compressor's sequential Wanda)",
}


class ReconstructionService(EngineService):
    """Updates the kept weights of the current plan."""

    def __init__(self, model: ModelService, rankings: RankingStore, pruning: PruningService):
        super().__init__(model)
        self.rankings = rankings
        self.pruning = pruning

    def default_choice(self, plan_granularity: str | None = None) -> str:
        """Who picks the pruned weights when reconstructing a plan of this granularity (None: the current plan's):
        SparseGPT for plans of single weights (row, layer, global, N:M), the plan for heads and neurons."""
        if plan_granularity is None:
            pruner = self.pruning.pruner
            plan_granularity = pruner.plan.granularity if pruner is not None else "row"
        return "sparsegpt" if sparsegpt_chooses(plan_granularity) else "plan"

    def reconstructs_by_default(self) -> bool:
        """`prune` reconstructs without being asked when the ranking's method is a reconstruction (sparsegpt)."""
        sc = self.rankings.score_config
        return sc is not None and scorer_info(sc.scorer).reconstructs

    def reconstruct(self, progress=None, cancel: threading.Event | None = None, choose: str | None = None,
                    true_sequential: bool = False) -> Reconstruction:
        """Update the kept weights of the current plan so each layer's output on the reference's scoring windows
        changes as little as possible (SparseGPT's update; core/pruning/reconstruct.py). `choose`: "plan" keeps the
        plan's mask; "sparsegpt" keeps its counts (per row, layer or N:M group) and lets SparseGPT's saliency pick
        the weights as it goes; "wanda" keeps the counts and re-chooses by Wanda's metric on the pruned blocks'
        outputs, updating nothing (llm-compressor's sequential Wanda); None: `default_choice()`."""
        if choose is not None and choose not in CHOOSERS:
            raise WorkbenchError(f"unknown --choose {choose!r}; choose one of {', '.join(CHOOSERS)}")
        with self.lock:
            if self.pruning.pruner is None:
                self.pruning.restore_plan()
            pruner = self.pruning.ensure_pruner()
            if pruner.plan.is_dense():
                raise WorkbenchError("nothing is pruned: reconstruct after `workbench prune` (or with `prune --reconstruct`)")
            choose = choose or self.default_choice(pruner.plan.granularity)
            sc = self.rankings.score_config or ScoreConfig()
            per_pass = max(1, min(sc.batch_size, sc.batch_tokens // sc.seq_len))
            calibration = replace(sc, contrastive=None)
            batches = scoring_batches(self.lm, self.model.prompt_set(sc.reference), calibration, per_pass, {}, {})
            within = granularity(pruner.plan.granularity).choice if choose != "plan" else None
            if choose != "plan" and within is None:
                raise WorkbenchError(f"--choose {choose} picks single weights; a {pruner.plan.granularity} plan removes "
                                     "whole units: reconstruct it with --choose plan")
            if pruner.reconstructed_for is not None:  # start again from the mask-only weights
                pruner.mask_only()
            try:
                with self.pruning.weights(pruned=True):
                    errors = reconstruct_model(self.lm.model, self.layers, batches, pruner.mask, pruner.original,
                                               pruner.write_reconstructed, pruner.dense_layers, progress, cancel,
                                               reselect=within, update=choose != "wanda",
                                               true_sequential=true_sequential)
            except BaseException:  # some blocks were written: back to the plan's mask-only weights
                pruner.mask_only()
                raise
            pruner.reconstructed_for = pruner.plan
            layout = {n: (pruner.state[n].pruned.dtype, tuple(pruner.state[n].pruned.shape)) for n in errors}
            with self.session.stream_tensors("reconstructed", layout, {"meaning": "reconstructed pruned weights"}) as out:
                for n in errors:
                    out.put(n, pruner.state[n].pruned)
            samples = sum(b.size for b in batches)
            tokens = sum(int(b.mask.sum()) for b in batches)
            error = sum(errors.values()) / max(len(errors), 1)
            with self.session.edit(save=False) as m:
                m.reconstruction = ReconstructionRecord(file=out.name, plan=replace(pruner.plan), samples=samples,
                                                        tokens=tokens, error=error, chosen_by=choose)
            self.pruning.save_session()
            return Reconstruction(len(errors), samples, tokens, error, errors, chosen_by=choose)
