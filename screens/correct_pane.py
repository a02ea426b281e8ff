"""Correct pane: remove a behaviour (toxicity, repetition) and see what it costs, step by step, on held-out prompts
(or on validation data, to compare settings without looking at the held-out prompts)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from core.catalog import catalog
from core.pruning.registry import granularity as granularity_of
from core.settings import CorrectConfig, default_of, help_of
from screens.messages import CorrectRequested


def _floats(text: str) -> tuple[float, ...] | None:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        return None
    return values or None


class CorrectPane(Vertical):
    HELP = ("after a contrastive score (builtin:toxicity, builtin:repetition), sweep how many neurons, heads or "
            "weights go (default: single weights ranked across the model); the strongest correction within the "
            "perplexity bound is applied.")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("Prune", classes="field-label")
            # blank: the default, which may depend on the behaviour (core/applications/correction.py)
            yield Select([(g, g) for g in catalog()["counted granularities"]], value=Select.NULL, allow_blank=True,
                         prompt="default", id="co-granularity", compact=True, tooltip=help_of(CorrectConfig, "granularity"))
            yield Label("steps", classes="field-label short")
            yield Input("", placeholder="default", id="co-steps", compact=True, tooltip=help_of(CorrectConfig, "steps"))
            yield Label("cost bound", classes="field-label short")
            yield Input(str(default_of(CorrectConfig, "bound")), id="co-bound", type="number", classes="num", compact=True,
                        tooltip=help_of(CorrectConfig, "bound"))
            yield Button("Sweep", id="co-run", variant="primary", compact=True)
        with Horizontal(classes="row"):
            yield Label("Measure on", classes="field-label")
            yield Select([(m, m) for m in catalog()["correction splits"]], value=default_of(CorrectConfig, "measure_on"),
                         allow_blank=False, id="co-measure-on", compact=True, tooltip=help_of(CorrectConfig, "measure_on"))
            yield Label("validation: data the score did not draw, to compare settings", classes="field-label short hint")
        yield Label("score with a contrastive set first (pane 2: builtin:toxicity or builtin:repetition, then pane 3)",
                    id="co-status")
        from textual_plotext import PlotextPlot  # see the metrics pane

        with Horizontal(id="co-body"):
            yield DataTable(id="co-table", cursor_type="none", zebra_stripes=True)
            yield PlotextPlot(id="co-plot")
        yield Static("", id="co-samples")

    def on_mount(self) -> None:
        self.query_one("#co-plot").plt.title("no sweep yet")

    def settings(self) -> CorrectConfig:
        try:
            bound = float(self.query_one("#co-bound", Input).value)
        except ValueError:
            bound = default_of(CorrectConfig, "bound")
        granularity = self.query_one("#co-granularity", Select).value
        return CorrectConfig(None if granularity is Select.NULL else str(granularity),
                             _floats(self.query_one("#co-steps", Input).value), bound=bound,
                             measure_on=str(self.query_one("#co-measure-on", Select).value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "co-run":
            event.stop()
            self.post_message(CorrectRequested(self.settings()))

    def set_status(self, text: str) -> None:
        self.query_one("#co-status", Label).update(Text(text))

    def add_step(self, st: dict, first: bool) -> None:
        """A sweep's row as soon as it is measured (the whole record replaces the table when the sweep ends)."""
        from core.evaluation.registry import BEHAVIOURS

        keys = [k for b in BEHAVIOURS.values() for k in b.measures if k in st["behaviour"]]
        table = self.query_one("#co-table", DataTable)
        if first:
            table.clear(columns=True)
            table.add_columns("amount", "sparsity", "ppl", "cost", *keys)
        table.add_row(f"{st['amount']:g}", f"{st['sparsity']:.3%}", f"{st['perplexity']:.2f}", f"{st['cost']:+.2%}",
                      *(f"{st['behaviour'].get(k, float('nan')):.3f}" for k in keys))

    def show_record(self, record: dict, restored: bool = False) -> None:
        from core.applications.correction import describe, measured_on
        from core.evaluation.registry import BEHAVIOURS

        b = record["behaviour"]
        keys = list(BEHAVIOURS[b].measures)
        table = self.query_one("#co-table", DataTable)
        table.clear(columns=True)
        table.add_columns("amount", "sparsity", "ppl", "cost", *keys)
        for st in record["steps"]:
            chosen = record["chosen"] is not None and st["amount"] == record["chosen"]
            style = "bold green" if chosen else ("red" if st["cost"] > record["bound"] else "")
            table.add_row(*(Text(v, style=style) for v in (
                f"{st['amount']:g}", f"{st['sparsity']:.3%}", f"{st['perplexity']:.2f}", f"{st['cost']:+.2%}",
                *(f"{st['behaviour'].get(k, float('nan')):.3f}" for k in keys))))
        plot = self.query_one("#co-plot")
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        xs = list(range(len(record["steps"])))
        for k in keys[:2]:
            plt.plot(xs, [st["behaviour"].get(k, 0.0) for st in record["steps"]], marker="dot", label=k)
        plt.xticks(xs, [f"{st['amount']:g}" for st in record["steps"]])
        plt.xlim(-0.5, len(xs) - 0.5)  # room for the last tick's label
        plt.title(f"{b} on {measured_on(record)[0]}")
        plot.refresh()
        if record["chosen"] is None:
            self.set_status(("restored from the session: " if restored else "")
                            + f"no step improved {b} within a {record['bound']:.0%} perplexity cost; the model stays dense")
            self.query_one("#co-samples", Static).update("")
            return
        chosen = next(st for st in record["steps"] if st["amount"] == record["chosen"])
        self.set_status(("restored from the session: " if restored else "")
                        + f"applied {describe(record['chosen'], record['granularity'])} ("
                        + ("" if not granularity_of(record["granularity"]).unit else f"{chosen['sparsity']:.3%} of the weights; ")
                        + f"perplexity {chosen['cost']:+.2%})" + ("" if restored else ": the session's plan now"))
        t = Text()
        for before, after in list(zip(record["steps"][0]["samples"], chosen["samples"]))[:2]:
            t.append("before ", style="dim")
            t.append(before.strip()[:150] + "\n")
            t.append("after  ", style="dim")
            t.append(after.strip()[:150] + "\n\n")
        self.query_one("#co-samples", Static).update(t)
