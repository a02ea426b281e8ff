"""The engine's messages name CLI commands and flags; inside the TUI they name the pane and field instead."""

from __future__ import annotations

import re

#: `workbench COMMAND ...` -> where the TUI does it
COMMANDS = {"score": "attribution (pane 3, ctrl+r)", "prune": "the Sparsity pane (4)", "eval": "the Metrics pane (6)",
            "generate": "the Generate pane (5)", "export": "export (ctrl+e)", "circuit": "the Circuit pane (8)",
            "correct": "the Correct pane (9)", "run": "attribution (pane 3) and the Sparsity pane (4)"}
#: --flag -> its field
FLAGS = {"reference": "the reference field (pane 2)", "contrastive": "the contrastive field (pane 2)",
         "samples": "samples (pane 2)", "seq-len": "sequence length (pane 2)", "eval-data": "evaluation data (pane 2)",
         "scorer": "the scorer (pane 3)", "rules": "LRP rules (pane 3)", "target": "the target (pane 3)",
         "granularity": "granularity", "count": "count (pane 4)", "sparsity": "the sliders (pane 4)",
         "model": "the model field (pane 1)", "steps": "steps (pane 9)", "compare": "compare (pane 8)"}


def in_tui_words(text: str) -> str:
    text = re.sub(r"`workbench (\w+)[^`]*`", lambda m: COMMANDS.get(m.group(1), m.group(0)), text)
    return re.sub(r"--([a-z][a-z-]*)", lambda m: FLAGS.get(m.group(1), m.group(0)), text)
