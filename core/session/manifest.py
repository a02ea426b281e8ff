"""The session manifest: a typed model of everything a session remembers, and the only code
that reads or writes `manifest.json`.

Every field has a docstring; sessions/README.md documents the same fields (a test checks
that it names them all). Tensors live in safetensors files next to the manifest, which
names them. `FORMAT` is written into every manifest; older formats are migrated when read
(core/session/migrate.py), newer ones are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from core.errors import WorkbenchError, first_line
from core.pruning.plan import SparsityPlan
from core.pruning.registry import canonical
from core.session.atomic import write_text
from core.session.outcomes import CircuitRecord, CorrectionRecord, HistoryEntry
from core.session.record import Record as _Model
from core.session.ui_state import UiState
from core.settings import ModelSpec, ScoreConfig

FORMAT = 2


class ModelInfo(_Model):
    """What was loaded, as the Model pane and `session show` describe it."""

    source: str
    """The source the model was loaded from."""
    architecture: str
    """The transformers class, e.g. LlamaForCausalLM."""
    model_type: str
    """The config's model_type (decides which LRP rules apply)."""
    parameters: int
    """All parameters, prunable or not."""
    layers: int | None = None
    """Decoder blocks."""
    device: str
    """Where the weights live."""
    dtype: str
    """Weight dtype (float32 or bfloat16)."""
    memory_bytes: int
    """Bytes taken by the parameters."""
    placement: dict[str, int] | None = None
    """With --device-map: parameters per place (cuda:0, cpu, "cpu (offloaded)", disk)."""


class ModelRecord(_Model):
    spec: ModelSpec
    """How to load the model again (source, device, dtype, trust_remote_code)."""
    info: ModelInfo | None = None
    """What was loaded last time."""


class SumsRecord(_Model):
    """Raw sums of one prompt set while its scoring is under way."""

    file: str
    """fp32 sums (the scorer's own accumulators, see core/attribution/registry.py)."""
    samples: int
    """Samples summed so far."""
    tokens: int
    """Tokens summed so far."""
    key: dict[str, Any]
    """Everything the sums depend on; a `score` with the same key resumes them."""


class RankingRecord(_Model):
    """The finished scores, stored as what ranking needs (core/pruning/ranking.py)."""

    file: str
    """Per layer: row order (int16), row-sorted values (bf16), row sums and relevance mass."""
    key: dict[str, Any]
    """Everything the ranking depends on; a `score` with the same key reuses it."""
    samples: dict[str, int]
    """Samples scored per prompt set (`reference`, `contrastive`)."""
    tokens: dict[str, int]
    """Tokens scored per prompt set."""
    unscored_layers: list[str] = Field(default_factory=list)
    """Layers no relevance reached (CP-LRP stops it at q/k projections and MLP gates)."""


class CountsRecord(_Model):
    """The masks of the current plan, as pruned positions per row (exact and small)."""

    file: str
    """int32 [out] per layer: row r has the first counts[r] positions of its order pruned."""
    plan: SparsityPlan
    """The plan they were made with; a session whose plan differs re-applies from the ranking."""
    sparsity: float
    """Achieved sparsity: pruned weights / prunable weights."""


class ReconstructionRecord(_Model):
    """The kept weights of a plan updated to keep each layer's output (`prune --reconstruct`)."""

    file: str
    """Every pruned layer's working copy as reconstructed (the model's dtype, its storage orientation)."""
    plan: SparsityPlan
    """The plan it was made for; another plan goes back to mask-only weights."""
    samples: int
    """Calibration samples (the reference set's scoring windows, as the score drew them)."""
    tokens: int
    """Calibration tokens."""
    error: float
    """Mean over layers of the relative output error left on the calibration tokens, ||(W - W') X|| / ||W X||."""
    chosen_by: str = "plan"
    """Who chose the pruned weights: "plan" (its ranking's mask) or "sparsegpt" (OBS saliency, the plan's counts)."""


