"""The Textual app: glue between the screens and the engine jobs.

Panes post requests (screens/messages.py); the app asks `EngineJobs` (workbench/jobs.py)
to run them off the UI thread, and turns the result messages into screen updates. The
engine is imported inside the first worker, so the screen paints before torch and
transformers have loaded. A new sparsity cancels stale generation and evaluation; they
restart once the sliders settle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen

from core.pruning.levels import PlanLevels
from core.settings import ModelSpec, ScoreConfig
from screens import messages as msg
from screens.messages import CircuitRequested, CorrectRequested
from screens.attribution_pane import AttributionPane
from screens.circuit_pane import CircuitPane
from screens.correct_pane import CorrectPane
from screens.generation_pane import GenerationPane
from screens.main import PANES, MainScreen
from screens.metrics_pane import MetricsPane
from screens.model_pane import ModelPane
from screens.prompts_pane import PromptsPane
from screens.save_pane import SavePane
from screens.sparsity_pane import SparsityPane
from workbench.jobs import EngineJobs

SETTLE_S = 0.35  # after the last slider move, regenerate and re-evaluate


class _Dropped:
    """Stands in for a pane that is gone because the app is closing: whatever is shown on it is dropped."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class WorkbenchApp(App):
    TITLE = "LRP Workbench"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+e", "export", "Export"),
        Binding("ctrl+z", "undo", "Undo"),
        Binding("ctrl+y", "redo", "Redo", show=False),
        Binding("ctrl+r", "score", "Attribute"),
        Binding("ctrl+l", "load", "Load", show=False),
        Binding("ctrl+u", "allocate('uniform')", "Uniform", show=False),
        Binding("ctrl+g", "generate", "Generate", show=False),
        Binding("ctrl+t", "evaluate", "Evaluate", show=False),
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("f1,question_mark", "help", "Help"),
    ]

    def __init__(self, session: str | None = None, model: str | None = None, store: Path | None = None,
                 autoload: bool = True, device_map: str | None = None) -> None:
        super().__init__()
        self.session_name = session or time.strftime("s-%Y%m%d-%H%M%S")
        self.jobs = EngineJobs(self, self.session_name, store, model, autoload, device_map)
        self.index: list[dict] = []
        self.model_info: dict | None = None  # set once the screen shows the loaded model
        self.model_sizes: dict = {}
        self.levels = PlanLevels()
        self.sparsity = 0.0
        self.undo_depth = (0, 0)
        self._jobs: dict[str, str] = {}  # running job -> status text
        self._settle_timer = None
        self._gen_run = 0
        self._last_metrics = ""
        self._model_line = "loading…"
        self.first_paint_s: float | None = None
        self.panes_ready_s: float | None = None
        self.pruned_at = 0.0  # read by bench/tui.py: key press -> readout latency
        self.last_apply_ms = 0.0
        self._t0 = time.perf_counter()

    # ---- start-up ---------------------------------------------------------------------
    @property
    def main(self) -> MainScreen:
        return self._main  # under any dialog

    def pane(self, cls):
        """The main screen's pane of type `cls` (all exist before any engine result arrives, and a result
        that arrives while the app closes, its panes already gone, is dropped)."""
        try:
            return self.main.query_one(cls)
        except NoMatches:
            if self._exit or self._closing or self.main._closing or self.main._closed:
                return _Dropped()
            raise

    def on_mount(self) -> None:
        self.sub_title = f"session {self.session_name}"
        self._main = MainScreen()
        self.push_screen(self._main)  # pushing (not the default screen) loads the screen's .tcss

    def screen_painted(self) -> None:
        """Called by MainScreen after its first paint (the bench measures start-up to here)."""
        self.first_paint_s = time.perf_counter() - self._t0

    def panes_ready(self) -> None:
        """Called by MainScreen once all panes exist; the engine starts loading only now."""
        self.panes_ready_s = time.perf_counter() - self._t0
        self.jobs.open_session()

    # ---- results from the jobs ----------------------------------------------------------
    def on_session_opened(self, m: msg.SessionOpened) -> None:
        self.pane(SavePane).show_session(m.name, m.path, "on every change")
        self.pane(PromptsPane).restore({**m.score_config, **m.ui.get("prompts", {})})
        scoring = dict(m.score_config)
        if m.ui.get("attribution"):  # the options as chosen in the dialog
            scoring.update(m.ui["attribution"])
        elif scoring.get("reduce") in (("abs",) if scoring.get("contrastive") else ("token-rms", "abs")):
            # a default the last score filled in (a CLI session): it follows the prompt sets again
            scoring["reduce"] = None
        self.pane(AttributionPane).restore(scoring)
        self.pane(GenerationPane).restore(m.ui.get("generation", {}))
        sparsity = self.pane(SparsityPane)
        sparsity.restore(m.ui.get("sparsity", {}))
        self.levels.allocation, self.levels.spread = sparsity.levels.allocation, sparsity.levels.spread
        if m.model:
            self.pane(ModelPane).show_spec(m.model)
        if m.ui.get("pane") in dict((p[0], p) for p in PANES):
            self.main.query_one("#tabs").active = m.ui["pane"]
        self._update_status()

    def on_model_loaded(self, m: msg.ModelLoaded) -> None:
        self.index = m.index
        self.model_info = m.info
        self.model_sizes = m.size
        pane = self.pane(ModelPane)
        pane.show_info(m.info, m.index)
        pane.show_spec(m.spec)
        self.pane(SparsityPane).set_blocks(sorted({r["block"] for r in m.index}))
        n = m.info["parameters"]
        size = f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
        self._model_line = f"{m.info['architecture']} {size} on {m.info['device']}"
        self._update_status()

    def on_model_ready(self, m: msg.ModelReady) -> None:
        self.action_generate()

    def on_job_status(self, m: msg.JobStatus) -> None:
        if m.busy:
            self._jobs[m.job] = m.text
        else:
            self._jobs.pop(m.job, None)
        if m.job == "load":
            self.pane(ModelPane).set_busy(m.busy, m.text)
        if m.job == "score" and not m.busy:
            self.pane(AttributionPane).set_running(False)
            self.pane(AttributionPane).show_status(m.text)
        if m.job == "evaluate":
            self.pane(MetricsPane).set_status(m.text)
        if m.job == "circuit" and m.busy:
            self.pane(CircuitPane).set_status(m.text)
        if m.job == "correct" and m.busy:
            self.pane(CorrectPane).set_status(m.text)
        self._update_status()

    def on_job_cancelled(self, m: msg.JobCancelled) -> None:
        self._jobs.pop(m.job, None)
        if m.job == "score":
            self.pane(AttributionPane).set_running(False)
            self.pane(AttributionPane).show_status(m.text)
        if m.job == "evaluate":
            self.pane(MetricsPane).set_status(m.text)
        self._update_status()

    def on_job_failed(self, m: msg.JobFailed) -> None:
        self._jobs.pop(m.job, None)
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
                    f"{w}: {'cached' if s.get('cached') else str(s.get('samples')) + ' scored'}" for w, s in m.summary.items()) + ")"))
        notes = [s["short"] for s in m.summary.values() if s.get("short")]
        notes += [f"{w}: {c['offensive']} of {c['prompts']} scored continuations offensive (the "
                  f"{'most' if c['by'] == 'most-toxic' else 'least'} offensive of {c['draws']} draws each)"
                  for w, c in ((w, s.get("continuations")) for w, s in m.summary.items()) if c]
        notes += [f"{w}: {e['tokens']} unwanted tokens explained in {e['samples']} of {e['of']} samples"
                  for w, e in ((w, s.get("explained")) for w, s in m.summary.items()) if e]
        if notes:
            line += " · note: " + "; ".join(notes)
        att = self.pane(AttributionPane)
        if m.relevance:
            att.show_relevance(m.relevance, line)
            self.pane(SparsityPane).show_heat(m.relevance)
        else:
            att.show_status(line)
        self._update_status()
        if m.summary:  # freshly scored: apply the sliders' plan with the new scores
            self.request_plan(self.levels, record=False)

    def on_pruned(self, m: msg.Pruned) -> None:
        self.model_sizes = m.size
        self.sparsity = m.summary["sparsity"]
        self.undo_depth = (m.undo, m.redo)
        if m.allocated:  # the blocks follow the global level: show where the allocation put them
            self.levels.follow(m.levels)
            self.show_levels(self.levels)
        elif m.move_sliders:
            allocation, spread = self.levels.allocation, self.levels.spread  # the pane's choice stays
            self.levels = m.levels
            self.levels.allocation, self.levels.spread = allocation, spread
            self.show_levels(self.levels)
        else:
            self.sync_sliders()
        self.pane(SparsityPane).show_summary(m.summary, m.size, m.undo, m.redo, m.apply_ms, m.levels.custom)
        self.pane(GenerationPane).set_titles(self.sparsity)
        self._update_status()
        self.pruned_at = time.perf_counter()
        self.last_apply_ms = m.apply_ms
        if m.settle:
            self._settle_soon()

    def on_generation_piece(self, m: msg.GenerationPiece) -> None:
        if m.run == self._gen_run:
            self.pane(GenerationPane).show_piece(m.which, m.text, m.reset, m.done)

    def on_metrics_ready(self, m: msg.MetricsReady) -> None:
        self.pane(MetricsPane).show_result(m.result, m.history)
        ppl = m.result["metrics"].get("perplexity")
        if ppl:
            self._last_metrics = f"{ppl['dense']:.1f} → {ppl['pruned']:.1f}"
        self._update_status()

    def on_exported(self, m: msg.Exported) -> None:
        self.pane(SavePane).show_export(m.info)
        self.notify(f"exported {m.info['out']}", title="export")

    def on_circuit_ready(self, m: msg.CircuitReady) -> None:
        self.pane(CircuitPane).show_results(m.results, m.threshold)

    def on_correction_ready(self, m: msg.CorrectionReady) -> None:
        self.pane(CorrectPane).show_record(m.record)

    def on_saved(self, m: msg.Saved) -> None:
        self.notify(f"saved session {m.session}")

    def show_levels(self, levels: PlanLevels) -> None:
        self.pane(SparsityPane).show_levels(levels)

    def sync_sliders(self) -> None:
        self.pane(SparsityPane).sync_sliders()

    def _update_status(self) -> None:
        parts = {"session": self.session_name, "model": self._model_line, "sparsity": f"{self.sparsity:.1%}"}
        if self._last_metrics:
            parts["ppl"] = self._last_metrics
        if self._jobs:
            parts["busy"] = "; ".join(self._jobs.values())
        self.main.set_status(parts)

    # ---- requests from panes --------------------------------------------------------------
    @on(msg.LoadRequested)
    def _on_load(self, m: msg.LoadRequested) -> None:
        self.jobs.load(ModelSpec(m.source, m.device, m.dtype, m.trust_remote_code))

    @on(msg.PreviewRequested)
    def _on_preview(self, m: msg.PreviewRequested) -> None:
        self.jobs.preview(m.spec)

    @on(msg.ScoreRequested)
    def _on_score(self, m: msg.ScoreRequested) -> None:
        self.action_score()

    def score_settings(self) -> ScoreConfig:
        p = self.pane(PromptsPane).settings()
        return ScoreConfig(reference=p["reference"], contrastive=p["contrastive"], samples=p["samples"],
                           seq_len=p["seq_len"], **self.pane(AttributionPane).settings())

    @on(msg.PlanRequested)
    def _on_plan(self, m: msg.PlanRequested) -> None:
        self.request_plan(m.levels, source=m.source)

    def request_plan(self, levels: PlanLevels, record: bool | None = None, source: str = "", show: bool = False) -> None:
        """The sliders are the truth while they move: results of older requests never move them back."""
        self.levels = levels
        if show:
            self.show_levels(levels)
        if not self.jobs.request_plan(levels, record, source):
            self.sync_sliders()  # nothing will be applied: draw the move now

    def _settle_soon(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.stop()
        self._settle_timer = self.set_timer(SETTLE_S, self._settled)

    def _settled(self) -> None:
        self._settle_timer = None
        self._autosave()
        self.action_generate()
        self.action_evaluate()

    @on(msg.GenerateRequested)
    def _on_generate(self, m: msg.GenerateRequested) -> None:
        self.action_generate()

    @on(msg.CorrectRequested)
    def _on_correct(self, m: msg.CorrectRequested) -> None:
        if self.model_info is None:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        self.jobs.correct(m.config)

    @on(msg.CircuitRequested)
    def _on_circuit(self, m: msg.CircuitRequested) -> None:
        if self.model_info is None:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        self.jobs.circuit(m.config)

    @on(msg.EvaluateRequested)
    def _on_evaluate(self, m: msg.EvaluateRequested) -> None:
        self.action_evaluate()

    @on(msg.SaveRequested)
    def _on_save(self, m: msg.SaveRequested) -> None:
        self.action_save()

    @on(msg.ExportRequested)
    def _on_export(self, m: msg.ExportRequested) -> None:
        self.action_export()

    # ---- actions (keys, buttons, command palette) -------------------------------------------
    def action_help(self) -> None:
        from screens.dialogs import HelpScreen  # Markdown costs ~0.2 s of start-up; load it when asked

        self.push_screen(HelpScreen())

    def action_load(self) -> None:
        self.pane(ModelPane).post_message(self.pane(ModelPane).request())

    def action_score(self) -> None:
        if self.model_info is None:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        self.pane(AttributionPane).set_running(True)
        self.jobs.score(self.score_settings())

    def action_cancel(self) -> None:
        self.jobs.cancel_all()

    def action_undo(self) -> None:
        if self.undo_depth[0]:
            self.jobs.undo(redo=False)
        else:
            self.notify("nothing to undo")

    def action_redo(self) -> None:
        if self.undo_depth[1]:
            self.jobs.undo(redo=True)
        else:
            self.notify("nothing to redo")

    def action_allocate(self, name: str) -> None:
        self.pane(SparsityPane).set_allocation(name)

    def action_generate(self) -> None:
        if self.model_info is None:
            return
        self._gen_run += 1
        s = self.pane(GenerationPane).settings()
        self.jobs.generate(self._gen_run, s["prompt"], s["max_new_tokens"])

    def action_evaluate(self) -> None:
        if self.model_info is None:
            return
        p = self.pane(PromptsPane).settings()
        self.jobs.evaluate(p["eval_data"], p["eval_samples"], p["seq_len"])

    def ui_state(self) -> dict:
        return {"prompts": self.pane(PromptsPane).settings(),
                "attribution": dict(self.pane(AttributionPane).options),
                "generation": self.pane(GenerationPane).settings(),
                "sparsity": self.pane(SparsityPane).settings(),
                "pane": self.main.active_pane}

    def _autosave(self) -> None:
        self.jobs.save(self.ui_state(), announce=False)

    def action_save(self) -> None:
        self.jobs.save(self.ui_state(), announce=True)

    def action_export(self) -> None:
        if self.model_info is None or not self.model_sizes:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        path = self.pane(SavePane).export_path() or f"exports/{self.session_name}"
        size = self.model_sizes  # from the last model load or prune: the UI thread never waits on the engine lock

        def done(result: tuple[str, bool] | None) -> None:
            if result:
                self.jobs.export(*result)

        from screens.dialogs import ExportDialog  # see action_help

        self.push_screen(ExportDialog(path, self.sparsity, size), done)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for i, (pid, title, _) in enumerate(PANES):
            yield SystemCommand(f"Go to {title}", f"pane {i + 1}", lambda pid=pid: self.main.action_pane(pid))
        yield SystemCommand("Load model", "load what pane 1 names (ctrl+l)", self.action_load)
        yield SystemCommand("Run attribution", "score every weight with the chosen scorer (ctrl+r)", self.action_score)
        yield SystemCommand("Scoring options", "reduce, normalize, explain, continuations, seed, batches (pane 3)",
                            self.pane(AttributionPane).edit_options)
        yield SystemCommand("Cancel running jobs", "attribution, generation, evaluation (escape)", self.action_cancel)
        yield SystemCommand("Allocate: uniform", "every layer at the global sparsity (ctrl+u)", lambda: self.action_allocate("uniform"))
        yield SystemCommand("Allocate: by relevance", "less relevant blocks give up more weights", lambda: self.action_allocate("relevance"))
        yield SystemCommand("Allocate: OWL", "blocks with more outlier scores keep more", lambda: self.action_allocate("owl"))
        yield SystemCommand("Undo sparsity change", "ctrl+z", self.action_undo)
        yield SystemCommand("Redo sparsity change", "ctrl+y", self.action_redo)
        yield SystemCommand("Find the circuit", "the fewest components that keep the session's task (pane 8)",
                            lambda: self.pane(CircuitPane).post_message(CircuitRequested(self.pane(CircuitPane).settings())))
        yield SystemCommand("Correct a behaviour", "sweep contrastive pruning within a perplexity bound (pane 9)",
                            lambda: self.pane(CorrectPane).post_message(CorrectRequested(self.pane(CorrectPane).settings())))
        yield SystemCommand("Generate", "dense and pruned continuations (ctrl+g)", self.action_generate)
        yield SystemCommand("Evaluate metrics", "dense vs pruned (ctrl+t)", self.action_evaluate)
        yield SystemCommand("Save session", "ctrl+s (also autosaved)", self.action_save)
        yield SystemCommand("Export pruned model", "safetensors that transformers loads (ctrl+e)", self.action_export)
        yield SystemCommand("Help", "keys and panes (f1)", self.action_help)

    async def action_quit(self) -> None:
        """Cancel jobs and keep the pane settings; plan, masks and scores are saved as they change."""
        ui = self.ui_state()
        self.jobs.close()
        self.jobs.save_ui_now(ui)
        self.exit()
