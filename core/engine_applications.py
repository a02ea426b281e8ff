"""The engine's applications of the paper: circuit discovery on a task set and targeted correction of a
behaviour, both measured on items no scorer saw."""

from __future__ import annotations

import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


from core import catalog
from core.data.tokens import encode_each
from core.errors import WorkbenchError
from core.model.interrupt import interruptible
from core.pruning.plan import SparsityPlan
from core.pruning.registry import canonical, granularity
from core.results import CircuitPointResult, CircuitResult
from core.session.outcomes import CircuitRecord, CorrectionRecord
from core.session.store import Session
from core.settings import CircuitConfig, CorrectConfig, ScoreConfig
from core.engine_model import EngineService, ModelService
from core.engine_pruning import PruningService
from core.engine_rankings import RankingStore
from core.engine_scoring import ScoringService

if TYPE_CHECKING:
    from core.applications.correction import SweepProgress


class ApplicationService(EngineService):
    """Circuits and correction."""

    def __init__(self, model: ModelService, rankings: RankingStore, pruning: PruningService, scoring: ScoringService, new_engine: Callable[[Session], Any]):
        super().__init__(model)
        self.rankings = rankings
        self.pruning = pruning
        self.scoring = scoring
        self.new_engine = new_engine

    def task_items(self, spec: str | None = None) -> tuple[str, list]:
        spec = spec or (self.rankings.score_config or ScoreConfig()).reference
        ps = self.model.prompt_set(spec)
        if not ps.task_eval:
            raise WorkbenchError(f"a circuit needs a task set as the reference ({spec} is not one); score with "
                                 "--reference builtin:ioi or builtin:agreement first")
        return spec, ps.task_eval

    def circuit(self, cfg: CircuitConfig = CircuitConfig(), save: bool = True, cancel: threading.Event | None = None
                ) -> CircuitResult:
        """The task along kept fractions of the session's ranking; the circuit becomes the session's plan (`save`)."""
        from core.applications.circuits import circuit_map, measure_curve

        catalog.check(cfg)
        cfg = replace(cfg, granularity=canonical(cfg.granularity))
        lm = self.model.ensure_model()
        spec, items = self.task_items()
        scorer = self.rankings.score_config.scorer if self.rankings.score_config else "?"
        if cfg.ablation == "patch":
            from core.applications.circuits import patchable

            items = patchable(lm.tokenizer, items)
            if not items:
                raise WorkbenchError(f"--ablation patch needs task items with a corrupted counterpart of the same length "
                                     f"in tokens; {spec} has none: use --ablation mean")
        with self.lock, interruptible(self.layers, cancel, "circuit"):
            pruner = self.pruning.ensure_pruner()
            curve = measure_curve(pruner, lm.model, lm.tokenizer, items, cfg.granularity, threshold=cfg.threshold,
                                  ablation=cfg.ablation, reference=self.model.prompt_set(spec).task_score)
        plan = curve.plan(curve.circuit_kept) if curve.circuit_kept is not None else None
        result = CircuitResult(scorer, cfg.granularity, spec, len(items), cfg.threshold, curve.dense, curve.empty,
                               [CircuitPointResult(**asdict(p)) for p in curve.points], curve.circuit_kept, curve.area,
                               cfg.ablation)
        if plan is not None:
            if save:
                self.pruning.prune(plan)
            else:
                with self.lock:
                    pruner.apply(plan)
            result.map = circuit_map(pruner, cfg.granularity,
                                        pruner.removed(plan) if granularity(cfg.granularity).unit else None)
            if not save:
                with self.lock:
                    pruner.use_pruned(False)
        if save:
            with self.session.edit() as m:
                m.circuits[cfg.granularity] = CircuitRecord(**{**result.to_json(), "plan": plan})
        return result

    def circuit_compare(self, cfg: CircuitConfig, progress: Callable[[str], None] | None = None) -> list[CircuitResult]:
        """The same task's circuit by other scorers (scored in scratch sessions on this model; nothing here changes)."""
        import tempfile

        catalog.check(cfg)
        base = self.rankings.score_config or ScoreConfig()
        self.task_items()  # refuses a session without a task set before any scoring
        lm, spec = self.model.ensure_model(), self.model.model_spec
        self.pruning.drop_pruner()  # the scratch pruners start from the dense weights
        results = []
        with tempfile.TemporaryDirectory(prefix="circuit-") as tmp:
            for scorer in cfg.compare or (base.scorer,):
                for seed in range(cfg.seeds):
                    if progress:
                        progress(f"{scorer}, seed {seed}")
                    scratch = self.new_engine(Session.create(Path(tmp), f"{scorer}-{seed}"))
                    scratch.model.use_model(lm, spec)
                    scratch.model.prompt_sets = self.model.prompt_sets
                    # no contrast here: what the session's contrast resolved (reduce, explain, pair) is chosen afresh
                    contrast = {"reduce": None, "explain": None, "pair": None} if base.contrastive else {}
                    scratch.scoring.score(replace(base, scorer=scorer, seed=seed, contrastive=None, **contrast))
                    results.append(replace(scratch.applications.circuit(cfg, save=False), seed=seed))
                    scratch.pruning.drop_pruner()
        return results

    def correct(self, cfg: CorrectConfig = CorrectConfig(), progress: Callable[[SweepProgress], None] | None = None,
                cancel: threading.Event | None = None) -> CorrectionRecord:
        """Sweep the amount of contrastive pruning; apply the strongest correction within the perplexity bound.
        `progress` hears each step as it starts and as it is measured (core/applications/correction.py)."""
        from core.applications.correction import STEPS, check_steps, choose, resolved_granularity, step_plan, sweep

        catalog.check(cfg)
        sc = self.rankings.score_config
        if sc is None or not sc.contrastive:
            raise WorkbenchError("`correct` needs a contrastive score: run `workbench score --contrastive SET` first "
                                 "(builtin:toxicity or builtin:repetition)")
        lm = self.model.ensure_model()
        from core.evaluation.registry import behaviour_of

        b = behaviour_of(sc.contrastive, sc.continuation_for(sc.contrastive), cfg.behaviour)
        behaviour = b.name
        cfg = replace(cfg, granularity=resolved_granularity(cfg.granularity, behaviour))
        steps = cfg.steps or STEPS[cfg.granularity]
        check_steps(cfg.granularity, steps)
        windows, prompts = self.correction_data(cfg)
        with self.lock, interruptible(self.layers, cancel, "correction"):
            rows = sweep(self.pruning.ensure_pruner(), lm.model, lm.tokenizer, windows, prompts, cfg.granularity, steps,
                         behaviour, cfg.new_tokens, cfg.seeds if b.sampled else 0, progress)
        best = choose(rows, behaviour, cfg.bound)
        record = CorrectionRecord(scorer=sc.scorer, reference=sc.reference, contrastive=sc.contrastive,
                                  granularity=cfg.granularity, behaviour=behaviour, bound=cfg.bound,
                                  measure_on=cfg.measure_on, prompts_from=cfg.prompts_from,
                                  windows=len(windows), prompts=len(prompts),
                                  steps=[asdict(r) for r in rows], chosen=None if best is None else best.amount)
        self.pruning.prune(step_plan(cfg.granularity, best.amount) if best else SparsityPlan(0.0))
        with self.session.edit() as m:
            m.correction = record
        return record

    def correction_data(self, cfg: CorrectConfig) -> tuple[list[list[int]], list[str]]:
        """Reference windows for the perplexity cost and prompts for the behaviour, none of them scored.

        held-out: the sets' evaluation splits. validation: what this score's draw left out of the
        scoring splits, so settings can be compared without the held-out data that reports them.
        """
        from core.attribution.samples import undrawn

        sc, tok = self.rankings.score_config, self.model.ensure_model().tokenizer
        ref, con = self.model.prompt_set(sc.reference), self.model.prompt_set(sc.contrastive)
        if cfg.measure_on == "validation":
            pool = ref.windows(tok, "score", sc.seq_len) if ref.kind == "text" else encode_each(tok, ref.score, sc.seq_len)
            windows = undrawn(pool, sc.samples, sc.seed)
        else:
            windows = ref.windows(tok, "eval", sc.seq_len) if ref.kind == "text" else encode_each(tok, ref.eval, sc.seq_len)
        if cfg.prompts_from:
            ps = self.model.prompt_set(cfg.prompts_from)
            prompts = ps.generation_prompts(cfg.prompts, ps.held_out_split((sc.reference, sc.contrastive)))
        elif cfg.measure_on == "validation":
            if con.kind != "prompts":
                raise WorkbenchError(f"--measure-on validation takes prompts the score did not draw, but {sc.contrastive} is "
                                     "not a prompt set; give --prompts-from SET")
            prompts = undrawn(con.score, sc.samples, sc.seed)
        else:
            prompts = con.generation_prompts(cfg.prompts)
        if not windows or not prompts:
            what = "reference windows" if not windows else "contrastive prompts"
            raise WorkbenchError(f"no {what} left to measure on ({cfg.measure_on}): the score drew all of them; score "
                                 "with fewer --samples, or give --prompts-from SET")
        return windows[: cfg.eval_windows], prompts[: cfg.prompts]
