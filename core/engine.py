"""The workbench engine: one object the CLI and the TUI both drive.

It ties a session on disk to a loaded model: scoring (cached and resumable),
pruning (cached rankings, O(1) dense/pruned swap), evaluation dense vs pruned,
streamed generation and export. Model work is serialised by `self.lock`, so a UI
can call it from worker threads one job at a time.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import asdict
from typing import Callable, Iterator

import torch

from core import metrics as M
from core.cancel import Cancelled, interruptible
from core.errors import WorkbenchError
from core.generation import GenerationConfig, stream_tokens
from core.layers import Prunable, prunable_layers
from core.masks import Pruner
from core.models import LoadedModel, load_model
from core.plan import SparsityPlan
from core.prompts import PromptSet, batch_sequences, encode_each, load_prompt_set, pad_id
from core.ranking import aggregation, ranking_scores
from core.scorers import ScoreState, run_scorer
from core.scorers.base import Progress, unscored_layers
from core.session import Session
from core.configs import EvalConfig, ModelSpec, ScoreConfig, pick_samples, scoring_sequences  # noqa: F401 - re-exported


UNDO_DEPTH = 200  # plans kept for undo; each is a few hundred bytes of JSON


class Workbench:
    def __init__(self, session: Session, lm: LoadedModel | None = None):
        self.session = session
        self.lm = lm
        self.layers: list[Prunable] = prunable_layers(lm.model) if lm else []
        self.pruner: Pruner | None = None
        self.lock = threading.RLock()
        self._prompt_sets: dict[str, PromptSet] = {}

    # ---- model ---------------------------------------------------------------------
    @property
    def model_spec(self) -> ModelSpec | None:
        m = self.session.manifest.get("model")
        return ModelSpec(**{k: m[k] for k in asdict(ModelSpec()) if k in m}) if m else None

    def load(self, spec: ModelSpec | None = None) -> dict:
        """Load `spec` (or the session's model); a different model invalidates cached scores."""
        with self.lock:
            spec = spec or self.model_spec or ModelSpec()
            old = self.model_spec
            lm = load_model(spec.source, spec.device, spec.dtype, spec.trust_remote_code)
            self.drop_pruner()
            self.lm, self.layers = lm, prunable_layers(lm.model)
            if not self.layers:
                raise WorkbenchError(f"{spec.source}: found no linear layers inside decoder blocks to prune")
            mf = self.session.manifest
            if old is not None and old.source != spec.source:
                for stale in ("scores", "masks", "plan", "dense_cache"):
                    mf.pop(stale, None)
            mf["model"] = {**asdict(spec), "info": lm.info()}
            self.session.save()
            return lm.info()

    def ensure_model(self) -> LoadedModel:
        if self.lm is None:
            self.load()
        return self.lm

    # ---- prompt sets -----------------------------------------------------------------
    def prompt_set(self, spec: str) -> PromptSet:
        if spec not in self._prompt_sets:
            self._prompt_sets[spec] = load_prompt_set(spec)
        return self._prompt_sets[spec]

    # ---- scoring ---------------------------------------------------------------------
    @property
    def score_config(self) -> ScoreConfig | None:
        c = self.session.manifest.get("score_config")
        return ScoreConfig(**c) if c else None

    def score(
        self,
        cfg: ScoreConfig,
        progress: Callable[[str, Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> dict:
        """Score reference (and contrastive) samples; reuses or resumes cached sums with the same key."""
        cfg.check()
        lm = self.ensure_model()
        sets = {"reference": self.prompt_set(cfg.reference)}
        if cfg.contrastive:
            sets["contrastive"] = self.prompt_set(cfg.contrastive)
        mf = self.session.manifest
        mf["score_config"] = asdict(cfg)
        mf.setdefault("scores", {})
        for stale in [w for w in mf["scores"] if w not in sets]:
            del mf["scores"][stale]
        summary = {}
        with self.lock, self._dense():
            for which, ps in sets.items():
                key = cfg.key(which, self.model_spec.source)
                entry = mf["scores"].get(which)
                state = None
                if entry and entry["key"] == key:
                    if entry["complete"]:
                        summary[which] = {"samples": entry["samples"], "cached": True}
                        continue
                    state = ScoreState(self.session.read_tensors(entry["file"]), entry["samples"], entry["tokens"])
                seqs = scoring_sequences(lm, ps, cfg)
                batches = batch_sequences(seqs, pad_id(lm.tokenizer), cfg.batch_size)
                if not batches:
                    raise WorkbenchError(f"{ps.spec}: no sample has 2 or more tokens; give longer samples")

                def save(st: ScoreState, complete: bool, which=which, key=key) -> None:
                    file = self.session.write_tensors(f"scores-{which}", st.sums, {"samples": str(st.samples)})
                    mf["scores"][which] = {"file": file, "samples": st.samples, "tokens": st.tokens,
                                           "complete": complete, "key": key}
                    self.session.save()

                report = (lambda p, which=which: progress(which, p)) if progress else None
                state = state or ScoreState()
                try:
                    state = run_scorer(cfg.scorer, lm.model, self.layers, batches, target=cfg.target,
                                       variant=cfg.variant, aggregate=aggregation(cfg.reduce), seed=cfg.seed,
                                       state=state, progress=report,
                                       cancel=cancel, checkpoint=lambda st: save(st, False))
                except KeyboardInterrupt:
                    if state.samples:
                        save(state, False)
                    raise
                n_total = sum(int(b[0].shape[0]) for b in batches)
                complete = cfg.scorer in ("magnitude", "random") or state.samples >= n_total
                if state.samples or complete:
                    save(state, complete)
                summary[which] = {"samples": state.samples, "of": n_total, "tokens": state.tokens, "cached": False,
                                  "complete": complete, "unscored_layers": len(unscored_layers(state))}
        self.drop_pruner()  # rankings changed
        self.session.save()
        return summary

    def scores_complete(self) -> bool:
        s = self.session.manifest.get("scores") or {}
        return bool(s) and all(e["complete"] for e in s.values())

    def ranking(self) -> dict[str, torch.Tensor]:
        """Per-weight ranking scores [out, in] (higher = keep) from the cached sums."""
        cfg = self.score_config
        entries = self.session.manifest.get("scores") or {}
        if cfg is None or "reference" not in entries:
            raise WorkbenchError(f"session {self.session.name!r} has no scores yet; run `workbench score --session {self.session.name}` first")
        if not self.scores_complete():
            raise WorkbenchError(f"scoring in session {self.session.name!r} was interrupted; run the same `workbench score` again to finish it")
        sums = {w: (self.session.read_tensors(e["file"]), e["samples"]) for w, e in entries.items()}
        names = {p.name for p in self.layers}
        if set(sums["reference"][0]) != names:
            raise WorkbenchError("the cached scores do not match this model's layers; re-run `workbench score`")
        return ranking_scores(sums["reference"], sums.get("contrastive"), cfg.reduce, cfg.normalize)

    # ---- pruning ---------------------------------------------------------------------
    def ensure_pruner(self) -> Pruner:
        """A pruner that can re-rank (built from cached scores)."""
        with self.lock:
            if self.pruner is not None and not self.pruner.can_rerank:
                self.drop_pruner()
            if self.pruner is None:
                self.ensure_model()
                self.pruner = Pruner(self.layers, self.ranking())
            return self.pruner

    def drop_pruner(self) -> None:
        """Forget cached rankings; the model goes back to its original (dense) weights first."""
        with self.lock:
            if self.pruner is not None:
                self.pruner.restore_dense()
                self.pruner = None

    @property
    def plan(self) -> SparsityPlan:
        p = self.session.manifest.get("plan")
        return SparsityPlan.from_json(p) if p else SparsityPlan()

    def relevance_plan(self, sparsity: float, spread: float = 0.1, granularity: str = "row",
                       method: str = "relevance") -> SparsityPlan:
        """Per-block sparsity allocated from the reference relevance (see core/allocation.py)."""
        from core.allocation import relevance_plan

        self.ensure_model()
        entries = self.session.manifest.get("scores") or {}
        if "reference" not in entries:
            self.ranking()  # raises the "no scores yet" error
        ref = self.session.read_tensors(entries["reference"]["file"])
        return relevance_plan(self.layers, ref, sparsity, spread, granularity, method)

    def prune(self, plan: SparsityPlan, save_masks: bool = True, record: bool = True, save: bool = True) -> dict:
        """Apply `plan` from cached rankings; record it (and the masks) in the session.

        `record` pushes the previous plan on the session's undo stack (and clears redo).
        `save=False` leaves writing the manifest to the caller (`save_session`), so a
        slider can show the result before the disk write.
        """
        with self.lock:
            pruner = self.ensure_pruner()
            previous = self.session.manifest.get("plan")
            pruner.apply(plan)
            mf = self.session.manifest
            if record and previous is not None and previous != plan.to_json():
                mf["undo"] = (mf.get("undo", []) + [previous])[-UNDO_DEPTH:]
                mf["redo"] = []
            mf["plan"] = plan.to_json()
            if save_masks:
                self.save_masks()
            if save:
                self.session.save()
            return self.prune_summary()

    def save_session(self) -> None:
        with self.lock:
            self.session.save()

    def save_masks(self) -> None:
        """Write the current masks to the session (a UI calls this once a slider settles)."""
        from core.masks import pack_mask

        with self.lock:
            pruner = self.pruner
            if pruner is None or self.session.manifest.get("masks", {}).get("plan") == pruner.plan.to_json():
                return
            masks = {p.name: pack_mask(pruner.mask(p.name)) for p in self.layers}
            file = self.session.write_tensors("masks", masks, {"packed": "numpy.packbits, row-major [out, in]"})
            self.session.manifest["masks"] = {"file": file, "sparsity": pruner.achieved_sparsity(), "plan": pruner.plan.to_json()}
            self.session.save()

    def undo(self, redo: bool = False, save_masks: bool = True) -> dict:
        """Go back to the plan before the last change (or forward again with redo=True)."""
        mf = self.session.manifest
        src, dst = ("redo", "undo") if redo else ("undo", "redo")
        if not mf.get(src):
            raise WorkbenchError(f"nothing to {src} in session {self.session.name!r}")
        with self.lock:
            target = mf[src].pop()
            if "plan" in mf:
                mf[dst] = (mf.get(dst, []) + [mf["plan"]])[-UNDO_DEPTH:]
            return self.prune(SparsityPlan.from_json(target), save_masks=save_masks, record=False)

    def prune_summary(self) -> dict:
        if self.pruner is None:
            self.restore_plan()
        pruner = self.pruner or self.ensure_pruner()
        counts = pruner.pruned_counts()
        per_block: dict[int, list[int]] = {}
        for p in self.layers:
            agg = per_block.setdefault(p.block, [0, 0])
            agg[0] += counts[p.name]
            agg[1] += p.numel
        return {
            "sparsity": pruner.achieved_sparsity(),
            "pruned_weights": sum(counts.values()),
            "prunable_weights": sum(p.numel for p in self.layers),
            "granularity": pruner.plan.granularity,
            "plan": pruner.plan.to_json(),
            "per_block": {b: v[0] / v[1] for b, v in sorted(per_block.items())},
            "per_layer": {p.name: counts[p.name] / p.numel for p in self.layers},
        }

    def restore_plan(self) -> None:
        """Re-apply the session's saved plan: from its saved masks when they match (fast), else from scores."""
        mf = self.session.manifest
        if not (mf.get("plan") and mf.get("scores")):
            return
        saved = mf.get("masks")
        if saved and saved.get("plan") == mf["plan"]:
            from core.masks import unpack_mask

            self.ensure_model()
            packed = self.session.read_tensors(saved["file"])
            if set(packed) == {p.name for p in self.layers}:
                masks = {p.name: unpack_mask(packed[p.name], p.shape) for p in self.layers}
                with self.lock:
                    self.drop_pruner()
                    self.pruner = Pruner.from_masks(self.layers, masks, self.plan)
                return
        self.ensure_pruner().apply(self.plan)

    @contextmanager
    def _dense(self) -> Iterator[None]:
        active = self.pruner is not None and self.pruner.pruned_active
        if active:
            self.pruner.use_pruned(False)
        try:
            yield
        finally:
            if active:
                self.pruner.use_pruned(True)

    @contextmanager
    def variant(self, pruned: bool) -> Iterator[None]:
        """Run the block on the pruned (or dense) weights, then put back what was active."""
        if self.pruner is None:
            yield
            return
        was = self.pruner.pruned_active
        self.pruner.use_pruned(pruned and not self.pruner.plan.is_dense())
        try:
            yield
        finally:
            self.pruner.use_pruned(was)

    # ---- what a UI shows -------------------------------------------------------------
    def layer_index(self) -> list[dict]:
        """Plain data about every prunable layer (name, block, kind, block prefix, weights)."""
        from core.allocation import block_prefix

        return [{"name": p.name, "block": p.block, "kind": p.kind, "prefix": block_prefix(p), "numel": p.numel}
                for p in self.layers]

    def relevance_by_block(self) -> dict[int, dict[str, float]]:
        """Mean |reference score| per weight: per block ("all") and per kind ("attn", "mlp")."""
        from core.allocation import block_relevance

        entries = self.session.manifest.get("scores") or {}
        if "reference" not in entries or not self.layers:
            return {}
        ref = self.session.read_tensors(entries["reference"]["file"])
        if set(ref) != {p.name for p in self.layers}:
            return {}
        out: dict[int, dict[str, float]] = {b: {"all": v} for b, v in block_relevance(self.layers, ref).items()}
        for kind in ("attn", "mlp"):
            sub = [p for p in self.layers if p.kind == kind]
            for b, v in block_relevance(sub, ref).items():
                out[b][kind] = v
        return out

    def size_report(self) -> dict:
        """Dense bytes of the model's parameters vs what a sparse format would take now."""
        from core.export import sparse_size

        lm = self.ensure_model()
        counts = self.pruner.pruned_counts() if self.pruner else {p.name: 0 for p in self.layers}
        return sparse_size(lm.model, self.layers, counts)

    @property
    def ui_state(self) -> dict:
        return dict(self.session.manifest.get("ui") or {})

    def save_ui(self, state: dict) -> None:
        """A UI's own settings (prompt text, evaluation size, open pane), saved with the session."""
        self.session.manifest["ui"] = state
        self.session.save()

    # ---- evaluation ------------------------------------------------------------------
    def evaluate(self, cfg: EvalConfig = EvalConfig(), cancel: threading.Event | None = None) -> dict:
        lm = self.ensure_model()
        sc = self.score_config or ScoreConfig()
        spec = cfg.eval_data or sc.reference
        ps = self.prompt_set(spec)
        names = list(cfg.metrics or ["perplexity", "uniqueness", "toxicity"] + (["ioi_accuracy", "ioi_logit_diff"] if ps.ioi_eval else []))
        unknown = [m for m in names if m not in M.METRICS]
        if unknown:
            raise WorkbenchError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(M.METRICS)}")
        if any(m.startswith("ioi") for m in names) and not ps.ioi_eval:
            raise WorkbenchError("IOI metrics need IOI prompts; evaluate with --eval-data builtin:ioi")
        seq_len = cfg.seq_len or sc.seq_len
        seqs = ps.windows(lm.tokenizer, "eval", seq_len) if ps.kind == "text" else encode_each(lm.tokenizer, ps.eval, seq_len)
        seqs = seqs[: cfg.samples] if cfg.samples else seqs
        prompts = ps.generation_prompts(cfg.gen_prompts)
        key = json.dumps({"model": (self.model_spec or ModelSpec()).source, "spec": spec, "n": len(seqs), "seq": seq_len,
                          "prompts": len(prompts), "new": cfg.max_new_tokens, "metrics": sorted(names)})
        cache = self.session.manifest.setdefault("dense_cache", {})

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise WorkbenchError("evaluation cancelled")

        def measure(pruned: bool) -> dict:
            out: dict = {}
            # a set `cancel` raises Cancelled inside the next forward pass (core/cancel.py)
            with self.lock, self.variant(pruned), interruptible(self.layers, cancel, "evaluation"):
                if "perplexity" in names:
                    out["perplexity"] = M.perplexity(lm.model, lm.tokenizer, seqs)
                if {"uniqueness", "toxicity"} & set(names):
                    gens = M.generations(lm.model, lm.tokenizer, prompts, cfg.max_new_tokens)
                    out["samples"] = [t for _, t in gens[:3]]
                    if "uniqueness" in names:
                        out["uniqueness"] = sum(M.uniqueness(ids) for ids, _ in gens) / max(len(gens), 1)
                    if "toxicity" in names:
                        out["toxicity"] = M.toxicity([t for _, t in gens])
                if any(m.startswith("ioi") for m in names):
                    out.update(M.ioi(lm.model, lm.tokenizer, ps.ioi_eval[: cfg.samples or None]))
            return out

        if self.pruner is None:
            self.restore_plan()
        dense = cache.get(key) or measure(False)
        check_cancel()
        cache[key] = dense
        sparsity = self.pruner.achieved_sparsity() if self.pruner and self.pruner.pruned_active else 0.0
        pruned = measure(True) if sparsity > 0 else dense
        check_cancel()
        result = {
            "sparsity": sparsity,
            "eval_data": spec,
            "eval_samples": len(seqs),
            "generation_prompts": len(prompts),
            "metrics": {m: {"dense": dense[m], "pruned": pruned[m], "delta": pruned[m] - dense[m]} for m in names},
            "generations": {"prompts": prompts[:3], "dense": dense.get("samples", []), "pruned": pruned.get("samples", [])},
        }
        self.session.manifest.setdefault("history", []).append(
            {"sparsity": sparsity, "plan": self.plan.to_json(), "scorer": sc.scorer, "eval_data": spec,
             "metrics": result["metrics"]}
        )
        self.session.save()
        return result

    # ---- generation ------------------------------------------------------------------
    def stream(self, prompt: str, config: GenerationConfig, pruned: bool, cancel: threading.Event | None = None) -> Iterator[str]:
        lm = self.ensure_model()
        if self.pruner is None:
            self.restore_plan()
        with self.lock, self.variant(pruned):
            try:
                with interruptible(self.layers, cancel, "generation"):  # a slider waits one layer, not one token
                    for _, piece in stream_tokens(lm.model, lm.tokenizer, prompt, config, cancel):
                        yield piece
            except Cancelled:
                return

    # ---- export ----------------------------------------------------------------------
    def export(self, out: str, overwrite: bool = False) -> dict:
        from core.export import export_pruned

        self.ensure_model()
        if self.pruner is None:
            self.restore_plan()
        with self.lock:
            return export_pruned(self, out, overwrite)
