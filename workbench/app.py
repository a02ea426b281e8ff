"""The Textual app: glue between the screens and the engine jobs.

Panes post requests (screens/messages.py); the app asks `EngineJobs` (workbench/jobs.py)
to run them off the UI thread; workbench/app_results.py turns the result messages into screen updates. The
engine is imported inside the first worker, so the screen paints before torch and
transformers have loaded. A new sparsity cancels stale generation and evaluation; they
restart once the sliders settle.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Iterable

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from core.pruning.levels import PlanLevels
from core.settings import ModelSpec, ScoreConfig
from screens import messages as msg
from screens.attribution_pane import AttributionPane
from screens.circuit_pane import CircuitPane
from screens.correct_pane import CorrectPane
from screens.generation_pane import GenerationPane
from screens.main import PANES, MainScreen
from screens.messages import CircuitRequested, CorrectRequested
from screens.model_pane import ModelPane
from screens.prompts_pane import PromptsPane
from screens.save_pane import SavePane
from screens.sparsity_pane import SparsityPane
from workbench.app_results import JobResults
from workbench.tui_state import TuiState
from workbench.jobs import EngineJobs

SETTLE_S = 0.35  # after the last slider move, regenerate and re-evaluate
QUIT_WAIT_S = 60.0  # on quit, how long running work may take to reach a safe point before the app exits anyway


class _Dropped:
    """Stands in for a pane that is gone because the app is closing: whatever is shown on it is dropped."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class WorkbenchApp(JobResults, App):
    TITLE = "LRP Workbench"
    # The app's keys work from everywhere: priority, so a focused text box (whose own ctrl+e, ctrl+u, ... edit
    # the line) never takes them; escape first leaves a text box (screens/main.py: digits then switch panes).
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True, tooltip="quit (the session is already saved)"),
        Binding("ctrl+s", "save", "Save", priority=True, tooltip="save the session (it also autosaves after every change)"),
        Binding("ctrl+e", "export", "Export", priority=True, tooltip="export the pruned checkpoint"),
        Binding("ctrl+z", "undo", "Undo", priority=True, tooltip="undo a sparsity change"),
        Binding("ctrl+y", "redo", "Redo", show=False, priority=True, tooltip="redo a sparsity change"),
        Binding("ctrl+r", "score", "Attribute", priority=True, tooltip="run attribution (pane 3)"),
        Binding("ctrl+l", "load", "Load", show=False, priority=True, tooltip="load the model in pane 1"),
        Binding("ctrl+u", "allocate('uniform')", "Uniform", show=False, priority=True,
                tooltip="uniform allocation: every layer at the global level"),
        Binding("ctrl+g", "generate", "Generate", show=False, priority=True, tooltip="regenerate now"),
        Binding("ctrl+t", "evaluate", "Evaluate", show=False, priority=True, tooltip="evaluate the metrics now"),
        Binding("ctrl+k", "reconstruct", "Reconstruct", show=False, priority=True,
                tooltip="reconstruct the kept weights of the current plan (SparseGPT's update)"),
        Binding("escape", "cancel", "Cancel", show=False,
                tooltip="leave a text box; else cancel the running attribution, generation, evaluation or sweep"),
        Binding("f1,question_mark", "help", "Help", tooltip="this help"),
    ]

    def __init__(self, session: str | None = None, model: str | None = None, store: Path | None = None,
                 autoload: bool = True, device_map: str | None = None, trust_remote_code: bool = False) -> None:
        super().__init__()
        self.session_name = session or time.strftime("s-%Y%m%d-%H%M%S")
        self.jobs = EngineJobs(self, self.session_name, store, model, autoload, device_map, trust_remote_code)
        self.state = TuiState()  # what the jobs' messages said of the engine (workbench/tui_state.py)
        self._jobs: dict[str, str] = {}  # running job -> status text
        self._job_runs: dict[str, int] = {}  # job -> the latest start heard of (JobStatus.run)
        self._settle_timer = None
        self.first_paint_s: float | None = None
        self.panes_ready_s: float | None = None
        self._t0 = time.perf_counter()

    # ---- start-up ---------------------------------------------------------------------
    @property
    def main(self) -> MainScreen:
        return self._main  # under any dialog

    def pane(self, cls):
        """The main screen's pane of type `cls`. All exist before any engine result arrives; a result that
        arrives once the app has begun to close is dropped, since its panes (or their children) may be gone."""
        if self.closing_down():
            return _Dropped()
        return self.main.query_one(cls)

    async def _on_message(self, message) -> None:
        # Textual dispatches each message to its handlers here. A job's result or a pane's request that comes
        # once the app has begun to close is dropped whole: its panes' widgets, timers and loop may be gone.
        if isinstance(message, msg.Data) and self.closing_down():
            return
        await super()._on_message(message)

    def closing_down(self) -> bool:
        """True from quit (or a test's teardown) on: `is_running` turns False before any widget is removed."""
        return self._exit or not self.is_running or self._closing or self.main._closing or self.main._closed

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

    # ---- requests from panes --------------------------------------------------------------
    @on(msg.LoadRequested)
    def _on_load(self, m: msg.LoadRequested) -> None:
        spec = ModelSpec(m.source, m.device, m.dtype, m.trust_remote_code)
        loaded = self.state.loaded_spec
        if loaded and "load" not in self._jobs and (loaded.get("source"), loaded.get("device"), loaded.get("dtype")) == (
                spec.source, spec.device, spec.dtype):
            self.notify(f"{spec.source} is loaded already; give another model, device or dtype to load")
            return
        self.jobs.load(spec)

    @on(msg.PreviewRequested)
    def _on_preview(self, m: msg.PreviewRequested) -> None:
        self.jobs.preview(m.spec)

    @on(msg.PresetChosen)
    def _on_preset(self, m: msg.PresetChosen) -> None:
        self.pane(PromptsPane).set_sets(m.reference, m.contrastive)
        self.notify(f"preset {m.name}: reference {m.reference}" + (f", contrastive {m.contrastive}" if m.contrastive else ""))

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
        """The sliders are the truth while they move: results of older requests never move them back, and
        nothing starts for a plan that is already stale (the settle of an older step is dropped)."""
        self.state.levels = levels
        if self._settle_timer is not None:
            self._settle_timer.stop()
            self._settle_timer = None
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
        if self.closing_down():  # nothing to regenerate for
            return
        if self.jobs.plan_pending():  # a newer plan is on its way: its own readout settles again
            self._settle_soon()
            return
        self._autosave()
        self.action_generate()
        self.action_evaluate()

    @on(msg.GenerateRequested)
    def _on_generate(self, m: msg.GenerateRequested) -> None:
        self.action_generate()

    @on(msg.CorrectRequested)
    def _on_correct(self, m: msg.CorrectRequested) -> None:
        if self.state.model_info is None:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        self.jobs.correct(m.config)

    @on(msg.CircuitRequested)
    def _on_circuit(self, m: msg.CircuitRequested) -> None:
        if self.state.model_info is None:
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

        from core.catalog import choices
        from screens.dialogs import help_markdown
        from screens.main import PANES

        self.push_screen(HelpScreen(help_markdown(self.BINDINGS, PANES, choices("scorers"))))

    def action_load(self) -> None:
        self.pane(ModelPane).post_message(self.pane(ModelPane).request())

    def action_score(self) -> None:
        if self.state.model_info is None or "load" in self._jobs:
            if "load" in self._jobs:  # it is on its way: score as soon as it is ready
                self.state.score_when_loaded = True
                self.notify("the model is still loading: attribution starts as soon as it is ready")
            else:
                self.notify("load a model first (pane 1)", severity="warning")
            return
        self.pane(AttributionPane).set_running(True)
        self.jobs.score(self.score_settings())

    def action_reconstruct(self) -> None:
        if not self.jobs.model_loaded:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        self.jobs.reconstruct()

    def action_cancel(self) -> None:
        """Escape: out of a text box first (digits switch panes again); else every running job stops at its next
        safe point, said at once (a batch may take a while)."""
        if isinstance(self.focused, Input) and isinstance(self.screen, MainScreen):
            self.main.focus_pane_control()
            return
        self.jobs.cancel_all()
        if "score" in self._jobs:
            self.pane(AttributionPane).show_status("cancelling after this batch… (the samples done so far are kept)")
        if "correct" in self._jobs:
            self.pane(CorrectPane).set_status("cancelling after this step…")
        if "reconstruct" in self._jobs:
            self.notify("cancelling the reconstruction after this block…")

    def action_undo(self) -> None:
        if self.state.undo_depth[0]:
            self.jobs.undo(redo=False)
        else:
            self.notify("nothing to undo")

    def action_redo(self) -> None:
        if self.state.undo_depth[1]:
            self.jobs.undo(redo=True)
        else:
            self.notify("nothing to redo")

    def action_allocate(self, name: str) -> None:
        self.pane(SparsityPane).set_allocation(name)

    def action_generate(self) -> None:
        if self.state.model_info is None:
            return
        self.state.gen_run += 1
        s = self.pane(GenerationPane).settings()
        self.jobs.generate(self.state.gen_run, s["prompt"], s["max_new_tokens"])

    def action_evaluate(self) -> None:
        if self.state.model_info is None:
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
        if self.state.model_info is None or not self.state.model_sizes:
            self.notify("load a model first (pane 1)", severity="warning")
            return
        path = self.pane(SavePane).export_path() or f"exports/{self.session_name}"
        size = self.state.model_sizes  # from the last model load or prune: the UI thread never waits on the engine lock

        def done(result: tuple[str, bool] | None) -> None:
            if result:
                self.jobs.export(*result)

        from screens.dialogs import ExportDialog  # see action_help

        self.push_screen(ExportDialog(path, self.state.sparsity, size), done)

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
        yield SystemCommand("Reconstruct kept weights", "update the plan's kept weights to keep each layer's output "
                            "(SparseGPT's update; ctrl+k)", self.action_reconstruct)
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
        """Cancel jobs and keep the pane settings; plan, masks and scores are saved as they change. Running work
        stops at its next safe point (a scoring batch, a layer); the screen says what it waits for meanwhile."""
        ui, busy = self.ui_state(), "; ".join(self._jobs.values())
        self.jobs.close()
        self.jobs.save_ui_now(ui)
        t0 = time.monotonic()
        while [w for w in self.workers if w.is_running and w.group != "preview"] and time.monotonic() - t0 < QUIT_WAIT_S:
            if isinstance(self.screen, MainScreen):
                self.main.set_status({"quitting": f"waiting for {busy or 'the running work'} to stop at a safe point "
                                                  "(what is done is saved)…"})
            await asyncio.sleep(0.05)
        self.exit()
