"""How a contrastive prompt set is scored: which continuation (toxicity draws), which tokens are explained,
the clean pair, the contrastive sign, and their cache keys."""

import json

import pytest


@pytest.fixture
def cli(invoke):
    return invoke


def test_toxicity_scores_the_most_offensive_of_several_sampled_continuations(tiny_llama, monkeypatch):
    """--continue-by most-toxic: each prompt is scored with the draw the classifier rates highest."""
    from dataclasses import replace

    from core.attribution import samples as S
    from core.data.prompt_sets import PromptSet
    from core.data.tokens import encode
    from core.evaluation.generation import greedy_batch
    from core.settings import GenerationConfig, ScoreConfig

    lm = tiny_llama
    rating = lambda texts: [(sum(map(ord, t)) % 97) / 97 for t in texts]  # a stand-in classifier, deterministic
    monkeypatch.setattr(S, "toxicity_probs", rating)
    prompts = ["the cat sat on", "a dog ran to the", "we went to see"]
    ps = PromptSet("builtin:toxicity", prompts, ["unused"], "prompts")
    cfg = ScoreConfig(contrastive="builtin:toxicity", samples=3, seq_len=64, continuation=6, draws=3, seed=2)
    assert cfg.continuation_for("builtin:toxicity") == "most-toxic" and cfg.continuation_for("builtin:repetition") == "greedy"
    notes: dict = {}
    seqs = S.scoring_sequences(lm, ps, cfg, notes)
    prompts = S.pick_samples(prompts, 3, 2)  # the order the seed chooses
    draws = [greedy_batch(lm.model, lm.tokenizer, prompts, 6, sample=replace(GenerationConfig(), greedy=False, seed=S.DRAW_SEEDS + 2 * 3 + k))
             for k in range(3)]
    assert len({tuple(d[0]) for d in draws}) > 1  # the draws differ, so the choice matters
    offensive = 0
    for i, (p, seq) in enumerate(zip(prompts, seqs)):
        texts = [lm.tokenizer.decode([t for t in d[i] if t != lm.tokenizer.eos_token_id], skip_special_tokens=True) for d in draws]
        scores = rating(texts)
        assert seq == (encode(lm.tokenizer, p) + draws[scores.index(max(scores))][i])[:64]
        offensive += max(scores) >= 0.5
    assert notes["continuations"] == {"by": "most-toxic", "draws": 3, "prompts": 3, "offensive": offensive}
    greedy = S.scoring_sequences(lm, ps, replace(cfg, continue_by="greedy"))
    assert greedy == [(encode(lm.tokenizer, p) + c)[:64] for p, c in zip(prompts, greedy_batch(lm.model, lm.tokenizer, prompts, 6))]


def test_the_continuation_choice_is_part_of_the_cache_key():
    from core.attribution.keys import set_key
    from core.settings import ScoreConfig

    tox = ScoreConfig(contrastive="builtin:toxicity", scorer="lrp")
    key = set_key(tox, "contrastive", "m")
    assert key["continue_by"] == "most-toxic" and key["draws"] == 16
    assert set_key(tox, "contrastive", "m") != set_key(ScoreConfig(contrastive="builtin:toxicity", draws=4), "contrastive", "m")
    greedy = set_key(ScoreConfig(contrastive="builtin:toxicity", continue_by="greedy"), "contrastive", "m")
    assert "continue_by" not in greedy and "draws" not in greedy  # greedy keys are those of older sessions
    assert "continue_by" not in set_key(ScoreConfig(contrastive="builtin:repetition"), "contrastive", "m")


def test_score_refuses_an_unknown_continuation_choice(cli, tiny_model_dir):
    r = cli("score", "--session", "c", "--model", str(tiny_model_dir), "--contrastive", "builtin:repetition",
            "--continue-by", "nicest", ok=False)
    assert r.exit_code != 0 and "--continue-by" in r.output and "most-toxic" in r.output and "Traceback" not in r.output
    r = cli("score", "--session", "c", "--model", str(tiny_model_dir), "--draws", "0", ok=False)
    assert r.exit_code != 0 and "--draws" in r.output


def test_a_toxicity_score_says_how_many_scored_continuations_are_offensive(cli, tiny_model_dir):
    args = ("score", "--session", "tox", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
            "builtin:toxicity", "--samples", "3", "--seq-len", "32", "--continuation", "4", "--draws", "2")
    text = cli(*args).stdout
    assert "continuations: the most offensive of 2 sampled per prompt" in text
    cont = json.loads(cli(*args[:-2], "--draws", "3", "--json").stdout)["scores"]["contrastive"]["continuations"]
    assert cont["by"] == "most-toxic" and cont["draws"] == 3 and cont["prompts"] == 3 and 0 <= cont["offensive"] <= 3
    greedy = json.loads(cli(*args, "--continue-by", "greedy", "--json").stdout)["scores"]["contrastive"]
    assert "continuations" not in greedy and not greedy["cached"]  # another key: scored again


