"""The batches a scoring run reads, chosen from a prompt set by the scoring settings."""

from __future__ import annotations

import random

from core.data.prompt_sets import PromptSet
from core.data.tokens import Batch, batch_sequences, encode, encode_each, pad_id, task_batches
from core.evaluation.generation import greedy_batch
from core.model.loading import LoadedModel
from core.settings import ScoreConfig


def pick_samples(items: list, n: int, seed: int) -> list:
    """n items chosen by `seed` (all of them, in order, when n covers the set and seed is 0)."""
    if n >= len(items) and seed == 0:
        return list(items)
    return random.Random(seed).sample(items, min(n, len(items)))


def scoring_batches(lm: LoadedModel, ps: PromptSet, cfg: ScoreConfig, per_pass: int) -> list[Batch]:
    """Batches to score: task items with their answers, otherwise token sequences (see scoring_sequences)."""
    if ps.kind == "task":
        return task_batches(lm.tokenizer, pick_samples(ps.task_score, cfg.samples, cfg.seed), cfg.seq_len, per_pass)
    return batch_sequences(scoring_sequences(lm, ps, cfg), pad_id(lm.tokenizer), per_pass)


def scoring_sequences(lm: LoadedModel, ps: PromptSet, cfg: ScoreConfig) -> list[list[int]]:
    """Token sequences to score, by the set's kind (see PromptSet)."""
    tok = lm.tokenizer
    if ps.kind == "text":
        return pick_samples(ps.windows(tok, "score", cfg.seq_len), cfg.samples, cfg.seed)
    chosen = pick_samples(ps.score, cfg.samples, cfg.seed)
    if ps.kind != "prompts" or cfg.continuation <= 0:
        return encode_each(tok, chosen, cfg.seq_len)
    conts = greedy_batch(lm.model, tok, chosen, cfg.continuation)
    # Join token ids before dropping too-short sequences, so each prompt keeps its own continuation.
    joined = [(encode(tok, t) + c)[: cfg.seq_len] for t, c in zip(chosen, conts)]
    return [s for s in joined if len(s) >= 2]
