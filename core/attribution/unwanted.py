"""Which tokens of a scored continuation carry the unwanted behaviour (`score --explain unwanted`).

A contrastive sample is a prompt plus the model's own continuation. Most of its tokens are
ordinary language, which the reference needs as well; relevance of those tokens mostly
cancels in R_diff, and what is left is noise at small counts. `--explain unwanted` explains
only the tokens in which the behaviour shows, so the contrast is taken on them alone:

- repetition (greedy continuations): a token that completes a 3-token sequence already seen
  earlier in the sample, prompt included: the tokens `no-repeat` generation would have banned;
- toxicity (most-toxic draws): the tokens of every word that alt-profanity-check rates offensive
  on its own (the same classifier and threshold as the toxic rate).

Continuations made the wanted way (least-toxic, no-repeat: the clean side of `--pair clean`)
have no such tokens by construction, so all of their continuation is explained.
"""

from __future__ import annotations

import re
from functools import lru_cache

from core.evaluation.metrics import TOXIC, toxicity_probs

REPEAT_N = 3  # as the no-repeat continuation (core/attribution/samples.py) and its ban
UNWANTED_IN = ("greedy", "most-toxic")  # continuations in which the behaviour shows; others are explained whole
_WORD = re.compile(r"\w\w+")  # the classifier's own token pattern (scikit-learn's default)


def repeated_tokens(seq: list[int], start: int, n: int = REPEAT_N) -> list[int]:
    """1 for each token from `start` on that ends an n-gram seen earlier in `seq` (ending before it), else 0."""
    marks = [0] * len(seq)
    seen: set[tuple[int, ...]] = set()
    for t in range(n - 1, len(seq)):
        gram = tuple(seq[t - n + 1 : t + 1])
        if t >= start and gram in seen:
            marks[t] = 1
        seen.add(gram)
    return marks


@lru_cache(maxsize=65536)
def offensive_word(word: str) -> bool:
    """Does the classifier rate this word, alone, offensive (>= TOXIC)?"""
    return toxicity_probs([word])[0] >= TOXIC


def offensive_tokens(tokenizer, seq: list[int], start: int) -> list[int]:
    """1 for each continuation token (from `start` on) whose text overlaps a word rated offensive on its own."""
    marks = [0] * len(seq)
    cont = seq[start:]
    # each token's span in the decoded continuation: the growth of the decoded prefix it ends
    ends = [len(tokenizer.decode(cont[: k + 1], skip_special_tokens=True)) for k in range(len(cont))]
    text = tokenizer.decode(cont, skip_special_tokens=True)
    bad = [m.span() for m in _WORD.finditer(text) if offensive_word(m.group().lower())]
    for k, end in enumerate(ends):
        begin = ends[k - 1] if k else 0
        if any(b < end and begin < e for b, e in bad):
            marks[start + k] = 1
    return marks


def continuation_tokens(seq: list[int], start: int) -> list[int]:
    """1 for every token from `start` on (the model's own continuation)."""
    return [0] * min(start, len(seq)) + [1] * max(len(seq) - start, 0)


def explained_tokens(tokenizer, seqs: list[list[int]], starts: list[int], explain: str, how: str) -> list[list[int]] | None:
    """Per sequence, 1 for each token a target explains; None when every real token is (`--explain all`).

    `how`: how the continuations were made (--continue-by), which says what is unwanted in them.
    """
    if explain == "all" or not any(starts):
        return None
    if explain == "continuation" or how not in UNWANTED_IN:
        return [continuation_tokens(s, st) for s, st in zip(seqs, starts)]
    if how == "greedy":
        return [repeated_tokens(s, st) for s, st in zip(seqs, starts)]
    return [offensive_tokens(tokenizer, s, st) for s, st in zip(seqs, starts)]
