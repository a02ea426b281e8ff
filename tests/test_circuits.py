"""Circuit discovery: curves, the circuit, its map and masks in the session, scorer comparison, the PNG."""

import json

import pytest
import torch

from core.applications.circuits import CurvePoint, circuit_kept, plan_keeping


def test_circuit_is_the_smallest_fraction_from_which_the_curve_holds():
    pts = [CurvePoint(k, v, 1.0, v) for k, v in [(1.0, 1.0), (0.5, 0.95), (0.2, 0.7), (0.1, 0.85), (0.0, 0.0)]]
    assert circuit_kept(pts, 0.8) == 0.5  # 0.1 holds again, but 0.2 broke the run
    assert circuit_kept([CurvePoint(1.0, 1.0, 1, 1), CurvePoint(0.0, 0.0, 0, 0)]) == 1.0
    plan = plan_keeping("head", 8, 0.25)
    assert plan.granularity == "head" and plan.count == 6


@pytest.fixture
def cli(invoke, tiny_model_dir):
    invoke("score", "--session", "ioi", "--model", str(tiny_model_dir), "--reference", "builtin:ioi", "--samples", "16",
           "--seq-len", "32")
    return invoke


@pytest.mark.parametrize("granularity", ["global", "neuron", "head"])
def test_circuit_curve_json_map_and_session(cli, tmp_path, granularity):
    out = json.loads(cli("circuit", "--session", "ioi", "--granularity", granularity, "--json").stdout)
    assert {"scorer", "granularity", "curve", "circuit_kept"} <= set(out) and out["scorer"] == "lrp"
    curve = out["curve"]
    assert [p["kept"] for p in curve][0] == 1.0 and curve[-1]["kept"] == 0.0
    assert curve[0]["logit_diff"] == pytest.approx(1.0) and curve[-1]["logit_diff"] == pytest.approx(0.0, abs=1e-6)
    assert all(set(p) >= {"kept", "logit_diff", "accuracy"} for p in curve)
    kept = out["circuit_kept"]
    assert kept is not None
    held = [p for p in curve if p["kept"] >= kept]
    assert all(p["logit_diff"] >= 0.8 for p in held)
    assert (tmp_path / f"circuit-ioi-{granularity}.png").read_bytes()[:4] == b"\x89PNG"
    from core.session.store import Session

    s = Session.open(tmp_path / "store", "ioi")
    record = s.manifest.circuits[granularity]
    assert record.circuit_kept == kept and s.manifest.plan == record.plan  # the circuit is the session's plan
    if granularity == "head":
        flags = out["map"]["blocks"]
        n_kept = sum(sum(f) for f in flags.values())
        assert n_kept == round(kept * 8) and len(flags) == 2  # 2 blocks x 4 heads in the tiny model
    ev = json.loads(cli("eval", "--session", "ioi", "--json", "--metrics", "task_logit_diff").stdout)
    at = next(p for p in curve if p["kept"] == kept)
    assert ev["metrics"]["task_logit_diff"]["pruned"] == pytest.approx(at["raw_logit_diff"], rel=1e-4, abs=1e-5)
    cli("export", "--session", "ioi", "--out", str(tmp_path / f"circuit-{granularity}"))
    info = json.loads((tmp_path / f"circuit-{granularity}" / "pruning.json").read_text())
    assert info["plan"]["count"] == record.plan.count


def test_the_earlier_name_weight_means_global(cli):
    out = json.loads(cli("circuit", "--session", "ioi", "--granularity", "weight", "--json").stdout)
    assert out["granularity"] == "global"


def test_compare_scorers_in_one_command(cli, tmp_path):
    out = json.loads(cli("circuit", "--session", "ioi", "--granularity", "head", "--compare", "lrp,cap,random",
                         "--seeds", "2", "--json", "--plot", str(tmp_path / "cmp.png")).stdout)
    assert [(r["scorer"], r["seed"]) for r in out] == [("lrp", 0), ("lrp", 1), ("cap", 0), ("cap", 1), ("random", 0), ("random", 1)]
    assert all(r["curve"][0]["logit_diff"] == pytest.approx(1.0) for r in out)
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    from core.session.store import Session

    assert Session.open(tmp_path / "store", "ioi").manifest.ranking.key["sets"]["reference"]["scorer"] == "lrp"


def test_circuit_needs_a_task(cli, tiny_model_dir):
    cli("score", "--session", "txt", "--model", str(tiny_model_dir), "--samples", "4", "--seq-len", "32")
    res = cli("circuit", "--session", "txt", ok=False)
    assert res.exit_code == 1 and "needs a task set" in res.output and len(res.output.strip().splitlines()) == 1


