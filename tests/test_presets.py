"""Presets and recipes: what a user picks expands into a complete, checked configuration; a recipe
written by --show-config reads back into the same one; every option still overrides both."""

from __future__ import annotations

import json

import pytest

import core.engine_model
from core.errors import WorkbenchError
from core.presets import PRESETS
from core.recipes import build, read_recipe, recipe_text
from core.settings import ScoreConfig
from tui_pilot import model_loaded, run
from workbench.app import WorkbenchApp


def _error(result, needle):
    assert result.exit_code != 0 and result.output.strip().startswith("error: "), result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_preset_expands_into_a_resolved_recipe_that_round_trips(invoke, tmp_path, monkeypatch):
    monkeypatch.setattr(core.engine_model, "load_model", lambda *a, **k: pytest.fail("--show-config loaded a model"))
    shown = invoke("score", "--session", "x", "--preset", "detox", "--show-config").stdout
    assert 'contrastive = "builtin:toxicity"' in shown
    assert 'reduce = "signed-contrast"' in shown and 'pair = "clean"' in shown  # resolved, not "depends on the sets"
    recipe = tmp_path / "detox.toml"
    recipe.write_text(shown)
    assert invoke("score", "--session", "x", "--config", str(recipe), "--show-config").stdout == shown
    overridden = invoke("score", "--session", "x", "--config", str(recipe), "--samples", "7", "--show-config").stdout
    assert "samples = 7" in overridden and 'contrastive = "builtin:toxicity"' in overridden
    assert not (tmp_path / "store" / "x").exists()  # showing the configuration touches no session
    compress = invoke("score", "--session", "x", "--preset", "compress", "--show-config").stdout
    assert 'contrastive = ""' in compress and 'reduce = "token-rms"' in compress


def test_every_preset_builds_a_valid_config_and_options_override_it():
    for name, p in PRESETS.items():
        cfg = build(name, None, {})
        assert cfg.reference == p.score["reference"] and cfg.contrastive == p.score.get("contrastive")
    assert build("detox", None, {"scorer": "gradient"}).scorer == "gradient"
    text = recipe_text(build("derepeat", None, {"seed": 3}), preset_name="derepeat")
    assert "seed = 3" in text and 'preset = "derepeat"' in text


@pytest.mark.parametrize("args,needle", [
    (["--preset", "shrink"], "unknown --preset 'shrink'"),
    (["--pair", "clean"], "--pair clean needs --contrastive"),
    (["--preset", "compress", "--explain", "unwanted", "--continuation", "0"], "--continuation 0"),
])
def test_bad_presets_and_dependent_options_fail_at_construction(invoke, monkeypatch, args, needle):
    monkeypatch.setattr(core.engine_model, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    _error(invoke("score", "--session", "x", *args, ok=False), needle)


@pytest.mark.parametrize("text,needle", [
    ("[score]\nsampels = 3\n", "has no setting 'sampels'"),
    ("[model]\ntrust_remote_code = true\n", "never read from a file"),
    ("[score\n", "not valid TOML"),
    ("colour = 'red'\n", "unknown section or key 'colour'"),
])
def test_bad_recipes_are_one_line(invoke, tmp_path, text, needle):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    with pytest.raises(WorkbenchError, match=needle.replace("(", r"\(").replace("'", "'")):
        read_recipe(recipe)
    _error(invoke("score", "--session", "x", "--config", str(recipe), ok=False), needle)


def test_scoring_with_a_preset_records_it_and_says_what_comes_next(invoke, tiny_model_dir, tmp_path):
    res = invoke("score", "--session", "p", "--preset", "derepeat", "--model", str(tiny_model_dir), "--scorer", "gradient",
                 "--samples", "2", "--seq-len", "24", "--continuation", "4")
    assert "next: workbench correct --session p" in res.stdout
    m = json.loads((tmp_path / "store" / "p" / "manifest.json").read_text())
    assert m["score_config"]["contrastive"] == "builtin:repetition" and m["score_config"]["scorer"] == "gradient"
    assert m["score_config"]["reduce"] == "signed-contrast"


def test_the_tui_preset_sets_the_sets_and_the_scorer(tiny_model_dir, tmp_path):
    from textual.widgets import Input, Select

    async def main():
        app = WorkbenchApp(session="pre", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await model_loaded(pilot)
            await pilot.press("3")
            app.main.query_one("#at-scorer", Select).value = "wanda"
            app.main.query_one("#at-preset", Select).value = "detox"
            await pilot.pause(0.3)
            assert app.main.query_one("#ps-contrastive", Input).value == "builtin:toxicity"
            cfg = app.score_settings()
            assert (cfg.reference, cfg.contrastive, cfg.scorer) == ("builtin:fortunes", "builtin:toxicity", "lrp")
            assert cfg.reduce is None and cfg.pair is None  # set-dependent: resolved by the engine, as the CLI does
            app.main.query_one("#at-preset", Select).value = "circuit"
            await pilot.pause(0.3)
            assert app.main.query_one("#ps-contrastive", Input).value == ""
            assert app.score_settings().reference == "builtin:ioi"

    run(main())


def test_score_config_defaults_are_what_compress_builds():
    assert build("compress", None, {}) == ScoreConfig()
