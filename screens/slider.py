"""A one-line slider for a sparsity in [0, maximum]: keyboard (arrows, page keys) and mouse (click, drag)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class Slider(Widget, can_focus=True):
    DEFAULT_CSS = """
    Slider { height: 1; width: 1fr; min-width: 12; }
    Slider:focus { background: $boost; }
    """
    BINDINGS = [
        Binding("left", "step(-1)", "-1%", show=False),
        Binding("right", "step(1)", "+1%", show=False),
        Binding("shift+left,pagedown", "step(-10)", "-10%", show=False),
        Binding("shift+right,pageup", "step(10)", "+10%", show=False),
        Binding("home", "jump(0)", "0%", show=False),
        Binding("end", "jump(1)", "max", show=False),
    ]
    READOUT = 5  # " 50%" plus a space

    value: reactive[float] = reactive(0.0)
    inherited: reactive[bool] = reactive(False)  # drawn dim: follows a parent level

    @dataclass
    class Changed(Message):
        slider: "Slider"
        value: float

        @property
        def control(self) -> "Slider":
            return self.slider

    def __init__(self, value: float = 0.0, maximum: float = 0.99, step: float = 0.01, *, id: str | None = None,
                 classes: str | None = None, tooltip: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.maximum, self.step = maximum, step
        self.set_reactive(Slider.value, self._clamp(value))
        if tooltip:
            self.tooltip = tooltip
        self._dragging = False

    def _clamp(self, v: float) -> float:
        steps = round(min(max(v, 0.0), self.maximum) / self.step)
        return round(steps * self.step, 6)

    def set_value(self, v: float, notify: bool = False) -> None:
        """Programmatic update; posts Changed only when `notify`."""
        v = self._clamp(v)
        if v == self.value:
            return
        if notify:
            self.value = v
            self.post_message(self.Changed(self, v))
        else:
            with self.prevent(Slider.Changed):
                self.value = v

    def action_step(self, n: int) -> None:
        self.set_value(self.value + n * self.step, notify=True)

    def action_jump(self, where: int) -> None:
        self.set_value(self.maximum if where else 0.0, notify=True)

    @property
    def bar_width(self) -> int:
        return max(self.size.width - self.READOUT, 2)

    def render(self) -> Text:
        w = self.bar_width
        knob = round(self.value / self.maximum * (w - 1)) if self.maximum else 0
        on = "dim" if self.inherited else "bold #ffaf00"  # xterm-256 colour 214: exact without truecolor
        t = Text(no_wrap=True, overflow="crop")
        t.append("━" * knob, style=on)
        t.append("●", style=on)
        t.append("─" * (w - 1 - knob), style="#6c6c6c")
        t.append(f"{self.value:>4.0%}".rjust(self.READOUT), style="dim" if self.inherited else "")
        return t

    def _value_at(self, x: int) -> float:
        return x / max(self.bar_width - 1, 1) * self.maximum

    def on_mouse_down(self, event: events.MouseDown) -> None:
        self.focus()
        self._dragging = True
        self.capture_mouse()
        self.set_value(self._value_at(event.x), notify=True)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._dragging:
            self.set_value(self._value_at(event.x), notify=True)

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._dragging:
            self._dragging = False
            self.release_mouse()
