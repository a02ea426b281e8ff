"""What every scorer shares: the accumulator state, the batch loop, progress and cancel.

A score is a sum over samples; it is stored with the number of samples, so a run that
was interrupted can resume and the mean is exact. Accumulators are fp32 whatever the
model dtype, and stored as [out, in] for every layer (Conv1D included).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from core.catalog import CATALOG
from core.errors import WorkbenchError
from core.layers import Prunable

SCORERS = CATALOG["scorers"]
TARGETS = CATALOG["targets"]


@dataclass
class ScoreState:
    """Summed scores [out, in] per layer and how many samples (and tokens) went into them."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0

    def mean(self) -> dict[str, torch.Tensor]:
        n = max(self.samples, 1)
        return {k: v / n for k, v in self.sums.items()}


@dataclass
class Progress:
    samples_done: int
    samples_total: int
    tokens_per_s: float
    eta_s: float


ProgressFn = Callable[[Progress], None]


def run_scorer(
    scorer: str,
    model: torch.nn.Module,
    layers: list[Prunable],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    target: str = "logit",
    variant: str = "attnlrp",
    aggregate: str = "abs-sample",
    seed: int = 0,
    state: ScoreState | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    checkpoint: Callable[[ScoreState], None] | None = None,
) -> ScoreState:
    """Run one scorer over the batches not yet in `state`; stops cleanly between batches on cancel."""
    from core.scorers import gradient, lrp, magnitude, random_scores, wanda

    if scorer not in SCORERS:
        raise WorkbenchError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    if target not in TARGETS:
        raise WorkbenchError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    state = state or ScoreState()
    if scorer == "magnitude":
        return magnitude.score(layers)
    if scorer == "random":
        return random_scores.score(layers, seed)
    total = sum(int(b[0].shape[0]) for b in batches)
    step = {
        "wanda": lambda ids, mask: wanda.accumulate(model, layers, ids, mask, state),
        "gradient": lambda ids, mask: gradient.accumulate(model, layers, ids, mask, state, target, aggregate),
        "lrp": lambda ids, mask: lrp.accumulate(model, layers, ids, mask, state, target, variant, aggregate),
    }[scorer]
    device = next(model.parameters()).device
    seen = 0
    start, tokens_run, samples_at_start = time.perf_counter(), 0, state.samples
    last_checkpoint = start
    for ids, mask in batches:
        n = int(ids.shape[0])
        if seen + n <= state.samples:  # resumed: this batch is already in the sums
            seen += n
            continue
        if cancel is not None and cancel.is_set():
            break
        step(ids.to(device), mask.to(device))
        seen += n
        state.samples += n
        state.tokens += int(mask.sum())
        tokens_run += int(mask.sum())
        if progress is not None:
            elapsed = time.perf_counter() - start
            per_sample = elapsed / (state.samples - samples_at_start)
            progress(Progress(state.samples, total, tokens_run / max(elapsed, 1e-9), per_sample * (total - state.samples)))
        if checkpoint is not None and time.perf_counter() - last_checkpoint > 30:
            checkpoint(state)
            last_checkpoint = time.perf_counter()
    if scorer == "wanda" and state.samples >= total:  # an interrupted run keeps its raw sums to resume
        return wanda.finish(layers, state)
    if scorer in ("lrp", "gradient") and state.samples:
        # Layers no relevance reaches (CP-LRP stops it at q/k projections and MLP gates) score zero.
        for p in layers:
            if p.name not in state.sums:
                state.sums[p.name] = torch.zeros(p.shape)
    return state


def unscored_layers(state: ScoreState) -> list[str]:
    return [name for name, s in state.sums.items() if not bool(s.any())]


def next_token_target(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, target: str) -> torch.Tensor:
    """The scalar being explained, summed over real (non-pad) positions.

    logits [batch, seq, vocab]; ids, mask [batch, seq]. Position t explains token t+1.
    """
    logits = logits[:, :-1].float()  # [batch, seq-1, vocab]
    valid = (mask[:, 1:] * mask[:, :-1]).bool()  # [batch, seq-1]
    if target == "predicted":
        chosen = logits.detach().argmax(-1)
    else:
        chosen = ids[:, 1:]
    if target == "logprob":
        logits = torch.log_softmax(logits, dim=-1)
    picked = logits.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)  # [batch, seq-1]
    return picked[valid].sum()
