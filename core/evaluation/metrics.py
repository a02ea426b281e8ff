"""Metrics compared dense vs pruned: perplexity, response uniqueness, toxicity, IOI."""

from __future__ import annotations

import math
import threading
import warnings

import torch

from core.data.prompt_sets import IOIItem
from core.data.tokens import batch_sequences, encode, pad_id
from core.evaluation.generation import greedy_batch


@torch.inference_mode()
def perplexity(model, tokenizer, seqs: list[list[int]], batch_size: int = 8) -> float:
    """exp(total NLL / predicted tokens) over token sequences (e.g. packed windows)."""
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for ids, mask in batch_sequences(seqs, pad_id(tokenizer), batch_size):
        ids, mask = ids.to(device), mask.to(device)
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


def toxicity(texts: list[str]) -> float:
    """Mean probability that a text is offensive; empty texts count as 0."""
    if not texts:
        return 0.0
    with _toxicity_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn version warnings from the bundled model
        from profanity_check import predict_prob

        probs = predict_prob([t if t.strip() else "." for t in texts])
    return float(sum(float(p) for p, t in zip(probs, texts) if t.strip()) / len(texts))


def generations(model, tokenizer, prompts: list[str], max_new_tokens: int = 50) -> list[tuple[list[int], str]]:
    """Greedy continuations as (token ids, text); EOS is not counted as a generated token."""
    out = []
    for ids in greedy_batch(model, tokenizer, prompts, max_new_tokens):
        ids = [t for t in ids if t != tokenizer.eos_token_id]
        out.append((ids, tokenizer.decode(ids, skip_special_tokens=True)))
    return out


def _first_token(tokenizer, word: str) -> int:
    return tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]


@torch.inference_mode()
def ioi(model, tokenizer, items: list[IOIItem]) -> dict[str, float]:
    device = next(model.parameters()).device
    correct, diffs = 0, []
    for item in items:
        ids = torch.tensor([encode(tokenizer, item.prompt)], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
        diff = float(logits[_first_token(tokenizer, item.io)] - logits[_first_token(tokenizer, item.s)])
        diffs.append(diff)
        correct += diff > 0
    n = max(len(items), 1)
    return {"ioi_accuracy": correct / n, "ioi_logit_diff": sum(diffs) / n}
