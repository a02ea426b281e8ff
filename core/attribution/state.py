"""What a scoring run carries between batches: its sums, its options, its progress.

A score is a sum over samples, stored with the number of samples (and tokens), so a run
that was interrupted resumes and the mean is exact. Accumulators are fp32 whatever the
model's dtype; their shapes are the scorer's own (see `ScorerInfo.sums`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    """What a scorer reads of the settings: the resolved ScoreConfig itself (so the product has one set of
    defaults, and a new score option reaches the scorers without plumbing), plus how this run executes."""

    config: ScoreConfig
    """Resolved (ScoreConfig.resolved): the set-dependent defaults are filled in."""
    recompute: bool = False
    """Checkpoint each block: recompute its activations in the backward pass."""

    def __post_init__(self) -> None:
        if self.config.reduce is None:
            raise ValueError("ScorerOptions needs a resolved ScoreConfig (ScoreConfig.resolved)")

    @classmethod
    def of(cls, cfg: ScoreConfig, recompute: bool = False) -> "ScorerOptions":
        return cls(cfg, recompute)

    @classmethod
    def default(cls) -> "ScorerOptions":
        """The options `score` uses on a reference text with nothing else given."""
        return cls(ScoreConfig().resolved("text"))

    def but(self, **changes) -> "ScorerOptions":
        """The same options with some settings changed (e.g. a set's own seed stream)."""
        return replace(self, config=replace(self.config, **changes))

    @property
    def target(self) -> str:
        return self.config.target

    @property
    def rules(self) -> str:
        return self.config.rules

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def damping(self) -> float:
        return self.config.damping

    @property
    def accumulate(self) -> str:
        """What is summed per weight while scoring, as --reduce needs it (core/attribution/scorers/gradient.py)."""
        return accumulator(self.config.reduce)


@dataclass
class Progress:
    samples_done: int
    samples_total: int
    tokens_per_s: float
    eta_s: float


ProgressFn = Callable[[Progress], None]
