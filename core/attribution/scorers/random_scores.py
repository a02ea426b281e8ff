"""Random: uniform scores from a seeded generator, the floor any real scorer must beat."""

from __future__ import annotations

import torch

from core.attribution.state import ScorerOptions, ScoreState
from core.model.layers import Prunable


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(options.seed)
    return {p.name: torch.rand(p.shape, generator=gen) for p in layers}
