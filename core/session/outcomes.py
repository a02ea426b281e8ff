"""What a session keeps of what was found on its model: circuits, correction sweeps and the evaluation
history (parts of the manifest, core/session/manifest.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from core.pruning.plan import SparsityPlan
from core.session.record import Record as _Model


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
