"""Magnitude: |W|. No data needed."""

from __future__ import annotations

import torch

from core.attribution.state import ScorerOptions, ScoreState
from core.model.layers import Prunable, weight_view


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return {p.name: weight_view(p).detach().abs().float().contiguous() for p in layers}