def test_explain_continuation_explains_only_what_the_model_wrote(tiny_llama):
    """--explain continuation: the target sums the log-probabilities of the continuation's tokens alone."""
    from dataclasses import replace

    import torch

    from core.attribution import samples as S
    from core.attribution.targets import model_target
    from core.data.prompt_sets import PromptSet
    from core.data.tokens import encode
    from core.settings import ScoreConfig

    lm = tiny_llama
    prompts = ["the cat sat on the mat and", "a dog"]
    ps = PromptSet("prompts.jsonl", prompts, ["unused"], "prompts")
    cfg = ScoreConfig(contrastive="prompts.jsonl", samples=2, seq_len=64, continuation=5, explain="continuation")
    seqs, starts = S.scored_sequences(lm, ps, cfg)
    chosen = S.pick_samples(prompts, 2, 0)
    assert starts == [len(encode(lm.tokenizer, p)) for p in chosen] and all(len(s) > st for s, st in zip(seqs, starts))
    (batch,) = S.scoring_batches(lm, ps, cfg, 2)
    for row, (s, st) in enumerate(zip(seqs, starts)):
        assert batch.explained[row, :st].sum() == 0 and batch.explained[row, st:len(s)].all()
        assert batch.explained[row, len(s):].sum() == 0  # padding stays unexplained
    embeds = lm.model.get_input_embeddings()(batch.ids)
    with torch.no_grad():
        got = model_target(lm.model, embeds, batch, "logprob")
        logp = torch.log_softmax(lm.model(input_ids=batch.ids, attention_mask=batch.mask).logits.float(), -1)
    want = sum(float(logp[row, t - 1, s[t]]) for row, (s, st) in enumerate(zip(seqs, starts)) for t in range(st, len(s)))
    assert abs(float(got) - want) < 1e-3 * max(1.0, abs(want))
    (whole,) = S.scoring_batches(lm, ps, replace(cfg, explain="all"), 2)
    assert whole.explained is None  # the default explains every token, as before


def test_explain_is_in_the_cache_key_of_the_scorers_it_changes(cli, tiny_model_dir):
    from core.attribution.keys import set_key
    from core.settings import ScoreConfig

    cont = ScoreConfig(contrastive="builtin:repetition", explain="continuation")
    assert set_key(cont, "contrastive", "m")["explain"] == "continuation"
    assert "explain" not in set_key(ScoreConfig(contrastive="builtin:repetition"), "contrastive", "m")  # older keys unchanged
    for scorer in ("wanda", "magnitude"):  # they explain no target
        assert "explain" not in set_key(ScoreConfig(scorer=scorer, explain="continuation"), "reference", "m")
    r = cli("score", "--session", "e", "--model", str(tiny_model_dir), "--explain", "everything", ok=False)
    assert r.exit_code != 0 and "--explain" in r.output and "continuation" in r.output and "Traceback" not in r.output


def test_the_clean_side_of_a_pair_is_the_wanted_continuation_of_the_same_prompts(tiny_llama, monkeypatch):
    """--pair clean: toxicity's clean side is the least offensive of the same draws; repetition's repeats no 3-gram."""
    from dataclasses import replace

    from core.attribution import samples as S
    from core.data.prompt_sets import PromptSet
    from core.data.tokens import encode
    from core.settings import ScoreConfig

    lm = tiny_llama
    rating = lambda texts: [(sum(map(ord, t)) % 97) / 97 for t in texts]  # a stand-in classifier, deterministic
    monkeypatch.setattr(S, "toxicity_probs", rating)
    prompts = ["the cat sat on", "a dog ran to the", "we went to see"]
    tox = ScoreConfig(contrastive="builtin:toxicity", samples=3, seq_len=64, continuation=6, draws=4, pair="clean")
    ps = PromptSet("builtin:toxicity", prompts, ["unused"], "prompts")
    worst, best = S.rated_draws(lm, prompts, 6, 4, 0), S.rated_draws(lm, prompts, 6, 4, 0, worst=False)
    assert all(w >= b for w, b in zip(worst[1], best[1])) and worst[0] != best[0]
    calls = []
    generate = S.greedy_batch
    monkeypatch.setattr(S, "greedy_batch", lambda *a, **kw: calls.append(1) or generate(*a, **kw))
    drawn: dict = {}  # both sides of one score share the draws: generated once, chosen from twice
    assert S.rated_draws(lm, prompts, 6, 4, 0, drawn=drawn) == worst and len(calls) == 4
    assert S.rated_draws(lm, prompts, 6, 4, 0, worst=False, drawn=drawn) == best and len(calls) == 4
    monkeypatch.setattr(S, "greedy_batch", generate)
    notes: dict = {}
    clean = S.scoring_sequences(lm, ps, tox.for_clean_pair(), notes)
    assert clean == [(encode(lm.tokenizer, p) + c)[:64] for p, c in zip(prompts, best[0])]
    assert notes["continuations"]["by"] == "least-toxic"
    assert S.scoring_sequences(lm, ps, tox) == [(encode(lm.tokenizer, p) + c)[:64] for p, c in zip(prompts, worst[0])]

    rep = replace(tox, contrastive="builtin:repetition", continuation=24)
    assert rep.for_clean_pair().continuation_for("builtin:repetition") == "no-repeat"
    loops = PromptSet("builtin:repetition", ["la la la la la la", "one two one two one two"], ["unused"], "prompts")
    for seq, p in zip(S.scoring_sequences(lm, loops, rep.for_clean_pair()), S.pick_samples(loops.score, 3, 0)):
        grams = [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]
        start = len(encode(lm.tokenizer, p))
        assert len(seq) > start and all(grams.count(g) == 1 for g in grams[start - 2:])  # no new token repeats a 3-gram


