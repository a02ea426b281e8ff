"""The workbench engine: one object the CLI and the TUI both drive.

It ties a session on disk to a loaded model. The way from a setting to the weights is
one line through it: settings (core/settings.py) -> `score` (the runner accumulates, the
scorer finishes, the ranking is stored compactly) -> `prune` (a plan becomes per-row
counts, the pruner moves the weights) -> `evaluate` / `stream` / `export`. Scoring
(core/engine_scoring.py) and the paper's applications (core/engine_applications.py) are
methods of the same object, kept in modules of their own.

Model work is serialised by `self.lock`, so a UI can call in from worker threads one
job at a time. The session's manifest is only changed inside `session.edit()`. Long
jobs take a cancel event and raise `Cancelled` (core/model/interrupt.py); scoring saves
its completed batches first.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Iterator

import torch

from core import catalog
from core.attribution.keys import INPUTS
from core.attribution.registry import scorer as scorer_info
from core.data.prompt_sets import PromptSet, load_prompt_set
from core.data.tokens import encode_each
from core.errors import Cancelled, WorkbenchError
from core.evaluation.measure import Measurement
from core.evaluation.registry import METRICS, default_metrics
from core.evaluation.generation import stream_tokens
from core.model.interrupt import interruptible
from core.model.layers import Prunable, block_prefix, prunable_layers
from core.model.loading import LoadedModel, load_model
from core.model.units import units_of
from core.pruning.masks import Pruner
from core.pruning.ranking import Ranking
from core.pruning.plan import ALLOCATIONS, SparsityPlan
from core.pruning.registry import granularity as granularity_of
from core.engine_applications import ApplicationRuns
from core.engine_reconstruction import ReconstructionRuns
from core.engine_scoring import ScoringRuns
from core.results import Evaluation, Generations, MetricChange, PruneSummary
from core.session.export import check_export_target, export_checkpoint, sparse_size
from core.session.manifest import CountsRecord, HistoryEntry, ModelInfo, ModelRecord, UiState
from core.session.store import Session
from core.settings import EvalConfig, GenerationConfig, ModelSpec, ScoreConfig

UNDO_DEPTH = 200  # plans kept for undo; each is a few hundred bytes of JSON


class Workbench(ScoringRuns, ApplicationRuns, ReconstructionRuns):
    def __init__(self, session: Session, lm: LoadedModel | None = None, trust_remote_code: bool = False):
        self.session = session
        self.lm = lm
        # a model's own code runs only when this process was told so (--trust-remote-code, the Model pane's
        # checkbox); a session records the model, never the permission (sessions travel between people)
        self.trust_remote_code = trust_remote_code
        self.layers: list[Prunable] = prunable_layers(lm.model) if lm else []
        self.pruner: Pruner | None = None
        self.lock = threading.RLock()
        self._prompt_sets: dict[str, PromptSet] = {}
        self._ranking: Ranking | None = None

    # ---- model ---------------------------------------------------------------------
    @property
    def model_spec(self) -> ModelSpec | None:
        m = self.session.manifest.model
        return replace(m.spec) if m else None

    def load(self, spec: ModelSpec | None = None) -> dict:
        """Load `spec` (or the session's model); a different model invalidates cached scores.

        `spec.trust_remote_code` is the caller's word; the session's own spec runs remote code only
        when this workbench was made with `trust_remote_code`."""
        with self.lock:
            explicit = spec is not None
            spec = spec or self.model_spec or ModelSpec()
            spec = replace(spec, trust_remote_code=spec.trust_remote_code if explicit else self.trust_remote_code)
            old = self.model_spec
            if spec.device_map is None and old is not None and old.source == spec.source:
                spec = replace(spec, device_map=old.device_map)  # the same model stays spread (`--device-map none` ends it)
            lm = load_model(spec.source, spec.device, spec.dtype, spec.trust_remote_code, spec.device_map)
            self.drop_pruner()
            self.lm, self.layers = lm, prunable_layers(lm.model)
            if not self.layers:
                raise WorkbenchError(f"{spec.source}: found no linear layers inside decoder blocks to prune")
            with self.session.edit() as mf:
                if old is not None and old.source != spec.source:
                    mf.sums, mf.ranking, mf.counts, mf.plan, mf.dense_cache, mf.reconstruction = {}, None, None, None, {}, None
                    self._ranking = None
                mf.model = ModelRecord(spec=replace(spec, trust_remote_code=False), info=ModelInfo(**lm.info()))
            return lm.info()

    def use_model(self, lm: LoadedModel, spec: ModelSpec) -> None:
        """Work on an already-loaded model (benchmarks, notebooks), recorded as `spec` in the session."""
        with self.lock:
            self.drop_pruner()
            self.lm, self.layers = lm, prunable_layers(lm.model)
            with self.session.edit() as mf:
                if mf.model is not None and mf.model.spec.source != spec.source:
                    mf.sums, mf.ranking, mf.counts, mf.plan, mf.dense_cache, mf.reconstruction = {}, None, None, None, {}, None
                    self._ranking = None
                mf.model = ModelRecord(spec=spec, info=ModelInfo(**lm.info()))

    def check_seq_len(self, seq_len: int, flag: str = "--seq-len") -> None:
        """Refuse windows longer than the model has positions for (they fail deep inside, or silently wrap)."""
        cfg = self.ensure_model().model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if isinstance(limit, int) and seq_len > limit:
            raise WorkbenchError(f"{flag} {seq_len} is longer than the model's {limit:,} positions; give at most {limit}")

    def model_spec_dict(self) -> dict:
        spec = self.model_spec
        return asdict(spec) if spec else {}

    def ensure_model(self) -> LoadedModel:
        if self.lm is None:
            self.load()
        return self.lm

    # ---- prompt sets -----------------------------------------------------------------
    def use_prompt_set(self, ps: PromptSet) -> None:
        """Use `ps` wherever its spec is named (benchmarks hold out their own validation texts this way)."""
        self._prompt_sets[ps.spec] = ps

    def prompt_set(self, spec: str) -> PromptSet:
        if spec not in self._prompt_sets:
            self._prompt_sets[spec] = load_prompt_set(spec)
        return self._prompt_sets[spec]

    # ---- pruning ---------------------------------------------------------------------
    def ensure_pruner(self) -> Pruner:
        with self.lock:
            if self.pruner is None:
                self.ensure_model()
                lm, layers = self.lm, self.layers
                self.pruner = Pruner(layers, self.ranking(), units=lambda kind: units_of(lm.model, layers, kind))
            return self.pruner

    def prepare_slider(self) -> None:
        """Derive what small plan changes need (each row's order, ~0.3 s on the default model) ahead of time."""
        with self.lock:
            if self.scores_ready():
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
        cfg = self.score_config
        compressing = cfg is not None and scorer_info(cfg.scorer).needs_data and not cfg.contrastive
        return "relevance" if compressing and granularity_of(granularity).allocatable else "uniform"

    def allocation_of(self, plan: SparsityPlan) -> str:
        """The allocation that makes `plan` from its global level (with its default spread): `uniform` for a plan
        without overrides, `hand-set` for one no allocation makes."""
        from core.pruning.levels import HAND_SET

        if not plan.overrides:
            return "uniform"
        if plan.count is None and self.scores_ready():
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

        self.ensure_model()
        ranking = self.ranking()
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
            contrastive=self.score_config.contrastive if self.score_config else None,
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

    # ---- what a UI shows -------------------------------------------------------------
    def layer_index(self) -> list[dict]:
        """Plain data about every prunable layer (name, block, kind, block prefix, weights)."""
        return [{"name": p.name, "block": p.block, "kind": p.kind, "prefix": block_prefix(p), "numel": p.numel}
                for p in self.layers]

    def relevance_by_block(self) -> dict[int, dict[str, float]]:
        """Mean |reference score| per weight: per block ("all") and per kind ("attn", "mlp")."""
        from core.pruning.allocation import block_relevance

        if not self.scores_ready() or not self.layers:
            return {}
        ranking = self.ranking()
        mass = {n: ranking[n].mass for n in ranking.names()}
        out: dict[int, dict[str, float]] = {b: {"all": v} for b, v in block_relevance(self.layers, mass).items()}
        for kind in ("attn", "mlp"):
            for b, v in block_relevance([p for p in self.layers if p.kind == kind], mass).items():
                out[b][kind] = v
        return out

    def scores_summary(self) -> dict:
        """The last complete scoring: its settings and how many samples each set had (plain data)."""
        cfg, rec = self.session.manifest.score_config, self.session.manifest.ranking
        if cfg is None or rec is None:
            return {}
        return {"config": asdict(cfg), "samples": dict(rec.samples), "unscored_layers": len(rec.unscored_layers)}

    def size_report(self) -> dict:
        """Dense bytes of the model's parameters vs what a sparse format would take now."""
        lm = self.ensure_model()
        counts = self.pruner.pruned_counts() if self.pruner else {p.name: 0 for p in self.layers}
        return sparse_size(lm.model, self.layers, counts)

    def history(self) -> list[dict]:
        return [h.model_dump() for h in self.session.manifest.history]

    def saved_results(self) -> dict:
        """What the session holds of the applications, as their commands print it with --json: the last circuit
        per granularity and the last correction sweep (a resumed TUI shows them)."""
        mf = self.session.manifest
        return {"circuits": [c.model_dump(exclude={"plan"}) for c in mf.circuits.values()],
                "correction": mf.correction.model_dump() if mf.correction else None}

    @property
    def ui_state(self) -> dict:
        return self.session.manifest.ui.model_dump()

    def save_ui(self, state: dict) -> None:
        """A UI's own settings (prompt text, evaluation size, open pane), saved with the session."""
        with self.session.edit() as m:
            m.ui = UiState.model_validate(state)

    # ---- evaluation ------------------------------------------------------------------
    def evaluate(self, cfg: EvalConfig = EvalConfig(), cancel: threading.Event | None = None) -> Evaluation:
        catalog.check(cfg)
        lm = self.ensure_model()
        sc = self.score_config or ScoreConfig()
        spec = cfg.eval_data or sc.reference
        ps = self.prompt_set(spec)
        names = list(cfg.metrics or default_metrics(bool(ps.task_eval)))
        if any(METRICS[m].needs == "tasks" for m in names) and not ps.task_eval:
            raise WorkbenchError("task metrics need a task set; evaluate with --eval-data builtin:ioi or builtin:agreement")
        seq_len = cfg.seq_len or sc.seq_len
        self.check_seq_len(seq_len)
        # A set the session scored is measured on its held-out split only; anything else is all held out.
        split = ps.held_out_split((sc.reference, sc.contrastive))
        seqs = (ps.windows(lm.tokenizer, split, seq_len) if ps.kind == "text"
                else encode_each(lm.tokenizer, ps.texts(split), seq_len))
        seqs = seqs[: cfg.samples] if cfg.samples is not None else seqs
        prompts = ps.generation_prompts(cfg.gen_prompts)
        key = json.dumps({"model": (self.model_spec or ModelSpec()).source, "spec": spec, "split": split, "n": len(seqs), "seq": seq_len,
                          "prompts": len(prompts), "new": cfg.max_new_tokens, "metrics": sorted(names), "inputs": INPUTS})

        def measure(pruned: bool) -> dict:
            ev = Measurement(lm.model, lm.tokenizer, seqs, prompts, cfg.max_new_tokens, ps.task_eval[: cfg.samples or None])
            with self.lock, self.weights(pruned), interruptible(self.layers, cancel, "evaluation"):
                out: dict = {m: METRICS[m].measure(ev) for m in names}
            return out | {"samples": ev.samples()}

        if self.pruner is None:
            self.restore_plan()
        dense = self.session.manifest.dense_cache.get(key) or measure(False)
        with self.session.edit(save=False) as m:
            m.dense_cache[key] = dense
        sparsity = self.pruner.achieved_sparsity() if self.pruned_active() else 0.0
        pruned = measure(True) if sparsity > 0 else dense
        result = Evaluation(
            sparsity=sparsity, eval_data=spec, eval_split=split, eval_samples=len(seqs), generation_prompts=len(prompts),
            metrics={m: MetricChange(dense[m], pruned[m], pruned[m] - dense[m]) for m in names},
            generations=Generations(prompts[:3], dense.get("samples", []), pruned.get("samples", [])))
        with self.session.edit() as m:
            m.history.append(HistoryEntry(sparsity=sparsity, plan=self.plan, scorer=sc.scorer, eval_data=spec,
                                          metrics={k: asdict(v) for k, v in result.metrics.items()},
                                          eval_samples=len(seqs), generation_prompts=len(prompts)))
        return result

    # ---- generation ------------------------------------------------------------------
    def stream(self, prompt: str, config: GenerationConfig, pruned: bool,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """Text pieces of a continuation; a set `cancel` ends the stream quietly at the next layer."""
        lm = self.ensure_model()
        if self.pruner is None:
            self.restore_plan()
        with self.lock, self.weights(pruned):
            try:
                with interruptible(self.layers, cancel, "generation"):
                    for _, piece in stream_tokens(lm.model, lm.tokenizer, prompt, config):
                        yield piece
            except Cancelled:
                return

    # ---- export ----------------------------------------------------------------------
    def export(self, out: str, overwrite: bool = False) -> dict:
        check_export_target(out, overwrite)  # before the model loads: a bad --out costs nothing
        lm = self.ensure_model()
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
                "versions": dict(mf.versions),
            }
            return export_checkpoint(lm.model, lm.tokenizer, self.layers, counts,
                                     pruner.mask if pruner and pruner.pruned_active else None, provenance, out, overwrite)

