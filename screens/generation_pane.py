"""Generation pane: one prompt, dense and pruned continuations side by side, streamed."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Static

from core.settings import GenerationConfig, default_of
from screens.messages import GenerateRequested
from screens.share import share

PROMPT = default_of(GenerationConfig, "prompt")
NEW_TOKENS = default_of(GenerationConfig, "max_new_tokens")


class GenerationPane(Vertical):
    HELP = "dense and pruned continuations side by side, regenerated after each change."

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.texts = {"dense": "", "pruned": ""}

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("Prompt", classes="field-label")
            yield Input(PROMPT, id="gen-prompt", compact=True)
        with Horizontal(classes="row"):
            yield Label("New tokens", classes="field-label")
            yield Input(str(NEW_TOKENS), id="gen-tokens", type="integer", classes="num", compact=True)
            yield Button("Generate", id="gen-run", compact=True)
            yield Label("regenerates after every sparsity change", classes="hint")
        with Horizontal(id="gen-columns"):
            with Vertical(classes="gen-col"):
                yield Label("dense", id="gen-dense-title", classes="gen-title")
                with VerticalScroll():
                    yield Static("", id="gen-dense")
            with Vertical(classes="gen-col"):
                yield Label("pruned", id="gen-pruned-title", classes="gen-title")
                with VerticalScroll():
                    yield Static("", id="gen-pruned")

    def settings(self) -> dict:
        try:
            n = max(1, min(int(self.query_one("#gen-tokens", Input).value), 512))
        except ValueError:
            n = NEW_TOKENS
        return {"prompt": self.query_one("#gen-prompt", Input).value, "max_new_tokens": n}

    def restore(self, s: dict) -> None:
        if s.get("prompt") is not None:
            self.query_one("#gen-prompt", Input).value = s["prompt"]
        if s.get("max_new_tokens"):
            self.query_one("#gen-tokens", Input).value = str(s["max_new_tokens"])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "gen-run":
            event.stop()
            self.post_message(GenerateRequested())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("gen-prompt", "gen-tokens"):
            event.stop()
            self.post_message(GenerateRequested())

    def show_piece(self, which: str, text: str, reset: bool, done: bool) -> None:
        self.texts[which] = text if reset else self.texts[which] + text
        self.query_one(f"#gen-{which}", Static).update(Text(self.texts[which] + ("" if done else " ▌")))

    def set_titles(self, sparsity: float) -> None:
        self.query_one("#gen-pruned-title", Label).update(f"pruned · {share(sparsity)}", layout=False)  # width: 1fr
