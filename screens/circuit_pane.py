"""Circuit pane: find the circuit behind the session's task, compare scorers, see which heads and neurons carry it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from core.catalog import catalog
from core.pruning.registry import granularity
from core.settings import CircuitConfig, default_of, help_of
from screens.heat import HEAT_COLOURS, MAP_CELLS
from screens.messages import CircuitRequested


def circuit_map_text(result) -> Text:
    """Per block: kept heads as filled cells, or kept neurons / kept share of weights as a bar."""
    blocks = result.map.get("blocks", {})
    t = Text(no_wrap=True, overflow="crop")
    if not blocks:
        t.append("no circuit kept the threshold", style="dim")
        return t
    noun = f"{granularity(result.granularity).component}s"
    # a block's kept units are flags: few (heads) read best as cells, many (neurons) as a count; weights as a share
    cells = all(isinstance(v, list) and len(v) <= MAP_CELLS for v in blocks.values())
    top = max((sum(v) if isinstance(v, list) else 1.0) for v in blocks.values()) or 1
    for b, value in sorted(blocks.items(), key=lambda kv: int(kv[0])):
        t.append(f"{int(b):>3} ", style="dim")
        if cells:
            for kept in value:
                t.append("█" if kept else "·", style=HEAT_COLOURS[-1] if kept else HEAT_COLOURS[0])
            t.append(f"  {sum(value)}/{len(value)} {noun}")
        else:
            share = sum(value) / top if isinstance(value, list) else value
            width = 30
            t.append("█" * round(share * width), style=HEAT_COLOURS[-2])
            t.append(f" {sum(value)} {noun}" if isinstance(value, list) else f" {value:.0%}")
        t.append("\n")
    return t


class CircuitPane(Vertical):
    HELP = ("on a task set (builtin:ioi, builtin:agreement), the fewest weights, MLP neurons or heads that keep "
            "the task; compare scorers (CAP among them); which heads carry it.")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("Components", classes="field-label")
            yield Select([(g, g) for g in catalog()["counted granularities"]], value=default_of(CircuitConfig, "granularity"),
                         allow_blank=False, id="ci-granularity", compact=True, tooltip=help_of(CircuitConfig, "granularity"))
            yield Label("ablation", classes="field-label short")
            yield Select([(a, a) for a in catalog()["ablations"]], value=default_of(CircuitConfig, "ablation"),
                         allow_blank=False, id="ci-ablation", compact=True, tooltip=help_of(CircuitConfig, "ablation"))
            yield Button("Find circuit", id="ci-run", variant="primary", compact=True)
        with Horizontal(classes="row"):
            yield Label("compare", classes="field-label")
            yield Input("", placeholder="(the session's scorer) or lrp,cap,wanda,random", id="ci-compare", compact=True,
                        tooltip=help_of(CircuitConfig, "compare"))
        yield Label("score a task set first (pane 2: builtin:ioi or builtin:agreement, then pane 3)", id="ci-status")
        from textual_plotext import PlotextPlot  # plotext costs ~0.15 s; this pane mounts after the first paint

        with Horizontal(id="ci-body"):
            yield PlotextPlot(id="ci-plot")
            with VerticalScroll(id="ci-map-box"):  # a deep model's blocks scroll
                yield Static("", id="ci-map")

    def on_mount(self) -> None:
        self.query_one("#ci-plot").plt.title("no circuit yet")

    def settings(self) -> CircuitConfig:
        compare = tuple(x.strip() for x in self.query_one("#ci-compare", Input).value.split(",") if x.strip()) or None
        return CircuitConfig(str(self.query_one("#ci-granularity", Select).value), compare=compare,
                             ablation=str(self.query_one("#ci-ablation", Select).value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ci-run":
            event.stop()
            self.post_message(CircuitRequested(self.settings()))

    def set_status(self, text: str) -> None:
        self.query_one("#ci-status", Label).update(Text(text))

    def show_results(self, results: list, threshold: float, restored: bool = False) -> None:
        plot = self.query_one("#ci-plot")
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        by_scorer: dict[str, list] = {}
        for r in results:
            by_scorer.setdefault(r.scorer, []).append(r)
        for scorer, runs in by_scorer.items():
            xs = [p.kept for p in runs[0].curve]
            ys = [sum(run.curve[i].logit_diff for run in runs) / len(runs) for i in range(len(xs))]
            # the measured points only: a line between grid points would cross the threshold where nothing was measured
            plt.scatter(xs, ys, marker="dot", label=scorer)
            kept = [r.circuit_kept for r in runs if r.circuit_kept is not None]
            if kept:
                plt.vline(sum(kept) / len(kept))  # the circuit as reported
        plt.hline(threshold)
        plt.xlabel("fraction kept (vertical line: the circuit)")
        first = results[0]
        plt.title(f"{first.task}: {first.granularity} circuits, logit difference (dense 1)")
        plot.refresh()
        self.query_one("#ci-map", Static).update(circuit_map_text(first))
        parts = []
        for scorer, runs in by_scorer.items():
            kept = [r.circuit_kept for r in runs if r.circuit_kept is not None]
            areas = [r.area for r in runs if r.area is not None]
            parts.append((f"{scorer}: {sum(kept) / len(kept):.3g}" if kept else f"{scorer}: -")
                         + (f" (area {sum(areas) / len(areas):.3f})" if areas else ""))
        self.set_status(f"circuit ({first.ablation} ablation, holding {threshold:.0%}): " + " · ".join(parts)
                        + (" · the last circuit, restored from the session" if restored else
                           "" if len(results) > 1 else f" · {first.as_plan()} (ctrl+e exports it)"))
