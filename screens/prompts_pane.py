"""Prompt sets pane: reference (keep) and contrastive (remove) sets, sizes, evaluation data, preview."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Log, Select

from core.catalog import catalog
from core.settings import LiveEvalConfig, ScoreConfig, default_of, help_of
from screens.messages import PreviewRequested

BUILTINS = list(catalog()["prompt sets"])
SAMPLES = default_of(ScoreConfig, "samples")
SEQ_LEN = default_of(ScoreConfig, "seq_len")
EVAL_SAMPLES = default_of(LiveEvalConfig, "samples")


def _int(text: str, default: int) -> int:
    try:
        return max(int(text), 1)
    except ValueError:
        return default


class PromptsPane(Vertical):
    HELP = ("the reference set (behaviour to keep) and an optional contrastive set (behaviour to remove), "
            "samples, sequence length, evaluation data; *Preview* shows samples.")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("Reference", classes="field-label")
            yield Input(default_of(ScoreConfig, "reference"), placeholder="builtin:NAME | file.txt/.jsonl | hf:NAME,...",
                        id="ps-reference", compact=True, tooltip=help_of(ScoreConfig, "reference"))
            yield Select([(b, b) for b in BUILTINS], prompt="built-ins", id="ps-builtin-ref", compact=True)
        with Horizontal(classes="row"):
            yield Label("Contrastive", classes="field-label")
            yield Input("", placeholder="(none) behaviour to remove, e.g. builtin:repetition", id="ps-contrastive",
                        compact=True, tooltip=help_of(ScoreConfig, "contrastive"))
            yield Select([(b, b) for b in BUILTINS], prompt="built-ins", id="ps-builtin-con", compact=True)
        with Horizontal(classes="row"):
            yield Label("Samples", classes="field-label")
            yield Input(str(SAMPLES), id="ps-samples", type="integer", classes="num", compact=True,
                        tooltip=help_of(ScoreConfig, "samples"))
            yield Label("seq len", classes="field-label short")
            yield Input(str(SEQ_LEN), id="ps-seq-len", type="integer", classes="num", compact=True,
                        tooltip=help_of(ScoreConfig, "seq_len"))
            yield Label("eval windows", classes="field-label")
            yield Input(str(EVAL_SAMPLES), id="ps-eval-samples", type="integer", classes="num", compact=True,
                        tooltip=help_of(LiveEvalConfig, "samples"))
        with Horizontal(classes="row"):
            yield Label("Eval data", classes="field-label")
            yield Input("", placeholder="(the reference set's held-out split)", id="ps-eval", compact=True)
            yield Button("Preview", id="ps-preview", compact=True)
        yield Log(id="ps-log", auto_scroll=False)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.is_blank():  # the reset below: Textual 8's blank is Select.NULL (Select.BLANK is a stale False)
            return
        target = "#ps-reference" if event.select.id == "ps-builtin-ref" else "#ps-contrastive"
        self.query_one(target, Input).value = str(event.value)
        event.select.clear()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ps-preview":
            event.stop()
            self.query_one("#ps-log", Log).clear()  # a preview replaces the last one
            specs = [self.query_one(f, Input).value.strip() for f in ("#ps-reference", "#ps-contrastive", "#ps-eval")]
            for spec in dict.fromkeys(s for s in specs if s):  # each set once, even when named twice
                self.post_message(PreviewRequested(spec))

    def settings(self) -> dict:
        q = lambda f: self.query_one(f, Input).value.strip()  # noqa: E731
        return {
            "reference": q("#ps-reference") or default_of(ScoreConfig, "reference"),
            "contrastive": q("#ps-contrastive") or None,
            "samples": _int(q("#ps-samples"), SAMPLES),
            "seq_len": max(_int(q("#ps-seq-len"), SEQ_LEN), 2),
            "eval_data": q("#ps-eval") or None,
            "eval_samples": _int(q("#ps-eval-samples"), EVAL_SAMPLES),
        }

    def restore(self, s: dict) -> None:
        pairs = {"#ps-reference": s.get("reference"), "#ps-contrastive": s.get("contrastive"),
                 "#ps-samples": s.get("samples"), "#ps-seq-len": s.get("seq_len"),
                 "#ps-eval": s.get("eval_data"), "#ps-eval-samples": s.get("eval_samples")}
        for field, value in pairs.items():
            if value is not None:
                self.query_one(field, Input).value = str(value)

    def set_sets(self, reference: str, contrastive: str | None) -> None:
        """The reference and contrastive sets as a preset names them (no contrastive set: the field is emptied)."""
        self.query_one("#ps-reference", Input).value = reference
        self.query_one("#ps-contrastive", Input).value = contrastive or ""

    def show_preview(self, spec: str, summary: dict, score: list[str], ev: list[str]) -> None:
        log = self.query_one("#ps-log", Log)
        log.write_line(f"── {spec}: {summary['kind']}, {summary['score_samples']} scoring / {summary['eval_samples']} held-out samples")
        for label, items in (("score", score), ("eval", ev)):
            for t in items:
                log.write_line(f"  [{label}] {t[:160]}")
