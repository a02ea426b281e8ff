"""Metrics pane: dense vs pruned with deltas, and each metric against sparsity over the session."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Label, Select

from core.catalog import catalog
from core.evaluation.registry import improved
from core.results import Evaluation
from screens.messages import EvaluateRequested
from screens.share import share


def plotted(history: list[dict], metric: str, eval_data: str | None) -> tuple[list[tuple[float, float]], float | None]:
    """(sparsity, pruned value) of every evaluation of `metric` on `eval_data`, and that set's dense value (its
    latest): evaluation sets are never mixed on one axis."""
    runs = [h for h in history if metric in h.get("metrics", {}) and (eval_data is None or h.get("eval_data") == eval_data)]
    if not runs:
        return [], None
    return sorted((h["sparsity"], h["metrics"][metric]["pruned"]) for h in runs), runs[-1]["metrics"][metric]["dense"]


def delta_text(name: str, delta: float) -> Text:
    good = improved(name, delta)
    style = "green" if good and abs(delta) > 1e-9 else "red" if abs(delta) > 1e-9 else "dim"
    return Text(f"{delta:+.4f}", style=style)


class MetricsPane(Vertical):
    HELP = ("dense vs pruned (perplexity, uniqueness, toxicity, task accuracy) and each metric against sparsity, "
            "one evaluation set at a time.")

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.history: list[dict] = []
        self.eval_data: str | None = None  # the set whose evaluations the plot shows

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Button("Evaluate now", id="mx-run", compact=True)
            yield Label("recomputed after every sparsity change", id="mx-status")
        yield DataTable(id="mx-table", cursor_type="none", zebra_stripes=True)
        with Horizontal(classes="row"):
            yield Label("Plot", classes="field-label short")
            yield Select([(m, m) for m in catalog()["metrics"]], value="perplexity", allow_blank=False, id="mx-metric", compact=True)
        from textual_plotext import PlotextPlot  # plotext costs ~0.15 s; this pane mounts after the first paint

        yield PlotextPlot(id="mx-plot")

    def on_mount(self) -> None:
        self.query_one("#mx-table", DataTable).add_columns("metric", "dense", "pruned", "delta")
        self.query_one("#mx-plot").plt.title("no evaluations yet")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "mx-run":
            event.stop()
            self.post_message(EvaluateRequested())

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "mx-metric":
            event.stop()
            self.replot()

    def set_status(self, text: str) -> None:
        self.query_one("#mx-status", Label).update(Text(text))

    def show_result(self, result: Evaluation, history: list[dict]) -> None:
        table = self.query_one("#mx-table", DataTable)
        table.clear()
        for name, m in result.metrics.items():
            table.add_row(name, f"{m.dense:.4f}", f"{m.pruned:.4f}", delta_text(name, m.delta))
        if result.restored and not result.eval_samples:  # a session saved before the sizes were kept
            self.set_status(f"sparsity {share(result.sparsity)} · restored from the session: the last evaluation, "
                            f"on {result.eval_data}")
        else:
            self.set_status(f"sparsity {share(result.sparsity)} · {result.eval_samples} windows of "
                            f"{result.eval_data} · {result.generation_prompts} generation prompts"
                            + (" · restored from the session" if result.restored else ""))
        self.history = history
        self.eval_data = result.eval_data or None
        self.replot()

    def replot(self) -> None:
        metric = str(self.query_one("#mx-metric", Select).value)
        points, dense = plotted(self.history, metric, self.eval_data)
        widget = self.query_one("#mx-plot")
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        if points:
            plt.scatter([p[0] * 100 for p in points], [p[1] for p in points], marker="dot", label="pruned")
            plt.hline(dense)
            plt.title(f"{metric} on {self.eval_data or 'the evaluation set'} vs sparsity (%); line = dense {dense:.3f}")
            plt.xlabel("sparsity %")
        else:
            plt.title(f"no {metric} measured yet")
        widget.refresh()
