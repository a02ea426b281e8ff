"""The scalar a gradient-based scorer explains (`--target`)."""

from __future__ import annotations

import torch


def next_token_target(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, target: str) -> torch.Tensor:
    """The target summed over real (non-pad) positions.

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
