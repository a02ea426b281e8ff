"""Model pane: what to load (default, hub id, folder, .gguf), where and in which dtype; then what it is."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from rich.table import Table
from rich.text import Text
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Select, Static

from screens.messages import LoadRequested

DEVICES = [("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("mps", "mps")]
DTYPES = [("auto", "auto"), ("float32", "float32"), ("bfloat16", "bfloat16")]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class ModelPane(Vertical):
    HELP = "the default (SmolLM2-135M, ships offline), a Hugging Face id, a folder or a `.gguf`; device and dtype."

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("Model", classes="field-label")
            yield Input("default", placeholder="default | hub id | folder | file.gguf", id="model-source", compact=True)
        with Horizontal(classes="row"):
            yield Label("Device", classes="field-label")
            yield Select(DEVICES, value="auto", allow_blank=False, id="model-device", compact=True)
            yield Label("dtype", classes="field-label short")
            yield Select(DTYPES, value="auto", allow_blank=False, id="model-dtype", compact=True)
            yield Checkbox("remote code", id="model-trust", compact=True)
            yield Button("Load", id="model-load", variant="primary", compact=True)
        with Horizontal(classes="row status-row"):
            yield LoadingIndicator(id="model-busy")
            yield Label("no model loaded yet", id="model-status")
        yield Static("", id="model-info")

    def on_mount(self) -> None:
        self.query_one("#model-busy").display = False

    def request(self) -> LoadRequested:
        return LoadRequested(
            self.query_one("#model-source", Input).value.strip() or "default",
            str(self.query_one("#model-device", Select).value),
            str(self.query_one("#model-dtype", Select).value),
            self.query_one("#model-trust", Checkbox).value,
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "model-load":
            event.stop()
            self.post_message(self.request())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "model-source":
            event.stop()
            self.post_message(self.request())

    def set_busy(self, busy: bool, text: str) -> None:
        self.query_one("#model-busy").display = busy
        self.query_one("#model-status", Label).update(Text(text))

    def show_spec(self, spec: dict) -> None:
        self.query_one("#model-source", Input).value = spec.get("source", "default")
        for key in ("device", "dtype"):
            sel = self.query_one(f"#model-{key}", Select)
            if spec.get(key) in dict(DEVICES if key == "device" else DTYPES):
                sel.value = spec[key]
        self.query_one("#model-trust", Checkbox).value = bool(spec.get("trust_remote_code"))

    def show_info(self, info: dict, index: list[dict]) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim", no_wrap=True)
        table.add_column()
        blocks = len({r["block"] for r in index})
        prunable = sum(r["numel"] for r in index)
        rows = [
            ("architecture", f"{info.get('architecture')} ({info.get('model_type')})"),
            ("parameters", f"{info.get('parameters', 0):,}"),
            ("prunable", f"{prunable:,} weights in {len(index)} linear layers, {blocks} decoder blocks"),
            ("device / dtype", f"{info.get('device')} / {info.get('dtype')}"),
            ("memory", human_bytes(info.get("memory_bytes", 0)) + " of parameters"),
            ("source", str(info.get("source", ""))),
        ]
        if info.get("placement"):  # --device-map: parameters per place
            rows.insert(4, ("placement", ", ".join(f"{where} {n / 1e6:,.1f} M" for where, n in info["placement"].items())))
        for k, v in rows:
            table.add_row(k, v)
        self.query_one("#model-info", Static).update(table)
