"""The engine's measurements: metrics of the dense and the pruned model on held-out data (recorded in the
session's history) and streamed generation."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from typing import Iterator


from core import catalog
from core.attribution.keys import INPUTS
from core.data.tokens import encode_each
from core.errors import Cancelled, WorkbenchError
from core.evaluation.generation import stream_tokens
from core.evaluation.measure import Measurement
from core.evaluation.zero_shot import zero_shot
from core.evaluation.registry import METRICS, default_metrics
from core.model.interrupt import interruptible
from core.results import Evaluation, Generations, MetricChange
from core.session.outcomes import HistoryEntry
from core.settings import EvalConfig, GenerationConfig, ModelSpec, ScoreConfig
from core.engine_model import EngineService, ModelService
from core.engine_pruning import PruningService
from core.engine_rankings import RankingStore


class EvaluationService(EngineService):
    """Dense vs pruned, measured and generated."""

    def __init__(self, model: ModelService, rankings: RankingStore, pruning: PruningService):
        super().__init__(model)
        self.rankings = rankings
        self.pruning = pruning

    def evaluate(self, cfg: EvalConfig = EvalConfig(), cancel: threading.Event | None = None) -> Evaluation:
        catalog.check(cfg)
        lm = self.model.ensure_model()
        sc = self.rankings.score_config or ScoreConfig()
        spec = cfg.eval_data or sc.reference
        ps = self.model.prompt_set(spec)
        names = list(cfg.metrics or default_metrics(bool(ps.task_eval)))
        if any(METRICS[m].needs == "tasks" for m in names) and not ps.task_eval:
            raise WorkbenchError("task metrics need a task set; evaluate with --eval-data builtin:ioi or builtin:agreement")
        seq_len = cfg.seq_len or sc.seq_len
        self.model.check_seq_len(seq_len)
        # A set the session scored is measured on its held-out split only; anything else is all held out.
        split = ps.held_out_split((sc.reference, sc.contrastive))
        seqs = (ps.windows(lm.tokenizer, split, seq_len) if ps.kind == "text"
                else encode_each(lm.tokenizer, ps.texts(split), seq_len))
        seqs = seqs[: cfg.samples] if cfg.samples is not None else seqs
        prompts = ps.generation_prompts(cfg.gen_prompts)
        key = json.dumps({"model": (self.model.model_spec or ModelSpec()).source, "spec": spec, "split": split, "n": len(seqs), "seq": seq_len,
                          "prompts": len(prompts), "new": cfg.max_new_tokens, "metrics": sorted(names), "inputs": INPUTS}
                         | ({"tasks": list(cfg.tasks), "task_limit": cfg.task_limit} if cfg.tasks else {}))

        def measure(pruned: bool) -> dict:
            ev = Measurement(lm.model, lm.tokenizer, seqs, prompts, cfg.max_new_tokens, ps.task_eval[: cfg.samples or None])
            with self.lock, self.pruning.weights(pruned), interruptible(self.layers, cancel, "evaluation"):
                out: dict = {m: METRICS[m].measure(ev) for m in names}
                if cfg.tasks:
                    out |= zero_shot(lm.model, lm.tokenizer, cfg.tasks, cfg.task_limit)
            return out | {"samples": ev.samples()}

        if self.pruning.pruner is None:
            self.pruning.restore_plan()
        dense = self.session.manifest.dense_cache.get(key) or measure(False)
        with self.session.edit(save=False) as m:
            m.dense_cache[key] = dense
        sparsity = self.pruning.pruner.achieved_sparsity() if self.pruning.pruned_active() else 0.0
        pruned = measure(True) if sparsity > 0 else dense
        result = Evaluation(
            sparsity=sparsity, eval_data=spec, eval_split=split, eval_samples=len(seqs), generation_prompts=len(prompts),
            metrics={m: MetricChange(dense[m], pruned[m], pruned[m] - dense[m]) for m in dense if m != "samples"},
            generations=Generations(prompts[:3], dense.get("samples", []), pruned.get("samples", [])))
        with self.session.edit() as m:
            m.history.append(HistoryEntry(sparsity=sparsity, plan=self.pruning.plan, scorer=sc.scorer, eval_data=spec,
                                          metrics={k: asdict(v) for k, v in result.metrics.items()},
                                          eval_samples=len(seqs), generation_prompts=len(prompts)))
        return result

    def stream(self, prompt: str, config: GenerationConfig, pruned: bool,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """Text pieces of a continuation; a set `cancel` ends the stream quietly at the next layer."""
        lm = self.model.ensure_model()
        if self.pruning.pruner is None:
            self.pruning.restore_plan()
        with self.lock, self.pruning.weights(pruned):
            try:
                with interruptible(self.layers, cancel, "generation"):
                    for _, piece in stream_tokens(lm.model, lm.tokenizer, prompt, config):
                        yield piece
            except Cancelled:
                return

    def history(self) -> list[dict]:
        return [h.model_dump() for h in self.session.manifest.history]
