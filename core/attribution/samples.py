"""The batches a scoring run reads, chosen from a prompt set by the scoring settings."""

from __future__ import annotations

import random
from dataclasses import replace

from core.attribution.unwanted import UNWANTED_IN, explained_tokens
from core.data.prompt_sets import PromptSet
from core.data.tokens import Batch, batch_sequences, encode, encode_each, pad_id, task_batches
from core.errors import WorkbenchError
from core.evaluation.generation import greedy_batch
from core.evaluation.metrics import TOXIC, toxicity_probs
from core.model.loading import LoadedModel
from core.settings import GenerationConfig, ScoreConfig

DRAW_SEEDS = 1000  # sampling seeds of scoring draws start here: correct's evaluation samples with seeds 0, 1, 2 ...


class NothingUnwanted(WorkbenchError):
    """--explain unwanted on a prompt set none of whose scored samples shows the unwanted behaviour."""


def pick_samples(items: list, n: int, seed: int) -> list:
    """n items chosen by `seed` (all of them, in order, when n covers the set and seed is 0)."""
    if n >= len(items) and seed == 0:
        return list(items)
    return random.Random(seed).sample(items, min(n, len(items)))


def undrawn(items: list, n: int, seed: int) -> list:
    """The items pick_samples(items, n, seed) leaves out, in order: what a score never saw (validation data)."""
    if n >= len(items) and seed == 0:
        return []
    # random.sample chooses positions from the population's length alone, so this draws the same ones
    picked = set(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    return [x for i, x in enumerate(items) if i not in picked]


def scoring_batches(lm: LoadedModel, ps: PromptSet, cfg: ScoreConfig, per_pass: int, notes: dict | None = None,
                    drawn: dict | None = None) -> list[Batch]:
    """Batches to score: task items with their answers, otherwise token sequences (see scoring_sequences).

    `drawn`: sampled draws kept between the sets of one score (see rated_draws).
    """
    if ps.kind == "task":
        return task_batches(lm.tokenizer, pick_samples(ps.task_score, cfg.samples, cfg.seed), cfg.seq_len, per_pass)
    seqs, starts = scored_sequences(lm, ps, cfg, notes, drawn)
    how = cfg.continuation_for(ps.spec)
    explain = cfg.explain or "all"  # not resolved (Workbench.score resolves it): the default without a contrast
    marks = explained_tokens(lm.tokenizer, seqs, starts, explain, how)
    if marks is not None and explain == "unwanted" and how in UNWANTED_IN:
        # a sample with nothing unwanted in it explains nothing: skip its passes
        kept = [(s, m) for s, m in zip(seqs, marks) if any(m[1:])]
        if notes is not None:
            notes["explained"] = {"samples": len(kept), "of": len(seqs), "tokens": sum(sum(m[1:]) for _, m in kept)}
        if not kept:
            raise NothingUnwanted(f"no scoring sample of {ps.spec} shows the unwanted behaviour, so --explain unwanted has "
                                 "nothing to explain; use more --samples or --draws, or --explain continuation")
        seqs, marks = [s for s, _ in kept], [m for _, m in kept]
    return batch_sequences(seqs, pad_id(lm.tokenizer), per_pass, explained=marks)


def scoring_sequences(lm: LoadedModel, ps: PromptSet, cfg: ScoreConfig, notes: dict | None = None) -> list[list[int]]:
    """Token sequences to score, by the set's kind (see PromptSet); `notes` gets what the user should know of them."""
    return scored_sequences(lm, ps, cfg, notes)[0]


def scored_sequences(lm: LoadedModel, ps: PromptSet, cfg: ScoreConfig, notes: dict | None = None,
                     drawn: dict | None = None) -> tuple[list[list[int]], list[int]]:
    """The sequences of scoring_sequences and, for each, where the model's own continuation starts (0: none)."""
    tok = lm.tokenizer
    if ps.kind == "text":
        windows = pick_samples(ps.windows(tok, "score", cfg.seq_len), cfg.samples, cfg.seed)
        return windows, [0] * len(windows)
    chosen = pick_samples(ps.score, cfg.samples, cfg.seed)
    if ps.kind != "prompts" or cfg.continuation <= 0:
        seqs = encode_each(tok, chosen, cfg.seq_len)
        return seqs, [0] * len(seqs)
    how = cfg.continuation_for(ps.spec)
    if how in ("most-toxic", "least-toxic"):
        conts, probs = rated_draws(lm, chosen, cfg.continuation, cfg.draws, cfg.seed, worst=how == "most-toxic", drawn=drawn)
        if notes is not None:  # does the set elicit the behaviour? (if few are offensive, the contrast explains little)
            notes["continuations"] = {"by": how, "draws": cfg.draws, "prompts": len(probs),
                                      "offensive": sum(p >= TOXIC for p in probs)}
    else:
        conts = greedy_batch(lm.model, tok, chosen, cfg.continuation, no_repeat=3 if how == "no-repeat" else 0)
    # Join token ids before dropping too-short sequences, so each prompt keeps its own continuation.
    prompts = [encode(tok, t) for t in chosen]
    joined = [((p + c)[: cfg.seq_len], min(len(p), cfg.seq_len)) for p, c in zip(prompts, conts)]
    kept = [(s, start) for s, start in joined if len(s) >= 2]
    return [s for s, _ in kept], [start for _, start in kept]


def rated_draws(lm: LoadedModel, prompts: list[str], new_tokens: int, draws: int, seed: int,
                worst: bool = True, drawn: dict | None = None) -> tuple[list[list[int]], list[float]]:
    """Per prompt, the most (`worst`) or least offensive of `draws` sampled continuations (token ids; the
    first draw wins ties), and its rating. Both choose among the same draws, so --pair clean contrasts two
    continuations the model itself sampled for one prompt; pass one `drawn` dict to both and they are
    generated once.

    Toxicity shows in what the model samples, seldom in its greedy text (builtin:toxicity's
    model is offensive in about one sample in six), so scoring the greedy continuation would
    mostly explain inoffensive text.
    """
    best: list[list[int]] = [[] for _ in prompts]
    sign = 1.0 if worst else -1.0
    best_p = [-2.0] * len(prompts)  # sign * rating: higher is the one to keep
    for conts, probs in _draws(lm, prompts, new_tokens, draws, seed, drawn):
        for i, (c, p) in enumerate(zip(conts, probs)):
            if sign * p > best_p[i]:
                best[i], best_p[i] = c, sign * p
    return best, [sign * p for p in best_p]


def _draws(lm: LoadedModel, prompts: list[str], new_tokens: int, draws: int, seed: int,
           drawn: dict | None) -> list[tuple[list[list[int]], list[float]]]:
    """The `draws` sampled continuations of every prompt and their ratings, one (continuations, ratings) per draw."""
    key = (tuple(prompts), new_tokens, draws, seed)
    if drawn is not None and key in drawn:
        return drawn[key]
    out = []
    for k in range(draws):
        sample = replace(GenerationConfig(), greedy=False, seed=DRAW_SEEDS + seed * draws + k)
        conts = greedy_batch(lm.model, lm.tokenizer, prompts, new_tokens, sample=sample)
        texts = [lm.tokenizer.decode([t for t in c if t != lm.tokenizer.eos_token_id], skip_special_tokens=True)
                 for c in conts]
        out.append((conts, toxicity_probs(texts)))
    if drawn is not None:
        drawn[key] = out
    return out
