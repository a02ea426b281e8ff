"""Pilot tests: what the screen shows is the plan the model is in, during fast slider moves."""

from __future__ import annotations

import time

import pytest

from screens.share import share
from screens.slider import Slider
from tui_pilot import idle, loaded_and_scored, model_loaded, run, shows, until
from tui_text import screen_text
from workbench.app import WorkbenchApp


async def _uniform_sparsity_pane(pilot) -> WorkbenchApp:
    """Scored, on pane 4, uniform allocation, the global slider focused."""
    app = await loaded_and_scored(pilot)
    await pilot.press("4")
    app.action_allocate("uniform")
    await idle(pilot)
    app.main.query_one("#global", Slider).focus()
    return app


def test_fast_moves_start_nothing_for_a_stale_plan_and_the_last_move_wins(tiny_model_dir, tmp_path):
    """Four quick steps while each prune takes longer than the settle delay: no generation or evaluation starts
    while a newer plan waits (the settle of an older step used to start them, and the last step then waited
    for both), and the readout ends at the last step."""

    async def main():
        app = WorkbenchApp(session="fast", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await _uniform_sparsity_pane(pilot)
            wb, starts = app.jobs.wb, []
            prune = wb.prune

            def slow_prune(*args, **kwargs):
                time.sleep(0.5)  # longer than the settle delay (workbench/app.py SETTLE_S)
                return prune(*args, **kwargs)

            for job in ("generate", "evaluate"):
                real = getattr(app.jobs, job)

                def record(*args, _real=real, _job=job, **kwargs):
                    starts.append((_job, app.jobs._pending is not None or app.jobs.prune_running))
                    return _real(*args, **kwargs)

                setattr(app.jobs, job, record)
            wb.prune = slow_prune
            for _ in range(4):
                await pilot.press("shift+right")
                await pilot.pause(0.2)
            await until(pilot, lambda: abs(app.state.sparsity - 0.4) < 0.02, timeout=20, what="the last step applied")
            await idle(pilot)
            await shows(pilot, "achieved 40.")
            assert wb.plan.default == pytest.approx(0.4)
            assert starts and not [s for s in starts if s[1]], starts  # nothing started while a plan waited

    run(main())


def test_the_status_bar_marks_metrics_of_another_plan(tiny_model_dir, tmp_path):
    async def main():
        app = WorkbenchApp(session="stale", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await _uniform_sparsity_pane(pilot)
            await pilot.press("shift+right", "shift+right")
            await until(pilot, lambda: abs(app.state.sparsity - 0.2) < 0.02, what="20 % applied")
            await idle(pilot)
            await until(pilot, lambda: "ppl" in screen_text(app), what="metrics in the status bar")
            assert "(at " not in screen_text(app)  # measured at the plan shown
            measured = app.state.sparsity
            app.state.sparsity = 0.35  # the model moved on; the metrics have not been measured again yet
            app._update_status()
            await shows(pilot, f"(at {share(measured)})")

    run(main())


def test_the_metrics_plot_shows_one_evaluation_set_with_its_own_dense_line():
    from screens.metrics_pane import plotted

    def entry(s, data, dense, pruned):
        return {"sparsity": s, "eval_data": data, "metrics": {"perplexity": {"dense": dense, "pruned": pruned, "delta": 0}}}

    history = [entry(0.3, "builtin:fortunes", 74.5, 90.0), entry(0.3, "builtin:ioi", 111.1, 35995.8),
               entry(0.5, "builtin:fortunes", 74.5, 120.0)]
    assert plotted(history, "perplexity", "builtin:fortunes") == ([(0.3, 90.0), (0.5, 120.0)], 74.5)
    assert plotted(history, "perplexity", "builtin:ioi") == ([(0.3, 35995.8)], 111.1)
    assert plotted(history, "uniqueness", "builtin:fortunes") == ([], None)


def test_scoring_says_at_once_what_it_does_and_escape_is_acknowledged(tiny_model_dir, tmp_path):
    from textual.widgets import Label

    from screens import messages as msg

    async def main():
        app = WorkbenchApp(session="long", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            said = []
            post = app.post_message

            def spy(message):
                if isinstance(message, msg.JobStatus) and message.job == "score":
                    said.append(message.text)
                return post(message)

            app.post_message = spy
            await pilot.press("3")
            await pilot.click("#at-run")
            status = app.main.query_one("#at-status", Label)
            await until(pilot, lambda: said, timeout=2, what="scoring started at once")
            assert "started" in said[0]
            await pilot.pause(0.1)
            assert "not scored yet" not in str(status.render())
            await until(pilot, lambda: app.jobs.wb.scores_ready() and "score" not in app._jobs, what="scores")
            assert any(t.startswith("preparing the reference set") for t in said), said
            assert any("building the ranking" in t for t in said), said  # after the last batch: its own line
            await idle(pilot)

            def long_batch(cfg, progress=None, cancel=None, stage=None):  # a batch that takes a while to finish
                from core.errors import Cancelled

                cancel.wait(30)
                time.sleep(1.0)
                raise Cancelled("cancelled")

            app.jobs.wb.score = long_batch
            await pilot.click("#at-run")
            await until(pilot, lambda: "score" in app._jobs, what="second scoring")
            await pilot.press("escape")
            assert "cancelling after this batch" in str(status.render())  # at once, not when the batch ends
            await until(pilot, lambda: "score" not in app._jobs, what="cancelled")
            await shows(pilot, "cancelled")

    run(main())


def test_app_keys_work_from_a_text_box_and_escape_leaves_it(tmp_path):
    """ctrl+u applies Uniform (not the text box's clear-line), the footer keeps ^e Export while a box has focus,
    escape leaves the box, and digits then switch panes instead of typing."""
    from textual.widgets import Input

    async def main():
        app = WorkbenchApp(session="keys", store=tmp_path / "store", autoload=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("2")
            box = app.main.query_one("#ps-contrastive", Input)
            box.focus()
            await pilot.press("x")
            assert box.value == "x"
            assert "Export" in screen_text(app).splitlines()[-1]
            await pilot.press("ctrl+u")
            assert box.value == "x" and app.state.levels.allocation == "uniform"
            await pilot.press("escape")
            assert not isinstance(app.focused, Input)
            await pilot.press("3")
            assert app.main.active_pane == "attribution" and box.value == "x"

    run(main())


def test_the_help_is_made_from_the_bindings_and_the_panes_in_order():
    from core.catalog import choices
    from screens.dialogs import help_markdown
    from screens.main import PANES

    text = help_markdown(WorkbenchApp.BINDINGS, PANES, choices("scorers"))
    for b in WorkbenchApp.BINDINGS:  # every key the app binds is in the table
        assert f"| {b.key.split(',')[0]}" in text, b.key
    numbered = [line.split("**")[1] for line in text.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert numbered == [title for _, title, _ in PANES]  # 8 before 9, all nine
    assert "cap" in text and "cap-linear" in text  # the scorers come from the registry


def test_the_export_dialog_takes_a_path_and_enter(tiny_model_dir, tmp_path, monkeypatch):
    from textual.widgets import Input, Label

    monkeypatch.chdir(tmp_path)

    async def main():
        app = WorkbenchApp(session="exp", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            await idle(pilot)
            await pilot.press("ctrl+e")
            await until(pilot, lambda: isinstance(app.focused, Input) and app.focused.id == "export-path",
                        timeout=5, what="the path box focused")
            app.focused.value = "out/model"
            await pilot.pause(0.1)
            warning = str(app.screen.query_one("#export-warning", Label).render())
            assert str(tmp_path / "out" / "model") in warning  # where a relative path lands
            await pilot.press("enter")
            await until(pilot, lambda: (tmp_path / "out" / "model" / "config.json").exists(), timeout=30,
                        what="the export written")

    run(main())


def test_the_first_start_says_the_embedded_model_is_converted_once(tmp_path, monkeypatch):
    from core.model import loading

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path))
    assert loading.conversion_pending("default")  # a fresh machine: the load will convert first
    target = loading._gguf_target(loading.embedded_gguf(), loading.DEFAULT_CACHE_NAME)
    target.mkdir(parents=True)
    (target / "source.json").write_text("{}")
    assert not loading.conversion_pending("default")  # converted: later starts read the cache
    assert not loading.conversion_pending("HuggingFaceTB/SmolLM2-135M") and not loading.conversion_pending(str(tmp_path))


def test_quit_says_what_it_waits_for(tmp_path):
    async def main():
        app = WorkbenchApp(session="quit", store=tmp_path / "store", autoload=False)
        async with app.run_test(size=(120, 36)) as pilot:
            app._jobs["score"] = "scoring the reference set…"
            app.run_worker(lambda: time.sleep(1.5), group="model", thread=True)  # a batch finishing
            await pilot.press("ctrl+q")
            await until(pilot, lambda: "quitting waiting for" in screen_text(app)
                        and "scoring the reference set" in screen_text(app), timeout=1, what="the quit notice")

    run(main())


def test_small_things_say_what_is_true(tiny_model_dir, tmp_path):
    """ctrl+r while the model loads scores once it is ready; loading the loaded model again does nothing;
    a preview replaces the last one and shows each set once."""
    from textual.widgets import Input, Log

    async def main():
        app = WorkbenchApp(session="small", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: "load" in app._jobs, timeout=10, what="loading")
            await pilot.press("ctrl+r")
            await until(pilot, lambda: app.jobs.wb is not None and app.jobs.wb.scores_ready() and "score" not in app._jobs,
                        timeout=60, what="scored after the load")
            await idle(pilot)
            loads = []
            real = app.jobs.load
            app.jobs.load = lambda spec: loads.append(spec) or real(spec)
            await pilot.press("1")
            await pilot.click("#model-load")
            await pilot.pause(0.2)
            assert loads == []  # the same model: nothing reloads
            await pilot.press("2")
            app.main.query_one("#ps-reference", Input).value = "builtin:general"
            app.main.query_one("#ps-eval", Input).value = "builtin:general"
            for _ in range(2):
                await pilot.click("#ps-preview")
                await pilot.pause(0.3)
            await until(pilot, lambda: "[eval]" in "\n".join(app.main.query_one("#ps-log", Log).lines), what="preview")
            lines = app.main.query_one("#ps-log", Log).lines
            assert sum(line.startswith("── builtin:general") for line in lines) == 1, lines

    run(main())


def test_narrow_terminals_keep_what_matters_and_long_text_wraps(tmp_path):
    from textual.containers import VerticalScroll
    from textual.widgets import Label

    async def main():
        app = WorkbenchApp(session="narrow-session-name", store=tmp_path / "store", autoload=False)
        async with app.run_test(size=(80, 24)) as pilot:
            app.state.model_line = "LlamaForCausalLM 135M on cpu"
            app.state.last_metrics, app.state.metrics_at = "74.5 → 98.9", app.state.sparsity
            app._jobs["evaluate"] = "evaluating dense vs pruned…"
            app._update_status()
            await pilot.pause(0.1)
            status = [line for line in screen_text(app).splitlines() if "sparsity" in line][-1]
            assert "ppl 74.5" in status and "busy" in status  # the model and session names give way first
            await pilot.press("3")
            long = "error: " + "a long message " * 12 + "END"
            app.main.query_one("#at-status", Label).update(long)
            await pilot.pause(0.1)
            assert "END" in screen_text(app)  # wrapped, not cut at the edge
            assert isinstance(app.main.query_one("#ci-map").parent, VerticalScroll)  # deep models scroll

    run(main())


def test_a_new_generation_clears_the_old_pruned_continuation_at_once(tiny_model_dir, tmp_path):
    from screens import messages as msg

    async def main():
        app = WorkbenchApp(session="gen", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            await idle(pilot)
            pieces = []
            post = app.post_message
            app.post_message = lambda m: (pieces.append(m) if isinstance(m, msg.GenerationPiece) else None) or post(m)
            app.action_generate()
            await idle(pilot)
            first = [m for m in pieces if m.reset]
            assert first and first[0].which == "pruned"  # before the dense side starts, not after it ends

    run(main())


def test_engine_messages_name_panes_not_commands_in_the_tui():
    from workbench.tui_words import in_tui_words

    text = in_tui_words("session 'x' has no scores yet; run `workbench score --session x` first")
    assert text == "session 'x' has no scores yet; run attribution (pane 3, ctrl+r) first"
    assert in_tui_words("score with --reference builtin:ioi first") == "score with the reference field (pane 2) builtin:ioi first"
    assert "pane 4" in in_tui_words("--count 5 is more than the model has")


def test_a_failed_load_keeps_the_loaded_model_in_pane_1(tiny_model_dir, tmp_path):
    from textual.widgets import Input

    async def main():
        app = WorkbenchApp(session="badload", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            await idle(pilot)
            await shows(pilot, "next: the prompt sets (pane 2)")
            await pilot.press("1")
            app.main.query_one("#model-source", Input).value = str(tmp_path / "no-such-model")
            await pilot.click("#model-load")
            await until(pilot, lambda: "error" in screen_text(app), timeout=20, what="the load error")
            await idle(pilot)
            assert app.main.query_one("#model-source", Input).value == str(tiny_model_dir)  # what is loaded
            await shows(pilot, "source", "LlamaForCausalLM")

    run(main())


def test_each_scoring_note_is_said_once():
    from core.results import SetScored
    from workbench.app_results import score_notes

    short = "builtin:repetition has only 23 samples of 32 tokens for scoring, fewer than the 64 asked for"
    notes = score_notes({"reference": SetScored(32), "contrastive": SetScored(23, short=short),
                         "paired": SetScored(23, short=short)})
    assert notes == [short]


def test_the_circuit_plot_draws_measured_points_and_marks_the_circuit_and_correct_has_its_last_tick(tmp_path):
    def circuit(scorer):
        curve = [{"kept": k, "logit_diff": d, "accuracy": 1.0, "raw_logit_diff": d} for k, d in
                 ((1.0, 1.0), (0.7, 0.9), (0.62, 0.81), (0.61, 0.7), (0.5, 0.6), (0.0, 0.0))]
        from core.results import CircuitResult

        return CircuitResult.of({"scorer": scorer, "granularity": "head", "task": "builtin:ioi", "items": 8, "threshold": 0.8,
                                 "dense": 1.0, "empty": 0.0, "curve": curve, "circuit_kept": 0.62, "area": 0.6, "map": {}})

    record = {"behaviour": "uniqueness", "granularity": "global", "bound": 0.02, "chosen": None, "measure_on": "held-out",
              "prompts_from": None, "steps": [{"amount": a, "sparsity": a, "perplexity": 10.0, "cost": 0.0,
                                               "behaviour": {"uniqueness": 0.2}, "samples": []} for a in (0, 1e-4, 3e-4)]}

    async def main():
        app = WorkbenchApp(session="plots", store=tmp_path / "store", autoload=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("8")
            pane = app.main.query_one("CircuitPane")
            pane.show_results([circuit("lrp")], 0.8)
            monitor = app.main.query_one("#ci-plot").plt._active.monitor
            assert monitor.lines == [False]  # points only: no line across where nothing was measured
            assert [0.62] in monitor.vcoord or 0.62 in sum(monitor.vcoord, [])  # the circuit as reported
            await pilot.press("9")
            app.main.query_one("CorrectPane").show_record(record)
            monitor = app.main.query_one("#co-plot").plt._active.monitor
            assert list(monitor.xlim[0]) == [-0.5, 2.5]  # room for the last tick's label

    run(main())


def test_a_result_that_arrives_while_the_app_closes_is_dropped(tiny_model_dir, tmp_path):
    """A prune's result dispatched after teardown began (its panes' children already going) shows nothing and
    raises nothing: it once reached a Select whose overlay was gone (NoMatches at exit, seen in CI)."""
    from screens import messages as msg

    seen: list = []

    async def main():
        app = WorkbenchApp(session="late", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36), message_hook=seen.append) as pilot:
            await _uniform_sparsity_pane(pilot)
            await pilot.press("right")
            await idle(pilot)
        return app

    app = run(main())
    late = [m for m in seen if isinstance(m, msg.Pruned)][-1]
    late.allocated, late.settle = True, True  # the path that repaints the block sliders and the allocation
    shown = app.state.levels
    assert app.closing_down()
    run(app._on_message(late))  # where Textual hands a message to its handlers
    assert app.state.levels is shown and app._settle_timer is None


def test_a_stopping_worker_does_not_clear_the_status_of_the_job_that_replaced_it(tmp_path):
    """A restarted job's old worker may say it stopped after the new one said it started (bench/tui.py waited
    five minutes for jobs that were running): the job stays busy until its latest start ends."""
    import threading

    from screens import messages as msg

    async def main():
        app = WorkbenchApp(session="restart", store=tmp_path / "store", autoload=False)
        async with app.run_test(size=(120, 36)) as pilot:
            old_may_stop = threading.Event()

            def old() -> None:
                app.jobs._post(msg.JobStatus("evaluate", "evaluating (old)…", True))
                old_may_stop.wait(5)
                app.jobs._post(msg.JobCancelled("evaluate", "evaluation cancelled"))

            def new() -> None:
                app.jobs._post(msg.JobStatus("evaluate", "evaluating (new)…", True))
                old_may_stop.set()

            app.jobs._start(app.jobs._guard("evaluate", old), "old", exclusive=False)
            await until(pilot, lambda: "evaluate" in app._jobs, timeout=5, what="the old start")
            app.jobs._start(app.jobs._guard("evaluate", new), "new", exclusive=False)
            await until(pilot, lambda: app._job_runs.get("evaluate") == 2, timeout=5, what="the new start")
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
            assert app._jobs.get("evaluate") == "evaluating (new)…"  # the old run's cancel came last and is over
            app.post_message(msg.JobStatus("evaluate", "measured", False, run=2))
            await pilot.pause(0.1)
            assert "evaluate" not in app._jobs
            app.post_message(msg.JobStatus("save", "saving…", True))  # a message no start counted still counts
            await pilot.pause(0.1)
            assert app._jobs.get("save") == "saving…"

    run(main())
