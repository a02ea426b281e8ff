"""The logits at each sequence's last real token, without projecting every position onto the vocabulary."""

from __future__ import annotations

import inspect

import torch


def last_logits(model, attention_mask: torch.Tensor, **inputs) -> torch.Tensor:
    """[batch, vocab] logits at each row's last real token (right padding). Task metrics need only these, and the
    vocabulary projection of every position is a fifth of a small model's forward pass: transformers' models
    take `logits_to_keep` as positions per row; a model that does not is projected whole."""
    last = attention_mask.sum(1) - 1
    if "logits_to_keep" in inspect.signature(getattr(model, "forward", model)).parameters:
        keep = last.to(attention_mask.device).unsqueeze(1)
        return model(attention_mask=attention_mask, logits_to_keep=keep, use_cache=False, **inputs).logits[:, 0]
    logits = model(attention_mask=attention_mask, use_cache=False, **inputs).logits
    return logits[torch.arange(logits.shape[0], device=logits.device), last.to(logits.device)]
