"""Targeted correction: the sweep, the choice within the cost bound, the session record, the CLI and builtin:toxicity."""

import json

import pytest

from core.applications.correction import Step, better, choose, step_plan

def _step(amount, cost, **behaviour):
    return Step(amount, amount / 1000, 10 * (1 + cost), cost, behaviour)


def test_choose_takes_the_strongest_correction_within_the_bound():
    rows = [_step(0, 0.0, uniqueness=0.30), _step(10, 0.005, uniqueness=0.35), _step(50, 0.015, uniqueness=0.42),
            _step(100, 0.05, uniqueness=0.60)]  # the strongest costs too much
    assert choose(rows, "uniqueness", 0.02).amount == 50
    assert choose(rows, "uniqueness", 0.10).amount == 100
    assert choose(rows[:1] + [_step(10, 0.001, uniqueness=0.2)], "uniqueness", 0.02) is None  # nothing improves
    tox = [_step(0, 0.0, toxic_rate=0.5, toxicity=0.6), _step(10, 0.01, toxic_rate=0.25, toxicity=0.4),
           _step(20, 0.01, toxic_rate=0.25, toxicity=0.3)]
    assert better("toxicity", tox[2].behaviour, tox[1].behaviour)  # same rate, lower mean: stronger
    assert choose(tox, "toxicity", 0.02).amount == 20
    sampled = [_step(0, 0.0, toxic_rate=1.0, toxicity=0.8, toxic_rate_sampled=0.4),
               _step(10, 0.01, toxic_rate=0.5, toxicity=0.5, toxic_rate_sampled=0.45),  # greedy lower, sampled worse
               _step(20, 0.01, toxic_rate=0.9, toxicity=0.7, toxic_rate_sampled=0.2)]
    assert choose(sampled, "toxicity", 0.02).amount == 20  # sampled continuations decide when measured


def test_step_plans_count_units_or_share_weights():
    assert step_plan("neuron", 100).count == 100 and step_plan("neuron", 100).granularity == "neuron"
    assert step_plan("head", 4).count == 4
    g = step_plan("global", 1e-3)
    assert g.granularity == "global" and g.default == pytest.approx(1e-3) and g.count is None


@pytest.fixture
def cli(invoke):
    return invoke


def test_correct_needs_a_contrastive_score(cli, tiny_model_dir):
    cli("score", "--session", "plain", "--model", str(tiny_model_dir), "--samples", "4", "--seq-len", "16")
    r = cli("correct", "--session", "plain", "--no-plot", ok=False)
    assert r.exit_code != 0 and "contrastive" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = cli("correct", "--session", "plain", "--steps", "ten", ok=False)
    assert r.exit_code != 0 and "--steps" in r.output


@pytest.mark.parametrize("granularity,steps", [("neuron", "2,8"), ("head", "1,2"), ("global", "0.001,0.01")])
def test_correct_sweeps_records_and_applies_the_choice(cli, tmp_path, tiny_model_dir, granularity, steps):
    cli("score", "--session", "fix", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
        "builtin:repetition", "--samples", "4", "--seq-len", "16")
    out = json.loads(cli("correct", "--session", "fix", "--granularity", granularity, "--steps", steps, "--prompts", "3",
                         "--new-tokens", "6", "--eval-windows", "3", "--bound", "1.0", "--json").stdout)
    assert out["behaviour"] == "uniqueness" and out["contrastive"] == "builtin:repetition"
    rows = out["steps"]
    assert [r["amount"] for r in rows] == [0] + [float(x) for x in steps.split(",")]
    assert rows[0]["sparsity"] == 0 and rows[0]["cost"] == 0
    assert 0 < rows[1]["sparsity"] < rows[2]["sparsity"]  # more is pruned at each step
    assert all(r["perplexity"] > 0 and 0 <= r["behaviour"]["uniqueness"] <= 1 for r in rows)
    for r in rows[1:]:
        assert r["cost"] == pytest.approx(r["perplexity"] / rows[0]["perplexity"] - 1)
    best = max(rows[1:], key=lambda r: r["behaviour"]["uniqueness"])
    improves = best["behaviour"]["uniqueness"] > rows[0]["behaviour"]["uniqueness"]
    assert out["chosen"] == (best["amount"] if improves else None)
    assert (tmp_path / "correct-fix.png").read_bytes()[:4] == b"\x89PNG"
    from core.session.store import Session

    s = Session.open(tmp_path / "store", "fix")
    assert s.manifest.correction.chosen == out["chosen"] and s.manifest.correction.steps[0].amount == 0
    plan = s.manifest.plan
    if out["chosen"] is None:
        assert plan.default == 0 and not plan.count
    elif granularity == "global":
        assert plan.granularity == "global" and plan.default == pytest.approx(out["chosen"])
    else:
        assert plan.granularity == granularity and plan.count == int(out["chosen"])
    text = cli("correct", "--session", "fix", "--granularity", granularity, "--steps", steps, "--prompts", "2",
               "--new-tokens", "4", "--eval-windows", "2", "--no-plot").stdout
    assert "amount" in text and "uniqueness" in text and len(text.splitlines()) >= 4