def test_a_pair_keeps_what_the_clean_side_needs():
    """R_diff = max(N(R_reference), N(R_clean)) - N(R_contrastive): a weight the clean continuation needs is not pruned first."""
    import torch

    from core.attribution.combine import ranking_values

    ref = {"w": torch.tensor([[1.0, 2.0, 3.0, 4.0]])}
    con = {"w": torch.tensor([[4.0, 3.0, 2.0, 1.0]])}
    clean = {"w": torch.tensor([[9.0, 1.0, 2.0, 3.0]])}  # weight 0 is what the clean continuation needs most
    plain = ranking_values(ref, con, "abs", "rank")["w"]
    paired = ranking_values(ref, con, "abs", "rank", clean)["w"]
    assert int(plain.argmin()) == 0 and int(paired.argmin()) == 1
    assert torch.equal(paired, torch.maximum(torch.tensor([[0, 1 / 3, 2 / 3, 1.0]]), torch.tensor([[1.0, 0, 1 / 3, 2 / 3]]))
                       - torch.tensor([[1.0, 2 / 3, 1 / 3, 0]]))


def test_signed_contrast_removes_what_the_behaviour_relies_on_and_keeps_what_works_against_it():
    """--reduce signed-contrast: the reference counts by magnitude, the contrastive set by its sign."""
    import torch

    from core.attribution.combine import ranking_values
    from core.settings import ScoreConfig

    ref = {"w": torch.tensor([[1.0, 1.0, 1.0, -9.0]])}  # weight 3 matters to the reference, against its text
    con = {"w": torch.tensor([[-8.0, 5.0, 0.5, 0.0]])}  # weight 0 works against the unwanted text, 1 for it
    one_sided = ranking_values(ref, con, "signed-contrast", "none")["w"]
    assert torch.equal(one_sided, torch.tensor([[9.0, -4.0, 0.5, 9.0]]))  # |ref| - con
    assert int(one_sided.argmin()) == 1  # what the behaviour relies on goes first
    assert int(ranking_values(ref, con, "abs", "none")["w"].argmin()) == 0  # abs would remove its opponent first
    assert int(ranking_values(ref, con, "signed", "none")["w"].argmin()) == 3  # signed, what the reference needs
    assert torch.equal(ranking_values(ref, None, "signed-contrast", "none")["w"], ref["w"].abs())  # no contrast: as abs
    assert ScoreConfig(contrastive="x", reduce="signed-contrast").resolved("prompts").reduce == "signed-contrast"


def test_score_with_a_pair_scores_three_sets_keys_them_and_refuses_text(cli, tiny_model_dir):
    from core.attribution.keys import ranking_key
    from core.settings import ScoreConfig

    paired = ScoreConfig(contrastive="builtin:repetition", pair="clean")
    key = ranking_key(paired, "m")
    assert set(key["sets"]) == {"reference", "contrastive", "paired"}
    assert key["sets"]["paired"]["continue_by"] == "no-repeat" and "continue_by" not in key["sets"]["contrastive"]
    assert "paired" not in ranking_key(ScoreConfig(contrastive="builtin:repetition"), "m")["sets"]  # older keys unchanged
    args = ("score", "--session", "p", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
            "builtin:repetition", "--samples", "3", "--seq-len", "32", "--continuation", "6", "--json")
    plain = json.loads(cli(*args, "--pair", "none").stdout)["scores"]
    out = json.loads(cli(*args).stdout)["scores"]  # LRP on a contrastive prompt set pairs by default
    assert set(plain) == {"reference", "contrastive"} and set(out) == {"reference", "contrastive", "paired"}
    assert out["paired"]["samples"] == 3 and not out["paired"]["cached"]
    chosen = json.loads(cli(*args, "--pair", "clean").stdout)["scores"]
    assert all(s["cached"] for s in chosen.values())  # the same score as the default's
    neurons = json.loads(cli("prune", "--session", "p", "--granularity", "neuron", "--count", "5", "--json").stdout)
    assert 0 < neurons["sparsity"] < 0.05
    bad = cli("score", "--session", "p2", "--model", str(tiny_model_dir), "--contrastive", "builtin:general", "--pair",
              "clean", ok=False)
    assert bad.exit_code != 0 and "--pair clean needs a contrastive prompt set" in bad.output and "Traceback" not in bad.output
    bad = cli("score", "--session", "p2", "--model", str(tiny_model_dir), "--pair", "dirty", ok=False)
    assert bad.exit_code != 0 and "--pair" in bad.output and "clean" in bad.output
