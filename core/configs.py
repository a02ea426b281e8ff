"""Settings of the engine's jobs (model, scoring, evaluation) and the token sequences scoring uses.

Plain dataclasses stored in the session manifest as JSON; `core.engine` re-exports them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.errors import WorkbenchError
from core.generation import greedy_batch
from core.models import LoadedModel
from core.prompts import PromptSet, encode_each
from core.ranking import NORMALIZATIONS, REDUCTIONS, aggregation
from core.scorers import SCORERS


@dataclass
class ModelSpec:
    source: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclass
class ScoreConfig:
    reference: str = "builtin:general"
    contrastive: str | None = None
    scorer: str = "lrp"
    samples: int = 16
    seq_len: int = 128
    batch_size: int = 8
    target: str = "logit"
    variant: str = "attnlrp"
    seed: int = 0
    reduce: str | None = None  # None: abs-sample for compression, abs with a contrastive set (measured best)
    normalize: str = "rank"
    continuation: int = 32  # prompt sets: tokens of the model's own greedy continuation to score

    def __post_init__(self) -> None:
        if self.reduce is None:
            self.reduce = "abs" if self.contrastive else "abs-sample"

    def check(self) -> None:
        if self.scorer not in SCORERS:
            raise WorkbenchError(f"unknown scorer {self.scorer!r}; choose one of {', '.join(SCORERS)}")
        if self.samples < 1 or self.seq_len < 2 or self.batch_size < 1:
            raise WorkbenchError("--samples and --batch-size must be >= 1 and --seq-len >= 2")
        if self.reduce not in REDUCTIONS:
            raise WorkbenchError(f"unknown --reduce {self.reduce!r}; choose one of {', '.join(REDUCTIONS)}")
        if self.normalize not in NORMALIZATIONS:
            raise WorkbenchError(f"unknown --normalize {self.normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")

    def key(self, which: str, model: str) -> dict:
        """What the summed scores depend on; the same key means the cached sums are reusable."""
        spec = self.reference if which == "reference" else self.contrastive
        return {"model": model, "spec": spec, "scorer": self.scorer, "samples": self.samples, "seq_len": self.seq_len,
                "target": self.target, "variant": self.variant if self.scorer == "lrp" else None, "seed": self.seed,
                "continuation": self.continuation,
                "aggregate": aggregation(self.reduce) if self.scorer in ("lrp", "gradient") else None}


@dataclass
class EvalConfig:
    eval_data: str | None = None  # default: the session's reference set
    metrics: tuple[str, ...] | None = None  # default: perplexity, uniqueness, toxicity (+ IOI on ioi sets)
    samples: int | None = None  # evaluation samples for perplexity (default: all)
    seq_len: int | None = None  # default: the session's scoring seq_len
    gen_prompts: int = 8
    max_new_tokens: int = 50


def pick_samples(items: list, n: int, seed: int) -> list:
    """n items chosen by `seed` (all of them, in order, when n covers the set and seed is 0)."""
    if n >= len(items) and seed == 0:
        return list(items)
    return random.Random(seed).sample(items, min(n, len(items)))


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
    joined = [(tok(t)["input_ids"] + c)[: cfg.seq_len] for t, c in zip(chosen, conts)]
    return [s for s in joined if len(s) >= 2]