def test_task_scoring_explains_the_logit_difference(tiny_model_dir, tmp_path):
    """For task sets every target-using scorer explains logit(answer) - logit(distractor) at the answer position."""
    from core.attribution.targets import model_target
    from core.data.prompt_sets import load_prompt_set
    from core.data.tokens import task_batches
    from core.model.loading import load_model

    lm = load_model(str(tiny_model_dir), "cpu", "float32")
    items = load_prompt_set("builtin:ioi").task_score[:3]
    b = task_batches(lm.tokenizer, items, 64, 3)[0]
    for target in ("logit", "logprob", "predicted"):
        t = model_target(lm.model, lm.model.get_input_embeddings()(b.ids), b, target)
        logits = lm.model(input_ids=b.ids, attention_mask=b.mask).logits
        last = logits[torch.arange(3), b.mask.sum(1) - 1]
        want = (last.gather(1, b.answers[:, None]) - last.gather(1, b.distractors[:, None])).sum()
        assert float(t) == pytest.approx(float(want), rel=1e-4, abs=1e-5)


def test_task_sets_default_to_mean_relevance():
    from core.settings import ScoreConfig

    assert ScoreConfig().resolved("text").reduce == "token-rms"
    assert ScoreConfig().resolved("task").reduce == "abs"
    assert ScoreConfig(contrastive="builtin:repetition").resolved("text").reduce == "abs"
    assert ScoreConfig(reduce="token-abs").resolved("task").reduce == "token-abs"  # a choice is kept


@pytest.fixture
def scored(tmp_path, tiny_model_dir):
    from core.engine import Workbench
    from core.session.store import Session
    from core.settings import ModelSpec, ScoreConfig

    wb = Workbench(Session.create(tmp_path, "t"))
    wb.load(ModelSpec(str(tiny_model_dir)))
    wb.score(ScoreConfig(reference="builtin:ioi", samples=16, seq_len=32))
    return wb


def test_task_scoring_records_its_reduction_and_ranks_units_by_their_own_relevance(scored):
    assert scored.session.manifest.score_config.reduce == "abs"  # resolved for the task set, and recorded
    units = scored.ranking().units
    assert units["head"].numel() == 8 and units["neuron"].numel() == 2 * scored.lm.model.config.intermediate_size
    heads_scores = scored.ensure_pruner().units("head")[1]
    assert torch.equal(heads_scores, units["head"].float())  # not the sum of the head's weight scores


def test_the_map_shows_the_circuits_own_plan_not_the_last_curve_point(scored):
    from core.applications.circuits import circuit_map, plan_keeping

    pruner = scored.ensure_pruner()
    pruner.apply(plan_keeping("head", 8, 0.25))  # as the last grid points leave it
    everything = plan_keeping("head", 8, 1.0)
    flags = circuit_map(pruner, "head", pruner.removed(everything))["blocks"]
    assert sum(sum(f) for f in flags.values()) == 8


def test_the_circuit_is_found_to_one_percent_and_scored_by_its_area(cli):
    """A bisection between the grid points resolves the size (no ties at grid points); the area under the
    curve scores the ranking without a threshold."""
    from core.applications.circuits import GRID

    out = json.loads(cli("circuit", "--session", "ioi", "--granularity", "global", "--json").stdout)
    curve = sorted(out["curve"], key=lambda p: p["kept"])
    kept = out["circuit_kept"]
    held = [p for p in curve if p["kept"] >= kept]
    assert all(p["logit_diff"] >= 0.8 for p in held)
    below = max(p["kept"] for p in curve if p["kept"] < kept)
    assert kept - below <= 0.01 + 1e-9  # the next point down fails: the size is known to 1 %
    assert {p["kept"] for p in curve} - set(GRID)  # points were measured between the grid's
    assert 0 < out["area"] <= 1.2 and out["area"] == pytest.approx(
        sum((b["kept"] - a["kept"]) * (a["logit_diff"] + b["logit_diff"]) / 2 for a, b in zip(curve, curve[1:])))


def test_mean_ablation_replaces_removed_heads_by_their_mean(cli, tiny_model_dir, tmp_path):
    """--ablation mean: removed heads output their mean over the scoring items (a constant into the output
    projection), so the all-removed baseline differs from zeroing; weights refuse it in one line."""
    zero = json.loads(cli("circuit", "--session", "ioi", "--granularity", "head", "--json", "--no-plot").stdout)
    mean = json.loads(cli("circuit", "--session", "ioi", "--granularity", "head", "--ablation", "mean", "--json",
                          "--no-plot").stdout)
    assert mean["ablation"] == "mean" and zero["ablation"] == "zero"
    assert mean["dense"] == pytest.approx(zero["dense"]) and mean["empty"] != pytest.approx(zero["empty"])
    assert mean["curve"][0]["logit_diff"] == pytest.approx(1.0) and mean["curve"][-1]["logit_diff"] == pytest.approx(0.0, abs=1e-6)
    bad = cli("circuit", "--session", "ioi", "--granularity", "global", "--ablation", "mean", ok=False)
    assert "--ablation mean" in bad.output and len(bad.output.strip().splitlines()) == 1
    said = cli("circuit", "--session", "ioi", "--granularity", "head", "--ablation", "mean", "--no-plot").stdout
    assert "its removed components zeroed (the curve put them at their mean output)" in said  # not the model measured
    cli("export", "--session", "ioi", "--out", str(tmp_path / "circuit"))  # the mean circuit is the session's plan
    said = json.loads((tmp_path / "circuit" / "pruning.json").read_text())["circuit"]
    assert said["ablation"] == "mean" and "does not hold" in said["exported_as"]


