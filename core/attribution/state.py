"""What a scoring run carries between batches: its sums, its options, its progress.

A score is a sum over samples, stored with the number of samples (and tokens), so a run
that was interrupted resumes and the mean is exact. Accumulators are fp32 whatever the
model's dtype; their shapes are the scorer's own (see `ScorerInfo.sums`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


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
    """How a data-driven scorer explains and combines (see core/attribution/registry.py)."""

    target: str = "logit"
    rules: str = "attnlrp"
    aggregate: str = "abs-sample"  # see core/attribution/scorers/gradient.py
    seed: int = 0
    damping: float = 0.0  # token-rms: weight tokens by g^2 + damping * mean g^2 (0: pure relevance)
    recompute: bool = False  # checkpoint each block: recompute its activations in the backward pass


@dataclass
class Progress:
    samples_done: int
    samples_total: int
    tokens_per_s: float
    eta_s: float


ProgressFn = Callable[[Progress], None]
