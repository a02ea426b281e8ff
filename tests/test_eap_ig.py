"""EAP-IG at node level (`--scorer eap-ig`): its head scores estimate what patching each head from the corrupted
counterpart does to the task, and it ranks heads and neurons for circuits."""

from __future__ import annotations

import json

import torch

from core.applications.circuits import patchable, patched_logit_diffs
from core.attribution.scorers import eap_ig
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tasks import ioi_items
from core.data.tokens import task_batches
from core.evaluation.metrics import task_logit_diffs
from core.model.layers import prunable_layers
from core.model.units import units_of
from core.pruning.masks import Pruner
from core.pruning.plan import SparsityPlan
from core.pruning.ranking import Ranking


def _scores(scorer, lm, layers, tokenizer, items, per_batch: int, key: str) -> tuple[torch.Tensor, ScoreState]:
    """The scorer's mean per-head score over the items (and its state)."""
    state = ScoreState()
    for b in task_batches(tokenizer, items, 64, per_batch):
        scorer.accumulate(lm.model, layers, b, state, ScorerOptions.default())
        state.samples += b.size
    return state.sums[key] / state.samples, state


def _pruner_removing(lm, layers, head: int | None, n: int) -> Pruner:
    """A pruner whose head ranking puts `head` last (None: all heads equal)."""
    order = torch.zeros(n)
    if head is not None:
        order[head] = -1.0  # the lowest-ranked head: the one a count of 1 removes
    return Pruner(layers, Ranking.from_values({p.name: torch.ones(p.shape) for p in layers}, {}, units={"head": order}),
                  units=lambda kind: units_of(lm.model, layers, kind))


def _each_head_removed(lm, layers, n: int, measure) -> torch.Tensor:
    """measure(pruner) with each head alone removed."""
    out = []
    for h in range(n):
        pruner = _pruner_removing(lm, layers, h, n)
        pruner.apply(SparsityPlan(0.0, [], "head", count=1))
        out.append(measure(pruner))
        pruner.use_pruned(False)
    return torch.tensor(out)


def test_head_scores_match_the_effect_of_patching_each_head(tokenizer):
    from conftest import make_tiny

    lm = make_tiny("llama", tokenizer, seed=1)
    layers = prunable_layers(lm.model)
    items = patchable(tokenizer, ioi_items(24, 0))
    estimated, _ = _scores(eap_ig, lm, layers, tokenizer, items, 8, "@eap-head")
    dense = task_logit_diffs(lm.model, tokenizer, items).mean()
    actual = _each_head_removed(lm, layers, len(estimated), lambda pruner: float(
        dense - patched_logit_diffs(pruner, lm.model, tokenizer, items).mean()))
    assert float(torch.corrcoef(torch.stack([estimated, actual]))[0, 1]) > 0.95
    assert float(actual.abs().max()) > 0  # the heads matter at all: the check is not of zeros against zeros

    same = ScoreState()  # a counterpart equal to the prompt differs nowhere: every score is zero
    for b in task_batches(tokenizer, [type(it)(it.prompt, it.answer, it.distractor, it.prompt) for it in items], 64, 8):
        eap_ig.accumulate(lm.model, layers, b, same, ScorerOptions.default())
    assert float(same.sums["@eap-head"].abs().max()) == 0 and float(same.sums["@eap-neuron"].abs().max()) == 0


def test_eap_ig_ranks_circuits_and_refuses_text(invoke, tiny_model_dir):
    invoke("score", "--session", "e", "--model", str(tiny_model_dir), "--reference", "builtin:ioi", "--samples", "8",
           "--seq-len", "32", "--scorer", "eap-ig")
    for g in ("head", "neuron"):
        out = json.loads(invoke("circuit", "--session", "e", "--granularity", g, "--json", "--no-plot").stdout)
        assert out["scorer"] == "eap-ig" and out["curve"][0]["logit_diff"] == 1.0
    bad = invoke("score", "--session", "t", "--model", str(tiny_model_dir), "--reference", "builtin:general",
                 "--samples", "4", "--seq-len", "32", "--scorer", "eap-ig", ok=False)
    assert "corrupted counterparts" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_mean_counterpart_scores_match_the_effect_of_mean_ablating_each_head(tokenizer):
    """`eap-ig-mean`: integrated gradients from every head's mean output add up to what mean-ablating all heads
    does (IG's completeness), and each head's share tracks what mean-ablating it alone does."""
    from conftest import make_tiny

    from core.applications.circuits import mean_ablated, unit_input_means
    from core.attribution.scorers import eap_ig_mean

    lm = make_tiny("llama", tokenizer, seed=1)
    layers = prunable_layers(lm.model)
    items = ioi_items(24, 0)
    # one batch: the scorer's mean is the measurement's
    estimated, state = _scores(eap_ig_mean, lm, layers, tokenizer, items, 64, "@eap-mean-head")
    dense = task_logit_diffs(lm.model, tokenizer, items).mean()
    pruner = _pruner_removing(lm, layers, None, len(estimated))
    means = unit_input_means(pruner, lm.model, tokenizer, items)

    def mean_ablated_effect(p: Pruner) -> float:
        with mean_ablated(p, means):
            return float(dense - task_logit_diffs(lm.model, tokenizer, items).mean())

    actual = _each_head_removed(lm, layers, len(estimated), mean_ablated_effect)
    pruner.apply(SparsityPlan(0.0, [], "head", count=len(estimated)))
    with mean_ablated(pruner, means):
        total = float(dense - task_logit_diffs(lm.model, tokenizer, items).mean())
    pruner.use_pruned(False)
    assert abs(total) > 0 and abs(float(estimated.sum()) - total) < 0.05 * abs(total)
    assert float(actual.abs().max()) > 0
    # single-head effects are not additive (heads interact), so the match is looser than the sum's
    assert float(torch.corrcoef(torch.stack([estimated, actual]))[0, 1]) > 0.75
    assert state.sums["@eap-mean-neuron"].abs().max() > 0  # neurons are scored too


def test_eap_ig_mean_finds_a_mean_ablation_circuit_and_refuses_text(invoke, tiny_model_dir):
    invoke("score", "--session", "m", "--model", str(tiny_model_dir), "--reference", "builtin:ioi", "--samples", "8",
           "--seq-len", "32", "--scorer", "eap-ig-mean")
    out = json.loads(invoke("circuit", "--session", "m", "--granularity", "head", "--ablation", "mean", "--json",
                            "--no-plot").stdout)
    assert out["scorer"] == "eap-ig-mean" and out["ablation"] == "mean" and out["curve"][0]["logit_diff"] == 1.0
    bad = invoke("score", "--session", "n", "--model", str(tiny_model_dir), "--reference", "builtin:general",
                 "--samples", "4", "--seq-len", "32", "--scorer", "eap-ig-mean", ok=False)
    assert "needs a task reference" in bad.output and len(bad.output.strip().splitlines()) == 1
