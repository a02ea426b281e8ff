"""The app's engine work: thread workers that call the engine and report back only as messages.

`EngineJobs` owns the engine (`core.engine.Workbench`) and everything about running it
off the UI thread: cancel events, the queue of slider requests, the dense-generation
cache. The app calls its methods on the UI thread; each starts a worker through the
host's `run_worker` and returns at once. Results reach the screen only as the typed
messages in screens/messages.py, posted with the host's `post_message`; nothing here
touches a widget or calls back into the app. The engine's lock keeps model work one job
at a time.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from core.errors import Cancelled, first_line
from core.pruning.levels import PlanLevels
from core.results import Evaluation, PruneSummary
from core.settings import EvalConfig, GenerationConfig, LiveEvalConfig, ModelSpec, ScoreConfig, default_of
from screens import messages as msg

BURST_S = 1.0  # moves of one slider closer together than this are one undo step


class WorkerHost(Protocol):
    """What the jobs need from the app: start thread workers, receive messages."""

    def run_worker(self, work: Callable[[], Any], name: str | None = ..., group: str = ..., description: str = ...,
                   exit_on_error: bool = ..., start: bool = ..., exclusive: bool = ..., thread: bool = ...) -> Any: ...

    def post_message(self, message: Any) -> bool: ...


class EngineJobs:
    def __init__(self, host: WorkerHost, session_name: str, store: Path | None, model: str | None, autoload: bool,
                 device_map: str | None = None, trust_remote_code: bool = False):
        self.host = host
        self.trust_remote_code = trust_remote_code  # this launch's --trust-remote-code (never the session's)
        self.session_name = session_name
        self.store = store
        self.model_arg = model
        self.device_map_arg = device_map
        self.autoload = autoload
        self.wb = None  # core.engine.Workbench, created in the first worker (it imports torch)
        self.index: list[dict] = []
        self.closed = False
        self._cancel = {job: threading.Event() for job in ("score", "generate", "evaluate", "reconstruct")}
        self._pending: tuple[PlanLevels, bool] | None = None
        self._pending_lock = threading.Lock()
        self.prune_running = False
        self._last_move = 0.0
        self._last_source = ""
        self._dense_cache: dict[tuple, str] = {}
        self._runs: dict[str, int] = {}  # job -> how many times it was started
        self._worker = threading.local()  # in a worker thread: (job, run) of the job it runs

    # ---- plumbing ----------------------------------------------------------------------
    def _post(self, message) -> None:
        if self.closed:  # after quit the screen is going away: results are dropped, not shown
            return
        run = getattr(self._worker, "run", None)
        if run is not None and isinstance(message, (msg.JobStatus, msg.JobCancelled, msg.JobFailed)) and message.job == run[0]:
            message.run = run[1]  # stamped here so that no job's code has to carry its run
        self.host.post_message(message)

    def _start(self, fn: Callable[[], None], group: str, exclusive: bool = True) -> None:
        self.host.run_worker(fn, name=group, group=group, exclusive=exclusive, thread=True)

    def _guard(self, job: str, fn: Callable[[], None]) -> Callable[[], None]:
        """Run `fn`; a cancel becomes JobCancelled, any error one line in JobFailed. What the worker says of its
        job carries this start's number, so the app can tell a stopping worker from the one that replaced it."""
        self._runs[job] = number = self._runs.get(job, 0) + 1

        def run() -> None:
            self._worker.run = (job, number)
            try:
                fn()
            except Cancelled as exc:
                self._post(msg.JobCancelled(job, str(exc)))
            except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
                self._post(msg.JobFailed(job, first_line(exc)))
            finally:
                self._worker.run = None  # the executor's threads are reused by other jobs

        return run

    def close(self) -> None:
        """The app is quitting: cancel running jobs and stop posting."""
        self.cancel_all()
        self.closed = True

    def cancel_all(self) -> None:
        for ev in self._cancel.values():
            ev.set()

    @property
    def model_loaded(self) -> bool:
        return self.wb is not None and self.wb.lm is not None

    # ---- session and model ------------------------------------------------------------------
    def open_session(self) -> None:
        def work() -> None:
            self._post(msg.JobStatus("load", "opening the session (importing torch)…", True))
            from core.model.loading import quiet_libraries

            quiet_libraries()  # transformers' progress bars would write over the screen
            from core.engine import Workbench
            from core.session.paths import default_store
            from core.session.store import Session

            session = Session.open_or_create(self.store or default_store(), self.session_name)
            self.wb = Workbench(session, trust_remote_code=self.trust_remote_code)
            self._post(msg.SessionOpened(session.name, str(session.path), self.wb.model_spec_dict(),
                                         self.wb.score_config_dict(), self.wb.ui_state))
            if not self.autoload:
                self._post(msg.JobStatus("load", "ready: load a model (ctrl+l)", False))
                return
            spec = None
            if self.model_arg or self.device_map_arg:
                current = self.wb.model_spec
                source = self.model_arg or (current.source if current else ModelSpec().source)
                spec = ModelSpec(source, device_map=self.device_map_arg, trust_remote_code=self.trust_remote_code)
            self._load(spec)

        self._start(self._guard("load", work), "model")

    def load(self, spec: ModelSpec) -> None:
        if self.wb is None:
            return
        self.cancel_all()
        self._start(self._guard("load", lambda: self._load(spec)), "model")

    def _load(self, spec: ModelSpec | None) -> None:
        """Load (worker thread), then bring back whatever the session already holds."""
        wb = self.wb
        what = spec.source if spec else (wb.model_spec.source if wb.model_spec else default_of(ModelSpec, "source"))
        from core.model.loading import conversion_pending

        once = conversion_pending(what)
        self._post(msg.JobStatus("load", f"first start: converting {what} to safetensors, once per machine (about a "
                                         "minute; later starts read the cache)…" if once else f"loading {what}…", True))
        info = wb.load(spec)
        self._dense_cache.clear()
        self.index = wb.layer_index()
        self._post(msg.ModelLoaded(info, self.index, wb.size_report(), wb.model_spec_dict()))
        if not wb.scores_ready():
            self._post(msg.NoScores())
        if wb.scores_ready():
            self._post(msg.ScoresReady({}, wb.scores_summary(), wb.relevance_by_block()))
            wb.restore_plan()
            self._post_pruned(0.0, settle=False)
            wb.prepare_slider()
        history = wb.history()
        if history:
            self._post(msg.MetricsReady(Evaluation.from_history(history[-1]), history))
        saved = wb.saved_results()
        for r in saved["circuits"]:
            self._post(msg.CircuitReady([r], r.threshold, restored=True))
        if saved["correction"] is not None:
            self._post(msg.CorrectionReady(saved["correction"], restored=True))
        self._post(msg.JobStatus("load", f"{info['architecture']} loaded · next: the prompt sets (pane 2), then "
                                         "attribution (pane 3, ctrl+r)", False))
        self._post(msg.ModelReady())

    def preview(self, spec: str) -> None:
        def work() -> None:
            if self.wb is None:
                return
            ps = self.wb.prompt_set(spec)
            self._post(msg.PreviewReady(spec, ps.summary(), ps.score[:3], ps.eval[:2]))

        self._start(self._guard("preview", work), "preview", exclusive=False)

    # ---- scoring -----------------------------------------------------------------------------
    def score(self, cfg: ScoreConfig) -> None:
        cancel = self._cancel["score"] = threading.Event()

        def work() -> None:
            wb = self.wb
            self._post(msg.JobStatus("score", f"scoring with {cfg.scorer} started: checking the settings…", True))
            try:
                summary = wb.score(cfg, progress=lambda which, p: self._post(
                    msg.ScoreProgress(which, p.samples_done, p.samples_total, p.tokens_per_s, p.eta_s)), cancel=cancel,
                    stage=lambda text: self._post(msg.JobStatus("score", text, True)))
            except Cancelled:
                raise Cancelled("cancelled: the samples done so far are saved; run again to resume") from None
            self._post(msg.ScoresReady(summary, wb.scores_summary(), wb.relevance_by_block()))
            self._post(msg.JobStatus("score", "done", False))

        self._start(self._guard("score", work), "model")

    def reconstruct(self) -> None:
        """Update the current plan's kept weights (Workbench.reconstruct), with progress; escape cancels."""
        cancel = self._cancel["reconstruct"] = threading.Event()

        def work() -> None:
            wb = self.wb
            self._cancel["generate"].set()
            self._cancel["evaluate"].set()
            self._post(msg.JobStatus("reconstruct", "reconstructing the kept weights…", True))
            try:
                rec = wb.reconstruct(progress=lambda done, total: self._post(msg.JobStatus(
                    "reconstruct", f"reconstructing block {done}/{total}…", True)), cancel=cancel)
            except Cancelled:
                raise Cancelled("reconstruction cancelled: the plan is mask-only") from None
            self._post_pruned(0.0, move_sliders=False)
            self._post(msg.JobStatus("reconstruct", f"reconstructed {rec.layers} layers on {rec.samples} windows; "
                                                    f"output error left {rec.error:.1%}", False))

        self._start(self._guard("reconstruct", work), "model")

    # ---- pruning -----------------------------------------------------------------------------
    def request_plan(self, levels: PlanLevels, record: bool | None = None, source: str = "") -> bool:
        """Apply `levels` as soon as the model is free; only the newest request is applied.

        UI thread only. Returns False when nothing can be applied yet (no model). A move of
        the same control within BURST_S of the last one joins its undo step.
        """
        if self.wb is None or not self.index:
            return False
        now = time.monotonic()
        if record is None:
            record = source != self._last_source or now - self._last_move > BURST_S
        self._last_move, self._last_source = now, source
        self._cancel["generate"].set()
        self._cancel["evaluate"].set()
        with self._pending_lock:
            merged_record = record or (self._pending[1] if self._pending else False)
            self._pending = (levels, merged_record)
            if self.prune_running:
                return True
            self.prune_running = True
        self._start(self._prune_loop, "prune", exclusive=False)
        return True

    def plan_pending(self) -> bool:
        """Is a plan waiting to be applied, or being applied? (Results of the current plan would be stale.)"""
        with self._pending_lock:
            return self._pending is not None or self.prune_running

    def _prune_loop(self) -> None:
        while True:
            with self._pending_lock:
                item, self._pending = self._pending, None
                if item is None:
                    self.prune_running = False
                    return
            levels, record = item
            try:
                if not self.wb.scores_ready():
                    if levels.default or levels.blocks or levels.kinds:
                        self._post(msg.JobFailed("prune", "no scores yet: run attribution first (pane 3, ctrl+r)"))
                    continue
                t0 = time.perf_counter()
                allocated = levels.follows
                if allocated:  # the engine spreads the global level over the blocks, as `workbench prune` does
                    plan = self.wb.plan_for(levels.default, levels.granularity, levels.allocation, levels.spread)
                    shown = PlanLevels.from_plan(plan, self.index)
                    shown.allocation, shown.spread = levels.allocation, levels.spread
                    levels = shown
                else:
                    plan = levels.to_plan(self.index)
                summary = self.wb.prune(plan, record=record, save=False)
                self._post_pruned((time.perf_counter() - t0) * 1000, levels, summary, move_sliders=False,
                                  allocated=allocated)
                self.wb.save_session()  # after the readout has its numbers; still before the next move
            except Exception as exc:  # noqa: BLE001
                self._post(msg.JobFailed("prune", first_line(exc)))

    def _post_pruned(self, ms: float, levels: PlanLevels | None = None, summary: PruneSummary | None = None,
                     move_sliders: bool = True, settle: bool = True, allocated: bool = False) -> None:
        wb = self.wb
        summary = summary or wb.prune_summary()
        if levels is None:  # a plan from elsewhere (undo, a resume, a correction): name the allocation that made it
            levels = PlanLevels.from_plan(wb.plan, self.index)
            levels.allocation = wb.allocation_of(wb.plan)
        undo, redo = wb.undo_depth()
        self._post(msg.Pruned(summary, levels, wb.size_report(), undo, redo, ms, move_sliders, settle, allocated))

    def undo(self, redo: bool) -> None:
        def work() -> None:
            self._cancel["generate"].set()
            self._cancel["evaluate"].set()
            t0 = time.perf_counter()
            summary = self.wb.undo(redo=redo, save=True)
            self._post_pruned((time.perf_counter() - t0) * 1000, summary=summary)

        self._start(self._guard("undo", work), "undo")

    # ---- circuits ------------------------------------------------------------------------------
    def circuit(self, cfg) -> None:
        cancel = self._cancel["evaluate"] = threading.Event()

        def work() -> None:
            self._post(msg.JobStatus("circuit", "finding the circuit…", True))
            if cfg.compare:
                results = self.wb.circuit_compare(cfg, progress=lambda what: self._post(msg.JobStatus("circuit", f"scoring {what}…", True)))
            else:
                results = [self.wb.circuit(cfg, cancel=cancel)]
                self._post_pruned(0.0)  # the circuit is the session's plan now
            self._post(msg.CircuitReady(results, cfg.threshold))
            self._post(msg.JobStatus("circuit", "", False))

        self._start(self._guard("circuit", work), "model")

    def correct(self, cfg) -> None:
        cancel = self._cancel["evaluate"] = threading.Event()

        def work() -> None:
            self._post(msg.JobStatus("correct", "sweeping…", True))
            from core.applications.correction import sweep_line

            def progress(p) -> None:
                if p.row is None:
                    self._post(msg.JobStatus("correct", sweep_line(p, cfg.granularity), True))
                else:  # each measured step's row as it arrives
                    self._post(msg.CorrectionStepMeasured(asdict(p.row), p.done, p.total))

            record = self.wb.correct(cfg, cancel=cancel, progress=progress)
            self._post_pruned(0.0)  # the chosen correction is the session's plan now
            self._post(msg.CorrectionReady(record.model_dump()))
            self._post(msg.JobStatus("correct", "", False))

        self._start(self._guard("correct", work), "model")

    # ---- generation and metrics ---------------------------------------------------------------
    def generate(self, run: int, prompt: str, n: int) -> None:
        self._cancel["generate"].set()
        cancel = self._cancel["generate"] = threading.Event()
        cfg = GenerationConfig(prompt=prompt, max_new_tokens=n)

        def work() -> None:
            wb = self.wb
            self._post(msg.JobStatus("generate", "generating…", True))
            key = (wb.model_spec.source if wb.model_spec else "", prompt, n)
            # the pruned side's old continuation belongs to another prompt or plan: clear it at once
            self._post(msg.GenerationPiece(run, "pruned", "(after the dense continuation…)", reset=True))
            if key in self._dense_cache:
                self._post(msg.GenerationPiece(run, "dense", self._dense_cache[key], reset=True, done=True))
            else:
                self._post(msg.GenerationPiece(run, "dense", "", reset=True))
                text = ""
                for piece in wb.stream(prompt, cfg, pruned=False, cancel=cancel):
                    text += piece
                    self._post(msg.GenerationPiece(run, "dense", piece))
                if not cancel.is_set():
                    self._dense_cache[key] = text
                self._post(msg.GenerationPiece(run, "dense", "", done=True))
            if not wb.pruned_active():
                self._post(msg.GenerationPiece(run, "pruned", "(no pruning yet: same as dense)", reset=True, done=True))
            else:
                self._post(msg.GenerationPiece(run, "pruned", "", reset=True))
                for piece in wb.stream(prompt, cfg, pruned=True, cancel=cancel):
                    self._post(msg.GenerationPiece(run, "pruned", piece))
                self._post(msg.GenerationPiece(run, "pruned", "", done=True))
            self._post(msg.JobStatus("generate", "", False))

        self._start(self._guard("generate", work), "generate")

    def evaluate(self, eval_data: str | None, samples: int, seq_len: int) -> None:
        self._cancel["evaluate"].set()
        cancel = self._cancel["evaluate"] = threading.Event()
        cfg = EvalConfig(eval_data=eval_data, samples=samples, seq_len=seq_len,
                         gen_prompts=default_of(LiveEvalConfig, "gen_prompts"),
                         max_new_tokens=default_of(LiveEvalConfig, "max_new_tokens"))

        def work() -> None:
            self._post(msg.JobStatus("evaluate", "evaluating dense vs pruned…", True))
            res = self.wb.evaluate(cfg, cancel=cancel)
            self._post(msg.MetricsReady(res, self.wb.history()))
            self._post(msg.JobStatus("evaluate", f"measured at {res.sparsity:.2%}", False))

        self._start(self._guard("evaluate", work), "evaluate")

    # ---- saving -------------------------------------------------------------------------------
    def export(self, path: str, overwrite: bool) -> None:
        def work() -> None:
            self._post(msg.JobStatus("export", f"exporting to {path}…", True))
            info = self.wb.export(path, overwrite=overwrite)
            self._post(msg.Exported(info))
            self._post(msg.JobStatus("export", "", False))

        self._start(self._guard("export", work), "export")

    def save(self, ui: dict, announce: bool) -> None:
        def work() -> None:
            if self.wb is None:
                return
            self.wb.save_ui(ui)
            self.wb.save_session()
            if announce:
                self._post(msg.Saved(self.session_name))

        self._start(self._guard("save", work), "save")

    def save_ui_now(self, ui: dict) -> None:
        """On quit: keep the pane settings (the plan and scores were saved as they changed)."""
        if self.wb is not None:
            try:
                self.wb.save_ui(ui)
            except Exception:  # noqa: BLE001 - the manifest on disk is already consistent
                pass
