"""Slider levels <-> sparsity plans: a global level, per-block levels and per (block, kind) levels.

A UI shows one slider for everything, one per decoder block and one per attention /
MLP part of a block. `PlanLevels` is that state; `to_plan` turns it into the engine's
`SparsityPlan` (block levels as `<prefix>.*` patterns, kind levels as exact layer
names, later overrides win), and `from_plan` reads any plan back, including plans made
with arbitrary `--layer` globs on the CLI (then `custom` says the sliders only
approximate it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.pruning.plan import SparsityPlan, check_sparsity
from core.pruning.registry import granularity

KINDS = ("attn", "mlp")
#: the allocation label of levels a user set by hand (a block or part slider moved): nothing follows the global one
HAND_SET = "hand-set"


@dataclass
class PlanLevels:
    default: float = 0.0
    blocks: dict[int, float] = field(default_factory=dict)  # block -> level
    kinds: dict[tuple[int, str], float] = field(default_factory=dict)  # (block, kind) -> level
    granularity: str = "row"
    custom: bool = False  # read from a plan the levels cannot express exactly
    allocation: str = "uniform"  # an allocation: block and part levels follow the global one (the engine allocates)
    spread: float | None = None  # for the allocation; None: its default
    count: int | None = None  # neuron, head, global: remove exactly this many (the levels are then ignored)

    def block_level(self, block: int) -> float:
        return self.blocks.get(block, self.default)

    def level(self, block: int, kind: str) -> float:
        return self.kinds.get((block, kind), self.block_level(block))

    def set_default(self, value: float) -> None:
        self.default = check_sparsity(value)
        self.custom = False

    @property
    def follows(self) -> bool:
        """Do the block and part levels follow the global one by an allocation?"""
        return self.allocation not in ("uniform", HAND_SET)

    def set_block(self, block: int, value: float) -> None:
        """A block's level replaces its attention and MLP levels; the levels are the user's own from now on."""
        self.allocation = HAND_SET
        self.blocks[block] = check_sparsity(value)
        for kind in KINDS:
            self.kinds.pop((block, kind), None)
        self.custom = False

    def set_kind(self, block: int, kind: str, value: float) -> None:
        self.allocation = HAND_SET
        self.kinds[(block, kind)] = check_sparsity(value)
        self.custom = False

    def uniform(self) -> None:
        self.blocks.clear()
        self.kinds.clear()
        self.custom = False
        self.allocation = "uniform"

    def follow(self, allocated: "PlanLevels") -> None:
        """Take the block and part levels an allocation gave, keeping this global level (it may be newer)."""
        self.blocks, self.kinds, self.custom = dict(allocated.blocks), dict(allocated.kinds), allocated.custom

    def to_plan(self, index: list[dict]) -> SparsityPlan:
        pattern = granularity(self.granularity).pattern
        # N:M prunes a fixed share: any level above zero means that share
        snap = (lambda v: pattern[0] / pattern[1] if v > 0 else 0.0) if pattern else (lambda v: v)
        prefixes = {row["block"]: row["prefix"] for row in index}
        overrides = [(f"{prefixes[b]}.*", snap(v)) for b, v in sorted(self.blocks.items()) if b in prefixes]
        for (b, kind), v in sorted(self.kinds.items()):
            overrides += [(row["name"], snap(v)) for row in index if row["block"] == b and row["kind"] == kind]
        count = self.count if granularity(self.granularity).countable else None
        return SparsityPlan(snap(self.default), overrides, self.granularity, count)

    @classmethod
    def from_plan(cls, plan: SparsityPlan, index: list[dict]) -> "PlanLevels":
        levels = cls(plan.default, granularity=plan.granularity, count=plan.count)
        by_block: dict[int, dict[str, list[float]]] = {}
        for row in index:
            by_block.setdefault(row["block"], {}).setdefault(row["kind"], []).append(plan.for_layer(row["name"]))
        for b, kinds in by_block.items():
            values = [v for vs in kinds.values() for v in vs]
            if len(set(values)) == 1:
                if values[0] != plan.default:
                    levels.blocks[b] = values[0]
                continue
            for kind, vs in kinds.items():
                if len(set(vs)) > 1:
                    levels.custom = True
                levels.kinds[(b, kind)] = sum(vs) / len(vs)
        return levels
