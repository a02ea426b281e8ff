"""Token-by-token generation with a KV cache, so callers can stream (and cancel, see core/model/interrupt.py)."""

from __future__ import annotations

from typing import Iterator

import torch

from core.data.tokens import encode
from core.model.placement import input_device
from core.settings import GenerationConfig


@torch.no_grad()
def stream_tokens(model, tokenizer, prompt: str, config: GenerationConfig = GenerationConfig()) -> Iterator[tuple[int, str]]:
    """Yield (token_id, text_piece) for each new token; stops at EOS or the budget."""
    device = input_device(model)
    ids = torch.tensor([encode(tokenizer, prompt)], device=device)  # [1, prompt_len], BOS first
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    past = None
    step_input = ids
    generated: list[int] = []
    shown = ""
    eos = tokenizer.eos_token_id
    for _ in range(config.max_new_tokens):
        out = model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()  # [vocab]
        if config.greedy:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / max(config.temperature, 1e-5), dim=-1).cpu()
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < config.top_p
            sorted_p = sorted_p * keep
            token = int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        piece, shown = text[len(shown) :], text
        yield token, piece
        if token == eos:
            return
        step_input = torch.tensor([[token]], device=device)


def generate(model, tokenizer, prompt: str, config: GenerationConfig = GenerationConfig()) -> tuple[list[int], str]:
    """Generated token ids and text (prompt excluded)."""
    ids, text = [], ""
    for token, piece in stream_tokens(model, tokenizer, prompt, config):
        ids.append(token)
        text += piece
    return ids, text


@torch.no_grad()
def greedy_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                 sample: GenerationConfig | None = None, no_repeat: int = 0) -> list[list[int]]:
    """Continuations for many prompts at once (left-padded batches); ids stop at EOS.

    Greedy, or sampled with `sample`'s temperature, top-p and seed (the seed fixes the draws);
    `no_repeat` > 0 never repeats a sequence of that many tokens (prompt included).
    """
    device = input_device(model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    results: list[list[int]] = []
    if sample is not None:
        torch.manual_seed(sample.seed)
    decoding = (dict(do_sample=True, temperature=sample.temperature, top_p=sample.top_p, top_k=0) if sample is not None
                else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
    for i in range(0, len(prompts), batch_size):
        encoded = [encode(tokenizer, p) for p in prompts[i : i + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
            pad_token_id=pad, eos_token_id=eos, **decoding, **({"no_repeat_ngram_size": no_repeat} if no_repeat else {}),
        )[:, width:].tolist()
        for row in out:
            if eos in row:
                row = row[: row.index(eos) + 1]
            results.append(row)
    return results
