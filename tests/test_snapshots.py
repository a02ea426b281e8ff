"""Snapshot tests (pytest-textual-snapshot) of the main screen, every pane and the help screen at 80x24.

No model is loaded (autoload off), so the pictures do not depend on timing or weights.
Update them after an intended change with `uv run pytest tests/test_snapshots.py --snapshot-update`.
"""

from pathlib import Path

import pytest

from workbench.app import WorkbenchApp


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the session path shown in the Save pane is then the same every run
    return lambda: WorkbenchApp(session="snap", store=Path("store"), autoload=False)


async def _ready(pilot) -> None:
    app = pilot.app
    for _ in range(600):
        if app.jobs.wb is not None and not app._jobs:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "6", "7", "8", "9"])
def test_pane_snapshot(snap_compare, make_app, key):
    async def run_before(pilot):
        await _ready(pilot)
        await pilot.press(key)
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_help_snapshot(snap_compare, make_app):
    async def run_before(pilot):
        await _ready(pilot)
        await pilot.press("f1")
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_score_options_snapshot(snap_compare, make_app):
    async def run_before(pilot):
        await _ready(pilot)
        await pilot.press("3")
        await pilot.pause(0.1)
        await pilot.click("#at-options")
        await pilot.pause(0.1)
        pilot.app.screen.query_one("#so-explain").focus()  # the longest help text must fit its box
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
