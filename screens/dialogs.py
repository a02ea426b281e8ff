"""Modal screens: help, and the export confirmation."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Markdown

from screens.model_pane import human_bytes

HELP = """\
# LRP Workbench

Prune a causal language model by relevance and watch what it does to the model.

| key | action |
|---|---|
| 1 … 9 | go to a pane (when no text box has focus) |
| ctrl+l | load the model in pane 1 |
| ctrl+r | run attribution (pane 3) |
| ← → | move the focused slider by 1 % (shift or page keys: 10 %, home/end) |
| ctrl+z / ctrl+y | undo / redo a sparsity change |
| ctrl+u | uniform allocation: every layer at the global level |
| ctrl+g / ctrl+t | regenerate / evaluate metrics now |
| escape | cancel the running attribution, generation or evaluation |
| ctrl+s | save the session (it also autosaves after every change) |
| ctrl+e | export the pruned checkpoint |
| ctrl+p | command palette: every action, themes |
| f1 or ? | this help |
| ctrl+q | quit (the session is already saved) |

**Panes**

1. **Model**: the default (SmolLM2-135M, ships offline), a Hugging Face id, a folder or a `.gguf`; device and dtype.
2. **Prompts**: the reference set (behaviour to keep) and an optional contrastive set (behaviour to remove), samples, sequence length, evaluation data; *Preview* shows samples.
3. **Attribution**: scorer (LRP, gradient, Wanda, magnitude, random); *Options…* for reduce, normalize, explain and the rest; progress and cancel; relevance per block.
4. **Sparsity**: one slider for all layers, one per decoder block and one per attention/MLP part; granularity; allocation (auto, uniform, by relevance, OWL: the blocks follow the global slider); achieved sparsity and honest size.
5. **Generate**: dense and pruned continuations side by side, regenerated after each change.
6. **Metrics**: dense vs pruned (perplexity, uniqueness, toxicity, IOI) and each metric against sparsity over the session.
7. **Save**: session folder and autosave; export a checkpoint that plain `transformers` loads.
9. **Correct**: after a contrastive score (builtin:toxicity, builtin:repetition), sweep how many neurons, heads or weights go (default: single weights ranked across the model); the strongest correction within the perplexity bound is applied.
8. **Circuit**: on a task set (builtin:ioi, builtin:agreement), the fewest weights, MLP neurons or heads that keep the task; compare scorers; which heads carry it.

Every action is also a `workbench` subcommand (`workbench --help`).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP)
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
        self._check()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._check()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._check()

    def _check(self) -> None:
        path = Path(self.query_one("#export-path", Input).value.strip()).expanduser()
        exists = path.exists()
        overwrite = self.query_one("#export-overwrite", Checkbox).value
        self.query_one("#export-warning", Label).update(
            f"{path} exists and will be replaced" if exists and overwrite
            else f"{path} exists: tick the box to replace it, or change the path" if exists else f"new folder {path}")
        self.query_one("#export-ok", Button).disabled = exists and not overwrite or not str(path).strip()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-ok":
            self.dismiss((self.query_one("#export-path", Input).value.strip(),
                          self.query_one("#export-overwrite", Checkbox).value))
        else:
            self.dismiss(None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
