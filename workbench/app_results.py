"""The app's answers to the engine jobs' messages: each result is shown on the pane it belongs to.

A mixin of WorkbenchApp (workbench/app.py): it writes what each message says into the app's TuiState
(workbench/tui_state.py) and shows it on the panes;
Textual finds these `on_*` handlers anywhere in the app's class hierarchy.
"""

from __future__ import annotations

import time

from core.pruning.levels import PlanLevels
from screens import messages as msg
from screens.attribution_pane import AttributionPane
from screens.circuit_pane import CircuitPane
from screens.correct_pane import CorrectPane
from screens.generation_pane import GenerationPane
from screens.main import PANES
from screens.metrics_pane import MetricsPane
from screens.model_pane import ModelPane
from screens.prompts_pane import PromptsPane
from screens.share import share
from screens.save_pane import SavePane
from screens.sparsity_pane import SparsityPane
from workbench.tui_words import in_tui_words


def score_notes(summary: dict) -> list[str]:
    """What a user should know of a score's sets, each note once (the paired set repeats the contrastive's)."""
    notes = [s.short for s in summary.values() if s.short]
    notes += [f"{w}: {c.offensive} of {c.prompts} scored continuations offensive (the "
              f"{'most' if c.by == 'most-toxic' else 'least'} offensive of {c.draws} draws each)"
              for w, c in ((w, s.continuations) for w, s in summary.items()) if c]
    notes += [f"{w}: {e.tokens} unwanted tokens explained in {e.samples} of {e.of} samples"
              for w, e in ((w, s.explained) for w, s in summary.items()) if e]
    notes += [f"{w}: no sample shows anything unwanted, so every token was explained"
              for w, s in summary.items() if s.explain_fallback]
    return list(dict.fromkeys(notes))


