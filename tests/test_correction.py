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
    common = ("--granularity", "neuron", "--steps", "2", "--new-tokens", "4", "--eval-windows", "5", "--bound", "1.0", "--json", "--no-plot")
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
    text = cli("correct", "--session", "val", "--measure-on", "validation", "--steps", "0.01", "--prompts", "2",
               "--new-tokens", "4", "--eval-windows", "2", "--no-plot").stdout
    assert "2 validation contrastive prompts, perplexity on 2 windows of validation reference text" in text
    bad = cli("correct", "--session", "val", "--measure-on", "everywhere", "--no-plot", ok=False)
    assert bad.exit_code != 0 and "--measure-on" in bad.output and "validation" in bad.output


def test_validation_refuses_when_the_score_drew_everything(cli, tiny_model_dir):
    cli("score", "--session", "all", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--contrastive",
        "builtin:repetition", "--samples", "64", "--seq-len", "16")
    r = cli("correct", "--session", "all", "--measure-on", "validation", "--steps", "0.01", "--no-plot", ok=False)
    assert r.exit_code != 0 and "drew all of them" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
