"""The engine's pruning: plans from the ranking (allocation, undo and redo), the pruner that moves the
weights, the masks and reconstructions kept in the session, and the export of the model as pruned."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Iterator

import torch

from core.attribution.registry import scorer as scorer_info
from core.model.layers import weight_view
from core.errors import WorkbenchError
from core.model.units import units_of
from core.pruning.masks import Pruner
from core.pruning.plan import ALLOCATIONS, SparsityPlan
from core.pruning.registry import granularity as granularity_of
from core.results import Export, PruneSummary
from core.session.export import check_export_target, export_checkpoint, sparse_size
from core.session.manifest import CountsRecord
from core.engine_model import EngineService, ModelService
from core.engine_rankings import RankingStore


def sparsegpt_chooses(plan_granularity: str) -> bool:
    """Whether reconstructing lets SparseGPT choose the pruned weights by default, keeping the plan's share per
    row, layer or N:M group: for every plan of single weights. With the ranking's allocation and SparseGPT's
    choice, reconstruction beat the ranking's own mask reconstructed at 50, 60 and 70 % and 2:4
    (docs/research/compression.md). Plans of heads or neurons keep their mask: their units are the choice."""
    return granularity_of(plan_granularity).choice is not None

UNDO_DEPTH = 200  # plans kept for undo; each is a few hundred bytes of JSON


class PruningService(EngineService):
    """Plans and the weights that follow them."""

    def __init__(self, model: ModelService, rankings: RankingStore):
        super().__init__(model)
        self.rankings = rankings
        self.pruner: Pruner | None = None

    def ensure_pruner(self) -> Pruner:
        with self.lock:
            if self.pruner is None:
                self.model.ensure_model()
                lm, layers = self.lm, self.layers
                self.pruner = Pruner(layers, self.rankings.ranking(), units=lambda kind: units_of(lm.model, layers, kind))
            return self.pruner

    def prepare_slider(self) -> None:
        """Derive what small plan changes need (each row's order, ~0.3 s on the default model) ahead of time."""
        with self.lock:
            if self.rankings.scores_ready():
                self.ensure_pruner().prepare_moves()

    def drop_pruner(self) -> None:
        """Forget the pruner; the model goes back to its original (dense) weights first."""
        with self.lock:
            if self.pruner is not None:
                self.pruner.restore_dense()
                self.pruner = None

    @property
    def plan(self) -> SparsityPlan:
        p = self.session.manifest.plan
        return replace(p, overrides=list(p.overrides)) if p else SparsityPlan()

    def allocation_for(self, allocate: str, granularity: str) -> str:
        """What `auto` means for this session: relevance for compression with a data-driven scorer, else uniform."""
        if allocate != "auto":
            return allocate
        cfg = self.rankings.score_config
        compressing = cfg is not None and scorer_info(cfg.scorer).needs_data and not cfg.contrastive
        return "relevance" if compressing and granularity_of(granularity).allocatable else "uniform"

    def allocation_of(self, plan: SparsityPlan) -> str:
        """The allocation that makes `plan` from its global level (with its default spread): `uniform` for a plan
        without overrides, `hand-set` for one no allocation makes."""
        from core.pruning.levels import HAND_SET

        if not plan.overrides:
            return "uniform"
        if plan.count is None and self.rankings.scores_ready():
            for method in ALLOCATIONS:
                if method not in ("auto", "uniform") and self.plan_for(plan.default, plan.granularity, method) == plan:
                    return method
        return HAND_SET

    def plan_for(self, sparsity: float, granularity: str = "row", allocate: str = "auto", spread: float | None = None,
                 overrides: list[tuple[str, float]] | None = None, count: int | None = None) -> SparsityPlan:
        """The plan a target sparsity (or a count of units) means, allocated over blocks as asked; overrides come last."""
        if count is not None:
            return SparsityPlan(0.0, list(overrides or []), granularity, count=count)
        method = self.allocation_for(allocate, granularity)
        if method not in ALLOCATIONS or method == "auto":
            raise WorkbenchError(f"unknown allocation {method!r}; choose one of {', '.join(ALLOCATIONS)}")
        if method == "uniform" or sparsity == 0.0:
            plan = SparsityPlan(sparsity, [], granularity)
        else:
            plan = self.relevance_plan(sparsity, spread, granularity, method)
        plan.overrides += list(overrides or [])
        SparsityPlan(plan.default, plan.overrides, plan.granularity)  # validates the overrides
        return plan

    def relevance_plan(self, sparsity: float, spread: float | None = None, granularity: str = "row",
                       method: str = "relevance") -> SparsityPlan:
        """Per-block sparsity at the same overall budget: by relevance (core/pruning/allocation.py) or OWL (owl.py)."""
        from core.pruning.allocation import SPREAD_PER_SPARSITY, relevance_plan
        from core.pruning.owl import OWL_LAMBDA, owl_plan

        self.model.ensure_model()
        ranking = self.rankings.ranking()
        if method == "owl":
            return owl_plan(self.layers, ranking, sparsity, OWL_LAMBDA if spread is None else spread, granularity=granularity)
        spread = SPREAD_PER_SPARSITY * sparsity if spread is None else spread
        return relevance_plan(self.layers, {n: ranking[n].mass for n in ranking.names()}, sparsity, spread,
                              granularity, method)

    def prune(self, plan: SparsityPlan, record: bool = True, save: bool = True, mask_only: bool = False) -> PruneSummary:
        """Apply `plan` from the ranking; record it in the session. A plan the session reconstructed comes back
        reconstructed (`mask_only` drops that reconstruction); any other plan is mask-only.

        `record` pushes the previous plan on the undo stack (and clears redo). `save=False`
        leaves writing the session to the caller (`save_session`), so a slider can show the
        result before the disk write.
        """
        with self.lock:
            pruner = self.ensure_pruner()
            if plan.count is not None:
                self._check_count(pruner, plan)
            rec = self.session.manifest.reconstruction
            if mask_only and rec is not None and rec.plan == plan:  # drop this plan's reconstruction
                if pruner.reconstructed_for is not None:
                    pruner.forget_reconstruction()
                with self.session.edit(save=False) as m:
                    m.reconstruction = None
                rec = None
            pruner.apply(plan)
            if rec is not None and rec.plan == plan and pruner.reconstructed_for is None:
                self._load_reconstruction(rec)  # back at a reconstructed plan (undo, redo, the same prune): no recompute
            with self.session.edit(save=False) as m:
                previous = m.plan
                if record and previous is not None and previous != plan:
                    m.undo = (m.undo + [previous])[-UNDO_DEPTH:]
                    m.redo = []
                m.plan = replace(plan, overrides=list(plan.overrides))
            if save:
                self.save_session()
            return self.prune_summary()

    def _check_count(self, pruner: Pruner, plan: SparsityPlan) -> None:
        """A count of more units than the model has is a typo, not "all of them"."""
        g = granularity_of(plan.granularity)
        if g.unit:
            total, noun = len(pruner.units(g.unit)[0]), f"{g.component}s"
        else:
            total, noun = sum(p.numel for p in self.layers), "prunable weights"
        if plan.count > total:
            raise WorkbenchError(f"--count {plan.count:,}: this model has {total:,} {noun}; give at most {total:,}")

    def save_session(self) -> None:
        """Write the session, with the masks (per-row counts) of the current plan."""
        with self.lock:
            pruner, mf = self.pruner, self.session.manifest
            rows = pruner.row_counts() if pruner is not None else None
            if rows is not None and mf.plan is not None and (mf.counts is None or mf.counts.plan != mf.plan):
                counts = {n: c.to(torch.int32) for n, c in rows.items()}
                file = self.session.write_tensors("counts", counts, {"meaning": "pruned leading positions of each row's order"})
                with self.session.edit(save=False) as m:
                    m.counts = CountsRecord(file=file, plan=replace(mf.plan), sparsity=pruner.achieved_sparsity())
            if pruner is not None and mf.plan is not None:
                with self.session.edit(save=False) as m:
                    m.sparsity = pruner.achieved_sparsity()
            self.session.save()

    def undo(self, redo: bool = False, save: bool = True) -> PruneSummary:
        """Go back to the plan before the last change (or forward again with redo=True)."""
        with self.lock:
            with self.session.edit(save=False) as m:
                src, dst = (m.redo, m.undo) if redo else (m.undo, m.redo)
                if not src:
                    raise WorkbenchError(f"nothing to {'redo' if redo else 'undo'} in session {self.session.name!r}")
                target = src.pop()
                if m.plan is not None:
                    dst.append(m.plan)
                    del dst[:-UNDO_DEPTH]
            return self.prune(target, record=False, save=save)

    def undo_depth(self) -> tuple[int, int]:
        m = self.session.manifest
        return len(m.undo), len(m.redo)

    def prune_summary(self) -> PruneSummary:
        if self.pruner is None:
            self.restore_plan()
        pruner = self.pruner or self.ensure_pruner()
        counts = pruner.pruned_counts()
        per_block: dict[int, list[int]] = {}
        for p in self.layers:
            agg = per_block.setdefault(p.block, [0, 0])
            agg[0] += counts[p.name]
            agg[1] += p.numel
        return PruneSummary(
            sparsity=pruner.achieved_sparsity(),
            pruned_weights=sum(counts.values()),
            prunable_weights=sum(p.numel for p in self.layers),
            granularity=pruner.plan.granularity,
            plan=replace(pruner.plan, overrides=list(pruner.plan.overrides)),
            per_block={b: v[0] / v[1] for b, v in sorted(per_block.items())},
            reconstructed=pruner.reconstructed_for is not None and not pruner.plan.is_dense(),
            per_layer={p.name: counts[p.name] / p.numel for p in self.layers},
            contrastive=self.rankings.score_config.contrastive if self.rankings.score_config else None,
            chosen_on_reconstruct=sparsegpt_chooses(pruner.plan.granularity),
        )

    def restore_plan(self) -> None:
        """Re-apply the session's plan, from its saved counts when they match (no threshold search)."""
        mf = self.session.manifest
        if mf.plan is None or mf.ranking is None:
            return
        pruner = self.ensure_pruner()
        saved = None
        if mf.counts is not None and mf.counts.plan == mf.plan:
            saved = self.session.read_tensors(mf.counts.file)
            if set(saved) != {p.name for p in self.layers}:
                saved = None
        with self.lock:
            pruner.apply(self.plan, saved)
            rec = mf.reconstruction
            if rec is not None and rec.plan == mf.plan:
                self._load_reconstruction(rec)

    @contextmanager
    def weights(self, pruned: bool) -> Iterator[None]:
        """Run the block on the pruned (or dense) weights, then put back what was active."""
        pruner = self.pruner
        if pruner is None:
            yield
            return
        was = pruner.pruned_active
        pruner.use_pruned(pruned and not pruner.plan.is_dense())
        try:
            yield
        finally:
            pruner.use_pruned(was)

    def pruned_active(self) -> bool:
        return self.pruner is not None and self.pruner.pruned_active

    def size_report(self) -> dict:
        """Dense bytes of the model's parameters vs what a sparse format would take now."""
        lm = self.model.ensure_model()
        counts = self.pruner.pruned_counts() if self.pruner else {p.name: 0 for p in self.layers}
        return sparse_size(lm.model, self.layers, counts)

    def export(self, out: str, overwrite: bool = False) -> Export:
        check_export_target(out, overwrite)  # before the model loads: a bad --out costs nothing
        lm = self.model.ensure_model()
        if self.pruner is None:
            self.restore_plan()
        mf = self.session.manifest
        with self.lock, self.weights(pruned=True):
            pruner = self.pruner
            counts = pruner.pruned_counts() if pruner else {p.name: 0 for p in self.layers}
            provenance = {
                "session": self.session.name,
                "model": mf.model.model_dump(mode="json") if mf.model else None,
                "score_config": asdict(mf.score_config) if mf.score_config else None,
                "plan": asdict(mf.plan) if mf.plan else None,
                "reconstructed": bool(pruner and pruner.reconstructed_for is not None and pruner.pruned_active),
                "last_metrics": mf.history[-1].model_dump()["metrics"] if mf.history else None,
                "circuit": next(({"granularity": c.granularity, "task": c.task, "ablation": c.ablation,
                                  "exported_as": "pruned: the removed units are zero" + (
                                      "" if c.ablation == "zero" else f"; the circuit was measured with them at their "
                                      f"{'mean output' if c.ablation == 'mean' else 'output on corrupted counterparts'}, "
                                      "which this checkpoint does not hold (nothing is folded into biases)")}
                                 for c in mf.circuits.values() if mf.plan is not None and c.plan == mf.plan), None),
                "versions": dict(mf.versions),
            }
            mask = pruner.mask if pruner and pruner.pruned_active else None
            if mask is not None and pruner.reconstructed_for is not None and mf.reconstruction is not None \
                    and mf.reconstruction.chosen_by != "plan":  # the reconstruction chose its own weights: its zeros
                mask = lambda name: weight_view(pruner.state[name].p, pruner.state[name].pruned).eq(0).cpu()  # noqa: E731
            return Export(**export_checkpoint(lm.model, lm.tokenizer, self.layers, counts, mask, provenance, out,
                                              overwrite))

    def _load_reconstruction(self, rec) -> None:
        """Put a stored reconstruction into the working copies of its plan (applied just before)."""
        pruner = self.pruner
        for name, t in self.session.read_tensors(rec.file).items():
            pruner.state[name].pruned.copy_(t.to(pruner.state[name].pruned.device))
        pruner.reconstructed_for = pruner.plan
