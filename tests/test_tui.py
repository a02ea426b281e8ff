"""Pilot tests: every pane of the workbench TUI driven with a tiny random model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from screens.slider import Slider
from tui_text import screen_text
from workbench.app import WorkbenchApp

ROOT = Path(__file__).resolve().parent.parent


async def until(pilot, cond, timeout: float = 60.0, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def shows(pilot, *texts: str, timeout: float = 10.0) -> None:
    """Wait until the rendered screen contains every one of `texts`."""
    await until(pilot, lambda: all(t in screen_text(pilot.app) for t in texts), timeout, f"screen to show {texts}")


async def idle(pilot, timeout: float = 60.0) -> None:
    """Wait until no job is running and no slider change is waiting to settle."""
    app = pilot.app
    await until(pilot, lambda: not app._jobs and not app.jobs.prune_running and app._settle_timer is None
                and not [w for w in app.workers if w.group in ("generate", "evaluate", "save", "model") and w.is_running],
                timeout, "idle")


async def loaded_and_scored(pilot) -> WorkbenchApp:
    app = pilot.app
    await until(pilot, lambda: app.model_info is not None, what="model load")
    await pilot.press("3")
    await pilot.click("#at-run")
    await until(pilot, lambda: app.jobs.wb.scores_ready() and "score" not in app._jobs, what="scores")
    await idle(pilot)
    return app


def run(coro):
    return asyncio.run(coro)


def test_every_pane_with_a_tiny_model(tiny_model_dir, tmp_path):
    async def main():
        app = WorkbenchApp(session="pilot", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 32)) as pilot:
            # 1 model: loaded in a worker, described in the pane
            await until(pilot, lambda: app.model_info is not None, what="model load")
            await shows(pilot, "LlamaForCausalLM", "14 linear layers, 2 decoder blocks")

            # 2 prompt sets: preview shows both splits of the reference set
            await pilot.press("2")
            await pilot.click("#ps-preview")
            await until(pilot, lambda: "[eval]" in screen_text(app), what="preview")
            assert "builtin:fortunes: text" in screen_text(app)

            # 3 attribution: progress, then per-block relevance
            await pilot.press("3")
            await pilot.click("#at-run")
            await until(pilot, lambda: app.jobs.wb.scores_ready() and "score" not in app._jobs, what="scores")
            await idle(pilot)
            await shows(pilot, "scores: lrp on builtin:fortunes", "block ")

            # 4 sparsity by keyboard: the global slider moves every layer (uniform allocation first)
            await pilot.press("4")
            assert app.main.query_one("#sp-allocation").value == "auto"  # the default, as `workbench prune`
            app.action_allocate("uniform")
            await idle(pilot)
            slider = app.main.query_one("#global", Slider)
            slider.focus()
            await pilot.press("shift+right", "shift+right", "shift+right")
            await until(pilot, lambda: abs(app.sparsity - 0.3) < 0.02, what="30 % applied")
            await idle(pilot)
            await shows(pilot, "achieved 30.")
            assert app.jobs.wb.plan.default == pytest.approx(0.3)
            b0 = app.main.query_one("#block-0", Slider)  # followed once the weights were re-masked
            assert b0.value == pytest.approx(0.3) and b0.inherited

            # per-block slider by mouse: a click at the right end of block 1's slider
            block1 = app.main.query_one("#block-1", Slider)
            await pilot.click("#block-1", offset=(block1.bar_width - 1, 0))
            await until(pilot, lambda: app.levels.blocks.get(1) == pytest.approx(0.99), what="block 1 at max")
            await idle(pilot)
            per_block = app.jobs.wb.prune_summary()["per_block"]
            assert per_block[1] > 0.95 and per_block[0] == pytest.approx(0.3, abs=0.02)
            attn1 = app.main.query_one("#attn-1", Slider)
            assert attn1.value == pytest.approx(0.99) and attn1.inherited
            assert not app.main.query_one("#block-1", Slider).inherited
            # the attention slider of block 0 overrides only attention in block 0
            attn0 = app.main.query_one("#attn-0", Slider)
            attn0.focus()
            await pilot.press("end")
            await until(pilot, lambda: app.levels.kinds.get((0, "attn")) == pytest.approx(0.99), what="attn 0")
            await idle(pilot)
            per_layer = app.jobs.wb.prune_summary()["per_layer"]
            assert per_layer["model.layers.0.self_attn.q_proj"] > 0.95
            assert per_layer["model.layers.0.mlp.up_proj"] == pytest.approx(0.3, abs=0.02)

            # undo twice goes back to the uniform 30 % plan, redo forward again
            await pilot.press("ctrl+z")
            await until(pilot, lambda: (0, "attn") not in app.levels.kinds, what="undo 1")
            await idle(pilot)
            undo_stack = [(u.default, len(u.overrides)) for u in app.jobs.wb.session.manifest.undo]
            await pilot.press("ctrl+z")
            await until(pilot, lambda: not app.levels.blocks, what=f"undo 2 {undo_stack}")
            await idle(pilot)
            assert app.jobs.wb.prune_summary()["per_block"][1] == pytest.approx(0.3, abs=0.02)
            await pilot.press("ctrl+y")
            await until(pilot, lambda: app.levels.blocks.get(1) == pytest.approx(0.99), what="redo")
            await idle(pilot)

            # allocation: uniform resets; relevance spreads the global level over blocks and parts (same
            # overall sparsity), the same plan `workbench prune --allocate relevance` makes, and the
            # blocks then follow the global slider; moving a block slider makes the levels hand-set again
            app.action_allocate("uniform")
            await until(pilot, lambda: not app.levels.blocks, what="uniform")
            await idle(pilot)
            app.main.query_one("#sp-allocation").value = "relevance"
            await until(pilot, lambda: len(app.levels.kinds) == 4, what="relevance allocation")
            await idle(pilot)
            assert app.levels.level(0, "attn") != app.levels.level(0, "mlp")
            assert app.sparsity == pytest.approx(0.3, abs=0.02)
            assert app.jobs.wb.plan == app.jobs.wb.plan_for(0.3, allocate="relevance")
            slider.focus()
            await pilot.press("right", "right")  # the global slider: 32 %, the blocks follow
            await until(pilot, lambda: abs(app.sparsity - 0.32) < 0.01, what="allocated at 32 %")
            await idle(pilot)
            assert app.jobs.wb.plan == app.jobs.wb.plan_for(0.32, allocate="relevance")
            attn0, mlp0 = (app.main.query_one(f"#{k}-0", Slider).value for k in ("attn", "mlp"))
            assert attn0 != mlp0  # sliders draw 1 % steps of the allocated levels
            assert (attn0, mlp0) == (pytest.approx(app.levels.level(0, "attn"), abs=0.006),
                                     pytest.approx(app.levels.level(0, "mlp"), abs=0.006))
            app.main.query_one("#block-1", Slider).focus()
            await pilot.press("left")
            await until(pilot, lambda: app.levels.allocation == "uniform", what="hand-set")
            await idle(pilot)
            assert app.main.query_one("#sp-allocation").value == "uniform"

            # 5 generation: dense and pruned side by side, regenerated after the change
            await pilot.press("5")
            gen = app.main.query_one("GenerationPane")
            assert gen.texts["dense"] and gen.texts["pruned"] and "no pruning" not in gen.texts["pruned"]
            await shows(pilot, f"pruned · {app.sparsity:.1%}")

            # 6 metrics: dense vs pruned with deltas and the history plot
            await pilot.press("6")
            await shows(pilot, "perplexity", "uniqueness", "toxicity")
            assert len(app.main.query_one("MetricsPane").history) >= 2

            # 7 save: ctrl+s, then export through the confirm dialog
            await pilot.press("7")
            await pilot.press("ctrl+s")
            await idle(pilot)
            out = tmp_path / "exported"
            await pilot.press("ctrl+e")
            await until(pilot, lambda: app.screen.__class__.__name__ == "ExportDialog", what="dialog")
            await shows(pilot, "sparse format", "exports/pilot")
            app.screen.query_one("#export-path").value = str(out)
            await pilot.pause(0.1)
            await pilot.click("#export-ok")
            await until(pilot, lambda: (out / "pruning.json").is_file() and "export" not in app._jobs,
                        what=f"export {app._jobs} {[(w.name, w.state) for w in app.workers]}")
            info = json.loads((out / "pruning.json").read_text())
            assert info["sparsity"] == pytest.approx(app.sparsity)
            # a second export to the same folder needs the overwrite box
            await pilot.press("ctrl+e")
            await until(pilot, lambda: app.screen.__class__.__name__ == "ExportDialog", what="dialog")
            app.screen.query_one("#export-path").value = str(out)
            await pilot.pause(0.1)
            assert app.screen.query_one("#export-ok").disabled
            await pilot.press("escape")

            # help and the command palette
            await pilot.press("f1")
            await until(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen", what="help")
            await shows(pilot, "ctrl+r", "run attribution")
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"attribution")
            await until(pilot, lambda: "Run attribution" in screen_text(app), what="palette")
            await pilot.press("escape")
            await pilot.press("ctrl+q")

    run(main())


def test_resume_shows_the_saved_sparsity_metrics_and_prompt_sets(tiny_model_dir, tmp_path):
    store = tmp_path / "store"

    async def first():
        app = WorkbenchApp(session="resume", model=str(tiny_model_dir), store=store)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: app.model_info is not None, what="model load")
            await pilot.press("2")
            app.main.query_one("#ps-samples").value = "6"
            app.main.query_one("#ps-eval-samples").value = "3"
            await loaded_and_scored(pilot)
            await pilot.press("4")
            app.main.query_one("#block-0", Slider).focus()
            await pilot.press("shift+right", "shift+right")
            await until(pilot, lambda: app.levels.blocks.get(0) == pytest.approx(0.2), what="block 0")
            await idle(pilot)
            await pilot.press("ctrl+q")
        return app.sparsity, app.jobs.wb.history()[-1]["metrics"]["perplexity"]["pruned"]

    sparsity, ppl = run(first())
    assert sparsity > 0

    async def second():
        app = WorkbenchApp(session="resume", store=store)  # no --model: the session's model
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: app.model_info is not None and app.sparsity > 0, what="restored plan")
            await idle(pilot)
            assert app.sparsity == pytest.approx(sparsity)
            assert app.levels.blocks == {0: pytest.approx(0.2)}
            assert app.main.query_one("#block-0", Slider).value == pytest.approx(0.2)
            assert app.main.query_one("#ps-samples").value == "6"
            assert app.main.query_one("#ps-eval-samples").value == "3"
            await pilot.press("6")
            await shows(pilot, f"{ppl:.4f}")
            await pilot.press("ctrl+q")

    run(second())


def test_cancel_keeps_partial_scores_and_bad_model_is_one_line(tiny_model_dir, tmp_path):
    async def main():
        app = WorkbenchApp(session="cancel", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: app.model_info is not None, what="model load")
            await pilot.press("2")
            app.main.query_one("#ps-reference").value = "builtin:fortunes"  # thousands of windows: long enough to cancel
            app.main.query_one("#ps-samples").value = "5000"
            app.main.query_one("#ps-seq-len").value = "32"
            await pilot.press("3")
            await pilot.click("#at-run")
            await until(pilot, lambda: "score" in app._jobs, what="scoring started")
            await pilot.press("escape")
            await until(pilot, lambda: "score" not in app._jobs, what="scoring stopped")
            await shows(pilot, "cancelled")
            assert not app.jobs.wb.scores_ready()
            # a model that does not exist: one line in the model pane, the app keeps running
            await pilot.press("1")
            app.main.query_one("#model-source").value = str(tmp_path / "nope")
            await pilot.click("#model-load")
            await until(pilot, lambda: "error:" in screen_text(app), what="load error")
            assert "Traceback" not in screen_text(app)
            await pilot.press("ctrl+q")

    run(main())


def test_first_paint_does_not_import_torch():
    code = ("import sys, workbench.app, screens.main; "
            "print(sorted(m for m in ('torch', 'transformers', 'lxt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_without_a_terminal_says_so(tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    res = CliRunner().invoke(app, ["--sessions-dir", str(tmp_path)])
    assert res.exit_code == 1 and "needs a terminal" in res.output
    res = CliRunner().invoke(app, ["--colors", "16m"])
    assert res.exit_code == 1 and "--colors" in res.output


@pytest.mark.slow
def test_real_model_score_slide_generate_export(tmp_path):
    """The embedded SmolLM2: load, score a few samples, slide, watch generation and perplexity, export, reload."""

    async def main():
        app = WorkbenchApp(session="real", store=tmp_path / "store")  # no --model: the embedded default
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: app.model_info is not None, timeout=300, what="default model")
            assert app.model_info["parameters"] > 100_000_000
            await idle(pilot, timeout=300)
            await pilot.press("2")
            app.main.query_one("#ps-samples").value = "4"
            app.main.query_one("#ps-seq-len").value = "64"
            app.main.query_one("#ps-eval-samples").value = "4"
            app.main.query_one("GenerationPane").query_one("#gen-tokens").value = "16"
            await loaded_and_scored(pilot)
            dense_text = app.main.query_one("GenerationPane").texts["dense"]
            assert dense_text.strip()
            await pilot.press("4")
            app.main.query_one("#global", Slider).focus()
            await pilot.press(*["shift+right"] * 5)  # 50 %: a visible change on 4 scored samples
            await until(pilot, lambda: abs(app.sparsity - 0.5) < 0.01, timeout=120, what="50 % applied")
            await idle(pilot, timeout=300)
            gen = app.main.query_one("GenerationPane")
            assert gen.texts["pruned"].strip() and gen.texts["pruned"] != gen.texts["dense"]
            ppl = app.jobs.wb.history()[-1]["metrics"]["perplexity"]
            assert ppl["pruned"] > ppl["dense"] * 1.05
            await pilot.press("6")
            await shows(pilot, f"{ppl['pruned']:.4f}")
            out = tmp_path / "export"
            await pilot.press("ctrl+e")
            await until(pilot, lambda: app.screen.__class__.__name__ == "ExportDialog", what="dialog")
            app.screen.query_one("#export-path").value = str(out)
            await pilot.pause(0.2)
            await pilot.click("#export-ok")
            await until(pilot, lambda: (out / "pruning.json").is_file() and "export" not in app._jobs,
                        timeout=300, what="export")
            await pilot.press("ctrl+q")
        return app.sparsity

    sparsity = run(main())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    info = json.loads((tmp_path / "export" / "pruning.json").read_text())
    assert info["sparsity"] == pytest.approx(sparsity, abs=0.01)
    w = model.model.layers[3].mlp.down_proj.weight  # the relevance allocation gives each layer its own share
    assert float((w == 0).float().mean()) == pytest.approx(info["per_layer_sparsity"]["model.layers.3.mlp.down_proj"], abs=1e-3)


def test_scoring_options_dialog_sets_what_the_pane_does_not_show_and_is_kept(tiny_model_dir, tmp_path):
    """Options… (pane 3, or the palette's "Scoring options") edits the rest of ScoreConfig: bad values are named
    and keep the dialog open, good ones reach the score settings and come back with the session."""
    from textual.widgets import Input, Select

    from core.session.manifest import AttributionUi
    from core.settings import ScoreConfig
    from screens.score_options import OPTIONS, ScoreOptionsDialog

    # with panes 2 and 3's own fields the dialog covers every scoring setting, and the session keeps each of its fields
    assert set(OPTIONS) == set(AttributionUi.model_fields)
    pane_fields = {"reference", "contrastive", "samples", "seq_len", "scorer", "target", "rules"}
    assert set(OPTIONS) | pane_fields == set(ScoreConfig.__dataclass_fields__)

    async def main():
        app = WorkbenchApp(session="opts", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: app.model_info is not None, what="model load")
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
            await shows(pilot, "draws must be >= 1")
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
            await until(pilot, lambda: again.model_info is not None, what="model load")
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
            await until(pilot, lambda: app.model_info is not None, what="model load")
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
            await until(pilot, lambda: app.model_info is not None, what="model load")
            cfg = app.score_settings()
            assert (cfg.normalize, cfg.seed, cfg.reduce) == ("l1", 3, None)

    run(main())


def test_correct_pane_sweeps_on_validation_data_and_shows_the_choice(tiny_model_dir, tmp_path):
    """Pane 9 after a contrastive score: a sweep measured where the user chose, its table, and the record kept;
    a score that drew every prompt leaves no validation data, and the pane says so in one line."""
    from textual.widgets import DataTable, Input, Select

    async def main():
        app = WorkbenchApp(session="fix", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 36)) as pilot:
            await until(pilot, lambda: app.model_info is not None, what="model load")
            await pilot.press("2")
            app.main.query_one("#ps-contrastive", Input).value = "builtin:repetition"
            app.main.query_one("#ps-samples", Input).value = "4"
            app.main.query_one("#ps-seq-len", Input).value = "16"
            await loaded_and_scored(pilot)
            await pilot.press("9")
            app.main.query_one("#co-steps", Input).value = "2,4"
            app.main.query_one("#co-bound", Input).value = "1.0"
            app.main.query_one("#co-measure-on", Select).value = "validation"
            await pilot.pause(0.1)
            await pilot.click("#co-run")
            await until(pilot, lambda: app.main.query_one("#co-table", DataTable).row_count == 3, 180, "sweep table")
            await idle(pilot)
            record = app.jobs.wb.session.manifest.correction
            assert record.measure_on == "validation" and [s.amount for s in record.steps] == [0, 2, 4]
            assert record.prompts == 23 - 4  # builtin:repetition's scoring prompts the score did not draw
            await shows(pilot, "applied" if record.chosen is not None else "no step improved")

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
