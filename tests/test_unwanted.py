"""score --explain unwanted: only the tokens in which the behaviour shows are explained."""

import json

import pytest

from core.attribution.unwanted import explained_tokens, offensive_tokens, repeated_tokens


def test_repeated_tokens_are_those_that_end_a_3_gram_seen_before():
    seq = [5, 6, 7, 5, 6, 7, 8, 5, 6, 9, 6, 9, 6, 9]
    #      0  1  2  3  4  5  6  7  8  9 10 11 12 13
    # 5 6 7 recurs at 5; 9 6 9 at 12 ... and 6 9 6 at 12, 9 6 9 at 13 (a 2-token loop repeats every 3-gram)
    assert repeated_tokens(seq, 0) == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    assert repeated_tokens(seq, 6) == [0] * 12 + [1, 1]  # the prompt's own repeats are not the model's
    assert repeated_tokens([1, 1, 1, 1], 0) == [0, 0, 0, 1]


def test_offensive_tokens_are_the_continuation_tokens_of_words_rated_offensive_alone(tokenizer):
    from core.data.tokens import encode

    prompt = encode(tokenizer, "There is a young faggot who")
    cont = tokenizer(" said fuck you, you stupid bitch, and left the house", add_special_tokens=False)["input_ids"]
    seq = prompt + cont
    marks = offensive_tokens(tokenizer, seq, len(prompt))
    assert len(marks) == len(seq) and not any(marks[: len(prompt)])  # the prompt's word is read, not explained
    marked = tokenizer.decode([t for t, m in zip(seq, marks) if m])
    assert marked.split() == ["fuck", "stupid", "bitch"]  # every piece of each word, and nothing else
    tame = prompt + tokenizer(" went home", add_special_tokens=False)["input_ids"]
    assert offensive_tokens(tokenizer, tame, len(prompt)) == [0] * len(tame)


def test_what_is_unwanted_follows_how_the_continuation_was_made(tokenizer):
    seqs, starts = [[1, 2, 3, 1, 2, 3], [4, 5, 6, 7]], [2, 1]
    assert explained_tokens(tokenizer, seqs, starts, "all", "greedy") is None
    assert explained_tokens(tokenizer, seqs, [0, 0], "unwanted", "greedy") is None  # text: nothing was continued
    assert explained_tokens(tokenizer, seqs, starts, "unwanted", "greedy") == [[0, 0, 0, 0, 0, 1], [0, 0, 0, 0]]
    whole = [[0, 0, 1, 1, 1, 1], [0, 1, 1, 1]]
    assert explained_tokens(tokenizer, seqs, starts, "continuation", "greedy") == whole
    for wanted in ("no-repeat", "least-toxic"):  # the clean side of --pair has nothing unwanted: explained whole
        assert explained_tokens(tokenizer, seqs, starts, "unwanted", wanted) == whole


def test_explain_unwanted_scores_only_those_tokens_and_skips_samples_without_any(tiny_llama, monkeypatch):
    import torch

    from core.attribution import samples as S
    from core.attribution.targets import model_target
    from core.data.prompt_sets import PromptSet
    from core.data.tokens import encode
    from core.errors import WorkbenchError
    from core.settings import ScoreConfig

    lm = tiny_llama
    prompts = ["the cat sat on the mat and", "a dog", "we went"]
    loop, fresh = [11, 12, 13, 11, 12, 13, 11], [21, 22, 23, 24, 25, 26, 27]
    fake = {prompts[0]: loop, prompts[1]: fresh, prompts[2]: loop[::-1]}
    monkeypatch.setattr(S, "greedy_batch", lambda model, tok, ps, n, **kw: [fake[p][:n] for p in ps])
    ps = PromptSet("builtin:repetition", prompts, ["unused"], "prompts")
    cfg = ScoreConfig(contrastive="builtin:repetition", samples=3, seq_len=64, continuation=7, explain="unwanted")
    notes: dict = {}
    (batch,) = S.scoring_batches(lm, ps, cfg, 3, notes)
    seqs = {p: encode(lm.tokenizer, p) + fake[p] for p in prompts}
    kept = [p for p in S.pick_samples(prompts, 3, 0) if p != prompts[1]]  # "a dog" continues with no repeat
    assert batch.size == 2 and notes["explained"] == {"samples": 2, "of": 3, "tokens": 2 * 2}  # 11 12 13 11 12 13 11: the last two repeat
    for row, p in enumerate(kept):
        start = len(encode(lm.tokenizer, p))
        want = repeated_tokens(seqs[p], start)
        assert batch.ids[row, : len(seqs[p])].tolist() == seqs[p] and batch.explained[row, : len(want)].tolist() == want
        assert batch.explained[row, len(want):].sum() == 0
    embeds = lm.model.get_input_embeddings()(batch.ids)
    with torch.no_grad():
        got = model_target(lm.model, embeds, batch, "logprob")
        logp = torch.log_softmax(lm.model(input_ids=batch.ids, attention_mask=batch.mask).logits.float(), -1)
    want = sum(float(logp[row, t - 1, seqs[p][t]]) for row, p in enumerate(kept)
               for t, m in enumerate(repeated_tokens(seqs[p], len(encode(lm.tokenizer, p)))) if m)
    assert abs(float(got) - want) < 1e-3 * max(1.0, abs(want))  # the target reads the repeated tokens alone

    clean = PromptSet("builtin:repetition", [prompts[1]], ["unused"], "prompts")
    with pytest.raises(WorkbenchError, match="--explain unwanted has nothing to explain"):
        S.scoring_batches(lm, clean, cfg, 3)

    # the clean side of --pair clean: continued the wanted way, explained whole, no sample skipped, no unwanted count
    monkeypatch.setattr(S, "greedy_batch", lambda model, tok, ps, n, **kw: [fake[prompts[1]][:n] for p in ps])
    notes = {}
    (paired,) = S.scoring_batches(lm, ps, cfg.for_clean_pair(), 3, notes)
    assert paired.size == 3 and "explained" not in notes
    assert paired.explained.sum() == 3 * 7  # every continuation token of every sample


def test_explain_unwanted_from_the_cli_is_keyed_and_reported(invoke, tiny_model_dir):
    from core.attribution.keys import set_key
    from core.settings import ScoreConfig

    assert set_key(ScoreConfig(contrastive="builtin:repetition", explain="unwanted"), "contrastive", "m")["explain"] == "unwanted"
    args = ("score", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
            "builtin:repetition", "--samples", "4", "--seq-len", "48", "--continuation", "24", "--explain", "unwanted")
    out = json.loads(invoke(*args, "--session", "u", "--json").stdout)["scores"]
    e = out["contrastive"]["explained"]
    assert 0 < e["samples"] <= e["of"] == 4 and e["tokens"] >= e["samples"]  # a random tiny model's greedy text loops
    assert out["contrastive"]["samples"] == e["samples"] and "short" not in out["contrastive"]
    text = invoke(*args, "--session", "u2").stdout
    assert "explained:" in text and "unwanted tokens in" in text
