"""TUI speed: first paint, and slider -> weights + readout latency on the default model.

    uv run python bench/tui.py

First paint is measured in a fresh process (the engine's imports must not delay it).
Slider latency: from the key press on the global slider to the readout showing the new
achieved sparsity (weights already re-masked), median of alternating steps, once with
the model idle and once while generation and evaluation are running (they are cancelled
first). Printed as a table; targets: first paint < 1 s, slider < 100 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAINT = """
import time; t0 = time.perf_counter()
import asyncio
from pathlib import Path
from workbench.app import WorkbenchApp
async def main():
    app = WorkbenchApp(session="bench-paint", store=Path({store!r}), autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        while app.first_paint_s is None:
            await pilot.pause(0.01)
        print(app._t0 - t0 + app.first_paint_s)
asyncio.run(main())
"""


def first_paint(store: str) -> tuple[float, float]:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    interpreter = time.perf_counter() - t
    out = subprocess.run([sys.executable, "-c", PAINT.format(store=store)], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return interpreter, float(out.stdout.strip().splitlines()[-1])


async def slider_latency(store: str, steps: int = 8) -> dict:
    from screens.slider import Slider
    from workbench.app import WorkbenchApp

    app = WorkbenchApp(session="bench-slider", store=Path(store))
    out = {}
    async with app.run_test(size=(100, 32)) as pilot:
        while app.model_info is None:
            await pilot.pause(0.05)
        print("model loaded", flush=True)
        settings = {**app.score_settings(), "scorer": "magnitude"}  # re-masking cost does not depend on the scorer
        app._score_worker(settings)
        while not (app.wb.scores_complete() and "score" not in app._jobs):
            await pilot.pause(0.05)
        print("scored", flush=True)
        await pilot.press("4")
        slider = app.main.query_one("#global", Slider)
        slider.focus()
        slider.set_value(0.5, notify=True)

        async def settle():
            t0 = time.perf_counter()
            while app._jobs or app._prune_running or app._settle_timer is not None:
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"never settled: jobs {app._jobs}, prune {app._prune_running}")
                await pilot.pause(0.02)

        async def step(key: str) -> float:
            before = app.pruned_at
            t0 = time.perf_counter()
            await pilot.press(key)
            while app.pruned_at == before:
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"no re-mask after {key!r}; focused: {app.focused}")
                await asyncio.sleep(0.001)
            return (app.pruned_at - t0) * 1000

        await settle()
        await step("right")  # first re-rank after the jump to 50 % is not a slider step
        await settle()
        idle = []
        for i in range(steps):
            idle.append(await step("left" if i % 2 else "right"))
            await settle()
        out["idle"] = idle
        busy = []
        for i in range(steps):
            app.action_generate()
            app.action_evaluate()
            await pilot.pause(0.3)  # let them start and take the model
            busy.append(await step("left" if i % 2 else "right"))
            await settle()
        out["busy"] = busy
        await pilot.press("ctrl+q")
    return out


def main() -> None:
    import faulthandler

    faulthandler.dump_traceback_later(900, exit=True)  # a hung run prints where it hangs
    import torch

    with tempfile.TemporaryDirectory() as store:
        interpreter, paint = first_paint(store)
        print(f"first paint {paint:.2f} s (+{interpreter:.2f} s interpreter start)", flush=True)
        if "--paint-only" in sys.argv:
            return
        lat = asyncio.run(asyncio.wait_for(slider_latency(store), 600))
    rows = [
        ("first paint (fresh process, imports included)", f"{paint:.2f} s (+{interpreter:.2f} s interpreter start)", "< 1 s",
         paint + interpreter < 1.0),
        ("slider 1 % step -> weights + readout, model idle", f"{statistics.median(lat['idle']):.0f} ms median "
         f"(max {max(lat['idle']):.0f})", "< 100 ms", statistics.median(lat["idle"]) < 100),
        ("same, while generation + evaluation run", f"{statistics.median(lat['busy']):.0f} ms median "
         f"(max {max(lat['busy']):.0f})", "< 100 ms", statistics.median(lat["busy"]) < 100),
    ]
    print(f"LRP Workbench TUI benchmark  ({torch.get_num_threads()} threads, default model, 210 layers)")
    print(f"{'measure':52s} {'value':40s} {'target':10s} met")
    print(f"{'-' * 52} {'-' * 40} {'-' * 10} ---")
    for name, value, target, met in rows:
        print(f"{name:52s} {value:40s} {target:10s} {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
