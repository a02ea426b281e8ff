"""The scoring options the attribution pane does not show: how relevance is combined and scaled, which
tokens are explained, how prompts are continued. The same fields as `workbench score`'s options,
with the same defaults and help texts (core/settings.py)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import DescendantFocus
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from core.catalog import catalog
from core.settings import ScoreConfig, choices_of, default_of, help_of, in_panel, out_of_range, value_type

#: field -> catalog section (a choice) or the type of a typed value: ScoreConfig's "Advanced" settings, as declared
OPTIONS: dict[str, str | type] = {name: choices_of(ScoreConfig, name) or value_type(ScoreConfig, name)[0]
                                  for name in in_panel(ScoreConfig, "Advanced")}


def option_defaults() -> dict:
    return {name: default_of(ScoreConfig, name) for name in OPTIONS}


def changed(options: dict) -> str:
    """The options that differ from their defaults, as `name=value` (what the pane shows)."""
    defaults = option_defaults()
    return ", ".join(f"{k}={v}" for k, v in options.items() if k in defaults and v != defaults[k]) or "defaults"


def parsed(name: str, text: str) -> int | float:
    """A typed option from its text; ValueError with a one-line reason."""
    kind = OPTIONS[name]
    try:
        value = kind(text.strip())
    except ValueError:
        raise ValueError(f"{name}: {text.strip()!r} is not {'a whole number' if kind is int else 'a number'}") from None
    why = out_of_range(ScoreConfig, name, value)
    if why:
        raise ValueError(f"{name} {why}")
    return value


class ScoreOptionsDialog(ModalScreen[dict | None]):
    """Edits the options; returns all of them (None: a default that depends on the sets) or None when cancelled."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, options: dict) -> None:
        super().__init__()
        self.options = {**option_defaults(), **{k: v for k, v in options.items() if k in OPTIONS}}

    def compose(self) -> ComposeResult:
        choices = catalog()
        with Vertical(id="so-box"):
            yield Label("Scoring options (the rest are in panes 2 and 3)", classes="section")
            for name, kind in OPTIONS.items():
                with Horizontal(classes="row tight"):
                    yield Label(name.replace("_", "-"), classes="field-label")
                    value = self.options[name]
                    if isinstance(kind, str):
                        blank = default_of(ScoreConfig, name) is None  # its default depends on the prompt sets
                        yield Select([(k, k) for k in choices[kind]], value=Select.NULL if value is None else value,
                                     allow_blank=blank, prompt="default", id=f"so-{name}", compact=True)
                    else:
                        yield Input(str(value), id=f"so-{name}", compact=True)
            yield Label(help_of(ScoreConfig, "reduce"), id="so-help")
            yield Label("", id="so-error")
            with Horizontal(classes="row"):
                yield Button("OK", id="so-ok", variant="primary", compact=True)
                yield Button("Defaults", id="so-defaults", compact=True)
                yield Button("Cancel", id="so-cancel", compact=True)

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        name = (event.widget.id or "").removeprefix("so-")
        if name in OPTIONS:
            self.query_one("#so-help", Label).update(help_of(ScoreConfig, name))

    def values(self) -> dict:
        """Every option from the widgets; ValueError naming the first bad one."""
        out = {}
        for name, kind in OPTIONS.items():
            if isinstance(kind, str):
                v = self.query_one(f"#so-{name}", Select).value
                out[name] = None if v is Select.NULL else str(v)
            else:
                out[name] = parsed(name, self.query_one(f"#so-{name}", Input).value)
        return out

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "so-ok":
            try:
                self.dismiss(self.values())
            except ValueError as exc:
                self.query_one("#so-error", Label).update(str(exc))
        elif event.button.id == "so-defaults":
            for name, value in option_defaults().items():
                if isinstance(OPTIONS[name], str):
                    self.query_one(f"#so-{name}", Select).value = Select.NULL if value is None else value
                else:
                    self.query_one(f"#so-{name}", Input).value = str(value)
        else:
            self.dismiss(None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