def test_mean_ablation_adds_exactly_the_removed_units_mean_contribution(tiny_model_dir, tmp_path):
    """The hook's constant is W[:, removed] @ mean input[removed]: with the mean input equal to the actual input,
    a mean-ablated layer gives back the dense output."""
    import torch

    from core.applications.circuits import mean_ablated
    from core.model.layers import prunable_layers
    from core.model.loading import load_model
    from core.pruning.masks import Pruner
    from core.pruning.plan import SparsityPlan
    from core.pruning.ranking import Ranking

    lm = load_model(str(tiny_model_dir), "cpu", "float32")
    layers = prunable_layers(lm.model)
    from core.model.units import units_of

    ranking = Ranking.from_values({p.name: torch.randn(p.shape) for p in layers}, {})
    pruner = Pruner(layers, ranking, units=lambda kind: units_of(lm.model, layers, kind))
    pruner.apply(SparsityPlan(0.0, [], "head", count=4))
    o = next(p for p in layers if p.name.endswith("o_proj") and pruner.state[p.name].cols.any())
    x = torch.randn(o.shape[1])
    pruner.use_pruned(False)
    with torch.no_grad():
        dense = o.module(x)
    pruner.use_pruned(True)
    with torch.no_grad(), mean_ablated(pruner, {o.name: x}):
        back = o.module(x * ~pruner.state[o.name].cols)  # the removed heads' outputs are zero on the way in
    assert torch.allclose(back, dense, atol=1e-5)


def test_patch_ablation_with_the_clean_prompt_as_its_own_counterpart_is_the_dense_model(tiny_model_dir):
    """Activation patching adds each removed unit's output on the counterpart: when the counterpart is the prompt
    itself, every head removed and patched gives the dense logit differences back exactly."""
    from dataclasses import replace

    import torch

    from core.applications.circuits import patched_logit_diffs
    from core.data.tasks import ioi_items
    from core.evaluation.metrics import task_logit_diffs
    from core.model.layers import prunable_layers
    from core.model.loading import load_model
    from core.model.units import units_of
    from core.pruning.masks import Pruner
    from core.pruning.plan import SparsityPlan
    from core.pruning.ranking import Ranking

    lm = load_model(str(tiny_model_dir), "cpu", "float32")
    layers = prunable_layers(lm.model)
    pruner = Pruner(layers, Ranking.from_values({p.name: torch.randn(p.shape) for p in layers}, {}),
                    units=lambda kind: units_of(lm.model, layers, kind))
    items = [replace(it, corrupted=it.prompt) for it in ioi_items(6, 0)]
    pruner.use_pruned(False)
    with torch.no_grad():
        dense = task_logit_diffs(lm.model, lm.tokenizer, items)
    heads = len(pruner.units("head")[0])
    pruner.apply(SparsityPlan(0.0, [], "head", count=heads))  # every head removed
    with torch.no_grad():
        zeroed = task_logit_diffs(lm.model, lm.tokenizer, items)
    patched = patched_logit_diffs(pruner, lm.model, lm.tokenizer, items, batch_size=4)
    assert not torch.allclose(zeroed, dense, atol=1e-3)
    assert torch.allclose(patched, dense, atol=1e-4) and pruner.pruned_active


def test_patch_ablation_on_the_cli(cli):
    """--ablation patch measures the curve on the items whose counterpart has the prompt's length in tokens."""
    from core.data.tasks import ioi_items

    assert all(it.corrupted and it.corrupted != it.prompt for it in ioi_items(8, 0))
    out = json.loads(cli("circuit", "--session", "ioi", "--granularity", "head", "--ablation", "patch", "--json",
                         "--no-plot").stdout)
    assert out["ablation"] == "patch" and 0 < out["items"]
    assert out["curve"][0]["logit_diff"] == pytest.approx(1.0) and out["curve"][-1]["logit_diff"] == pytest.approx(0.0, abs=1e-6)
    bad = cli("circuit", "--session", "ioi", "--granularity", "global", "--ablation", "patch", ok=False)
    assert "--ablation patch" in bad.output and len(bad.output.strip().splitlines()) == 1
