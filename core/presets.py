"""Presets: what a user picks instead of research settings (`score --preset`, pane 3's Preset).

A preset names a job and the ScoreConfig fields it sets; core/recipes.py expands it into a complete,
checked configuration. Plain data: the catalog, `--help` and the TUI's first paint read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import WorkbenchError


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    """One line for `workbench catalog`, `score --help` and the TUI."""
    score: dict[str, Any] = field(default_factory=dict)
    """The ScoreConfig fields it sets; the rest keep their defaults."""
    next_step: str = ""
    """The command that usually follows (`SESSION` stands for the session's name)."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("compress", "remove weights while general English keeps working (LRP on builtin:fortunes)",
               {"reference": "builtin:fortunes", "contrastive": None, "scorer": "lrp"},
               "workbench prune --session SESSION --sparsity 0.5 --reconstruct"),
        Preset("detox", "remove offensive continuations, keep general text (contrast with builtin:toxicity)",
               {"reference": "builtin:fortunes", "contrastive": "builtin:toxicity", "scorer": "lrp"},
               "workbench correct --session SESSION"),
        Preset("derepeat", "remove looping repetition, keep general text (contrast with builtin:repetition)",
               {"reference": "builtin:fortunes", "contrastive": "builtin:repetition", "scorer": "lrp"},
               "workbench correct --session SESSION"),
        Preset("circuit", "find what indirect-object identification needs (LRP on builtin:ioi)",
               {"reference": "builtin:ioi", "contrastive": None, "scorer": "lrp"},
               "workbench circuit --session SESSION --granularity head"),
    )
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise WorkbenchError(f"unknown --preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
