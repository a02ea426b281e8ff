"""The main screen: nine panes in tabs, a status line, the footer with key bindings.

Only the first pane is composed before the first paint; the others (about 200 widgets,
most of the start-up's style work) are mounted right after it, so the window appears
quickly. The app is told `panes_ready` once all of them exist, and only then opens the
session, whose restore writes into every pane.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from screens.attribution_pane import AttributionPane
from screens.circuit_pane import CircuitPane
from screens.correct_pane import CorrectPane
from screens.generation_pane import GenerationPane
from screens.metrics_pane import MetricsPane
from screens.model_pane import ModelPane
from screens.prompts_pane import PromptsPane
from screens.save_pane import SavePane
from screens.sparsity_pane import SparsityPane

PANES = [
    ("model", "Model", ModelPane),
    ("prompts", "Prompts", PromptsPane),
    ("attribution", "Attribution", AttributionPane),
    ("sparsity", "Sparsity", SparsityPane),
    ("generate", "Generate", GenerationPane),
    ("metrics", "Metrics", MetricsPane),
    ("save", "Save", SavePane),
    ("circuit", "Circuit", CircuitPane),
    ("correct", "Correct", CorrectPane),
]


class MainScreen(Screen):
    CSS_PATH = "main.tcss"
    BINDINGS = [Binding(str(i + 1), f"pane('{pid}')", title, show=False) for i, (pid, title, _) in enumerate(PANES)]

    def compose(self) -> ComposeResult:
        yield Header(icon="✂")
        with TabbedContent(initial="model", id="tabs"):
            for i, (pid, title, cls) in enumerate(PANES):
                with TabPane(f"{i + 1} {title}", id=pid):
                    if i == 0:
                        yield cls(id=f"{pid}-pane")
        yield Static("starting…", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self._first_painted)

    async def _first_painted(self) -> None:
        painted = getattr(self.app, "screen_painted", None)
        if painted is not None:
            painted()
        for pid, _, cls in PANES[1:]:
            await self.query_one(f"#{pid}", TabPane).mount(cls(id=f"{pid}-pane"))
        ready = getattr(self.app, "panes_ready", None)
        if ready is not None:
            ready()

    def action_pane(self, pane: str) -> None:
        self.query_one("#tabs", TabbedContent).active = pane
        self.focus_pane_control()

    def focus_pane_control(self) -> None:
        """Focus the open pane's first control that is not a text box, so digit keys keep switching panes."""
        pane_widget = self.query_one(f"#{self.active_pane}-pane")
        for w in pane_widget.query("*"):
            if w.focusable and not isinstance(w, Input):
                w.focus()
                return
        self.set_focus(None)

    @property
    def active_pane(self) -> str:
        return self.query_one("#tabs", TabbedContent).active

    def set_status(self, parts: dict[str, str]) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        for i, (key, value) in enumerate(parts.items()):
            if i:
                t.append(" │ ", style="dim")
            t.append(f"{key} ", style="dim")
            t.append(value)
        for bar in self.query("#status").results(Static):  # none while the app is closing: a late message waits on nothing
            bar.update(t, layout=False)  # one line, full width: never resizes
