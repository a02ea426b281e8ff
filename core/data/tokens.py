"""Token sequences from text: one per prompt, or documents packed into fixed windows; padded batches.

Every sequence the workbench scores, evaluates or generates from starts the way the
model's own tokenizer starts a text: with BOS where the tokenizer puts one there
(Gemma, Llama; as lm-eval and Wanda's loaders get it), so a window cut from the middle
of a stream starts where the model expects. Gemma-family models are lost without it
(Gemma 3 270M: perplexity about 390 on English prose without, 31-43 with). A tokenizer
that names a BOS token but never puts it first is followed too: SmolLM2's "BOS" is the
chat-turn marker <|im_start|>, which leaves perplexity as it is (58.06 vs 58.01 on
fortunes windows) but turns a plain prompt into a chat turn (the repetition prompts
stop repeating). Text is tokenized without special tokens and the prefix is added
here, so it is there exactly once whatever the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import WorkbenchError


def _check_seq_len(seq_len: int) -> None:
    if seq_len < 2:
        raise WorkbenchError("--seq-len must be at least 2 (one token to read, one to predict)")


def bos_prefix(tokenizer) -> list[int]:
    """The tokens the tokenizer itself puts before a text ([BOS] for Gemma and Llama, nothing for SmolLM2, GPT-2)."""
    probe = "a"
    full = list(tokenizer(probe)["input_ids"])
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []


def encode(tokenizer, text: str) -> list[int]:
    """A prompt's token ids, BOS first (see the module docstring)."""
    return bos_prefix(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_each(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
    """One token sequence per text, BOS first, cut to seq_len."""
    _check_seq_len(seq_len)
    seqs = [encode(tokenizer, t)[:seq_len] for t in texts]
    return [s for s in seqs if len(s) >= 2]


def pack_windows(tokenizer, texts: list[str], seq_len: int, min_tail: int = 16) -> list[list[int]]:
    """Concatenate documents (EOS between them), cut the stream into windows, each BOS first and seq_len long."""
    _check_seq_len(seq_len)
    prefix = bos_prefix(tokenizer)
    step = seq_len - len(prefix)
    if step < 1:
        raise WorkbenchError(f"--seq-len {seq_len} leaves no room after the BOS token; give at least {len(prefix) + 2}")
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"]
        if eos is not None:
            stream.append(eos)
    windows = [prefix + stream[i : i + step] for i in range(0, len(stream), step)]
    if len(windows) > 1 and len(windows[-1]) - len(prefix) < min(min_tail, step):
        windows.pop()
    return [w for w in windows if len(w) - len(prefix) >= 1 and len(w) >= 2]


@dataclass
class Batch:
    """Right-padded token ids and their mask; task batches also carry each sample's answer and distractor."""

    ids: torch.Tensor  # [batch, seq]
    mask: torch.Tensor  # [batch, seq], 1 for real tokens
    answers: torch.Tensor | None = None  # [batch] first token of the right answer
    distractors: torch.Tensor | None = None  # [batch] first token of the distractor
    explained: torch.Tensor | None = None  # [batch, seq], 1 for tokens a target explains (None: every real token)
    corrupted: torch.Tensor | None = None  # [batch, seq] task batches: each prompt's corrupted counterpart, aligned

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    def predicted(self) -> torch.Tensor:
        """[batch, seq-1] bool: position t's next token (t+1) is real, follows a real token, and is explained."""
        keep = self.mask[:, 1:] * self.mask[:, :-1]
        if self.explained is not None:
            keep = keep * self.explained[:, 1:].to(keep.device)
        return keep.bool()

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.ids), move(self.mask), move(self.answers), move(self.distractors), move(self.explained),
                     move(self.corrupted))


def batch_sequences(seqs: list[list[int]], pad_id: int, batch_size: int,
                    answers: list[int] | None = None, distractors: list[int] | None = None,
                    explained: list[list[int]] | None = None) -> list[Batch]:
    """Right-padded batches of `batch_size` sequences (with their answers and distractors, for tasks).

    `explained`: per sequence, 1 for each token a target explains (the others are only read).
    """
    batches = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(e) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(chunk):
            ids[row, : len(e)] = torch.tensor(e)
            mask[row, : len(e)] = 1
        task = (torch.tensor(answers[i : i + batch_size]), torch.tensor(distractors[i : i + batch_size])) if answers else (None, None)
        marks = None
        if explained is not None:
            marks = torch.zeros_like(mask)
            for row, m in enumerate(explained[i : i + batch_size]):
                marks[row, : len(m)] = torch.tensor(m, dtype=mask.dtype)
        batches.append(Batch(ids, mask, *task, marks))
    return batches


def answer_token(tokenizer, word: str) -> int:
    """The token a task's answer starts with, as it follows the prompt (after a space)."""
    return tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]


def task_batches(tokenizer, items, seq_len: int, batch_size: int) -> list[Batch]:
    """Prompts (BOS first, cut to seq_len) with each item's answer and distractor token, and its corrupted
    counterpart position by position (the prompt itself where it has none or tokenizes to another length, so
    that item shows no difference)."""
    seqs = [encode(tokenizer, it.prompt)[-seq_len:] for it in items]
    batches = batch_sequences(seqs, pad_id(tokenizer), batch_size,
                              [answer_token(tokenizer, it.answer) for it in items],
                              [answer_token(tokenizer, it.distractor) for it in items])
    if any(getattr(it, "corrupted", None) for it in items):
        counter = [encode(tokenizer, it.corrupted)[-seq_len:] if it.corrupted else s for it, s in zip(items, seqs)]
        counter = [c if len(c) == len(s) else s for c, s in zip(counter, seqs)]
        for b, c in zip(batches, batch_sequences(counter, pad_id(tokenizer), batch_size)):
            b.corrupted = c.ids
    return batches


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
