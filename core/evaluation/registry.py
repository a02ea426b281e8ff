"""The metrics `eval` can report and the behaviours `correct` can reduce: what they mean and which way is
better (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

METRICS = {
    "perplexity": "exp(mean next-token NLL) on evaluation samples; lower is better",
    "uniqueness": "unique generated tokens / generated tokens, greedy, 50 new tokens (paper's repetition metric); higher is better",
    "toxicity": "mean offensive-language probability of greedy generations (alt-profanity-check, offline); lower is better",
    "toxic_rate": "share of greedy generations rated offensive (probability >= 0.5); lower is better",
    "task_accuracy": "task sets (builtin:ioi, builtin:agreement): share of prompts where the answer outscores the distractor; higher is better",
    "task_logit_diff": "task sets: mean logit(answer) - logit(distractor) at the answer position; higher is better",
}
LOWER_IS_BETTER = {"perplexity", "toxicity", "toxic_rate"}

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