class Manifest(_Model):
    """Everything a session remembers (sessions/README.md describes the folder around it)."""

    format: int = FORMAT
    """Manifest format; older ones are migrated when read, newer ones refused."""
    name: str
    """Session name (its folder's name)."""
    created: str
    """ISO time of creation."""
    updated: str | None = None
    """ISO time of the last write."""
    model: ModelRecord | None = None
    """The session's model."""
    score_config: ScoreConfig | None = None
    """The settings of the last `score`, with the defaults that depend on the sets filled in."""
    score_defaults: list[str] | None = None
    """The fields of `score_config` the last `score` filled in by default (reduce, explain, pair): they follow
    the prompt sets when the session is scored again from the TUI. None in sessions scored before it existed."""
    sums: dict[str, SumsRecord] = Field(default_factory=dict)
    """Scoring under way, per prompt set (`reference`, `contrastive`); removed once the ranking is written."""
    ranking: RankingRecord | None = None
    """The finished scores of the last complete `score`."""
    plan: SparsityPlan | None = None
    """The current sparsity plan: default sparsity, [pattern, sparsity] overrides (last match wins), granularity."""
    counts: CountsRecord | None = None
    """The masks of the current plan."""
    sparsity: float | None = None
    """Achieved sparsity of the current plan, whatever its granularity (None: never pruned in this format)."""
    reconstruction: ReconstructionRecord | None = None
    """The plan's kept weights as `prune --reconstruct` updated them (None: mask only)."""
    undo: list[SparsityPlan] = Field(default_factory=list)
    """Earlier plans, newest last (at most 200): `prune --undo`, ctrl+z."""
    redo: list[SparsityPlan] = Field(default_factory=list)
    """Undone plans, newest last: `prune --redo`, ctrl+y."""
    ui: UiState = Field(default_factory=UiState)
    """The TUI's own settings."""
    dense_cache: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Dense-model metrics by evaluation settings, so an `eval` measures only the pruned model."""
    history: list[HistoryEntry] = Field(default_factory=list)
    """One entry per `eval`, oldest first."""
    circuits: dict[str, CircuitRecord] = Field(default_factory=dict)
    """The last circuit found per granularity (global, neuron, head)."""
    correction: CorrectionRecord | None = None
    """The last correction sweep."""
    versions: dict[str, str] = Field(default_factory=dict)
    """lrp-workbench, torch, transformers and lxt versions that last wrote the session."""
    counter: int = 0
    """Last number used in a tensor file name (each write gets a new name)."""
    checksums: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Per tensor file, the CRC-32 of each tensor as written; a file whose data changed is refused when read."""

    @field_validator("circuits", mode="before")
    @classmethod
    def _circuits_by_todays_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for key, record in value.items():
            if isinstance(record, dict) and "granularity" in record:
                record = {**record, "granularity": canonical(record["granularity"])}
            out[canonical(key)] = record
        return out

    @field_validator("score_config", mode="before")
    @classmethod
    def _scored_before_the_defaults_changed(cls, value: Any) -> Any:
        # a score_config is written resolved; one without these fields predates them, when every score
        # explained all tokens against no clean pair (the later defaults would read as another score)
        if isinstance(value, dict):
            return {"explain": "all", "pair": "none", **value}
        return value

    def files(self) -> set[str]:
        """The tensor files this manifest relies on (everything else in the folder is garbage)."""
        named = {s.file for s in self.sums.values()}
        if self.ranking:
            named.add(self.ranking.file)
        if self.counts:
            named.add(self.counts.file)
        if self.reconstruction:
            named.add(self.reconstruction.file)
        return named


# ---- the JSON file ------------------------------------------------------------------------
def read_manifest(path: Path) -> tuple[Manifest, "Legacy | None"]:
    """Parse a manifest file (any known format); format-1 data needing tensor work comes back as Legacy."""
    name = path.parent.name

    def corrupt(detail: str) -> WorkbenchError:
        return WorkbenchError(f"session {name!r} has a corrupt manifest ({path}: {detail}); restore it or remove the folder")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise corrupt(first_line(exc, 200)) from None
    if not isinstance(data, dict) or not isinstance(data.get("format"), int):
        raise corrupt("not a workbench manifest")
    if data["format"] > FORMAT:
        raise WorkbenchError(f"session {name!r} was written by a newer LRP Workbench (format {data['format']}); upgrade")
    try:
        return manifest_v1(data) if data["format"] == 1 else (Manifest.model_validate(data), None)
    except (ValueError, KeyError, TypeError, ValidationError, WorkbenchError) as exc:
        raise corrupt(first_line(exc, 200)) from None


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_text(path, manifest.model_dump_json(indent=2) + "\n")


# ---- format 1 (see core/session/migrate.py for the tensor half) ----------------------------------
class Legacy(_Model):
    """Format-1 data still to be converted to tensors of format 2."""

    scores: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Complete format-1 score sums per prompt set."""
    masks: dict[str, Any] | None = None
    """The format-1 masks record of the current plan."""


def _score_config(old: dict | None) -> dict | None:
    if not old:
        return None
    cfg = dict(old)
    if "variant" in cfg:
        cfg["rules"] = cfg.pop("variant")
    return cfg


def manifest_v1(data: dict) -> tuple[Manifest, Legacy]:
    """A format-1 manifest as format 2, plus what still needs converting."""
    model = data.get("model")
    spec = None
    if model:
        spec = {"spec": {k: model[k] for k in ("source", "device", "dtype", "trust_remote_code") if k in model},
                "info": model.get("info")}
    scores = data.get("scores") or {}
    scorer = (data.get("score_config") or {}).get("scorer")
    if all(e.get("complete") for e in scores.values()):
        legacy, resumable = Legacy(scores=scores, masks=data.get("masks")), {}
    else:
        # Scoring was interrupted: every set's sums resume. Format 1 kept a complete Wanda set
        # in its finished form, which cannot resume: that set is scored again.
        legacy = Legacy()
        resumable = {w: e for w, e in scores.items() if not (e.get("complete") and scorer == "wanda")}
    sums = {w: {"file": e["file"], "samples": e["samples"], "tokens": e.get("tokens", 0), "key": {}}
            for w, e in resumable.items()}  # keys are recomputed in finish_v1 (they need the registry)
    ui = data.get("ui") or {}
    new = {
        "format": FORMAT,
        "name": data["name"],
        "created": data.get("created", ""),
        "updated": data.get("updated"),
        "model": spec,
        "score_config": _score_config(data.get("score_config")),
        "sums": sums,
        "plan": data.get("plan"),
        "undo": data.get("undo", []),
        "redo": data.get("redo", []),
        "ui": {k: v for k, v in ui.items() if v is not None},
        "history": data.get("history", []),
        "versions": data.get("versions", {}),
        "counter": data.get("_counter", 0),
    }
    return Manifest.model_validate(new), legacy
