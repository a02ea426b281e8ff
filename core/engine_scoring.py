"""The engine's scoring: prompt sets -> scorer -> the session's ranking.

`score` accumulates each set's sums (checkpointed, resumable under the same key), finishes
them into one ranking, and streams it to the session layer by layer; the ranking store reads it
back lazily."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable


from core import catalog
from core.attribution.combine import unit_values
from core.attribution.keys import ranking_key, set_key, stream_seed
from core.attribution.registry import scorer as scorer_info
from core.attribution.runner import finish_units, run_scorer
from core.attribution.samples import NothingUnwanted, scoring_batches
from core.attribution.state import Progress, ScorerOptions, ScoreState
from core.errors import Cancelled, Interrupted, WorkbenchError
from core.model.recompute import recompute_wanted
from core.model.units import unit_key
from core.pruning.compact import compact_layers
from core.pruning.ranking import Ranking
from core.results import ScoreResult, SetScored
from core.session.manifest import RankingRecord, SumsRecord
from core.settings import ScoreConfig
from core.engine_model import EngineService, ModelService
from core.engine_pruning import PruningService
from core.engine_rankings import RankingStore

SET_DEFAULTS = ("reduce", "explain", "pair")  # ScoreConfig fields whose default depends on the prompt sets
ProgressCallback = Callable[[str, Progress], None]  # (prompt set: "reference" | "contrastive" | "paired", progress)


class ScoringService(EngineService):
    """Scores the session's prompt sets into its ranking."""

    def __init__(self, model: ModelService, rankings: RankingStore, pruning: PruningService):
        super().__init__(model)
        self.rankings = rankings
        self.pruning = pruning

    def score(self, cfg: ScoreConfig, progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None, stage: Callable[[str], None] | None = None) -> ScoreResult:
        """Score reference (and contrastive) samples into the session's ranking.

        A ranking with the same key is reused; sums of an interrupted run with the same key
        are resumed. On `Cancelled` or Ctrl-C the completed batches are saved first. `stage` hears what
        happens between the batches' progress (preparing a set, building and writing the ranking).
        """
        stage = stage or (lambda text: None)
        catalog.check(cfg)
        self.model.ensure_model()
        self.model.check_seq_len(cfg.seq_len)
        explain_chosen = cfg.explain is not None
        defaults = [k for k in SET_DEFAULTS if getattr(cfg, k) is None]
        cfg = self.resolved_score_config(cfg)
        sets = {"reference": cfg.reference} | ({"contrastive": cfg.contrastive} if cfg.contrastive else {})
        if cfg.pair != "none":
            if not cfg.contrastive or self.model.prompt_set(cfg.contrastive).kind != "prompts":
                raise WorkbenchError("--pair clean needs a contrastive prompt set (builtin:toxicity, builtin:repetition, "
                                     "JSONL 'prompt' rows) whose prompts it continues the wanted way; drop --pair")
            if scorer_info(cfg.scorer).needs_data:
                sets["paired"] = cfg.contrastive
        source = self.model.model_spec.source
        key = ranking_key(cfg, source)
        mf = self.session.manifest
        # The session's settings change only together with the ranking they describe: a failed or killed
        # score leaves them as they were.
        if self._cached(key):
            self._record_settings(cfg, defaults)
            return {w: SetScored(mf.ranking.samples.get(w, 0), cached=True) for w in sets}
        options = ScorerOptions.of(cfg, recompute_wanted(cfg.recompute, cfg.seq_len))
        states: dict[str, ScoreState] = {}
        summary: ScoreResult = {}
        with self.lock:
            with self.pruning.weights(pruned=False):  # scorers read, and some finish from, the dense weights
                cfg, inputs = self._scoring_inputs(cfg, sets, fallback=not explain_chosen, stage=stage)
                if ranking_key(cfg, source) != key:  # --explain fell back to all: another score, maybe one made before
                    key = ranking_key(cfg, source)
                    if self._cached(key):
                        self._record_settings(cfg, defaults)
                        return {w: SetScored.from_notes(inputs[w][2], samples=mf.ranking.samples.get(w, 0), cached=True)
                                for w in sets}
                self._score_sets(cfg, sets, inputs, source, options, progress, cancel, states, summary, stage)
                stage("building the ranking from the scores and writing it to the session…")
                ranking, record = self._finish_ranking(cfg, key, states, summary)
            self.pruning.drop_pruner()  # its ranks are stale; the model goes back to the original weights
            with self.session.edit() as m:
                m.ranking, m.sums, m.counts, m.sparsity, m.reconstruction = record, {}, None, None, None
                m.score_config, m.score_defaults = replace(cfg), defaults
            self.rankings.remember(ranking)
        return summary

    def _cached(self, key: dict) -> bool:
        """Whether the session's ranking was made with `key` and its file is whole (a deleted, truncated or
        changed file is scored again, so re-running `score` is the recovery it promises)."""
        rec = self.session.manifest.ranking
        if rec is None or rec.key != key:
            return False
        if self.session.intact(rec.file):
            return True
        self.rankings.forget()
        return False

    def _record_settings(self, cfg: ScoreConfig, defaults: list[str]) -> None:
        with self.session.edit() as m:
            m.score_config, m.score_defaults = replace(cfg), defaults

    def resolved_score_config(self, cfg: ScoreConfig) -> ScoreConfig:
        """`cfg` with the defaults that depend on the prompt sets' kinds filled in (ScoreConfig.resolved)."""
        from core.recipes import resolve

        return resolve(cfg, lambda spec: self.model.prompt_set(spec).kind)

    def _scoring_inputs(self, cfg: ScoreConfig, sets: dict[str, str], fallback: bool,
                        stage: Callable[[str], None]) -> tuple[ScoreConfig, dict[str, tuple[list, int, dict]]]:
        """Per set: its batches, how many samples it has, notes for the user. The contrastive set goes
        first: when `fallback` (--explain was not chosen) and none of its samples shows the unwanted
        behaviour, every set explains all tokens instead, and the config returned says so."""
        if not scorer_info(cfg.scorer).needs_data:
            return cfg, {w: ([], 0, {}) for w in sets}
        per_pass = max(1, min(cfg.batch_size, cfg.batch_tokens // cfg.seq_len))
        drawn: dict = {}  # --pair clean on toxicity: the paired set picks from the contrastive set's draws
        inputs: dict[str, tuple[list, int, dict]] = {}
        for which in sorted(sets, key=lambda w: w != "contrastive"):
            ps, notes = self.model.prompt_set(sets[which]), {}
            continued = ps.kind == "prompts" and cfg.continuation > 0
            stage(f"preparing the {which} set ({ps.spec})" + (": the model continues its prompts…" if continued else "…"))
            try:
                batches = scoring_batches(self.lm, ps, cfg.for_clean_pair() if which == "paired" else cfg, per_pass,
                                          notes, drawn)
            except NothingUnwanted:
                if not (fallback and which == "contrastive"):
                    raise
                cfg, notes = replace(cfg, explain="all"), {**notes, "explain_fallback": "all"}
                notes.pop("explained", None)
                batches = scoring_batches(self.lm, ps, cfg, per_pass, {}, drawn)
            if not batches:
                raise WorkbenchError(f"{ps.spec}: no sample has 2 or more tokens; give longer samples")
            # samples skipped by --explain unwanted are there, they just show nothing unwanted
            available = notes["explained"]["of"] if "explained" in notes else sum(b.size for b in batches)
            inputs[which] = (batches, available, notes)
        return cfg, inputs

    def _score_sets(self, cfg: ScoreConfig, sets: dict[str, str], inputs: dict[str, tuple[list, int, dict]],
                    source: str, options: ScorerOptions, progress: ProgressCallback | None,
                    cancel: threading.Event | None, states: dict[str, ScoreState], summary: ScoreResult,
                    stage: Callable[[str], None]) -> None:
        """Run the scorer over each set's inputs, resuming matching sums; fills `states` and `summary`."""
        mf, info = self.session.manifest, scorer_info(cfg.scorer)
        for k, (which, spec) in enumerate(sets.items(), 1):
            stage(f"scoring set {k} of {len(sets)} ({which})…")
            skey = set_key(cfg, which, source)
            rec = mf.sums.get(which)
            state = ScoreState()
            if rec is not None and rec.key == skey:
                state = ScoreState(self.session.read_tensors(rec.file), rec.samples, rec.tokens)
            batches, available, notes = inputs[which]
            held = [state.samples]  # samples of this set the session holds
            saving = [False]

            def save(st: ScoreState, which=which, skey=skey) -> None:
                if st.torn or not st.samples or st.samples == held[0]:
                    return  # a half-accumulated batch is never written; nothing new: the last checkpoint stands
                # one accumulator at a time from its device to the file: a checkpoint never copies all to RAM
                layout = {k: (v.dtype, tuple(v.shape)) for k, v in st.sums.items()}
                saving[0] = True
                with self.session.stream_tensors(f"sums-{which}", layout, {"samples": str(st.samples)}) as out:
                    out.put_all(st.sums)
                file = out.name
                with self.session.edit() as m:
                    m.sums[which] = SumsRecord(file=file, samples=st.samples, tokens=st.tokens, key=skey)
                saving[0], held[0] = False, st.samples

            report = (lambda p, which=which: progress(which, p)) if progress else None
            try:
                state = run_scorer(cfg.scorer, self.lm.model, self.layers, batches, options, state=state,
                                   progress=report, cancel=cancel, checkpoint=save)
            except (Cancelled, KeyboardInterrupt) as exc:
                if not saving[0]:  # interrupted inside a checkpoint: writing everything again would keep the user waiting
                    save(state)
                if isinstance(exc, KeyboardInterrupt):
                    raise Interrupted(
                        f"interrupted; the session holds {held[0]} scored samples of the {which} set: run the same "
                        "`workbench score` to resume from there" if held[0] else
                        f"interrupted before the first batch of the {which} set finished; nothing of it was saved"
                    ) from None
                raise
            states[which] = state
            total = sum(b.size for b in batches)
            summary[which] = SetScored.from_notes(notes, samples=state.samples, of=total, tokens=state.tokens,
                                                  asked=cfg.samples if info.needs_data else 0)
            if info.needs_data and available < cfg.samples:
                summary[which].short = (f"{spec} has only {available} {'windows' if self.model.prompt_set(spec).kind == 'text' else 'samples'}"
                                           f" of {cfg.seq_len} tokens for scoring, fewer than the {cfg.samples} asked for")
            if info.needs_data and (which != "reference" or cfg.contrastive):
                save(state)  # the other set may still fail; keep this one

    def _finish_ranking(self, cfg: ScoreConfig, key: dict, states: dict[str, ScoreState],
                        summary: ScoreResult) -> tuple[Ranking, RankingRecord]:
        """Finished scores -> ranking values -> the compact ranking, written to the session (not yet named in it)."""
        options = ScorerOptions.of(cfg)
        model = self.lm.model
        unit_scores = {w: finish_units(cfg.scorer, model, self.layers, st, options.but(seed=stream_seed(cfg.seed, w)))
                       for w, st in states.items()}
        units = unit_values(unit_scores, cfg.reduce, cfg.normalize)
        layout = Ranking.layout({p.name: tuple(p.shape) for p in self.layers}, units)
        unscored: list[str] = []
        # each layer goes to disk as it is finished: RAM never holds the whole ranking (sessions/README.md)
        with self.session.stream_tensors("ranking", layout, {"scorer": cfg.scorer}) as out:
            for name, lr in compact_layers(cfg.scorer, model, self.layers, states, options, cfg.reduce, cfg.normalize, unscored):
                out.put_all(Ranking.layer_tensors(name, lr))
            for kind, scores in units.items():
                out.put(unit_key(kind), scores)
        file = out.name
        ranking = self.rankings.open_ranking(file)
        for which in summary:
            summary[which].unscored_layers = len(unscored)
        return ranking, RankingRecord(file=file, key=key, samples={w: s.samples for w, s in states.items()},
                                      tokens={w: s.tokens for w, s in states.items()}, unscored_layers=unscored)
