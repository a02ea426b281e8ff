"""Magnitude: |W|. No data needed."""

from __future__ import annotations


from core.layers import Prunable, weight_view
from core.scorers.base import ScoreState


def score(layers: list[Prunable]) -> ScoreState:
    return ScoreState({p.name: weight_view(p).detach().abs().float().contiguous() for p in layers}, samples=1)
