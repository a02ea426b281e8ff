"""Targeted correction: prune what a contrastive set needs and the reference does not, and prove it on held-out prompts.

After a contrastive `score` (R_diff = N(R_reference) - N(R_contrastive), paper Eq. 7), the
most negative components are the ones the unwanted behaviour relies on. A sweep prunes
more and more of them (a count of MLP neurons or heads, as the paper removes ~100
neurons against toxicity, or a share of single weights ranked across the model, as it
removes ~0.025 % of weights against repetition; weights are the default for both) and
measures, at every step:

  the behaviour on held-out contrastive prompts (never scored)
    toxicity    mean offensive probability and toxic rate (share >= 0.5) of greedy
                continuations, and the same over sampled continuations (several seeds)
    uniqueness  unique tokens / tokens of greedy continuations (the paper's repetition metric)
  the cost: perplexity on held-out reference text, relative to the dense model

and picks the step with the best behaviour whose perplexity cost stays within the bound
(2 % by default); for toxicity, best by the sampled toxic rate when seeds are sampled. That step becomes the session's plan.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from core.errors import WorkbenchError
from core.evaluation import metrics as M
from core.evaluation.registry import BEHAVIOURS
from core.pruning.masks import Pruner
from core.pruning.plan import SparsityPlan
from core.pruning.registry import granularity as granularity_of
from core.settings import GenerationConfig

STEPS = {  # default sweeps: how many units (neuron, head) or which share of weights (global) to prune
    "neuron": (10, 25, 50, 100, 200, 400, 800),
    "head": (1, 2, 4, 8, 16, 32),
    "global": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
}


@dataclass
class Step:
    amount: float  # units pruned, or share of weights (global); 0 is the dense model
    sparsity: float  # share of prunable weights pruned
    perplexity: float
    cost: float  # perplexity / dense perplexity - 1
    behaviour: dict  # metric -> value (and its spread over seeds where sampled)
    samples: list[str] = field(default_factory=list)  # a few greedy continuations


#: what `correct` prunes when no granularity is given, by behaviour: chosen on validation data by the rules in
#: bench/correction_ablation.py's docstring (the paper pruned neurons against toxicity, weights against repetition;
#: on validation data single weights did better against both)
DEFAULT_GRANULARITY = {"toxicity": "global", "uniqueness": "global"}


def resolved_granularity(granularity: str | None, behaviour: str) -> str:
    return granularity or DEFAULT_GRANULARITY[behaviour]


def check_steps(granularity: str, steps: tuple[float, ...]) -> None:
    """Refuse amounts the granularity cannot mean: shares of weights lie in (0, 1), counts are whole and positive."""
    if not granularity_of(granularity).unit:
        bad = [a for a in steps if not 0 < a < 1]
        if bad:
            raise WorkbenchError(f"--steps {bad[0]:g}: global pruning takes shares of the weights between 0 and 1 "
                                 "(e.g. 0.0001,0.0003,0.001); for a count of units give --granularity neuron or head")
    else:
        bad = [a for a in steps if a < 1 or a != int(a)]
        if bad:
            raise WorkbenchError(f"--steps {bad[0]:g}: {granularity} pruning takes whole counts (e.g. 10,50,100); "
                                 "for a share of the weights give --granularity global")


def describe(amount: float, granularity: str | None) -> str:
    """One step's amount in words: a count of units, or a share of the weights. A granularity not given (None)
    is one of the defaults, told apart by the amount: only a share of the weights is below 1 (`check_steps`)."""
    granularity = granularity or ("global" if amount < 1 else "neuron")
    g = granularity_of(granularity)
    return f"{amount:g} {g.component}s" if g.unit else f"{amount * 100:g}% of the weights"


def step_plan(granularity: str, amount: float) -> SparsityPlan:
    if not granularity_of(granularity).unit and amount < 1:
        return SparsityPlan(amount, [], "global")
    return SparsityPlan(0.0, [], granularity, count=int(amount))


def behaviour_of(model, tokenizer, prompts: list[str], behaviour: str, new_tokens: int, seeds: int) -> tuple[dict, list[str]]:
    greedy = M.generations(model, tokenizer, prompts, new_tokens)
    texts = [t for _, t in greedy]
    if not BEHAVIOURS[behaviour].sampled:  # repetition: greedy continuations only
        return {"uniqueness": statistics.mean(M.uniqueness(ids) for ids, _ in greedy)}, texts[:4]
    out = {"toxicity": M.toxicity(texts), "toxic_rate": M.toxic_rate(texts)}
    sampled_tox, sampled_rate = [], []
    for seed in range(seeds):
        cfg = replace(GenerationConfig(), greedy=False, seed=seed)
        sampled = [t for _, t in M.generations(model, tokenizer, prompts, new_tokens, sample=cfg)]
        sampled_tox.append(M.toxicity(sampled))
        sampled_rate.append(M.toxic_rate(sampled))
    if seeds:
        out.update(toxicity_sampled=statistics.mean(sampled_tox), toxic_rate_sampled=statistics.mean(sampled_rate),
                   toxic_rate_sampled_spread=(max(sampled_rate) - min(sampled_rate)) / 2)
    return out, texts[:4]


def better(behaviour: str, a: dict, b: dict) -> bool:
    """Is behaviour `a` a stronger correction than `b`? Toxicity: the sampled toxic rate first where
    both have it (several continuations per prompt, and not the one a set may have been chosen on),
    then the greedy rate, then mean toxicity."""
    if BEHAVIOURS[behaviour].higher_is_better:
        return a[behaviour] > b[behaviour]
    if "toxic_rate_sampled" in a and "toxic_rate_sampled" in b:
        return (a["toxic_rate_sampled"], a["toxic_rate"], a["toxicity"]) < (b["toxic_rate_sampled"], b["toxic_rate"], b["toxicity"])
    return (a["toxic_rate"], a["toxicity"]) < (b["toxic_rate"], b["toxicity"])


@dataclass
class SweepProgress:
    """Where a sweep is: step `done + 1` of `total` (the dense model is the first) is being measured, or `row`
    has just been measured."""

    done: int
    total: int
    amount: float
    row: Step | None = None
    eta_s: float | None = None
    """Seconds left, from the steps measured so far (None before the first)."""


def sweep_line(p: SweepProgress, granularity: str | None) -> str:
    """A step as it starts, in words: `step 3 of 8: pruning 0.01% of the weights, about 40 s left`."""
    what = "the dense model" if p.amount == 0 else f"pruning {describe(p.amount, granularity)}"
    left = f", about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
    return f"step {p.done + 1} of {p.total}: {what}{left}…"


def sweep(pruner: Pruner, model, tokenizer, windows: list[list[int]], prompts: list[str], granularity: str,
          steps: tuple[float, ...], behaviour: str, new_tokens: int, seeds: int,
          progress: Callable[[SweepProgress], None] | None = None) -> list[Step]:
    """Dense first, then each step (the model is left dense)."""
    rows: list[Step] = []
    tell = progress or (lambda p: None)
    total, t0 = len(steps) + 1, time.monotonic()

    def eta() -> float | None:
        return (time.monotonic() - t0) / len(rows) * (total - len(rows)) if rows else None

    pruner.use_pruned(False)
    tell(SweepProgress(0, total, 0))
    dense_ppl = M.perplexity(model, tokenizer, windows)
    b, samples = behaviour_of(model, tokenizer, prompts, behaviour, new_tokens, seeds)
    rows.append(Step(0, 0.0, dense_ppl, 0.0, b, samples))
    tell(SweepProgress(len(rows), total, 0, rows[-1], eta()))
    for amount in steps:
        tell(SweepProgress(len(rows), total, amount, None, eta()))
        pruner.apply(step_plan(granularity, amount))
        ppl = M.perplexity(model, tokenizer, windows)
        b, samples = behaviour_of(model, tokenizer, prompts, behaviour, new_tokens, seeds)
        rows.append(Step(amount, pruner.achieved_sparsity(), ppl, ppl / dense_ppl - 1, b, samples))
        tell(SweepProgress(len(rows), total, amount, rows[-1], eta()))
    pruner.use_pruned(False)
    return rows


def measured_on(record: dict) -> tuple[str, str]:
    """What a sweep's behaviour and its perplexity cost were measured on, in words (tables, plots, panes)."""
    where = record.get("measure_on") or "held-out"
    prompts = f"prompts of {record['prompts_from']}" if record.get("prompts_from") else f"{where} contrastive prompts"
    return prompts, f"{where} reference text"


def choose(rows: list[Step], behaviour: str, bound: float) -> Step | None:
    """The strongest correction among the steps whose perplexity cost is within the bound (None: none improves)."""
    best = rows[0]
    for r in rows[1:]:
        if r.cost <= bound and better(behaviour, r.behaviour, best.behaviour):
            best = r
    return None if best is rows[0] else best
