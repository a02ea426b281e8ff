"""The engine jobs of the workbench app: thread workers that call the engine and post typed results.

A mixin of WorkbenchApp (workbench/app.py), kept apart so the app file holds only what
the screen sees (message handlers, actions, palette). Every method here runs engine
work off the UI thread; results go back as screens/messages.py messages, never as
direct widget updates. The engine's lock keeps model work one job at a time.
"""

from __future__ import annotations

import os
import threading
import time

from textual import work

from core.plan_levels import PlanLevels
from screens import messages as msg

BURST_S = 1.0  # moves of one slider closer together than this are one undo step


class EngineJobs:
    @work(thread=True, exclusive=True, group="model")
    def _open_session(self) -> None:
        self.post_message(msg.JobStatus("load", "opening the session (importing torch)…", True))
        try:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()  # tqdm would write over the screen
            from core.engine import ModelSpec, Workbench
            from core.session import Session, default_store

            store = self.store or default_store()
            session = Session.open_or_create(store, self.session_name)
            self.wb = Workbench(session)
            self.post_message(msg.SessionOpened(session.name, str(session.path), dict(session.manifest), self.wb.ui_state))
            if not self.autoload:
                self.post_message(msg.JobStatus("load", "ready: load a model (ctrl+l)", False))
                return
            spec = ModelSpec(self.model_arg) if self.model_arg else None
            self._load(spec)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            self.post_message(msg.JobFailed("load", one_line(exc)))

    def _load(self, spec) -> None:
        """Load (worker thread), then bring back whatever the session already holds."""
        wb = self.wb
        what = spec.source if spec else (wb.model_spec.source if wb.model_spec else "default")
        self.post_message(msg.JobStatus("load", f"loading {what}…", True))
        info = wb.load(spec)
        self._dense_cache.clear()
        self.index = wb.layer_index()
        self.post_message(msg.ModelLoaded(info, self.index, wb.size_report()))
        if wb.scores_complete():
            self.post_message(msg.ScoresReady({}, wb.session.manifest.get("score_config") or {}, wb.relevance_by_block()))
            wb.restore_plan()
            self._post_pruned(0.0)
        history = wb.session.manifest.get("history") or []
        if history:
            last = history[-1]
            self.post_message(msg.MetricsReady({"sparsity": last["sparsity"], "metrics": last["metrics"],
                                                "eval_data": last.get("eval_data", ""), "eval_samples": 0,
                                                "generation_prompts": 0, "restored": True}, history))
        self.post_message(msg.JobStatus("load", f"{info['architecture']} loaded", False))
        self.call_from_thread(self._generate_soon)

    @work(thread=True, exclusive=True, group="model")
    def _load_worker(self, source: str, device: str, dtype: str, trust: bool) -> None:
        if self.wb is None:
            return
        try:
            from core.engine import ModelSpec

            self._cancel_all()
            self._load(ModelSpec(source, device, dtype, trust))
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("load", one_line(exc)))

    @work(thread=True, group="preview")
    def _preview_worker(self, spec: str) -> None:
        if self.wb is None:
            return
        try:
            ps = self.wb.prompt_set(spec)
            self.post_message(msg.PreviewReady(spec, ps.summary(), ps.score[:3], ps.eval[:2]))
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("preview", one_line(exc)))

    @work(thread=True, exclusive=True, group="model")
    def _score_worker(self, settings: dict) -> None:
        from core.engine import ScoreConfig

        wb = self.wb
        cancel = self._cancel["score"] = threading.Event()
        try:
            cfg = ScoreConfig(**settings)
            self.post_message(msg.JobStatus("score", f"scoring with {cfg.scorer}…", True))
            summary = wb.score(cfg, progress=lambda which, p: self.post_message(
                msg.ScoreProgress(which, p.samples_done, p.samples_total, p.tokens_per_s, p.eta_s)), cancel=cancel)
            if not wb.scores_complete():
                self.post_message(msg.JobStatus("score", "cancelled: the samples done so far are saved; run again to resume", False))
                return
            self.post_message(msg.ScoresReady(summary, wb.session.manifest["score_config"], wb.relevance_by_block()))
            self.post_message(msg.JobStatus("score", "done", False))
            self.call_from_thread(self.request_plan, self.levels, False)
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("score", one_line(exc)))

    def request_plan(self, levels: PlanLevels, record: bool | None = None, source: str = "", show: bool = False) -> None:
        """Apply `levels` as soon as the model is free; only the newest request is applied.

        UI thread only. The sliders are the truth while they move: results of older requests
        never move them back. `show` moves them to `levels` first (presets).
        """
        if self.wb is None or not self.index:
            self.sync_sliders()  # nothing will be applied: draw the move now
            return
        self.levels = levels
        if show:
            self.show_levels(levels)
        now = time.monotonic()
        if record is None:
            record = source != self._last_source or now - self._last_move > BURST_S
        self._last_move, self._last_source = now, source
        self._cancel["generate"].set()
        self._cancel["evaluate"].set()
        with self._pending_lock:
            merged_record = record or (self._pending[1] if self._pending else False)
            self._pending = (levels, merged_record)
            if self._prune_running:
                return
            self._prune_running = True
        self._prune_worker()

    @work(thread=True, group="prune")
    def _prune_worker(self) -> None:
        while True:
            with self._pending_lock:
                item, self._pending = self._pending, None
                if item is None:
                    self._prune_running = False
                    return
            levels, record = item
            try:
                if not self.wb.scores_complete():
                    if levels.default or levels.blocks or levels.kinds:
                        self.post_message(msg.JobFailed("prune", "no scores yet: run attribution first (pane 3, ctrl+r)"))
                    continue
                t0 = time.perf_counter()
                summary = self.wb.prune(levels.to_plan(self.index), save_masks=False, record=record, save=False)
                self._post_pruned((time.perf_counter() - t0) * 1000, levels, summary, move_sliders=False)
                self.wb.save_session()  # after the readout has its numbers; still before the next move
                self.call_from_thread(self._settle_soon)
            except Exception as exc:  # noqa: BLE001
                self.post_message(msg.JobFailed("prune", one_line(exc)))

    def _post_pruned(self, ms: float, levels: PlanLevels | None = None, summary: dict | None = None,
                     move_sliders: bool = True) -> None:
        wb = self.wb
        summary = summary or wb.prune_summary()
        if levels is None:
            levels = PlanLevels.from_plan(wb.plan, self.index)
        mf = wb.session.manifest
        self.post_message(msg.Pruned(summary, levels, wb.size_report(), len(mf.get("undo", [])),
                                     len(mf.get("redo", [])), ms, move_sliders))

    @work(thread=True, exclusive=True, group="preset")
    def _preset_worker(self, m: msg.PresetRequested) -> None:
        try:
            if m.name == "uniform":
                levels = PlanLevels(m.sparsity, granularity=m.granularity)
            else:
                plan = self.wb.relevance_plan(m.sparsity, m.spread, m.granularity)
                levels = PlanLevels.from_plan(plan, self.index)
            self.call_from_thread(self.request_plan, levels, True, "preset", True)
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("preset", one_line(exc)))

    @work(thread=True, exclusive=True, group="undo")
    def _undo_worker(self, redo: bool) -> None:
        try:
            self._cancel["generate"].set()
            self._cancel["evaluate"].set()
            t0 = time.perf_counter()
            summary = self.wb.undo(redo=redo, save_masks=False)
            self._post_pruned((time.perf_counter() - t0) * 1000, summary=summary)
            self.call_from_thread(self._settle_soon)
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("undo", one_line(exc)))

    @work(thread=True, exclusive=True, group="generate")
    def _generate_worker(self, run: int, prompt: str, n: int) -> None:
        from core.generation import GenerationConfig

        cancel = self._cancel["generate"] = threading.Event()
        wb = self.wb
        cfg = GenerationConfig(max_new_tokens=n)
        try:
            self.post_message(msg.JobStatus("generate", "generating…", True))
            key = (wb.model_spec.source if wb.model_spec else "", prompt, n)
            pruned_on = wb.pruner is not None and not wb.pruner.plan.is_dense()
            if key in self._dense_cache:
                self.post_message(msg.GenerationPiece(run, "dense", self._dense_cache[key], reset=True, done=True))
            else:
                self.post_message(msg.GenerationPiece(run, "dense", "", reset=True))
                text = ""
                for piece in wb.stream(prompt, cfg, pruned=False, cancel=cancel):
                    text += piece
                    self.post_message(msg.GenerationPiece(run, "dense", piece))
                if not cancel.is_set():
                    self._dense_cache[key] = text
                self.post_message(msg.GenerationPiece(run, "dense", "", done=True))
            if not pruned_on:
                self.post_message(msg.GenerationPiece(run, "pruned", "(no pruning yet: same as dense)", reset=True, done=True))
            else:
                self.post_message(msg.GenerationPiece(run, "pruned", "", reset=True))
                for piece in wb.stream(prompt, cfg, pruned=True, cancel=cancel):
                    self.post_message(msg.GenerationPiece(run, "pruned", piece))
                self.post_message(msg.GenerationPiece(run, "pruned", "", done=True))
            self.post_message(msg.JobStatus("generate", "", False))
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("generate", one_line(exc)))

    @work(thread=True, exclusive=True, group="evaluate")
    def _evaluate_worker(self, settings: dict) -> None:
        from core.engine import EvalConfig

        cancel = self._cancel["evaluate"] = threading.Event()
        wb = self.wb
        try:
            self.post_message(msg.JobStatus("evaluate", "evaluating dense vs pruned…", True))
            res = wb.evaluate(EvalConfig(eval_data=settings["eval_data"], samples=settings["eval_samples"],
                                         seq_len=settings["seq_len"], gen_prompts=4, max_new_tokens=32), cancel=cancel)
            self.post_message(msg.MetricsReady(res, list(wb.session.manifest.get("history") or [])))
            self.post_message(msg.JobStatus("evaluate", f"measured at {res['sparsity']:.2%}", False))
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("evaluate", one_line(exc)))

    @work(thread=True, exclusive=True, group="export")
    def _export_worker(self, path: str, overwrite: bool) -> None:
        try:
            self.post_message(msg.JobStatus("export", f"exporting to {path}…", True))
            info = self.wb.export(path, overwrite=overwrite)
            self.post_message(msg.Exported(info))
            self.post_message(msg.JobStatus("export", "", False))
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("export", one_line(exc)))

    @work(thread=True, group="save")
    def _save_worker(self, ui: dict, announce: bool) -> None:
        try:
            self.wb.save_masks()
            self.wb.save_ui(ui)
            if announce:
                self.post_message(msg.JobStatus("save", "", False))
                self.call_from_thread(self.notify, f"saved session {self.session_name}")
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.JobFailed("save", one_line(exc)))


def one_line(exc: BaseException) -> str:
    from core.errors import WorkbenchError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {text}"[:300]
