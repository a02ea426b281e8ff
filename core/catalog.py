"""Every named choice the workbench offers, gathered from the registries that own them.

`workbench catalog`, the CLI's help and the TUI's selects read this; the registries
stay where their code is (scorers in core/attribution, granularities in core/pruning,
metrics in core/evaluation, built-in prompt sets in core/data). No heavy imports.
"""

from __future__ import annotations

from dataclasses import fields

from core.attribution.registry import CONTINUATIONS, EXPLAINED, NORMALIZATIONS, PAIRS, RECOMPUTE, REDUCTIONS, RULES, SCORERS, TARGETS
from core.data.registry import BUILTINS
from core.errors import WorkbenchError
from core.evaluation.registry import BEHAVIOURS, METRICS
from core.presets import PRESETS
from core.pruning.plan import ALLOCATIONS
from core.pruning.registry import ABLATIONS, GRANULARITIES, canonical, countable
from core.settings import cli_flag, out_of_range


def catalog() -> dict[str, dict[str, str]]:
    return {
        "scorers": {name: info.summary for name, info in SCORERS.items()},
        "targets": TARGETS,
        "lrp rules": RULES,
        "reductions": REDUCTIONS,
        "normalizations": NORMALIZATIONS,
        "recompute": RECOMPUTE,
        "continuations": CONTINUATIONS,
        "explained": EXPLAINED,
        "pairs": PAIRS,
        "granularities": {name: g.summary for name, g in GRANULARITIES.items()},
        "counted granularities": countable(),
        "ablations": ABLATIONS,
        "behaviours": {name: b.summary for name, b in BEHAVIOURS.items()},
        "correction splits": {"held-out": "the reference's and the contrastive set's evaluation splits (never scored)",
                              "validation": "scoring-split prompts and windows this score did not draw"},
        "allocations": ALLOCATIONS,
        "metrics": {name: m.summary for name, m in METRICS.items()},
        "prompt sets": BUILTINS,
        "presets": {name: p.summary for name, p in PRESETS.items()},
    }


def choices(section: str) -> list[str]:
    return list(catalog()[section])


def check(settings: object) -> None:
    """Refuse a settings group with a number out of its declared range or a choice-valued field naming
    something unknown (one line each)."""
    for f in fields(settings):  # type: ignore[arg-type]
        section = f.metadata.get("choices")
        value = getattr(settings, f.name)
        if "help" in f.metadata:
            why = out_of_range(type(settings), f.name, value)
            if why:
                raise WorkbenchError(f"{cli_flag(type(settings), f.name)} {value:g} {why}")
        if not section or value is None:
            continue
        known = catalog()[section]
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if v not in known and not (section.endswith("granularities") and canonical(v) in known):
                raise WorkbenchError(f"unknown {cli_flag(type(settings), f.name)} {v!r}; choose one of {', '.join(known)}")
