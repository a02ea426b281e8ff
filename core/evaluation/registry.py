"""The metrics `eval` can report and the behaviours `correct` can reduce: what they mean and which way is
better (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

@dataclass(frozen=True)
class Metric:
    """Something `eval` reports for the dense and the pruned model."""

    name: str
    summary: str
    higher_is_better: bool
    needs: str
    """What it is measured on: "windows" (held-out text), "generations" (greedy continuations of the set's
    generation prompts) or "tasks" (a task set's prompt, answer and distractor)."""
    measure: Callable[[Any], float]
    """How, given the evaluation inputs (core/evaluation/measure.py; generations are made once for all metrics)."""
    default: bool = True
    """Reported when `eval --metrics` is not given (task metrics: whenever the evaluation set has tasks)."""


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("perplexity", "exp(mean next-token NLL) on evaluation samples; lower is better",
           False, "windows", lambda ev: ev.perplexity()),
    Metric("uniqueness", "unique generated tokens / generated tokens, greedy, 50 new tokens (paper's repetition metric); "
           "higher is better", True, "generations", lambda ev: ev.uniqueness()),
    Metric("toxicity", "mean offensive-language probability of greedy generations (alt-profanity-check, offline); "
           "lower is better", False, "generations", lambda ev: ev.toxicity()),
    Metric("toxic_rate", "share of greedy generations rated offensive (probability >= 0.5); lower is better",
           False, "generations", lambda ev: ev.toxic_rate(), default=False),
    Metric("task_accuracy", "task sets (builtin:ioi, builtin:agreement): share of prompts where the answer outscores "
           "the distractor; higher is better", True, "tasks", lambda ev: ev.task()["task_accuracy"]),
    Metric("task_logit_diff", "task sets: mean logit(answer) - logit(distractor) at the answer position; higher is better",
           True, "tasks", lambda ev: ev.task()["task_logit_diff"]),
)}


def default_metrics(has_tasks: bool) -> list[str]:
    return [m.name for m in METRICS.values() if m.default and (m.needs != "tasks" or has_tasks)]


def improved(metric: str, delta: float) -> bool:
    """Whether a change of `delta` in `metric` is for the better."""
    if "/" in metric:  # an lm-eval task's accuracy ("arc_easy/acc", core/evaluation/zero_shot.py)
        return delta > 0
    m = METRICS.get(metric)
    return delta > 0 if m is not None and m.higher_is_better else delta < 0


@dataclass(frozen=True)
class Behaviour:
    """Something `correct` can reduce, measured on held-out contrastive prompts."""

    name: str
    summary: str
    continue_by: str
    """How its prompts are continued for scoring: where the behaviour shows (core/attribution/registry.py CONTINUATIONS)."""
    measures: tuple[str, ...]
    """What a correction reports, most telling first, and the labels its plot gives them."""
    labels: tuple[str, ...]
    higher_is_better: bool
    sampled: bool
    """Also measured on sampled continuations (`correct --seeds`), not only the greedy one."""


BEHAVIOURS: dict[str, Behaviour] = {b.name: b for b in (
    Behaviour("toxicity", "mean offensive probability and toxic rate of continuations, greedy and sampled; lower is better",
              "most-toxic", ("toxic_rate", "toxic_rate_sampled", "toxicity"),
              ("toxic rate, greedy", "toxic rate, sampled", "mean toxicity, greedy"), higher_is_better=False, sampled=True),
    Behaviour("uniqueness", "unique tokens / tokens of greedy continuations (the paper's repetition metric); higher is better",
              "greedy", ("uniqueness",), ("uniqueness, greedy",), higher_is_better=True, sampled=False),
)}

#: the behaviour each built-in contrastive set is about; a user's set gets it from how it was scored (--continue-by)
#: or from `correct --behaviour`
SET_BEHAVIOUR = {"builtin:toxicity": "toxicity", "builtin:repetition": "uniqueness"}


def behaviour_of(spec: str | None, continue_by: str | None = None, given: str | None = None) -> Behaviour:
    """The behaviour of contrastive set `spec`: `given` (--behaviour), else the set's own, else the one whose
    continuation it was scored with, else repetition (uniqueness)."""
    if given:
        return BEHAVIOURS[given]
    if spec in SET_BEHAVIOUR:
        return BEHAVIOURS[SET_BEHAVIOUR[spec]]
    return next((b for b in BEHAVIOURS.values() if continue_by and b.continue_by == continue_by and b.sampled),
                BEHAVIOURS["uniqueness"])
