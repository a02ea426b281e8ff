"""What can be pruned as one piece, declared once: every command, pane and application asks this registry what a
granularity can do instead of testing its name."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import WorkbenchError


@dataclass(frozen=True)
class Granularity:
    name: str
    summary: str
    unit: str | None = None
    """The model unit removed whole ("head", "neuron": core/model/units.py); None: single weights."""
    countable: bool = False
    """`--count` removes exactly this many (units, or weights across the model); circuits and correction use it."""
    pattern: tuple[int, int] | None = None
    """(N, M): N of every M consecutive weights of a row go, a fixed share."""
    allocatable: bool = False
    """A layer's share may differ from its neighbours' at no cost to the format, so `--allocate auto` means relevance
    allocation here when compressing."""
    component: str = "weight"
    """What one counted piece is called in messages and plots."""
    choice: str | tuple[int, int] | None = None
    """What SparseGPT may re-choose during reconstruction while keeping the plan's counts: the weights of each row
    ("row"), of each layer ("layer"), of each N:M group (the pattern); None: whole units stay as the plan made them."""


GRANULARITIES: dict[str, Granularity] = {g.name: g for g in (
    Granularity("row", "row-wise unstructured: every output row of a layer loses the same share, weights compete "
                "within their row (paper, Wanda)", allocatable=True, choice="row"),
    Granularity("layer", "unstructured per layer: weights compete across the whole layer", allocatable=True,
                choice="layer"),
    Granularity("global", "global unstructured: weights compete across all layers that share a sparsity target "
                "(with --count: exactly that many weights, the lowest of the model)", countable=True, choice="layer"),
    Granularity("neuron", "structured: whole MLP neurons (up/gate row and down column, bias included), ranked across "
                "the model", unit="neuron", countable=True, component="neuron"),
    Granularity("head", "structured: whole attention heads (query/key/value rows and output columns; GQA-aware), "
                "ranked across the model", unit="head", countable=True, component="head"),
    Granularity("2:4", "semi-structured: in every 4 consecutive weights of a row the 2 least important go (50 %; "
                "sparse tensor cores run it)", pattern=(2, 4), choice=(2, 4)),
    Granularity("4:8", "semi-structured: in every 8 consecutive weights of a row the 4 least important go (50 %)",
                pattern=(4, 8), choice=(4, 8)),
)}

#: what a removed head or neuron outputs while a circuit is measured (core/applications/circuits.py)
ABLATIONS = {
    "zero": "a removed head or neuron outputs zero (pruning; the circuit exports as it was measured)",
    "mean": "a removed head or neuron outputs its mean over the task's scoring items, so the model stays in "
            "distribution (heads and neurons; the exported circuit is still pruned to zero)",
    "patch": "a removed head or neuron outputs what it output on the item's corrupted counterpart (IOI: three other "
             "names; agreement: the attractor's number flipped; agreement-subject: the subject's), activation patching (heads and neurons; items whose "
             "counterpart tokenizes to another length are left out; the exported circuit is still pruned to zero)",
}

#: earlier names still accepted: `circuit --granularity weight` meant global
ALIASES = {"weight": "global"}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def granularity(name: str) -> Granularity:
    g = GRANULARITIES.get(canonical(name))
    if g is None:
        raise WorkbenchError(f"unknown granularity {name!r}; choose one of {', '.join(GRANULARITIES)}")
    return g


def countable() -> dict[str, str]:
    """The granularities circuits and correction count in, with what they count."""
    return {name: g.summary for name, g in GRANULARITIES.items() if g.countable}
