"""Sparsity plans: a global value plus per-layer overrides by name pattern."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from core.errors import WorkbenchError
from core.pruning.registry import countable, granularity

ALLOCATIONS = {
    "auto": "relevance for compression (row or layer granularity, a data-driven scorer, no contrastive set); uniform otherwise",
    "uniform": "every layer at the same sparsity",
    "relevance": "less relevant blocks (vs the depth trend) and, inside each block, the less relevant of attention/MLP give up more weights",
    "relevance-raw": "less relevant blocks by raw relevance per weight give up more (the literal rule; measured worse than uniform)",
    "owl": "OWL (Yin et al. 2024): blocks with a larger share of outlier scores (above 5x the block mean) keep more; --spread is its lambda",
}

def check_sparsity(value: float, what: str = "sparsity") -> float:
    if not 0.0 <= value < 1.0:
        raise WorkbenchError(f"{what} {value} is outside [0, 1); give e.g. 0.5 for half of the weights")
    return float(value)


@dataclass
class SparsityPlan:
    """Target sparsity per prunable layer: `default`, unless an override pattern matches (last match wins)."""

    default: float = 0.0
    overrides: list[tuple[str, float]] = field(default_factory=list)
    granularity: str = "row"
    count: int | None = None  # global, neuron, head: remove exactly this many weights or units (sparsities ignored)

    def __post_init__(self) -> None:
        check_sparsity(self.default)
        if self.count is not None:
            if not granularity(self.granularity).countable:
                names = list(countable())
                raise WorkbenchError(f"--count works with --granularity {', '.join(names[:-1])} or {names[-1]}, "
                                     f"not {self.granularity}")
            if self.count < 0:
                raise WorkbenchError(f"--count {self.count} is negative; give how many to remove")
        for pattern, value in self.overrides:
            check_sparsity(value, f"sparsity for {pattern!r}")
        self.granularity = granularity(self.granularity).name
        pattern = granularity(self.granularity).pattern
        if pattern:
            share = pattern[0] / pattern[1]
            for what, v in [("--sparsity", self.default)] + [(f"sparsity for {p!r}", v) for p, v in self.overrides]:
                if v not in (0.0, share):
                    raise WorkbenchError(f"{self.granularity} prunes exactly {share:.0%} of a layer; {what} is {v}: "
                                         f"give {share} (or 0 to keep a layer dense)")

    def for_layer(self, name: str) -> float:
        value = self.default
        for pattern, v in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                value = v
        return value

    def check_patterns(self, names: list[str]) -> None:
        for pattern, _ in self.overrides:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise WorkbenchError(
                    f"layer pattern {pattern!r} matches no prunable layer; names look like {names[0]!r}"
                )

    def is_dense(self) -> bool:
        if self.count is not None:
            return self.count == 0
        return self.default == 0.0 and all(v == 0.0 for _, v in self.overrides)


def parse_override(text: str) -> tuple[str, float]:
    """'model.layers.0.*=0.2' -> ('model.layers.0.*', 0.2)."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise WorkbenchError(f"--layer {text!r} must look like PATTERN=SPARSITY, e.g. 'model.layers.0.*=0.2'")
    try:
        return pattern, check_sparsity(float(value), f"sparsity for {pattern!r}")
    except ValueError:
        raise WorkbenchError(f"--layer {text!r}: {value!r} is not a number") from None
