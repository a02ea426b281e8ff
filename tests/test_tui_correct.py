"""Pilot test of the Correct pane (pane 9)."""

from __future__ import annotations

from tui_pilot import idle, loaded_and_scored, model_loaded, run, shows, until
from workbench.app import WorkbenchApp


def test_correct_pane_sweeps_on_validation_data_and_shows_the_choice(tiny_model_dir, tmp_path):
    """Pane 9 after a contrastive score: a sweep measured where the user chose, its table, and the record kept;
    a score that drew every prompt leaves no validation data, and the pane says so in one line."""
    from textual.widgets import DataTable, Input, Select

    async def main():
        app = WorkbenchApp(session="fix", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 36)) as pilot:
            await model_loaded(pilot)
            await pilot.press("2")
            app.main.query_one("#ps-contrastive", Input).value = "builtin:repetition"
            app.main.query_one("#ps-samples", Input).value = "4"
            app.main.query_one("#ps-seq-len", Input).value = "16"
            await loaded_and_scored(pilot)
            await pilot.press("9")
            app.main.query_one("#co-steps", Input).value = "0.001,0.01"  # the default granularity: weights
            app.main.query_one("#co-bound", Input).value = "1.0"
            app.main.query_one("#co-measure-on", Select).value = "validation"
            await pilot.pause(0.1)
            said, rows = [], []
            post = app.post_message

            def spy(message):  # what the pane hears while the sweep runs
                from screens import messages as msg

                if isinstance(message, msg.JobStatus) and message.job == "correct" and message.busy:
                    said.append(message.text)
                if isinstance(message, msg.CorrectionStepMeasured):
                    rows.append(message.step["amount"])
                return post(message)

            app.post_message = spy
            await pilot.click("#co-run")
            await until(pilot, lambda: app.main.query_one("#co-table", DataTable).row_count == 3, 180, "sweep table")
            await idle(pilot)
            app.post_message = post
            assert rows == [0, 0.001, 0.01]  # each row as soon as it was measured
            assert any(t.startswith("step 3 of 3: pruning 1% of the weights, about") for t in said), said
            record = app.jobs.wb.session.manifest.correction
            assert record.measure_on == "validation" and [s.amount for s in record.steps] == [0, 0.001, 0.01]
            assert record.granularity == "global"  # against repetition, as the paper
            assert record.prompts == 23 - 4  # builtin:repetition's scoring prompts the score did not draw
            await shows(pilot, "applied" if record.chosen is not None else "no step improved")
            status = str(app.main.query_one("#co-status").render())
            assert status.count("of the weights") <= 1, status  # the share is said once
            await pilot.press("4")  # the sliders would prune by this contrastive ranking: the pane says what that does
            await shows(pilot, "the ranking is contrastive (minus builtin:repetition)")

            await pilot.press("2")
            app.main.query_one("#ps-samples", Input).value = "64"
            await pilot.press("3")
            await pilot.click("#at-run")
            await until(pilot, lambda: app.jobs.wb.score_config.samples == 64 and app.jobs.wb.scores_ready()
                        and "score" not in app._jobs, what="second score")
            await idle(pilot)
            await pilot.press("9")
            await pilot.click("#co-run")
            await shows(pilot, "drew all of them", timeout=60)
            assert app.jobs.wb.session.manifest.correction.prompts == 19  # the failed sweep recorded nothing

    run(main())
