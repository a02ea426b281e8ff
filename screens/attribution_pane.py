"""Attribution pane: scorer settings, a run with progress and cancel, per-block relevance at a glance."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, ProgressBar, Select, Sparkline, Static

from core.catalog import catalog
from core.presets import PRESETS
from core.settings import ScoreConfig, default_of
from screens.heat import heat_strip
from screens.messages import PresetChosen, ScoreRequested
from screens.score_options import OPTIONS, ScoreOptionsDialog, changed, option_defaults

SELECTS = {"scorer": "scorers", "target": "targets", "rules": "lrp rules"}  # setting -> catalog section


class AttributionPane(Vertical):
    HELP = ("a preset or a scorer ({scorers}); *Options…* for reduce, normalize, explain and the rest; progress "
            "and cancel; relevance per block.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.options = option_defaults()  # the rest of ScoreConfig, edited in ScoreOptionsDialog

    def compose(self) -> ComposeResult:
        choices = catalog()
        with Horizontal(classes="row"):
            yield Label("Preset", classes="field-label")
            yield Select([(name, name) for name in PRESETS], prompt="custom", allow_blank=True, id="at-preset",
                         compact=True)
            yield Label("", id="at-preset-help")
        with Horizontal(classes="row"):
            for i, (name, section) in enumerate(SELECTS.items()):
                yield Label(name.capitalize() if i == 0 else name, classes="field-label" if i == 0 else "field-label short")
                yield Select([(k, k) for k in choices[section]], value=default_of(ScoreConfig, name),
                             allow_blank=False, id=f"at-{name}", compact=True)
        with Horizontal(classes="row"):
            yield Button("Run attribution", id="at-run", variant="primary", compact=True)
            yield Button("Cancel", id="at-cancel", variant="error", compact=True, disabled=True)
            yield Button("Options…", id="at-options", compact=True)
            yield Label("", id="at-help")
        yield Label(f"options: {changed(self.options)}", id="at-options-line")
        with Horizontal(classes="row"):
            yield ProgressBar(total=1, id="at-progress", show_eta=False)
            yield Label("not scored yet", id="at-status")
        yield Label("Relevance per weight, by decoder block (first → last)", classes="section")
        yield Sparkline([], id="at-sparkline")
        yield Static("", id="at-heat")
        yield Static("", id="at-scores")

    def on_mount(self) -> None:
        self._describe()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "at-preset" and event.value != Select.BLANK:
            self.apply_preset(str(event.value))
        self._describe()

    def apply_preset(self, name: str) -> None:
        """What `score --preset NAME` sets: the scorer here, the sets in the Prompts pane (through the app), and
        every option back to its default (the set-dependent ones follow the new sets)."""
        p = PRESETS[name]
        cfg = {**{k: default_of(ScoreConfig, k) for k in ("reference", "contrastive", "scorer")}, **p.score}
        self.query_one("#at-scorer", Select).value = cfg["scorer"]
        for k in ("target", "rules"):
            self.query_one(f"#at-{k}", Select).value = default_of(ScoreConfig, k)
        self.set_options(option_defaults())
        self.query_one("#at-preset-help", Label).update(p.summary)
        self.post_message(PresetChosen(name, cfg["reference"], cfg["contrastive"]))

    def _describe(self) -> None:
        scorer = str(self.query_one("#at-scorer", Select).value)
        self.query_one("#at-help", Label).update(catalog()["scorers"].get(scorer, ""))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "at-run":
            event.stop()
            self.post_message(ScoreRequested())
        elif event.button.id == "at-cancel":
            event.stop()
            self.app.action_cancel()
        elif event.button.id == "at-options":
            event.stop()
            self.edit_options()

    def edit_options(self) -> None:
        def done(result: dict | None) -> None:
            if result is not None:
                self.set_options(result)

        self.app.push_screen(ScoreOptionsDialog(self.options), done)

    def set_options(self, options: dict) -> None:
        self.options = {**self.options, **{k: v for k, v in options.items() if k in OPTIONS}}
        self.query_one("#at-options-line", Label).update(f"options: {changed(self.options)}")

    def settings(self) -> dict:
        """The ScoreConfig fields this pane sets (its options included)."""
        return {k: str(self.query_one(f"#at-{k}", Select).value) for k in SELECTS} | self.options

    def restore(self, cfg: dict) -> None:
        for k in SELECTS:
            if cfg.get(k):
                self.query_one(f"#at-{k}", Select).value = cfg[k]
        self.set_options({k: cfg[k] for k in OPTIONS if k in cfg})

    def set_running(self, running: bool) -> None:
        self.query_one("#at-run", Button).disabled = running
        self.query_one("#at-cancel", Button).disabled = not running

    def show_progress(self, which: str, done: int, total: int, tok_s: float, eta: float) -> None:
        bar = self.query_one("#at-progress", ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        self.query_one("#at-status", Label).update(
            f"{which}: {done}/{total} samples · {tok_s:,.0f} tokens/s · {eta:.0f} s left")

    def show_status(self, text: str) -> None:
        self.query_one("#at-status", Label).update(text)

    def show_relevance(self, relevance: dict, summary_line: str) -> None:
        blocks = sorted(relevance, key=int)
        values = [relevance[b]["all"] for b in blocks]
        self.query_one("#at-sparkline", Sparkline).data = values
        heat = Text()
        for kind, label in (("all", "block"), ("attn", "attn "), ("mlp", "mlp  ")):
            heat.append(f"{label} ")
            heat.append_text(heat_strip([relevance[b].get(kind, 0.0) for b in blocks]))
            heat.append("\n")
        heat.append(f"      0{' ' * max(len(blocks) - 1 - len(str(len(blocks) - 1)), 0)}{len(blocks) - 1}", style="dim")
        self.query_one("#at-heat", Static).update(heat)
        self.query_one("#at-scores", Static).update(summary_line)
