"""Token sequences from text: one per prompt, or documents packed into fixed windows; padded batches."""

from __future__ import annotations

import torch

from core.errors import WorkbenchError


def _check_seq_len(seq_len: int) -> None:
    if seq_len < 2:
        raise WorkbenchError("--seq-len must be at least 2 (one token to read, one to predict)")


def encode_each(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
    """One token sequence per text, cut to seq_len."""
    _check_seq_len(seq_len)
    seqs = [tokenizer(t, add_special_tokens=True)["input_ids"][:seq_len] for t in texts]
    return [s for s in seqs if len(s) >= 2]


def pack_windows(tokenizer, texts: list[str], seq_len: int, min_tail: int = 16) -> list[list[int]]:
    """Concatenate documents (EOS between them) and cut the stream into seq_len windows."""
    _check_seq_len(seq_len)
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for t in texts:
        stream += tokenizer(t, add_special_tokens=True)["input_ids"]
        if eos is not None:
            stream.append(eos)
    windows = [stream[i : i + seq_len] for i in range(0, len(stream), seq_len)]
    if len(windows) > 1 and len(windows[-1]) < min(min_tail, seq_len):
        windows.pop()
    return [w for w in windows if len(w) >= 2]


def batch_sequences(
    seqs: list[list[int]], pad_id: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids [batch, seq], attention_mask [batch, seq]) batches."""
    batches = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(e) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(chunk):
            ids[row, : len(e)] = torch.tensor(e)
            mask[row, : len(e)] = 1
        batches.append((ids, mask))
    return batches


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
