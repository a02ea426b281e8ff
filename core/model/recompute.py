"""Activation checkpointing for scoring: each decoder block's activations are recomputed in the
backward pass instead of kept from the forward pass.

A backward pass through a long window keeps every block's activations, the attention maps
above all (layers x heads x seq^2 values), so scoring memory grows with the square of the
window. Wrapped in a non-reentrant `torch.utils.checkpoint`, a block keeps only its input
and what the scorers' own hooks hold (each prunable layer's input, needed for its
relevance), and re-runs its forward pass when the backward pass reaches it: about one
more forward pass of time for a fraction of the memory.

The scorers' hooks see the first forward pass as usual; the recomputed pass only refills
saved tensors and its outputs receive no gradient, so its hooks never add anything (the
sums are the same with and without, tests/test_scorers.py).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.model.layers import Prunable, block_prefix

AUTO_FROM_TOKENS = 1024  # windows at least this long are scored with recomputation


def recompute_wanted(mode: str, seq_len: int) -> bool:
    """`--recompute on|off|auto` for windows of seq_len tokens (auto: from AUTO_FROM_TOKENS on)."""
    return mode == "on" or (mode == "auto" and seq_len >= AUTO_FROM_TOKENS)


def _checkpointed(inner, *args, **kwargs):
    if not torch.is_grad_enabled():
        return inner(*args, **kwargs)
    return checkpoint(inner, *args, use_reentrant=False, **kwargs)


@contextmanager
def recomputed_blocks(model: nn.Module, layers: list[Prunable], on: bool = True) -> Iterator[None]:
    """Every decoder block that holds prunable layers is checkpointed for the duration of the block."""
    if not on:
        yield
        return
    blocks = [model.get_submodule(name) for name in sorted({block_prefix(p) for p in layers})]
    saved = [b.__dict__.get("forward") for b in blocks]  # an instance-level forward (accelerate's hooks) is kept
    for b in blocks:
        b.forward = functools.partial(_checkpointed, b.forward)
    try:
        yield
    finally:
        for b, own in zip(blocks, saved):
            if own is None:
                del b.forward
            else:
                b.forward = own
