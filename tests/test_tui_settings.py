"""Pilot tests: scoring settings in the TUI (the options dialog, the built-in pickers) and what a session keeps."""

from __future__ import annotations

from tui_pilot import idle, model_loaded, run, shows, until
from workbench.app import WorkbenchApp


def test_scoring_options_dialog_sets_what_the_pane_does_not_show_and_is_kept(tiny_model_dir, tmp_path):
    """Options… (pane 3, or the palette's "Scoring options") edits the rest of ScoreConfig: bad values are named
    and keep the dialog open, good ones reach the score settings and come back with the session."""
    from textual.widgets import Input, Select

    from core.session.ui_state import AttributionUi
    from core.settings import ScoreConfig
    from screens.score_options import OPTIONS, ScoreOptionsDialog

    # with panes 2 and 3's own fields the dialog covers every scoring setting, and the session keeps each of its fields
    assert set(OPTIONS) == set(AttributionUi.model_fields)
    pane_fields = {"reference", "contrastive", "samples", "seq_len", "scorer", "target", "rules"}
    assert set(OPTIONS) | pane_fields == set(ScoreConfig.__dataclass_fields__)

    async def main():
        app = WorkbenchApp(session="opts", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 40)) as pilot:
            await model_loaded(pilot)
            await pilot.press("3")
            await shows(pilot, "options: defaults")
            await pilot.click("#at-options")
            await until(pilot, lambda: isinstance(app.screen, ScoreOptionsDialog), what="dialog")
            dialog = app.screen
            assert dialog.query_one("#so-reduce", Select).value is Select.NULL  # its default depends on the sets
            dialog.query_one("#so-explain", Select).value = "continuation"
            dialog.query_one("#so-normalize", Select).value = "l1"
            dialog.query_one("#so-draws", Input).value = "0"
            await pilot.click("#so-ok")
            await shows(pilot, "draws must be at least 1")
            assert app.screen is dialog
            dialog.query_one("#so-draws", Input).value = "4"
            await pilot.pause(0.3)  # a button ignores a second press while it still shows the first
            await pilot.click("#so-ok")
            await until(pilot, lambda: not isinstance(app.screen, ScoreOptionsDialog), what="dialog closed")
            await shows(pilot, "explain=continuation", "draws=4", "normalize=l1")
            cfg = app.score_settings()
            assert (cfg.explain, cfg.draws, cfg.normalize, cfg.reduce) == ("continuation", 4, "l1", None)
            await pilot.press("ctrl+s")
            await idle(pilot)
            await app.action_quit()
        again = WorkbenchApp(session="opts", model=str(tiny_model_dir), store=tmp_path / "store")
        async with again.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: again.state.model_info is not None, what="model load")
            cfg = again.score_settings()
            assert (cfg.explain, cfg.draws, cfg.normalize, cfg.reduce) == ("continuation", 4, "l1", None)

    run(main())


def test_picking_a_builtin_set_fills_the_prompt_field(tiny_model_dir, tmp_path):
    """The Prompts pane's builtin pickers write the spec into the field and reset themselves (the reset must not
    write anything)."""
    from textual.widgets import Input, Select

    async def main():
        app = WorkbenchApp(session="pick", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 32)) as pilot:
            await model_loaded(pilot)
            await pilot.press("2")
            app.main.query_one("#ps-builtin-con", Select).value = "builtin:repetition"
            await pilot.pause(0.3)
            assert app.main.query_one("#ps-contrastive", Input).value == "builtin:repetition"
            assert app.main.query_one("#ps-builtin-con", Select).is_blank()
            assert app.score_settings().contrastive == "builtin:repetition"

    run(main())


def test_a_cli_session_keeps_its_scoring_options_but_not_a_filled_in_default_reduction(invoke, tiny_model_dir, tmp_path):
    """A session scored from the CLI opens with the options its score used; the reduction `score` filled in by
    default is shown as the default again, so adding a contrastive set in the TUI still switches it to `abs`."""
    invoke("score", "--session", "c", "--model", str(tiny_model_dir), "--samples", "2", "--seq-len", "16",
           "--normalize", "l1", "--seed", "3")

    async def main():
        app = WorkbenchApp(session="c", store=tmp_path / "store")
        async with app.run_test(size=(100, 32)) as pilot:
            await model_loaded(pilot)
            cfg = app.score_settings()
            assert (cfg.normalize, cfg.seed, cfg.reduce) == ("l1", 3, None)

    run(main())
