"""What the engine's commands return: typed results that the CLI prints and the TUI shows. `to_json` is
exactly what `--json` prints, so scripts keep the keys they read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.pruning.plan import SparsityPlan


class _Result:
    def to_json(self) -> dict:
        """What `--json` prints."""
        return asdict(self)


def _without_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class Continuations:
    """How a prompt set's scoring continuations were drawn, and how many elicit the behaviour."""

    by: str
    draws: int
    prompts: int
    offensive: int


@dataclass
class Explained:
    """--explain unwanted: the samples that show the behaviour, and its tokens in them."""

    samples: int
    of: int
    tokens: int


@dataclass
class SetScored(_Result):
    """One prompt set of a `score`."""

    samples: int
    cached: bool = False
    of: int | None = None
    """Samples the set offered (scoring ran)."""
    tokens: int = 0
    asked: int | None = None
    short: str | None = None
    """Why fewer samples than asked were scored."""
    continuations: Continuations | None = None
    explained: Explained | None = None
    explain_fallback: str | None = None
    """--explain fell back to this, as no sample showed the behaviour."""
    unscored_layers: int = 0

    @classmethod
    def from_notes(cls, notes: dict, **fields: Any) -> "SetScored":
        """From the notes scoring_batches (core/attribution/samples.py) left for the user."""
        c, e = notes.get("continuations"), notes.get("explained")
        return cls(**fields, continuations=Continuations(**c) if c else None, explained=Explained(**e) if e else None,
                   explain_fallback=notes.get("explain_fallback"))

    def to_json(self) -> dict:
        return _without_none(super().to_json())


ScoreResult = dict[str, SetScored]
"""Per prompt set ("reference", "contrastive", "paired")."""


@dataclass
class PruneSummary(_Result):
    """The model as the current plan leaves it."""

    sparsity: float
    pruned_weights: int
    prunable_weights: int
    granularity: str
    plan: SparsityPlan
    per_block: dict[int, float]
    reconstructed: bool
    per_layer: dict[str, float]
    contrastive: str | None = None
    """The contrastive set the ranking was scored against: it puts first what that behaviour needs, so pruning
    by it corrects rather than compresses (None: a plain ranking)."""
    chosen_on_reconstruct: bool = False
    """Reconstructing lets SparseGPT choose the weights (every plan of single weights, whatever the ranking): a
    mask-only plan is a preview of how many each row, layer or group loses."""


@dataclass
class Reconstruction(_Result):
    """One `prune --reconstruct`: the current plan's kept weights updated on the reference's windows."""

    layers: int
    samples: int
    tokens: int
    error: float
    """Mean over layers of the output error left, relative to the dense output."""
    per_layer: dict[str, float]
    chosen_by: str = "plan"
    """Who chose the pruned weights: the plan's mask, or SparseGPT's saliency within the plan's counts."""


@dataclass
class Export(_Result):
    """One `export`: where the checkpoint went and what it takes."""

    out: str
    sparsity: float
    safetensors_file_bytes: int
    dense_bytes: int
    sparse_bytes_estimate: int
    note: str = ""
    """What the sizes mean (zeros in dense tensors take space)."""


@dataclass
class MetricChange:
    dense: float
    pruned: float
    delta: float


@dataclass
class Generations:
    """The first prompts' greedy continuations, dense and pruned (shown beside the numbers)."""

    prompts: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


@dataclass
class Evaluation(_Result):
    """One `eval`: each metric dense and pruned, on the evaluation set's held-out part."""

    sparsity: float
    eval_data: str
    eval_split: str
    eval_samples: int | None
    """None: restored from a session saved before the sizes were kept."""
    generation_prompts: int | None
    metrics: dict[str, MetricChange]
    generations: Generations = field(default_factory=Generations)
    restored: bool = False
    """Brought back from the session's history, not measured now."""

    @classmethod
    def from_history(cls, entry: dict) -> "Evaluation":
        """The session's last evaluation as its history kept it (no generations)."""
        return cls(entry["sparsity"], entry.get("eval_data") or "", "", entry.get("eval_samples"),
                   entry.get("generation_prompts"), {k: MetricChange(**v) for k, v in entry["metrics"].items()},
                   restored=True)

    def to_json(self) -> dict:
        out = super().to_json()
        out.pop("restored")
        return out


@dataclass
class CircuitPointResult:
    """One measured kept fraction of a circuit's curve."""

    kept: float
    """Fraction of the components kept (the rest ablated)."""
    logit_diff: float
    """Task logit difference, normalised: dense 1, every component of this kind removed 0."""
    accuracy: float
    """Share of evaluation items whose answer outscores the distractor."""
    raw_logit_diff: float
    """The mean logit difference itself."""


@dataclass
class CircuitResult(_Result):
    """One `circuit` (or one scorer and seed of `circuit --compare`): the task along kept fractions of a ranking
    and the smallest kept fraction that holds the threshold."""

    scorer: str
    granularity: str
    task: str
    items: int
    """Held-out task items measured."""
    threshold: float
    dense: float
    """The dense model's mean logit difference."""
    empty: float
    """The mean logit difference with every component of this kind removed."""
    curve: list[CircuitPointResult]
    circuit_kept: float | None
    """The circuit: the smallest kept fraction from which the curve holds the threshold."""
    area: float | None
    """Area under the curve over kept fractions (threshold-free; dense 1)."""
    ablation: str
    map: dict[str, Any] = field(default_factory=dict)
    """Per block what the circuit keeps: head flags, neurons kept, or the kept share of weights."""
    seed: int | None = None
    """`--compare --seeds`: the seed of this run's scores."""

    def as_plan(self) -> str:
        """What the session's plan (and an export of it) does with the removed components: it always zeroes them,
        so under another ablation it is not the model the curve measured."""
        if self.ablation == "zero":
            return "now the session's plan"
        return f"now the session's plan, its removed components zeroed (the curve put them at their {self.ablation} output)"

    def to_json(self) -> dict:
        data = asdict(self)
        if self.seed is None:  # a single circuit's --json has no seed
            del data["seed"]
        return data

    @classmethod
    def of(cls, data: dict) -> "CircuitResult":
        """From a saved record (core/session/outcomes.py CircuitRecord, dumped) or its --json."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["curve"] = [CircuitPointResult(**{k: p[k] for k in CircuitPointResult.__dataclass_fields__})
                           for p in data["curve"]]
        fields.setdefault("area", None)
        fields.setdefault("ablation", "zero")
        return cls(**fields)
