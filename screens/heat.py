"""Relevance as glyphs: one cell per value, height and colour by its share of the largest value."""

from __future__ import annotations

from rich.text import Text

HEAT = " ▁▂▃▄▅▆▇█"
MAP_CELLS = 64  # a circuit map draws a block of at most this many units one cell per unit, more as a count
HEAT_COLOURS = ["#303030", "#5f0087", "#8700af", "#af00af", "#d7005f", "#ff5f00", "#ff8700", "#ffaf00", "#ffd700"]


def heat_level(value: float, top: float) -> int:
    """0 (nothing) .. 8 (the largest value)."""
    return min(int(value / (top or 1.0) * (len(HEAT) - 1) + 0.5), len(HEAT) - 1)


def heat_cell(value: float, top: float) -> Text:
    i = heat_level(value, top)
    return Text(HEAT[i] if i else "·", style=HEAT_COLOURS[i])


def heat_strip(values: list[float]) -> Text:
    top = max(values, default=0.0) or 1.0
    t = Text(no_wrap=True)
    for v in values:
        t.append_text(heat_cell(v, top))
    return t
