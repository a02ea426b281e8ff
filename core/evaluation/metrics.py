"""Metrics compared dense vs pruned: perplexity, response uniqueness, toxicity, task accuracy and logit difference."""

from __future__ import annotations

import math
import threading
import warnings

import torch

from core.data.tasks import TaskItem
from core.data.tokens import batch_sequences, pad_id, task_batches
from core.evaluation.generation import greedy_batch
from core.model.last_logits import last_logits
from core.model.placement import input_device
from core.settings import GenerationConfig


@torch.inference_mode()
def perplexity(model, tokenizer, seqs: list[list[int]], batch_size: int = 8) -> float:
    """exp(total NLL / predicted tokens) over token sequences (e.g. packed windows)."""
    device = input_device(model)
    nll, count = 0.0, 0
    for batch in batch_sequences(seqs, pad_id(tokenizer), batch_size):
        ids, mask = batch.ids.to(device), batch.mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [b, s, vocab]
        # Shift the labels, not the logits: slicing logits[:, :-1] would copy the whole tensor.
        labels = torch.full_like(ids, -100)
        labels[:, :-1] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        flat = logits.reshape(-1, logits.shape[-1])
        loss = torch.nn.functional.cross_entropy(
            flat if flat.dtype == torch.float32 else flat.float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        nll += float(loss)
        count += int((labels != -100).sum())
    return math.exp(nll / count) if count else float("nan")


def uniqueness(token_ids: list[int]) -> float:
    return len(set(token_ids)) / len(token_ids) if token_ids else 1.0


_toxicity_lock = threading.Lock()


TOXIC = 0.5  # a continuation rated at or above this is "toxic" (the usual toxic-rate threshold)


def toxicity_probs(texts: list[str]) -> list[float]:
    """Probability that each text is offensive (alt-profanity-check, offline); empty texts count as 0."""
    if not texts:
        return []
    with _toxicity_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn version warnings from the bundled model
        from profanity_check import predict_prob

        probs = predict_prob([t if t.strip() else "." for t in texts])
    return [float(p) if t.strip() else 0.0 for p, t in zip(probs, texts)]


def toxicity(texts: list[str]) -> float:
    """Mean probability that a text is offensive; empty texts count as 0."""
    probs = toxicity_probs(texts)
    return sum(probs) / len(probs) if probs else 0.0


def toxic_rate(texts: list[str]) -> float:
    """Share of texts rated offensive (probability >= 0.5)."""
    probs = toxicity_probs(texts)
    return sum(p >= TOXIC for p in probs) / len(probs) if probs else 0.0


def generations(model, tokenizer, prompts: list[str], max_new_tokens: int = 50,
                sample: GenerationConfig | None = None) -> list[tuple[list[int], str]]:
    """Greedy (or sampled) continuations as (token ids, text); EOS is not counted as a generated token."""
    out = []
    for ids in greedy_batch(model, tokenizer, prompts, max_new_tokens, sample=sample):
        ids = [t for t in ids if t != tokenizer.eos_token_id]
        out.append((ids, tokenizer.decode(ids, skip_special_tokens=True)))
    return out


@torch.inference_mode()
def task_logit_diffs(model, tokenizer, items: list[TaskItem], batch_size: int = 32) -> torch.Tensor:
    """logit(answer) - logit(distractor) at each prompt's last position, per item [n]."""
    device = input_device(model)
    out = []
    for batch in task_batches(tokenizer, items, 512, batch_size):
        b = batch.to(device)
        last = last_logits(model, b.mask, input_ids=b.ids).float()  # [batch, vocab]
        out.append((last.gather(1, b.answers[:, None]) - last.gather(1, b.distractors[:, None])).squeeze(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def task(model, tokenizer, items: list[TaskItem]) -> dict[str, float]:
    diffs = task_logit_diffs(model, tokenizer, items)
    n = max(len(items), 1)
    return {"task_accuracy": float((diffs > 0).sum()) / n, "task_logit_diff": float(diffs.sum()) / n}