def test_prune_a_count_of_neurons_after_a_contrastive_score(cli, tiny_model_dir):
    cli("score", "--session", "n", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
        "builtin:repetition", "--samples", "4", "--seq-len", "16")
    out = json.loads(cli("prune", "--session", "n", "--granularity", "neuron", "--count", "5", "--json").stdout)
    assert 0 < out["sparsity"] < 0.05
    bad = cli("prune", "--session", "n", "--granularity", "row", "--count", "5", ok=False)
    assert bad.exit_code != 0 and "--count" in bad.output


def test_toxicity_metrics_rate_offensive_text():
    from core.evaluation.metrics import toxic_rate, toxicity

    clean = ["The weather is lovely today.", "We went for a walk by the river."]
    rude = ["You are a fucking idiot.", "Shut up, you stupid bitch."]
    assert toxic_rate(clean) == 0 and toxic_rate(rude) == 1 and toxic_rate(clean + rude) == 0.5
    assert toxicity(rude) > 0.5 > toxicity(clean)


def test_builtin_toxicity_is_disjoint_and_ships_no_text():
    from importlib import resources

    from core.data.prompt_sets import load_prompt_set
    from core.data.toxicity import candidates, entries

    ps = load_prompt_set("builtin:toxicity")
    assert ps.kind == "prompts" and len(ps.score) >= 20 and len(ps.eval) >= 8
    assert not set(ps.score) & set(ps.eval)
    assert all(len(p.split()) == 12 for p in ps.score + ps.eval)
    shipped = resources.files("core.data.builtin").joinpath("toxicity.json").read_text()
    data = json.loads(shipped)
    assert all(ps.eval[0] not in v for v in (shipped,)) and {"entry", "prompt_sha"} <= set(data["score"][0])
    idx = set(candidates(entries()))
    assert all(item["entry"] in idx for item in data["score"] + data["eval"])


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


def test_the_correction_bench_merges_runs_of_one_setting_and_refuses_others(tmp_path):
    """bench/correction.py --merge: one report from one process per scorer (the GPU runs)."""
    import json

    import pytest

    from bench.correction import merged

    def part(scorer: str, **change) -> dict:
        return {"size": "full", "model": "default", "command": f"python bench/correction.py --scorers {scorer} --out /tmp/{scorer}",
                "machine": "m", "started": "d", "bound": 0.02, "settings": {"seeds": 5}, "explain": "all",
                "runs": [{"scorer": scorer, "set": "toxicity"}], "prompts": {"toxicity": ["p"]},
                "held_out": {"toxicity": 39}, **change}

    paths = []
    for i, p in enumerate([part("lrp"), part("wanda"), part("random", settings={"seeds": 3})]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(p))
    r = merged(paths[:2])
    assert [x["scorer"] for x in r.runs] == ["lrp", "wanda"] and r.settings == {"seeds": 5}
    assert "--scorers lrp,wanda" in r.command and "--out" not in r.command
    with pytest.raises(SystemExit, match="other settings"):
        merged(paths)


def test_the_correction_ablation_labels_the_default_honestly_and_tabulates_each_variant():
    """bench/correction_ablation.py: every ablation's first variant is the former default, a variant says
    "(default)" exactly when it is what LRP on a contrastive prompt set does today, and each variant gets a
    row with its steps and what was chosen (`-` where nothing improved)."""
    from bench.correction import Report
    from bench.correction_ablation import ABLATIONS, FORMER_DEFAULT, VARIANTS, markdown
    from core.settings import ScoreConfig

    label, first = next(iter(VARIANTS.items()))
    contrast = ScoreConfig(contrastive="builtin:repetition")
    former = contrast.resolved("text", "text")  # a contrastive text set still gets what every contrast got before
    assert FORMER_DEFAULT == {k: getattr(former, k) for k in FORMER_DEFAULT}
    today = contrast.resolved("text", "prompts")
    assert {k: getattr(today, k) for k in FORMER_DEFAULT} != FORMER_DEFAULT
    defaults = []
    for variants in ABLATIONS.values():
        label0, fields0 = next(iter(variants.items()))
        assert "(former default)" in label0 and {**FORMER_DEFAULT, **fields0} == FORMER_DEFAULT
        for other, fields in variants.items():
            is_today = all(getattr(today, k) == v for k, v in {**FORMER_DEFAULT, **fields}.items())
            assert ("(default)" in other) == is_today, other
            assert ("former default" in other) == (other == label0)
            defaults += [other] if is_today else []
    assert defaults == ["signed-contrast, explain unwanted, pair clean (default)"]

    def steps(*pairs):
        return [{"amount": a, "cost": c, "behaviour": {"uniqueness": u}} for a, c, u in pairs]

    runs = [{"set": "repetition", "scorer": "lrp", "variant": label, "behaviour": "uniqueness", "chosen": 100.0,
             "steps": steps((0, 0.0, 0.2), (25, 0.003, 0.3), (100, 0.008, 0.33))},
            {"set": "repetition", "scorer": "lrp", "variant": "abs, none (paper Eq. 7)", "behaviour": "uniqueness",
             "chosen": None, "steps": steps((0, 0.0, 0.2), (25, 2.0, 0.07), (100, 3.4, 0.07))}]
    md = markdown(Report("ci", "default", "c", "m", "d", 0.02, {"samples": 16, "steps": [25, 100], "new_tokens": 32},
                         runs=runs), "cmd")
    rows = [line for line in md.splitlines() if line.startswith("| lrp")]
    assert len(rows) == 2
    assert label in rows[0] and "0.330 (+0.8%)" in rows[0] and rows[0].endswith("100: +0.130 |")
    assert "0.070 (+200.0%)" in rows[1] and rows[1].endswith("| - |")


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

    from core.attribution.ranking import ranking_values

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

    from core.attribution.ranking import ranking_values
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
    from core.attribution.keys import ranking_key, set_key
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


