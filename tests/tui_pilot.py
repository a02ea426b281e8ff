"""Pilot helpers shared by the TUI tests: wait for a condition, for text on screen, for quiet; score once."""

from __future__ import annotations

import asyncio
import time

from tui_text import screen_text
from workbench.app import WorkbenchApp


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


async def model_loaded(pilot) -> None:
    await until(pilot, lambda: pilot.app.state.model_info is not None, what="model load")


async def loaded_and_scored(pilot) -> WorkbenchApp:
    app = pilot.app
    await model_loaded(pilot)
    await pilot.press("3")
    await pilot.click("#at-run")
    await until(pilot, lambda: app.jobs.wb.scores_ready() and "score" not in app._jobs, what="scores")
    await idle(pilot)
    return app


def run(coro):
    return asyncio.run(coro)
