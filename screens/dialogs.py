"""Modal screens: help, and the export confirmation."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Markdown

from screens.model_pane import human_bytes

#: keys that belong to widgets rather than to the app's bindings
WIDGET_KEYS = [
    ("1 … 9", "go to a pane (when no text box has focus; escape leaves one)"),
    ("← →", "move the focused slider by 1 % (shift or page keys: 10 %, home/end)"),
    ("ctrl+p", "command palette: every action, themes"),
]


def help_markdown(bindings: list[Binding], panes: list[tuple[str, str, type]], scorers: list[str]) -> str:
    """The help dialog's text, made from what it describes: the app's bindings (each with its tooltip) and the
    panes in their order (each pane's HELP), so it cannot drift from them."""
    rows = list(WIDGET_KEYS)
    for b in bindings:
        keys = " or ".join(k.replace("question_mark", "?") for k in b.key.split(","))
        rows.append((keys, b.tooltip or b.description))
    lines = ["# LRP Workbench", "", "Prune a causal language model by relevance and watch what it does to the model.", "",
             "| key | action |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + ["", "**Panes**", ""]
    for n, (_, title, cls) in enumerate(panes, 1):
        lines.append(f"{n}. **{title}**: {getattr(cls, 'HELP', '').format(scorers=', '.join(scorers))}")
    lines += ["", "Every action is also a `workbench` subcommand (`workbench --help`)."]
    return "\n".join(lines) + "\n"


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(self.text)
            yield Button("Close", id="help-close", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()


class ExportDialog(ModalScreen[tuple[str, bool] | None]):
    """Asks for the folder and shows what will be written; returns (path, overwrite) or None."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, path: str, sparsity: float, size: dict) -> None:
        super().__init__()
        self.path, self.sparsity, self.sizes = path, sparsity, size

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label("Export the pruned checkpoint", classes="section")
            yield Input(self.path, id="export-path", compact=True)
            yield Label(
                f"sparsity {self.sparsity:.2%} · {human_bytes(self.sizes['dense_bytes'])} of safetensors "
                f"(pruned weights are stored as zeros) · a sparse format would take "
                f"~{human_bytes(self.sizes['sparse_bytes_estimate'])}", id="export-size")
            yield Checkbox("replace the folder if it exists", id="export-overwrite", compact=True)
            yield Label("", id="export-warning")
            with Horizontal(classes="row"):
                yield Button("Export", id="export-ok", variant="primary", compact=True)
                yield Button("Cancel", id="export-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()  # type a path and press enter
        self._check()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._check()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.query_one("#export-ok", Button).disabled:
            self._export()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._check()

    def _check(self) -> None:
        typed = self.query_one("#export-path", Input).value.strip()
        path = Path(typed).expanduser().absolute()  # a relative path lands under the folder the workbench started in
        exists = bool(typed) and path.exists()
        overwrite = self.query_one("#export-overwrite", Checkbox).value
        self.query_one("#export-warning", Label).update(
            "give a folder to write" if not typed
            else f"{path} exists and will be replaced" if exists and overwrite
            else f"{path} exists: tick the box above to replace it, or change the path" if exists
            else f"writes the new folder {path}")
        self.query_one("#export-ok", Button).disabled = exists and not overwrite or not typed

    def _export(self) -> None:
        self.dismiss((self.query_one("#export-path", Input).value.strip(),
                      self.query_one("#export-overwrite", Checkbox).value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-ok":
            self._export()
        else:
            self.dismiss(None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
