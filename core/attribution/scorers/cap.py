"""CAP, causal attribution pruning (arXiv 2606.19350): each attention head scored by what removing it costs.

For every head, the calibration batch is run with that head's output zeroed (its slice of
the output projection's input), and the damage is measured: on text the increase of the
mean next-token loss, on a task set the drop of the task's logit difference. Scores are
summed per sample, so they resume and average like every scorer's.

Speed: one clean forward pass per batch caches every decoder block's output. A head in
block b then needs only blocks b, b+1, ...: the blocks before it return their cached
outputs (their forward is swapped for the cache for the duration), so a head costs on
average half a forward pass, not a whole one. The clean pass also collects Wanda's
statistics (sum of x^2 per input channel), which the weight scores are built from.

From head scores to weight scores (the ranking every granularity uses):
  scaled (default)  |w| ||x|| (Wanda's score) times the head's importance divided by the
                    mean importance over heads (negative importance counts as zero), for
                    the head's query/key/value rows and output columns; key/value rows
                    shared by several query heads (GQA) take their group's mean
  MLP and every other weight keep Wanda's score unscaled: CAP says nothing about them,
  which is why it is strongest at low sparsity, where heads are what gets pruned.
The head scores themselves are kept with the ranking, so `--granularity head` ranks heads
by their causal effect directly (see core/pruning/ranking.py, `Ranking.units`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.model.last_logits import last_logits
from core.model.layers import Prunable, block_prefix, weight_view
from core.model.units import Unit, heads

HEADS = "@head"  # the key of the per-head damage sums in the state


def _sq_hooks(layers: list[Prunable], keep: torch.Tensor, sums: dict[str, torch.Tensor]):
    """Forward hooks collecting each prunable layer's sum of x^2 per input channel over real tokens."""

    def hook_for(p: Prunable):
        def hook(_module, inputs, _output):
            x = inputs[0].reshape(keep.shape[0], -1, inputs[0].shape[-1])[keep.to(inputs[0].device)].float()
            sums[p.name] = (x * x).sum(0)

        return hook

    return [p.module.register_forward_hook(hook_for(p)) for p in layers]


def per_sample_metric(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Higher is better, per sample [batch]: the task's logit difference, or minus the mean next-token loss."""
    if batch.answers is not None:
        last = last_logits(model, batch.mask, input_ids=batch.ids).float()
        batch = batch.to(last.device)
        return (last.gather(1, batch.answers[:, None]) - last.gather(1, batch.distractors[:, None])).squeeze(1)
    logits = model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False).logits
    batch = batch.to(logits.device)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, batch.ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    valid = batch.predicted().float()
    return (logp * valid).sum(1) / valid.sum(1).clamp(min=1)


def blocks(model: nn.Module, layers: list[Prunable]) -> dict[int, nn.Module]:
    return {p.block: model.get_submodule(block_prefix(p)) for p in layers}


@contextmanager
def cached_blocks(modules: list[nn.Module], outputs: list[object]) -> Iterator[None]:
    """These blocks return their cached outputs instead of computing (their inputs are ignored)."""
    saved = [m.__dict__.get("forward") for m in modules]  # an instance-level forward (accelerate's hooks) is kept
    for m, out in zip(modules, outputs):
        m.forward = lambda *args, _out=out, **kwargs: _out
    try:
        yield
    finally:
        for m, own in zip(modules, saved):
            if own is None:
                del m.forward  # back to the class's own forward
            else:
                m.forward = own


@contextmanager
def head_zeroed(module: nn.Module, start: int, stop: int) -> Iterator[None]:
    """Zero columns start:stop of the input of the head's output projection."""

    def pre(_module, args):
        x = args[0].clone()
        x[..., start:stop] = 0
        return (x,) + tuple(args[1:])

    handle = module.register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


def _out_part(u: Unit):
    return next(part for part in u.parts if part.axis == "col")


@torch.no_grad()
def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    units = heads(model, layers)
    by_name = {p.name: p for p in layers}
    mods = blocks(model, layers)
    order = sorted(mods)
    outputs: dict[int, object] = {}
    capture = [mods[b].register_forward_hook(lambda _m, _i, out, b=b: outputs.__setitem__(b, out)) for b in order]
    sq: dict[str, torch.Tensor] = {}
    hooks = _sq_hooks(layers, batch.mask.bool(), sq)
    try:
        clean = per_sample_metric(model, batch)  # [batch]
    finally:
        for h in capture + hooks:
            h.remove()
    damage = torch.zeros(len(units), dtype=torch.float32)
    for i, u in enumerate(units):
        part = _out_part(u)
        earlier = [b for b in order if b < u.block]
        with cached_blocks([mods[b] for b in earlier], [outputs[b] for b in earlier]), \
                head_zeroed(by_name[part.layer].module, part.start, part.stop):
            damage[i] = (clean - per_sample_metric(model, batch)).sum().cpu()
    for name, s in sq.items():  # committed once every head has run (a cancel leaves nothing half-added)
        state.add(name, s)
    state.add(HEADS, damage)


def head_importance(state: ScoreState) -> torch.Tensor:
    """Mean damage per sample, per head (higher = the head matters more)."""
    return state.sums[HEADS] / max(state.samples, 1)


def weight_scores(model, layers: list[Prunable], state: ScoreState, importance: torch.Tensor) -> dict[str, torch.Tensor]:
    """Wanda's score, scaled on each head's rows and columns by its importance relative to the mean (see above)."""
    units = heads(model, layers)
    pos = importance.clamp(min=0)
    scale = pos / pos.mean().clamp(min=1e-12)  # [heads]
    out = {p.name: weight_view(p).detach().abs().float().to(state.sums[p.name].device) * state.sums[p.name].sqrt().unsqueeze(0) for p in layers}
    groups: dict[tuple[int, int], list[float]] = {}
    for u, f in zip(units, scale.tolist()):
        groups.setdefault((u.block, u.group), []).append(f)
    for u, f in zip(units, scale.tolist()):
        for part in u.parts:
            view = out[part.layer][part.start : part.stop] if part.axis == "row" else out[part.layer][:, part.start : part.stop]
            view.mul_(f)
    done: set[tuple[str, int]] = set()
    for u in units:
        shared = groups[(u.block, u.group)]
        for part in u.shared:
            if (part.layer, part.start) not in done:
                done.add((part.layer, part.start))
                out[part.layer][part.start : part.stop].mul_(sum(shared) / len(shared))
    return out


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return weight_scores(model, layers, state, head_importance(state))


def finish_units(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return {"head": head_importance(state)}
