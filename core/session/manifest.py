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
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from core.errors import WorkbenchError, first_line
from core.pruning.plan import SparsityPlan
from core.pruning.registry import canonical
from core.session.atomic import write_text
from core.settings import GenerationConfig, LiveEvalConfig, ModelSpec, PruneConfig, ScoreConfig, default_of, help_of, in_panel, value_type

FORMAT = 2


class _Model(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="ignore", validate_assignment=False)


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


class CircuitPoint(_Model):
    kept: float
    """Fraction of the components kept (the rest pruned)."""
    logit_diff: float
    """Task logit difference, normalised: dense 1, every component of this kind pruned 0."""
    accuracy: float
    """Share of evaluation items whose answer outscores the distractor."""
    raw_logit_diff: float
    """The mean logit difference itself."""


class CircuitRecord(_Model):
    """A circuit found with `workbench circuit` (core/applications/circuits.py)."""

    scorer: str
    """The scorer whose ranking chose the components."""
    granularity: str
    """global, neuron or head (older sessions said weight for global)."""
    task: str
    """The task set (its evaluation items were measured)."""
    items: int
    """Evaluation items measured."""
    threshold: float
    """Share of the dense logit difference the circuit keeps."""
    dense: float
    """The dense model's mean logit difference."""
    empty: float
    """The mean logit difference with every component of this kind pruned."""
    curve: list[CircuitPoint]
    """The task along the grid of kept fractions."""
    circuit_kept: float | None
    """The smallest kept fraction from which the curve holds the threshold (found to 1 % of the components)."""
    area: float | None = None
    """The area under the curve over kept fractions, a threshold-free score (None: found before it was kept)."""
    ablation: str = "zero"
    """What removed heads or neurons output while the curve was measured (the plan itself zeroes them)."""
    plan: SparsityPlan | None = None
    """The circuit as a plan (a count of components pruned), applied as the session's plan."""
    map: dict[str, Any] = Field(default_factory=dict)
    """Per block what the circuit keeps: head flags, neurons kept, or the kept share of weights."""


class CorrectionStep(_Model):
    amount: float
    """Units pruned (neuron, head) or share of weights (global); 0 is the dense model."""
    sparsity: float
    """Share of prunable weights pruned."""
    perplexity: float
    """On held-out reference text."""
    cost: float
    """Perplexity relative to the dense model, minus 1."""
    behaviour: dict[str, float]
    """The unwanted behaviour on held-out contrastive prompts (toxicity and toxic rate, greedy and sampled; or uniqueness)."""
    samples: list[str] = Field(default_factory=list)
    """A few greedy continuations."""


class CorrectionRecord(_Model):
    """The last `workbench correct` sweep (core/applications/correction.py)."""

    scorer: str
    """The scorer behind the contrastive ranking."""
    reference: str
    """What the model must keep doing."""
    contrastive: str
    """The behaviour removed."""
    granularity: str
    """neuron, head or global."""
    behaviour: str
    """toxicity or uniqueness."""
    bound: float
    """The largest perplexity cost accepted."""
    steps: list[CorrectionStep]
    """Dense first, then each amount tried."""
    chosen: float | None
    """The amount applied as the session's plan (None: no step improved within the bound)."""
    measure_on: str = "held-out"
    """held-out (the sets' evaluation splits) or validation (scoring-split data the score did not draw)."""
    prompts_from: str | None = None
    """The set the behaviour was measured on, when not the contrastive set."""
    windows: int | None = None
    """Reference windows perplexity was measured on (None: a session from before this was kept)."""
    prompts: int | None = None
    """Prompts the behaviour was measured on."""


class MetricDelta(_Model):
    dense: float
    """The dense model's value."""
    pruned: float
    """The pruned model's value."""
    delta: float
    """pruned - dense."""


class HistoryEntry(_Model):
    """One `eval`."""

    sparsity: float
    """Achieved sparsity when measured."""
    plan: SparsityPlan | None = None
    """The plan measured."""
    scorer: str | None = None
    """The scorer behind the plan."""
    eval_data: str
    """The prompt set whose evaluation split was measured."""
    metrics: dict[str, MetricDelta]
    """Each metric dense, pruned and their difference."""
    eval_samples: int | None = None
    """Windows perplexity was measured on (None: a session from before this was kept)."""
    generation_prompts: int | None = None
    """Prompts generated from for uniqueness and toxicity."""


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
