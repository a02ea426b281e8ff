"""Behaviours are decided by their registry, never by a string test on a set's name."""

from core.evaluation.registry import BEHAVIOURS, behaviour_of
from core.settings import ScoreConfig


def test_a_sets_behaviour_comes_from_the_registry_or_from_how_it_was_scored():
    assert behaviour_of("builtin:toxicity").name == "toxicity"
    assert behaviour_of("builtin:repetition").name == "uniqueness"
    # a user's file: its name says nothing (this one was measured as toxicity before, by a substring test)
    assert behaviour_of("data/toxic-chat.jsonl", "greedy").name == "uniqueness"
    assert behaviour_of("data/insults.jsonl", "most-toxic").name == "toxicity"
    assert behaviour_of("data/insults.jsonl", "greedy", given="toxicity").name == "toxicity"


def test_a_behaviour_declares_how_its_prompts_are_continued():
    assert ScoreConfig().continuation_for("builtin:toxicity") == BEHAVIOURS["toxicity"].continue_by == "most-toxic"
    assert ScoreConfig().continuation_for("builtin:repetition") == "greedy"
    assert ScoreConfig().continuation_for("data/toxic-chat.jsonl") == "greedy"
    assert ScoreConfig(continue_by="most-toxic").continuation_for("data/x.jsonl") == "most-toxic"
    for b in BEHAVIOURS.values():
        assert len(b.measures) == len(b.labels) and b.name in b.measures


def test_every_declared_setting_reaches_the_cli_the_tui_and_the_session():
    """One declaration per option: the CLI's flags, the TUI's options dialog and the session's record are all
    derived from core/settings.py (adding a setting there adds it everywhere)."""
    import typer.main

    from core.session.ui_state import AttributionUi
    from core.settings import EvalConfig, ModelSpec, PruneConfig, cli_flag, declared, in_panel
    from screens.score_options import OPTIONS
    from workbench.cli import app

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}
    for command, groups in {"score": (ModelSpec, ScoreConfig), "prune": (PruneConfig,), "eval": (EvalConfig,)}.items():
        flags = {opt for p in commands[command].params for opt in p.opts + p.secondary_opts}
        for group in groups:
            for name in declared(group):
                assert cli_flag(group, name).split("/")[0] in flags, (command, name)
    assert list(OPTIONS) == in_panel(ScoreConfig, "Advanced") == list(AttributionUi.model_fields)


def test_a_pruned_share_never_reads_as_dense():
    from screens.share import share

    assert share(0.0) == "0.0%" and share(0.0003) == "0.030%" and share(0.004) == "0.40%" and share(0.52) == "52.0%"
    assert share(1e-7) == "<0.001%"
