"""`--scorer learned-mask`: gates on the heads' and neurons' outputs trained to keep the task with few units open."""

from __future__ import annotations

import json

import pytest
import torch

from core.attribution.scorers import learned_mask
from core.attribution.scorers.eap_ig import _units
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tasks import ioi_items
from core.data.tokens import task_batches
from core.model.layers import prunable_layers


def _learn(lm, layers, tokenizer, items, lam: float, dead_head: int | None = None):
    """The heads' final gate logits on one batch of `items` (with `dead_head`'s output columns zeroed first)."""
    units = _units(lm.model, layers)["head"]
    by_name = {p.name: p for p in layers}
    if dead_head is not None:  # a head whose output never reaches the residual stream: the task cannot need it
        part = next(pt for pt in units[dead_head].parts if pt.axis == "col")
        by_name[part.layer].module.weight.data[:, part.start:part.stop] = 0.0
    names = sorted({pt.layer for u in units for pt in u.parts if pt.axis == "col"})
    batch = task_batches(tokenizer, items, 64, 64)[0]
    embeds = lm.model.get_input_embeddings()(batch.ids).detach()
    clean = {}
    hs = [by_name[n].module.register_forward_pre_hook(lambda m, a, n=n: clean.__setitem__(n, a[0].detach())) for n in names]
    with torch.no_grad():
        dense = float(learned_mask._logit_diff(lm.model, embeds, batch).mean())
    for h in hs:
        h.remove()
    keep = batch.mask.bool()
    mean = {n: a.float()[keep].mean(0) for n, a in clean.items()}
    old = learned_mask.LAMBDA
    learned_mask.LAMBDA = lam
    try:
        return learned_mask.learn(lm.model, by_name, units, names, mean, embeds, batch, dense, steps=30)
    finally:
        learned_mask.LAMBDA = old


def test_the_sparsity_pressure_closes_what_the_task_does_not_use(tokenizer):
    """A head whose output is cut off from the model only feels the pressure: it closes, among the first; without
    pressure it stays where it started, as the task gives it no gradient either way."""
    from conftest import make_tiny

    lm = make_tiny("llama", tokenizer, seed=1)
    layers = prunable_layers(lm.model)
    items = ioi_items(16, 0)
    free = _learn(lm, layers, tokenizer, items, 0.0, dead_head=5)
    assert float(free[5]) == pytest.approx(learned_mask.START)
    theta = _learn(lm, layers, tokenizer, items, 2.0, dead_head=5)
    assert float(theta[5]) < learned_mask.START - 1.0 and int((theta < theta[5]).sum()) <= 2, theta


def test_learned_mask_scores_heads_and_neurons_and_finds_a_mean_ablation_circuit(invoke, tiny_model_dir, tokenizer):
    from conftest import make_tiny

    lm = make_tiny("llama", tokenizer, seed=1)
    layers = prunable_layers(lm.model)
    state = ScoreState()
    for b in task_batches(tokenizer, ioi_items(8, 0), 64, 4):
        learned_mask.accumulate(lm.model, layers, b, state, ScorerOptions.default())
        state.samples += b.size
    units = learned_mask.finish_units(lm.model, layers, state, ScorerOptions.default())
    assert units["head"].shape == (8,) and units["neuron"].shape == (2 * 64,) and bool((units["head"] > 0).all())
    assert float(units["neuron"].std()) > 0  # the neurons' search moved their gates apart
    invoke("score", "--session", "m", "--model", str(tiny_model_dir), "--reference", "builtin:ioi", "--samples", "8",
           "--seq-len", "32", "--scorer", "learned-mask")
    out = json.loads(invoke("circuit", "--session", "m", "--granularity", "head", "--ablation", "mean", "--json",
                            "--no-plot").stdout)
    assert out["scorer"] == "learned-mask" and out["curve"][0]["logit_diff"] == pytest.approx(1.0)
    bad = invoke("score", "--session", "n", "--model", str(tiny_model_dir), "--reference", "builtin:general",
                 "--samples", "4", "--seq-len", "32", "--scorer", "learned-mask", ok=False)
    assert "needs a task reference" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_a_revised_method_is_scored_again_and_the_others_keep_their_cache_keys():
    """The learned mask's head search changed (80 steps): its keys say so, so a session's 40-step scores are not
    reused; a method that did not change keeps the key it had, so its cached scores stay valid."""
    from core.attribution.keys import set_key
    from core.settings import ScoreConfig

    revised = set_key(ScoreConfig(reference="builtin:ioi", scorer="learned-mask"), "reference", "m")
    assert revised["revision"] == "heads-80-steps"
    assert learned_mask.STEPS == {"head": 80, "neuron": 40}
    plain = set_key(ScoreConfig(reference="builtin:ioi", scorer="lrp"), "reference", "m")
    assert "revision" not in plain and plain["scorer"] == "lrp"
