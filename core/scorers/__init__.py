"""Per-weight importance scores: higher means keep. Each scorer lives in its own file."""

from core.scorers.base import SCORERS, TARGETS, ScoreState, run_scorer

__all__ = ["SCORERS", "TARGETS", "ScoreState", "run_scorer"]