def test_undrawn_is_what_the_scoring_draw_left_out():
    from core.attribution.samples import pick_samples, undrawn

    items = [[i, i + 1] for i in range(30)]  # lists, as token windows are: unhashable
    for n, seed in [(16, 0), (16, 1), (29, 3), (30, 2)]:
        drawn, left = pick_samples(items, n, seed), undrawn(items, n, seed)
        assert len(drawn) + len(left) == len(items) and not [x for x in left if x in drawn]
        assert left == [x for x in items if x in left]  # in the set's order
    assert undrawn(items, 30, 0) == [] and undrawn(items, 40, 5) == []


def test_correct_measures_on_validation_data_or_a_given_prompt_set(cli, tmp_path, tiny_model_dir):
    from core.data.prompt_sets import load_prompt_set

    cli("score", "--session", "val", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
        "builtin:repetition", "--samples", "4", "--seq-len", "16", "--seed", "1")
    rep = load_prompt_set("builtin:repetition")
    common = ("--steps", "2", "--new-tokens", "4", "--eval-windows", "5", "--bound", "1.0", "--json", "--no-plot")
    out = json.loads(cli("correct", "--session", "val", "--measure-on", "validation", "--prompts", "100", *common).stdout)
    assert out["measure_on"] == "validation" and out["prompts_from"] is None
    assert out["prompts"] == len(rep.score) - 4 and out["windows"] == 5  # every scoring prompt the draw left out
    held = json.loads(cli("correct", "--session", "val", "--prompts", "100", *common).stdout)
    assert held["measure_on"] == "held-out" and held["prompts"] == len(rep.eval)
    # other text, other prompts: the dense model's perplexity and behaviour differ
    assert held["steps"][0]["perplexity"] != out["steps"][0]["perplexity"]
    own = tmp_path / "mine.jsonl"
    own.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("Go, go, go,", "Yes, yes,", "La la la")))
    mine = json.loads(cli("correct", "--session", "val", "--prompts-from", str(own), "--prompts", "100", *common).stdout)
    assert mine["prompts_from"] == str(own) and mine["prompts"] == 3  # all of a file nobody scored
    from core.session.store import Session

    assert Session.open(tmp_path / "store", "val").manifest.correction.prompts == 3
    text = cli("correct", "--session", "val", "--measure-on", "validation", "--steps", "2", "--prompts", "2",
               "--new-tokens", "4", "--eval-windows", "2", "--no-plot").stdout
    assert "2 validation contrastive prompts, perplexity on 2 windows of validation reference text" in text
    bad = cli("correct", "--session", "val", "--measure-on", "everywhere", "--no-plot", ok=False)
    assert bad.exit_code != 0 and "--measure-on" in bad.output and "validation" in bad.output


def test_validation_refuses_when_the_score_drew_everything(cli, tiny_model_dir):
    cli("score", "--session", "all", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
        "builtin:repetition", "--samples", "64", "--seq-len", "16")
    r = cli("correct", "--session", "all", "--measure-on", "validation", "--steps", "2", "--no-plot", ok=False)
    assert r.exit_code != 0 and "drew all of them" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_the_correction_bench_reports_head_sweeps_as_heads():
    """bench/correction.py --granularity head: the head counts of the size, and every label says heads."""
    from bench.correction import HEAD_STEPS, SIZES, Report, Size, markdown

    def step(amount, cost, rate):
        return {"amount": amount, "sparsity": amount / 1e4, "cost": cost, "samples": ["x"],
                "behaviour": {"toxic_rate": rate, "toxic_rate_sampled": rate, "toxicity": rate}}

    runs = [{"set": "toxicity", "scorer": "lrp", "behaviour": "toxicity", "chosen": 4.0,
             "steps": [step(0, 0.0, 0.2), step(2, 0.004, 0.15), step(4, 0.01, 0.1)]}]
    size = Size(**{**SIZES["ci"].__dict__, "steps": HEAD_STEPS["ci"]})
    r = Report("ci", "default", "c", "m", "d", 0.02, size.__dict__, runs=runs, prompts={"toxicity": ["p"]},
               held_out={"toxicity": 39}, granularity="head")
    md = markdown(r, size, "stem")
    assert "attention heads pruned by count (2, 4, 8, 16)" in md and "| scorer | heads |" in md
    assert "- lrp: 4 heads," in md and "LRP, 4 heads" in md and "neuron" not in md.lower()
