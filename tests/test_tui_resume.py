"""A resumed session looks as it was left: every pane shows what the session holds, not its empty state."""

from __future__ import annotations

from tui_pilot import idle, model_loaded, run, until
from tui_text import screen_text
from workbench.app import WorkbenchApp


def test_a_resumed_session_shows_its_scores_plan_metrics_circuit_and_correction(invoke, tiny_model_dir, tmp_path):
    tiny = str(tiny_model_dir)
    invoke("score", "--session", "res", "--model", tiny, "--reference", "builtin:ioi", "--samples", "8", "--seq-len", "32")
    invoke("circuit", "--session", "res", "--granularity", "head", "--no-plot")
    invoke("score", "--session", "res", "--reference", "builtin:general", "--contrastive", "builtin:repetition",
           "--samples", "4", "--seq-len", "32", "--continuation", "4")
    invoke("correct", "--session", "res", "--granularity", "neuron", "--steps", "2,4", "--prompts", "4",
           "--new-tokens", "8", "--eval-windows", "4", "--no-plot")
    invoke("eval", "--session", "res", "--metrics", "perplexity", "--samples", "3")

    async def main():
        app = WorkbenchApp(session="res", store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            await idle(pilot)
            seen = {}
            for key in "34689":
                await pilot.press(key)
                await pilot.pause(0.3)
                seen[key] = screen_text(app)
        return seen

    seen = run(main())
    assert "scores restored from the session" in seen["3"] and "not scored yet" not in seen["3"]
    assert "no scores yet" not in seen["4"] and "achieved" in seen["4"]
    assert "3 windows of builtin:general" in seen["6"] and "0 windows" not in seen["6"]
    assert "restored from the session" in seen["6"]
    assert "the last circuit, restored from the session" in seen["8"]
    assert "score with a contrastive set first" not in seen["9"] and "no sweep yet" not in seen["9"]
    assert "restored from the session" in seen["9"] and "amount" in seen["9"], seen["9"]


def test_pane_8_finds_a_patch_ablation_circuit_and_says_so(invoke, tiny_model_dir, tmp_path):
    """The ablation field reaches the engine: a patch circuit found from pane 8 is what the CLI's would be."""
    from textual.widgets import Select

    from core.session.store import Session

    invoke("score", "--session", "pat", "--model", str(tiny_model_dir), "--reference", "builtin:ioi", "--samples", "8",
           "--seq-len", "32")

    async def main():
        app = WorkbenchApp(session="pat", store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            await idle(pilot)
            await pilot.press("8")
            await until(pilot, lambda: bool(app.main.query("#ci-ablation")), what="pane 8")
            app.main.query_one("#ci-granularity", Select).value = "head"
            app.main.query_one("#ci-ablation", Select).value = "patch"
            await pilot.click("#ci-run")
            await pilot.pause(0.5)
            await idle(pilot, timeout=120)
            return screen_text(app)

    text = run(main())
    assert "patch ablation" in text and "now the session's plan, its removed components zeroed" in text, text
    session = Session.open(tmp_path / "store", "pat")
    try:
        assert [c.ablation for c in session.manifest.circuits.values()] == ["patch"]
    finally:
        session.close()
