"""The TUI's own settings as a session keeps them (a part of the manifest, core/session/manifest.py): each
pane's fields, and the scoring options dialog made from ScoreConfig's "Advanced" declarations."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, create_model

from core.session.record import Record as _Model
from core.settings import GenerationConfig, LiveEvalConfig, PruneConfig, ScoreConfig, default_of, help_of, in_panel, value_type


class PromptsUi(_Model):
    """The Prompts pane's fields."""

    reference: str = default_of(ScoreConfig, "reference")
    """Reference set."""
    contrastive: str | None = None
    """Contrastive set."""
    samples: int = default_of(ScoreConfig, "samples")
    """Scoring samples."""
    seq_len: int = default_of(ScoreConfig, "seq_len")
    """Tokens per sample."""
    eval_data: str | None = None
    """Evaluation set (empty: the reference's held-out split)."""
    eval_samples: int = default_of(LiveEvalConfig, "samples")
    """Evaluation windows for the live metrics."""


class GenerationUi(_Model):
    """The Generate pane's fields."""

    prompt: str = default_of(GenerationConfig, "prompt")
    """Prompt."""
    max_new_tokens: int = default_of(GenerationConfig, "max_new_tokens")
    """Tokens to generate."""


class SparsityUi(_Model):
    """The Sparsity pane's choices."""

    allocation: str = default_of(PruneConfig, "allocate")
    """How the global slider is spread over the blocks."""
    spread: float | None = None
    """The allocation's spread (None: its default)."""


def _attribution_ui() -> type[BaseModel]:
    """The scoring options of the Attribution pane's dialog as the session records them: ScoreConfig's "Advanced"
    settings, each with its declared type, default and help (None: the default for the prompt sets)."""
    def one(name: str):
        typ, optional, _ = value_type(ScoreConfig, name)
        return (Optional[typ] if optional else typ, Field(default_of(ScoreConfig, name), description=help_of(ScoreConfig, name)))

    return create_model("AttributionUi", __base__=_Model, **{n: one(n) for n in in_panel(ScoreConfig, "Advanced")})


AttributionUi = _attribution_ui()


class UiState(_Model):
    """The TUI's own settings, restored with the session."""

    prompts: PromptsUi = Field(default_factory=PromptsUi)
    """The Prompts pane."""
    attribution: AttributionUi | None = None
    """The Attribution pane's scoring options (None: saved before the pane had them; the last score's are used)."""
    sparsity: SparsityUi = Field(default_factory=SparsityUi)
    """The Sparsity pane."""
    generation: GenerationUi = Field(default_factory=GenerationUi)
    """The Generate pane."""
    pane: str | None = None
    """The pane that was open."""
