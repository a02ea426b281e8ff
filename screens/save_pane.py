"""Save pane: where the session lives, autosave state, export of the pruned checkpoint."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from core.results import Export
from screens.messages import ExportRequested, SaveRequested


class SavePane(Vertical):
    HELP = "session folder and autosave; export a checkpoint that plain `transformers` loads."

    def compose(self) -> ComposeResult:
        yield Static("", id="sv-session")
        with Horizontal(classes="row"):
            yield Label("Export to", classes="field-label")
            yield Input("", id="sv-out", placeholder="exports/SESSION", compact=True)
        with Horizontal(classes="row"):
            yield Button("Save session", id="sv-save", compact=True)
            yield Button("Export pruned model…", id="sv-export", variant="primary", compact=True)
        yield Static("", id="sv-last")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "sv-save":
            event.stop()
            self.post_message(SaveRequested())
        elif event.button.id == "sv-export":
            event.stop()
            self.post_message(ExportRequested())

    def export_path(self) -> str:
        return self.query_one("#sv-out", Input).value.strip()

    def show_session(self, name: str, path: str, saved: str) -> None:
        self.query_one("#sv-session", Static).update(Text(
            f"session {name!r} in {path}\nautosaved {saved}: plan, masks, scores, metrics history and these "
            f"settings. Resume with: workbench --session {name}"))
        out = self.query_one("#sv-out", Input)
        if not out.value:
            out.value = f"exports/{name}"

    def show_export(self, info: Export) -> None:
        self.query_one("#sv-last", Static).update(Text(
            f"exported {info.out} at {info.sparsity:.2%} sparsity: {info.safetensors_file_bytes / 2**20:.0f} MiB "
            f"on disk (sparse format ~{info.sparse_bytes_estimate / 2**20:.0f} MiB). "
            f"Load it with AutoModelForCausalLM.from_pretrained({info.out!r})."))
