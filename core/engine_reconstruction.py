"""Reconstruction, as part of the engine (`Workbench` takes these methods): the current plan's kept weights
updated so each layer's output on the reference's scoring windows changes as little as possible
(core/pruning/reconstruct.py), stored in the session with the plan they belong to.

They use the engine's model, layers, lock, pruner and session.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from core.attribution.samples import scoring_batches
from core.errors import WorkbenchError
from core.pruning.reconstruct import reconstruct_model
from core.session.manifest import ReconstructionRecord
from core.settings import ScoreConfig


class ReconstructionRuns:
    """Reconstruction; mixed into `core.engine.Workbench`, whose attributes it uses."""

    def _load_reconstruction(self, rec) -> None:
        """Put a stored reconstruction into the working copies of its plan (applied just before)."""
        pruner = self.pruner
        for name, t in self.session.read_tensors(rec.file).items():
            pruner.state[name].pruned.copy_(t.to(pruner.state[name].pruned.device))
        pruner.reconstructed_for = pruner.plan

    def reconstruct(self, progress=None, cancel: threading.Event | None = None) -> dict:
        """Update the kept weights of the current plan so each layer's output on the reference's scoring windows
        changes as little as possible (SparseGPT's update with the plan's mask; core/pruning/reconstruct.py)."""
        with self.lock:
            if self.pruner is None:
                self.restore_plan()
            pruner = self.ensure_pruner()
            if pruner.plan.is_dense():
                raise WorkbenchError("nothing is pruned: reconstruct after `workbench prune` (or with `prune --reconstruct`)")
            sc = self.score_config or ScoreConfig()
            per_pass = max(1, min(sc.batch_size, sc.batch_tokens // sc.seq_len))
            calibration = replace(sc, contrastive=None)
            batches = scoring_batches(self.lm, self.prompt_set(sc.reference), calibration, per_pass, {}, {})
            if pruner.reconstructed_for is not None:  # start again from the mask-only weights
                pruner.mask_only()
            try:
                with self.weights(pruned=True):
                    errors = reconstruct_model(self.lm.model, self.layers, batches, pruner.mask, pruner.original,
                                               pruner.write_reconstructed, pruner.dense_layers, progress, cancel)
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
                                                        tokens=tokens, error=error)
            self.save_session()
            return {"layers": len(errors), "samples": samples, "tokens": tokens, "error": error, "per_layer": errors}

