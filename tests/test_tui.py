"""Pilot tests: every pane of the workbench TUI driven with a tiny random model, resume, cancel, start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from screens.slider import Slider
from tui_pilot import idle, loaded_and_scored, model_loaded, run, shows, until
from tui_text import screen_text
from workbench.app import WorkbenchApp

ROOT = Path(__file__).resolve().parent.parent


def test_every_pane_with_a_tiny_model(tiny_model_dir, tmp_path):
    async def main():
        app = WorkbenchApp(session="pilot", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(100, 32)) as pilot:
            # 1 model: loaded in a worker, described in the pane
            await model_loaded(pilot)
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
            await until(pilot, lambda: abs(app.state.sparsity - 0.3) < 0.02, what="30 % applied")
            await idle(pilot)
            await shows(pilot, "achieved 30.")
            assert app.jobs.wb.plan.default == pytest.approx(0.3)
            b0 = app.main.query_one("#block-0", Slider)  # followed once the weights were re-masked
            assert b0.value == pytest.approx(0.3) and b0.inherited

            # per-block slider by mouse: a click at the right end of block 1's slider
            block1 = app.main.query_one("#block-1", Slider)
            await pilot.click("#block-1", offset=(block1.bar_width - 1, 0))
            await until(pilot, lambda: app.state.levels.blocks.get(1) == pytest.approx(0.99), what="block 1 at max")
            await idle(pilot)
            per_block = app.jobs.wb.prune_summary().per_block
            assert per_block[1] > 0.95 and per_block[0] == pytest.approx(0.3, abs=0.02)
            attn1 = app.main.query_one("#attn-1", Slider)
            assert attn1.value == pytest.approx(0.99) and attn1.inherited
            assert not app.main.query_one("#block-1", Slider).inherited
            # the attention slider of block 0 overrides only attention in block 0
            attn0 = app.main.query_one("#attn-0", Slider)
            attn0.focus()
            await pilot.press("end")
            await until(pilot, lambda: app.state.levels.kinds.get((0, "attn")) == pytest.approx(0.99), what="attn 0")
            await idle(pilot)
            per_layer = app.jobs.wb.prune_summary().per_layer
            assert per_layer["model.layers.0.self_attn.q_proj"] > 0.95
            assert per_layer["model.layers.0.mlp.up_proj"] == pytest.approx(0.3, abs=0.02)

            # undo twice goes back to the uniform 30 % plan, redo forward again
            await pilot.press("ctrl+z")
            await until(pilot, lambda: (0, "attn") not in app.state.levels.kinds, what="undo 1")
            await idle(pilot)
            undo_stack = [(u.default, len(u.overrides)) for u in app.jobs.wb.session.manifest.undo]
            await pilot.press("ctrl+z")
            await until(pilot, lambda: not app.state.levels.blocks, what=f"undo 2 {undo_stack}")
            await idle(pilot)
            assert app.jobs.wb.prune_summary().per_block[1] == pytest.approx(0.3, abs=0.02)
            await pilot.press("ctrl+y")
            await until(pilot, lambda: app.state.levels.blocks.get(1) == pytest.approx(0.99), what="redo")
            await idle(pilot)

            # allocation: uniform resets; relevance spreads the global level over blocks and parts (same
            # overall sparsity), the same plan `workbench prune --allocate relevance` makes, and the
            # blocks then follow the global slider; moving a block slider makes the levels hand-set again
            app.action_allocate("uniform")
            await until(pilot, lambda: not app.state.levels.blocks, what="uniform")
            await idle(pilot)
            app.main.query_one("#sp-allocation").value = "relevance"
            await until(pilot, lambda: len(app.state.levels.kinds) == 4, what="relevance allocation")
            await idle(pilot)
            assert app.state.levels.level(0, "attn") != app.state.levels.level(0, "mlp")
            assert app.state.sparsity == pytest.approx(0.3, abs=0.02)
            assert app.jobs.wb.plan == app.jobs.wb.plan_for(0.3, allocate="relevance")
            slider.focus()
            await pilot.press("right", "right")  # the global slider: 32 %, the blocks follow
            await until(pilot, lambda: abs(app.state.sparsity - 0.32) < 0.01, what="allocated at 32 %")
            await idle(pilot)
            assert app.jobs.wb.plan == app.jobs.wb.plan_for(0.32, allocate="relevance")
            attn0, mlp0 = (app.main.query_one(f"#{k}-0", Slider).value for k in ("attn", "mlp"))
            assert attn0 != mlp0  # sliders draw 1 % steps of the allocated levels
            assert (attn0, mlp0) == (pytest.approx(app.state.levels.level(0, "attn"), abs=0.006),
                                     pytest.approx(app.state.levels.level(0, "mlp"), abs=0.006))
            block0 = app.main.query_one("#block-0", Slider).value  # the block column: what its parts prune
            assert block0 == pytest.approx(app.jobs.wb.prune_summary().per_block[0], abs=0.011)
            app.main.query_one("#block-1", Slider).focus()
            await pilot.press("left")
            await until(pilot, lambda: app.state.levels.allocation == "hand-set", what="hand-set")
            await idle(pilot)
            assert app.main.query_one("#sp-allocation").value == "hand-set"  # not "uniform": the parts differ
            await pilot.press("ctrl+z")  # back to the relevance plan: the label says so again
            await until(pilot, lambda: app.state.levels.allocation == "relevance", what="undo names the allocation")
            await idle(pilot)
            assert app.main.query_one("#sp-allocation").value == "relevance"
            await pilot.press("ctrl+y")
            await until(pilot, lambda: app.state.levels.allocation == "hand-set", what="redo")
            await idle(pilot)
            app.main.query_one("#sp-allocation").value = "uniform"  # choosing uniform applies it
            await until(pilot, lambda: not app.jobs.wb.plan.overrides, what="uniform applied")
            await idle(pilot)

            # 5 generation: dense and pruned side by side, regenerated after the change
            await pilot.press("5")
            gen = app.main.query_one("GenerationPane")
            assert gen.texts["dense"] and gen.texts["pruned"] and "no pruning" not in gen.texts["pruned"]
            await shows(pilot, f"pruned · {app.state.sparsity:.1%}")

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
            assert info["sparsity"] == pytest.approx(app.state.sparsity)
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
            await model_loaded(pilot)
            await pilot.press("2")
            app.main.query_one("#ps-samples").value = "6"
            app.main.query_one("#ps-eval-samples").value = "3"
            await loaded_and_scored(pilot)
            await pilot.press("4")
            app.main.query_one("#block-0", Slider).focus()
            await pilot.press("shift+right", "shift+right")
            await until(pilot, lambda: app.state.levels.blocks.get(0) == pytest.approx(0.2), what="block 0")
            await idle(pilot)
            await pilot.press("ctrl+q")
        return app.state.sparsity, app.jobs.wb.history()[-1]["metrics"]["perplexity"]["pruned"]

    sparsity, ppl = run(first())
    assert sparsity > 0

    async def second():
        app = WorkbenchApp(session="resume", store=store)  # no --model: the session's model
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: app.state.model_info is not None and app.state.sparsity > 0, what="restored plan")
            await idle(pilot)
            assert app.state.sparsity == pytest.approx(sparsity)
            assert app.state.levels.blocks == {0: pytest.approx(0.2)}
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
            await model_loaded(pilot)
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
            await until(pilot, lambda: app.state.model_info is not None, timeout=300, what="default model")
            assert app.state.model_info["parameters"] > 100_000_000
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
            await until(pilot, lambda: abs(app.state.sparsity - 0.5) < 0.01, timeout=120, what="50 % applied")
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
        return app.state.sparsity

    sparsity = run(main())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    info = json.loads((tmp_path / "export" / "pruning.json").read_text())
    assert info["sparsity"] == pytest.approx(sparsity, abs=0.01)
    w = model.model.layers[3].mlp.down_proj.weight  # the relevance allocation gives each layer its own share
    assert float((w == 0).float().mean()) == pytest.approx(info["per_layer_sparsity"]["model.layers.3.mlp.down_proj"], abs=1e-3)
