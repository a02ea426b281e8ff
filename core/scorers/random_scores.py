"""Random: uniform scores from a seeded generator, the floor any real scorer must beat."""

from __future__ import annotations

import torch

from core.layers import Prunable
from core.scorers.base import ScoreState


def score(layers: list[Prunable], seed: int) -> ScoreState:
    gen = torch.Generator().manual_seed(seed)
    return ScoreState({p.name: torch.rand(p.shape, generator=gen) for p in layers}, samples=1)
