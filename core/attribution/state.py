"""What a scoring run carries between batches: its sums, its options, its progress.

A score is a sum over samples, stored with the number of samples (and tokens), so a run
that was interrupted resumes and the mean is exact. Accumulators are fp32 whatever the
model's dtype; their shapes are the scorer's own (see `ScorerInfo.sums`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from core.attribution.combine import accumulator
from core.settings import ScoreConfig


@dataclass
class ScoreState:
    """Summed accumulators per key and how many samples (and tokens) went into them."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0
    torn: bool = False  # a batch was interrupted half-way through accumulating: do not save these sums

    def add(self, key: str, value: torch.Tensor) -> None:
        acc = self.sums.get(key)
        if acc is None:
            self.sums[key] = value.float().clone() if value.dtype != torch.float32 else value.clone()
        else:
            acc += value


@dataclass(frozen=True)
class ScorerOptions:
    """How a data-driven scorer explains and combines (see core/attribution/registry.py): the scoring fields of a
    resolved ScoreConfig, so the product has one set of defaults. Build it with `of`."""

    target: str
    rules: str
    accumulate: str
    """What is summed per weight while scoring, as --reduce needs it (`accumulator(reduce)`, core/attribution/scorers/gradient.py)."""
    seed: int
    damping: float
    recompute: bool
    """Checkpoint each block: recompute its activations in the backward pass."""

    @classmethod
    def of(cls, cfg: ScoreConfig, recompute: bool = False) -> "ScorerOptions":
        """The options of a config whose set-dependent defaults are filled in (ScoreConfig.resolved)."""
        if cfg.reduce is None:
            raise ValueError("ScorerOptions.of needs a resolved ScoreConfig (ScoreConfig.resolved)")
        return cls(cfg.target, cfg.rules, accumulator(cfg.reduce), cfg.seed, cfg.damping, recompute)

    @classmethod
    def default(cls) -> "ScorerOptions":
        """The options `score` uses on a reference text with nothing else given."""
        return cls.of(ScoreConfig().resolved("text"))


@dataclass
class Progress:
    samples_done: int
    samples_total: int
    tokens_per_s: float
    eta_s: float


ProgressFn = Callable[[Progress], None]
