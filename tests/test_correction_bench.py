"""One smoke test per correction report (bench/correction.py, correction_ablation.py, correction_validated.py):
merging runs, labelling the default honestly, units in the tables."""


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
    for name, variants in ABLATIONS.items():
        label0, fields0 = next(iter(variants.items()))
        former_first = name != "default"  # `default` is today's scoring alone, for other granularities
        assert former_first == ("(former default)" in label0 and {**FORMER_DEFAULT, **fields0} == FORMER_DEFAULT)
        for other, fields in variants.items():
            is_today = all(getattr(today, k) == v for k, v in {**FORMER_DEFAULT, **fields}.items())
            assert ("(default)" in other) == is_today, other
            assert ("former default" in other) == (other == label0 and former_first)
            defaults += [other] if is_today else []
    assert defaults == ["signed-contrast, explain unwanted, pair clean (default)"] * 2

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


def test_the_correction_bench_reports_weight_sweeps_as_shares_of_weights():
    """bench/correction.py --granularity global: the paper's repetition granularity, amounts shown as shares."""
    from bench.correction import GLOBAL_STEPS, SIZES, Report, Size, markdown

    def step(amount, cost, u):
        return {"amount": amount, "sparsity": amount, "cost": cost, "samples": ["x"], "behaviour": {"uniqueness": u}}

    runs = [{"set": "repetition", "scorer": "lrp", "behaviour": "uniqueness", "chosen": 3e-4,
             "steps": [step(0, 0.0, 0.3), step(1e-4, 0.004, 0.35), step(3e-4, 0.01, 0.42), step(1e-3, 0.05, 0.5)]},
            {"set": "repetition", "scorer": "random", "behaviour": "uniqueness", "chosen": None,
             "steps": [step(0, 0.0, 0.3), step(1e-4, 0.004, 0.3)]}]
    size = Size(**{**SIZES["ci"].__dict__, "steps": GLOBAL_STEPS["ci"]})
    r = Report("ci", "default", "c", "m", "d", 0.02, size.__dict__, runs=runs, prompts={"repetition": ["p"]},
               held_out={"repetition": 34}, granularity="global")
    md = markdown(r, size, "stem")
    assert "single weights pruned by share, ranked across the model (0.01%, 0.03%, 0.1%)" in md
    assert "| lrp | 0.03% **chosen** |" in md and "| lrp | 0.1% |" in md
    assert "- lrp: 0.03% weights, uniqueness 0.300 -> 0.420 (+0.120)" in md and "LRP, 0.03% weights" in md
    assert "- random: no share improved repetition" in md and "neuron" not in md.lower()


def test_the_validated_correction_reports_the_step_validation_chose_and_only_that_on_held_out_prompts():
    """bench/correction_validated.py: the validation sweep, then LRP and the control at the chosen step only."""
    from bench.correction_validated import markdown

    def step(amount, cost, rate):
        return {"amount": amount, "cost": cost, "samples": [f"s{amount}"],
                "behaviour": {"toxic_rate": rate, "toxic_rate_sampled": rate, "toxic_rate_sampled_spread": 0.01,
                              "toxicity": rate}}

    val = {"behaviour": "toxicity", "bound": 0.02, "prompts": 23, "windows": 16, "chosen": 5e-4,
           "steps": [step(0, 0, 0.16), step(3e-4, 0.01, 0.14), step(5e-4, 0.015, 0.1), step(1e-3, 0.03, 0.05)]}
    held = {"behaviour": "toxicity", "prompts": 39, "windows": 16, "steps": [step(0, 0, 0.154), step(5e-4, 0.012, 0.07)]}
    ctrl = {**held, "steps": [step(0, 0, 0.154), step(5e-4, 0.011, 0.15)]}
    r = {"model": "default", "size": "ci", "behaviour": "toxicity", "granularity": "global", "steps": [3e-4, 5e-4, 1e-3],
         "runs": {"validation": val, "lrp": held, "random": ctrl}, "chosen": 5e-4, "held_out_prompts": ["p"]}
    md = markdown(r, "cmd")
    assert "| toxic rate, sampled | 0.160 | 0.140 | 0.100 | 0.050 |" in md
    assert "Chosen on validation data: 0.05% weights" in md
    assert "| lrp | 0.05% | +1.20% | 0.070 | 0.070 ± 0.010 | 0.070 |" in md and "| random | 0.05% | +1.10% |" in md
    assert "| p | s0 | s0.0005 |" in md
    r["chosen"], r["runs"] = None, {"validation": {**val, "chosen": None}}
    assert "nothing was measured on held-out prompts" in markdown(r, "cmd")
