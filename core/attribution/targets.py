"""The scalar a gradient-based scorer explains (`--target`), summed over real (non-pad) positions.

On text, position t explains token t+1. On a task set the scalar is the task's own:
the logit of the answer minus that of the distractor at the last prompt position (for
IOI: indirect object minus subject), not every next-token logit of the prompt. For `logit` only the logit of the actual next token is
needed, which is the last hidden state dotted with that token's row of the output
head: no [tokens, vocab] tensor at all. With Gemma 3's 262k-token vocabulary the full
logits of one 2048-token window take 2 GB, and their gradient as much again. Models
whose head is not a plain linear map (logit soft-capping, scaled logits) and the other
targets use the full logits.
"""

from __future__ import annotations

import torch
from torch import nn

from core.data.tokens import Batch
from core.model.placement import real_tensor

# model types whose logits are exactly `lm_head(last hidden state)` when these config fields are unset
_PLAIN_HEAD = {"llama", "qwen2", "qwen3", "gemma3_text", "gemma3", "gpt2", "opt", "mistral", "gpt_neox", "phi3"}
_HEAD_CHANGERS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def plain_head(model: nn.Module) -> nn.Linear | None:
    """The output head when the logits are exactly head(hidden), else None."""
    cfg = model.config
    head = model.get_output_embeddings()
    if getattr(cfg, "model_type", None) not in _PLAIN_HEAD or not isinstance(head, nn.Linear):
        return None
    if any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in _HEAD_CHANGERS):
        return None
    return head


def next_token_target(logits: torch.Tensor, batch: Batch, target: str) -> torch.Tensor:
    """From full logits [batch, seq, vocab], over the batch's explained positions."""
    logits = logits[:, :-1].float()  # [batch, seq-1, vocab]
    ids = batch.ids.to(logits.device)
    valid = batch.predicted().to(logits.device)  # [batch, seq-1]
    if target == "predicted":
        chosen = logits.detach().argmax(-1)
    else:
        chosen = ids[:, 1:]
    if target == "logprob":
        logits = torch.log_softmax(logits, dim=-1)
    picked = logits.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)  # [batch, seq-1]
    return picked[valid].sum()


def _head_tensors(head: nn.Linear, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head's weight and bias on the device of the hidden states (the head may sit on another GPU, or be offloaded)."""
    b = real_tensor(head, "bias")
    return real_tensor(head, "weight").to(device), None if b is None else b.to(device)


def task_target(hidden_or_logits: torch.Tensor, batch: Batch, head: nn.Linear | None) -> torch.Tensor:
    """Task sets: sum over samples of logit(answer) - logit(distractor) at each prompt's last position."""
    dev = hidden_or_logits.device
    rows = torch.arange(batch.size, device=dev)
    last = hidden_or_logits[rows, batch.mask.sum(1).to(dev) - 1].float()  # [batch, hidden or vocab]
    if head is None:
        return (last.gather(1, batch.answers[:, None].to(dev)) - last.gather(1, batch.distractors[:, None].to(dev))).sum()
    w, b = _head_tensors(head, last.device)
    answers, distractors = batch.answers.to(last.device), batch.distractors.to(last.device)
    direction = (w[answers] - w[distractors]).float()  # [batch, hidden]
    diff = (last * direction).sum(-1)
    if b is not None:
        diff = diff + (b[answers] - b[distractors]).float()
    return diff.sum()


def model_target(model: nn.Module, embeds: torch.Tensor, batch: Batch, target: str) -> torch.Tensor:
    """Run the model on `embeds` [batch, seq, hidden] and return the target, without full logits where it can.

    A task batch (answers given) explains the task's own logit difference, whatever `target` says.
    """
    ids, mask = batch.ids, batch.mask
    task = batch.answers is not None
    head = plain_head(model) if (target == "logit" or task) else None
    if task:
        if head is None:
            return task_target(model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits, batch, None)
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        return task_target(hidden, batch, head)
    if head is None:
        logits = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        return next_token_target(logits, batch, target)
    hidden = model.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    h = hidden[:, :-1]  # [batch, seq-1, hidden]
    valid = batch.predicted()  # [batch, seq-1]
    w, b = _head_tensors(head, hidden.device)
    nxt = ids[:, 1:][valid].to(hidden.device)
    rows = w[nxt]  # [tokens, hidden]: each next token's row of the head
    picked = (h[valid.to(hidden.device)].float() * rows.float()).sum(-1)
    if b is not None:
        picked = picked + b[nxt].float()
    return picked.sum()
