"""The correction defaults: LRP and gradient on a contrastive prompt set score with --reduce signed-contrast
--explain unwanted --pair clean (chosen on validation data, bench/correction_ablation.py), and fall back to
every token where the set shows nothing unwanted."""

import json

import pytest

from core.engine import Workbench
from core.session.store import Session
from core.settings import ModelSpec, ScoreConfig

COMBINED = ("signed-contrast", "unwanted", "clean")
FORMER = ("abs", "all", "none")


def chosen(cfg: ScoreConfig) -> tuple:
    return cfg.reduce, cfg.explain, cfg.pair


def test_the_combination_is_the_default_only_where_each_of_its_parts_means_something():
    rep = ScoreConfig(contrastive="builtin:repetition")
    assert chosen(rep.resolved("text", "prompts")) == COMBINED
    assert chosen(rep.resolved("text", "text")) == FORMER  # a contrastive text set: nothing continued, nothing to pair
    assert chosen(rep.resolved("text", "prompts", reducible=False)) == FORMER  # Wanda, CAP, magnitude, random
    from dataclasses import replace

    assert chosen(replace(rep, continuation=0).resolved("text", "prompts")) == FORMER  # no continuation to explain
    assert chosen(ScoreConfig().resolved("text")) == ("token-rms", "all", "none")  # no contrast: as before
    assert chosen(ScoreConfig(reduce="abs", explain="continuation", pair="none",
                              contrastive="x").resolved("text", "prompts")) == ("abs", "continuation", "none")
    mixed = ScoreConfig(contrastive="x", explain="all").resolved("text", "prompts")  # one choice leaves the others
    assert chosen(mixed) == ("signed-contrast", "all", "clean")


@pytest.fixture
def engine(tmp_path, tiny_model_dir, monkeypatch):
    """A tiny model's engine whose contrastive prompts continue without any repeat (nothing unwanted)."""
    from core.attribution import samples as S
    from core.data.prompt_sets import PromptSet

    monkeypatch.setattr(S, "greedy_batch", lambda model, tok, ps, n, **kw: [list(range(40, 40 + n)) for _ in ps])
    wb = Workbench(Session.create(tmp_path, "d"))
    wb.load(ModelSpec(str(tiny_model_dir)))
    wb.use_prompt_set(PromptSet("clean-prompts", ["the cat sat on", "a dog ran to", "we went to the"], ["x"], "prompts"))
    return wb


def test_a_set_that_shows_nothing_unwanted_falls_back_to_every_token_unless_unwanted_was_asked_for(engine):
    from core.errors import WorkbenchError

    cfg = ScoreConfig(reference="builtin:general", contrastive="clean-prompts", samples=3, seq_len=24, continuation=6)
    summary = engine.score(cfg)
    assert set(summary) == {"reference", "contrastive", "paired"}
    assert summary["contrastive"].explain_fallback == "all" and summary["contrastive"].explained is None
    assert summary["contrastive"].samples == 3  # every sample scored, none skipped
    mf = engine.session.manifest
    assert chosen(mf.score_config) == ("signed-contrast", "all", "clean")
    assert mf.score_defaults == ["reduce", "explain", "pair"]
    assert mf.ranking.key["sets"]["contrastive"].get("explain") is None  # keyed as the score it is: every token
    again = engine.score(cfg)  # the same defaults again: the same score, found after the fallback
    assert all(s.cached for s in again.values()) and again["contrastive"].explain_fallback == "all"
    with pytest.raises(WorkbenchError, match="--explain unwanted has nothing to explain"):
        engine.score(ScoreConfig(reference="builtin:general", contrastive="clean-prompts", samples=3, seq_len=24,
                                 continuation=6, explain="unwanted"))


def test_a_session_gives_back_its_scoring_as_chosen_so_defaults_follow_the_sets(engine):
    """score_config_dict (what the TUI restores): fields filled in by default are None, choices stay."""
    engine.score(ScoreConfig(reference="builtin:general", contrastive="clean-prompts", samples=3, seq_len=24,
                             continuation=6, pair="none", normalize="l1"))
    back = engine.score_config_dict()
    assert (back["reduce"], back["explain"], back["pair"], back["normalize"]) == (None, None, "none", "l1")
    assert engine.score_config.reduce == "signed-contrast"  # the session itself keeps what was used


def test_a_session_scored_before_the_defaults_changed_reads_as_it_was_scored(tmp_path):
    """Older manifests have no explain or pair (every score then explained all tokens, unpaired) and no
    score_defaults: they read as what they were, and their former defaults follow the sets in the TUI."""
    session = Session.create(tmp_path, "old")
    path = session.path / "manifest.json"
    data = json.loads(path.read_text())
    cfg = {k: v for k, v in ScoreConfig(contrastive="builtin:repetition", reduce="abs").__dict__.items()
           if k not in ("explain", "pair")}
    path.write_text(json.dumps({**data, "score_config": cfg}))
    old = Workbench(Session.open(tmp_path, "old"))
    assert chosen(old.score_config) == FORMER and old.session.manifest.score_defaults is None
    back = old.score_config_dict()
    assert (back["reduce"], back["explain"], back["pair"]) == (None, None, None)


def test_score_from_the_cli_says_when_it_fell_back(invoke, tiny_model_dir, tmp_path, monkeypatch):
    from core.attribution import samples as S

    monkeypatch.setattr(S, "greedy_batch", lambda model, tok, ps, n, **kw: [list(range(40, 40 + n)) for _ in ps])
    prompts = tmp_path / "clean.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"prompt number {i} is"}) + "\n" for i in range(8)))
    args = ("score", "--session", "f", "--model", str(tiny_model_dir), "--reference", "builtin:general",
            "--contrastive", str(prompts), "--samples", "3", "--seq-len", "24", "--continuation", "6")
    out = invoke(*args).stdout
    assert "explained: every token, as no scoring sample shows a repeat" in out and "paired:" in out
    assert "contrast: --reduce signed-contrast (default), --explain all (default), --pair clean (default)" in out
    chosen_out = invoke(*args, "--pair", "none", "--reduce", "abs").stdout
    assert "contrast: --reduce abs, --explain all (default), --pair none" in chosen_out
