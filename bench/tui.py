"""TUI speed: first paint, and slider -> weights + readout latency on the default model.

    uv run python bench/tui.py
    uv run python bench/tui.py --model FOLDER   # the slider rows on another model (CUDA + bf16 when present)

First paint is measured in fresh processes (the engine's imports must not delay it),
next to a bare Textual app started the same way: that is this machine's floor.
Slider latency: from the key press on the global slider to the readout showing the new
achieved sparsity (weights already re-masked), median of alternating 1 % steps at 50 %,
once with the model idle and once while generation and evaluation run (a move cancels
them). The engine's share (re-mask and summary in the worker) is shown beside it.
Printed as a table; targets: first paint < 1 s, slider < 100 ms.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.table import print_table  # noqa: E402 - after the path insert

PAINT = """
import time; t0 = time.perf_counter()
import asyncio
from pathlib import Path
from workbench.app import WorkbenchApp
async def main():
    app = WorkbenchApp(session="bench-paint", store=Path({store!r}), autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        while app.panes_ready_s is None:
            await pilot.pause(0.01)
        print(app._t0 - t0 + app.first_paint_s, app._t0 - t0 + app.panes_ready_s)
asyncio.run(main())
"""

# The floor on this machine: a bare Textual app (header, one line, footer), same harness.
BARE = """
import time; t0 = time.perf_counter()
import asyncio
from textual.app import App
from textual.widgets import Footer, Header, Static
class Bare(App):
    painted = None
    def compose(self):
        yield Header(); yield Static("hello"); yield Footer()
    def on_mount(self):
        self.call_after_refresh(lambda: setattr(self, "painted", time.perf_counter() - t0))
async def main():
    app = Bare()
    async with app.run_test(size=(80, 24)) as pilot:
        while app.painted is None:
            await pilot.pause(0.01)
        print(app.painted, app.painted)
asyncio.run(main())
"""


def _timed(code: str) -> tuple[float, float]:
    # As on a user's machine, Python may cache bytecode: containers that set
    # PYTHONDONTWRITEBYTECODE recompile Textual on every start (a bare app: 1.2 s vs 0.5 s).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    paint, ready = out.stdout.strip().splitlines()[-1].split()
    return float(paint), float(ready)


def first_paint(store: str, runs: int = 5) -> dict:
    """Medians over `runs` fresh processes, workbench and bare Textual alternating (noise hits both)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    interpreter = time.perf_counter() - t
    ours, bare = [], []
    _timed(PAINT.format(store=store)), _timed(BARE)  # the first start after an install compiles bytecode
    for _ in range(runs):
        ours.append(_timed(PAINT.format(store=store)))
        bare.append(_timed(BARE))
    return {"interpreter": interpreter, "paint": statistics.median(p for p, _ in ours),
            "ready": statistics.median(r for _, r in ours), "bare": statistics.median(p for p, _ in bare)}


async def slider_latency(store: str, steps: int = 12, model: str | None = None, busy_too: bool = True) -> dict:
    """Key press on the focused global slider -> weights re-masked and the readout updated.

    Keys go straight to the driver and the loop polls with plain sleeps: Pilot.press waits
    for the process to look idle, which never happens while a worker thread computes.
    """
    from textual import events

    from screens.slider import Slider
    from workbench.app import WorkbenchApp

    app = WorkbenchApp(session="bench-slider", store=Path(store), model=model)
    out = {}

    async def until(cond, what: str, limit: float = 300) -> None:
        t0 = time.perf_counter()
        while not cond():
            if time.perf_counter() - t0 > limit:
                raise RuntimeError(f"timed out waiting for {what}; jobs {app._jobs}")
            await asyncio.sleep(0.01)

    def key(name: str) -> None:
        event = events.Key(name, None)
        event.set_sender(app)
        app._driver.send_message(event)

    async with app.run_test(size=(100, 32)):
        await until(lambda: app.state.model_info is not None, "the model to load")
        print("model loaded", flush=True)
        await until(lambda: "generate" not in app._jobs, "the first generation")
        from dataclasses import replace

        app.jobs.score(replace(app.score_settings(), scorer="magnitude"))  # re-masking cost does not depend on the scorer
        await until(lambda: app.jobs.wb.scores_ready() and "score" not in app._jobs, "scoring")
        print("scored", flush=True)
        key("4")
        await until(lambda: app.main.active_pane == "sparsity", "the sparsity pane")
        slider = app.main.query_one("#global", Slider)
        slider.focus()
        await asyncio.sleep(0.1)

        async def quiet() -> None:
            """Let the settle timer start generation and evaluation, then cancel them and wait."""
            await until(lambda: not app.jobs.prune_running and app._settle_timer is None, "the sliders to settle")
            await asyncio.sleep(0.05)
            app.action_cancel()
            await until(lambda: not app._jobs, "cancelled jobs to stop")

        applied: list[float] = []  # the engine's share: re-mask + summary in the worker

        async def step(name: str) -> float:
            before = app.state.pruned_at
            t0 = time.perf_counter()
            key(name)
            await until(lambda: app.state.pruned_at != before, f"a re-mask after {name!r}", 30)
            applied.append(app.state.last_apply_ms)
            return (app.state.pruned_at - t0) * 1000

        for _ in range(5):  # +10 % each, to 50 % (the first re-mask also ranks every layer)
            key("pageup")
        await quiet()
        await step("right")
        await quiet()
        print(f"at {app.state.sparsity:.1%}", flush=True)
        idle = []
        for i in range(steps):
            idle.append(await step("left" if i % 2 else "right"))
            await quiet()
        out["idle"], out["idle_engine"] = idle, applied[-steps:]
        print("idle", [round(x) for x in idle], flush=True)
        busy = []
        for i in range(steps if busy_too else 0):
            started = {job: app._job_runs.get(job, 0) for job in ("generate", "evaluate")}
            app.action_generate()
            app.action_evaluate()
            # each said it started (a short generation may end before the evaluation says so: don't wait for both at once)
            await until(lambda: all(app._job_runs.get(job, 0) > n for job, n in started.items()), "jobs to start")
            await asyncio.sleep(0.3)  # let them take the model
            busy.append(await step("left" if i % 2 else "right"))
            await quiet()
        out["busy"] = busy
        print("busy", [round(x) for x in busy], flush=True)
    return out


def main() -> None:
    import faulthandler

    faulthandler.dump_traceback_later(900, exit=True)  # a hung run prints where it hangs
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paint-only", action="store_true")
    ap.add_argument("--idle-only", action="store_true", help="skip the rows with generation and evaluation running")
    ap.add_argument("--model", default=None, help="what the slider rows load (default: the embedded model); "
                    "device and dtype are auto (CUDA and bf16 where there is a GPU)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as store:
        fp = first_paint(store)
        print(f"first paint {fp['paint']:.2f} s, all panes {fp['ready']:.2f} s, bare Textual app {fp['bare']:.2f} s "
              f"(+{fp['interpreter']:.2f} s interpreter start)", flush=True)
        rows = [
            ("first paint (fresh process, imports included)", f"{fp['paint']:.2f} s (+{fp['interpreter']:.2f} s interpreter)",
             "< 1 s", fp["paint"] + fp["interpreter"] < 1.0),
            ("  the same for a bare Textual app (this machine's floor)", f"{fp['bare']:.2f} s", "", None),
            ("  ratio workbench / bare Textual", f"{fp['paint'] / fp['bare']:.2f}x", "", None),
            ("all seven panes mounted (session opens, model loads)", f"{fp['ready']:.2f} s", "", None),
        ]
        if not args.paint_only:
            lat = asyncio.run(asyncio.wait_for(slider_latency(store, model=args.model, busy_too=not args.idle_only), 600))
            rows += [
                ("slider 1 % step -> weights + readout, model idle", f"{statistics.median(lat['idle']):.0f} ms median "
                 f"(max {max(lat['idle']):.0f})", "< 100 ms", statistics.median(lat["idle"]) < 100),
                ("  of which the engine (re-mask + summary, worker)", f"{statistics.median(lat['idle_engine']):.0f} ms median",
                 "", None),
            ]
            if lat["busy"]:
                rows.append(("same, while generation + evaluation run", f"{statistics.median(lat['busy']):.0f} ms median "
                             f"(max {max(lat['busy']):.0f})", "< 100 ms", statistics.median(lat["busy"]) < 100))
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
    print_table(f"LRP Workbench TUI benchmark  ({where}, model {args.model or 'default'})", rows)


if __name__ == "__main__":
    main()