class JobResults:
    def on_session_opened(self, m: msg.SessionOpened) -> None:
        self.pane(SavePane).show_session(m.name, m.path, "on every change")
        self.pane(PromptsPane).restore({**m.score_config, **m.ui.get("prompts", {})})
        scoring = dict(m.score_config)  # what the last score filled in by default is None: it follows the sets
        if m.ui.get("attribution"):  # the options as chosen in the dialog
            scoring.update(m.ui["attribution"])
        self.pane(AttributionPane).restore(scoring)
        self.pane(GenerationPane).restore(m.ui.get("generation", {}))
        sparsity = self.pane(SparsityPane)
        sparsity.restore(m.ui.get("sparsity", {}))
        if m.score_config and self.jobs.autoload:  # scored: say so while the model loads, not "no scores yet"
            sparsity.show_loading()
        self.state.levels.allocation, self.state.levels.spread = sparsity.levels.allocation, sparsity.levels.spread
        if m.model:
            self.pane(ModelPane).show_spec(m.model)
        if m.ui.get("pane") in dict((p[0], p) for p in PANES):
            self.main.query_one("#tabs").active = m.ui["pane"]
        self._update_status()

    def on_model_loaded(self, m: msg.ModelLoaded) -> None:
        self.state.loaded_spec = m.spec
        self.state.index = m.index
        self.state.model_info = m.info
        self.state.model_sizes = m.size
        pane = self.pane(ModelPane)
        pane.show_info(m.info, m.index)
        pane.show_spec(m.spec)
        sizes: dict[tuple[int, str], int] = {}
        for r in m.index:
            sizes[(r["block"], r["kind"])] = sizes.get((r["block"], r["kind"]), 0) + r["numel"]
        self.pane(SparsityPane).set_blocks(sorted({r["block"] for r in m.index}), sizes)
        n = m.info["parameters"]
        size = f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
        self.state.model_line = f"{m.info['architecture']} {size} on {m.info['device']}"
        self._update_status()

    def on_model_ready(self, m: msg.ModelReady) -> None:
        self.action_generate()
        if self.state.score_when_loaded:  # ctrl+r pressed while the model loaded
            self.state.score_when_loaded = False
            self.action_score()

    def _stale(self, m: msg.JobStatus | msg.JobCancelled | msg.JobFailed) -> bool:
        """A message from a start of the job older than the latest one heard of: that run is over."""
        if m.run < self._job_runs.get(m.job, 0):
            return True
        if m.run:
            self._job_runs[m.job] = m.run
        return False

    def on_job_status(self, m: msg.JobStatus) -> None:
        if self._stale(m):
            return
        if m.busy:
            self._jobs[m.job] = m.text
        else:
            self._jobs.pop(m.job, None)
        if m.job == "load":
            self.pane(ModelPane).set_busy(m.busy, m.text)
        if m.job == "score":  # what scoring does now, from the first moment (batches report their own progress)
            self.pane(AttributionPane).set_running(m.busy)
            self.pane(AttributionPane).show_status(m.text)
        if m.job == "evaluate":
            self.pane(MetricsPane).set_status(m.text)
        if m.job == "circuit" and m.busy:
            self.pane(CircuitPane).set_status(m.text)
        if m.job == "correct" and m.busy:
            self.pane(CorrectPane).set_status(m.text)
        if m.job == "reconstruct" and not m.busy:
            self.notify(m.text)
        self._update_status()

    def on_job_cancelled(self, m: msg.JobCancelled) -> None:
        if self._stale(m):
            return
        self._jobs.pop(m.job, None)
        if m.job == "score":
            self.pane(AttributionPane).set_running(False)
            self.pane(AttributionPane).show_status(m.text)
        if m.job == "evaluate":
            self.pane(MetricsPane).set_status(m.text)
        self._update_status()

    def on_job_failed(self, m: msg.JobFailed) -> None:
        if self._stale(m):
            return
        self._jobs.pop(m.job, None)
        m = msg.JobFailed(m.job, in_tui_words(m.error), m.run)
        if m.job == "load" and self.state.loaded_spec:  # the model that is loaded stays, and its pane says so
            self.pane(ModelPane).show_spec(self.state.loaded_spec)
            if self.state.model_info is not None:
                self.pane(ModelPane).show_info(self.state.model_info, self.state.index)
        if m.job == "load":
            self.pane(ModelPane).set_busy(False, f"error: {m.error}")
        if m.job == "score":
            self.pane(AttributionPane).set_running(False)
            self.pane(AttributionPane).show_status(f"stopped: {m.error}")
        if m.job == "evaluate":
            self.pane(MetricsPane).set_status(m.error)
        if m.job == "circuit":
            self.pane(CircuitPane).set_status(f"stopped: {m.error}")
        if m.job == "correct":
            self.pane(CorrectPane).set_status(f"stopped: {m.error}")
        if m.job == "reconstruct":
            self.notify(f"reconstruction stopped: {m.error}", severity="error")
        if m.job == "prune":
            self.sync_sliders()
        self.notify(m.error, title=f"{m.job} failed", severity="error", timeout=8)
        self._update_status()

    def on_preview_ready(self, m: msg.PreviewReady) -> None:
        self.pane(PromptsPane).show_preview(m.spec, m.summary, m.score_samples, m.eval_samples)

    def on_score_progress(self, m: msg.ScoreProgress) -> None:
        self.pane(AttributionPane).show_progress(m.which, m.done, m.total, m.tokens_per_s, m.eta_s)

    def on_scores_ready(self, m: msg.ScoresReady) -> None:
        cfg = m.scores.get("config", {})
        samples = m.scores.get("samples", {})
        line = (f"scores: {cfg.get('scorer')} on {cfg.get('reference')}"
                + (f" minus {cfg['contrastive']}" if cfg.get("contrastive") else "")
                + f", {samples.get('reference', 0)} samples x {cfg.get('seq_len')} tokens"
                + ("" if not m.summary else " (" + ", ".join(
                    f"{w}: {'cached' if s.cached else str(s.samples) + ' scored'}" for w, s in m.summary.items()) + ")"))
        notes = score_notes(m.summary)
        if notes:
            line += " · note: " + "; ".join(notes)
        att = self.pane(AttributionPane)
        if m.relevance:
            att.show_relevance(m.relevance, line)
            self.pane(SparsityPane).show_heat(m.relevance)
        else:
            att.show_status(line)
        if not m.summary:  # the session's scores, brought back with it
            att.show_status("scores restored from the session (ctrl+r scores again)")
        self._update_status()
        if m.summary:  # freshly scored: apply the sliders' plan with the new scores
            self.request_plan(self.state.levels, record=False)

    def on_pruned(self, m: msg.Pruned) -> None:
        self.state.model_sizes = m.size
        self.state.sparsity = m.summary.sparsity
        self.state.undo_depth = (m.undo, m.redo)
        if m.allocated:  # the blocks follow the global level: show where the allocation put them
            self.state.levels.follow(m.levels)
            self.show_levels(self.state.levels)
        elif m.move_sliders:
            spread = self.state.levels.spread  # the pane's choice stays; the allocation is the plan's own
            self.state.levels = m.levels
            self.state.levels.spread = spread
            self.show_levels(self.state.levels)
        else:
            self.sync_sliders()
        self.pane(SparsityPane).show_summary(m.summary, m.size, m.undo, m.redo, m.apply_ms, m.levels.custom)
        self.pane(GenerationPane).set_titles(self.state.sparsity)
        self._update_status()
        self.state.pruned_at = time.perf_counter()
        self.state.last_apply_ms = m.apply_ms
        if m.settle:
            self._settle_soon()

    def on_generation_piece(self, m: msg.GenerationPiece) -> None:
        if m.run == self.state.gen_run:
            self.pane(GenerationPane).show_piece(m.which, m.text, m.reset, m.done)

    def on_metrics_ready(self, m: msg.MetricsReady) -> None:
        self.pane(MetricsPane).show_result(m.result, m.history)
        ppl = m.result.metrics.get("perplexity")
        if ppl:
            self.state.last_metrics = f"{ppl.dense:.1f} → {ppl.pruned:.1f}"
            self.state.metrics_at = m.result.sparsity
        self._update_status()

    def on_exported(self, m: msg.Exported) -> None:
        self.pane(SavePane).show_export(m.info)
        self.notify(f"exported {m.info.out}", title="export")

    def on_no_scores(self, m: msg.NoScores) -> None:
        self.pane(SparsityPane).show_no_scores()

    def on_circuit_ready(self, m: msg.CircuitReady) -> None:
        self.pane(CircuitPane).show_results(m.results, m.threshold, m.restored)

    def on_correction_step_measured(self, m: msg.CorrectionStepMeasured) -> None:
        self.pane(CorrectPane).add_step(m.step, m.done == 1)

    def on_correction_ready(self, m: msg.CorrectionReady) -> None:
        self.pane(CorrectPane).show_record(m.record, m.restored)

    def on_saved(self, m: msg.Saved) -> None:
        self.notify(f"saved session {m.session}")

    def show_levels(self, levels: PlanLevels) -> None:
        self.pane(SparsityPane).show_levels(levels)

    def sync_sliders(self) -> None:
        self.pane(SparsityPane).sync_sliders()

    def _update_status(self) -> None:
        # most telling first: a narrow terminal cuts from the right
        parts = {"sparsity": share(self.state.sparsity)}
        if self.state.last_metrics:
            at = self.state.metrics_at
            # a result measured at another plan is never shown as this one's
            parts["ppl"] = self.state.last_metrics + ("" if abs(at - self.state.sparsity) < 1e-9 else f" (at {share(at)})")
        if self._jobs:
            parts["busy"] = "; ".join(self._jobs.values())
        parts |= {"model": self.state.model_line, "session": self.session_name}
        self.main.set_status(parts)
