"""A learned mask (subnetwork probing, Cao et al. 2021; node-level edge pruning, Bhaskar et al. 2024): a gate on
each attention head's (then, in a second search, each MLP neuron's) output, learned by gradient descent to keep the
task's logit difference with as few units as possible, each unit the gate closes outputting its mean.

Attribution scores each unit once, on the full model; a circuit is then cut out of that ranking, and units that only
matter together, or only once others are gone, are ranked by what they do in a model that no longer exists. A
learned mask searches among circuits directly. Each unit outputs mean + g (x - mean) with g = sigmoid(theta)
(the mean over the batch's tokens, as `circuit --ablation mean` averages over the task's scoring items); theta
starts at 3 (g = 0.95) and Adam minimises

    max(0, 1 - f)^2 + lambda * mean(g),   f = (logit difference - all at their mean) / (dense - all at their mean)

over STEPS[kind] steps, lambda growing linearly from 0 to LAMBDA, so units are closed in the order the task needs them
least. A unit's score is its final theta (higher = keep), averaged over batches. Any task set; no counterparts.
"""

from __future__ import annotations

import torch

from core.attribution.scorers.cap import weight_scores
from core.attribution.scorers.eap_ig import _logit_diff
from core.attribution.scorers.eap_ig_mean import clean_pass
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.model.layers import Prunable

KEYS = {"head": "@mask-head", "neuron": "@mask-neuron"}
# gradient steps per batch: for heads chosen on validation items (IOI's scoring items split in halves, CHANGELOG);
# neurons keep the first setting, not measured with more (their search is the costlier one)
STEPS = {"head": 80, "neuron": 40}
LAMBDA = 0.5  # the final weight of the mean gate against the faithfulness lost, squared
LR = 0.2
START = 3.0  # theta at the start: every gate 0.95 open


def _columns(units: list, names: list[str], widths: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per output layer, the unit each input column belongs to (-1: none)."""
    owner = {n: torch.full((widths[n],), -1, dtype=torch.long) for n in names}
    for i, u in enumerate(units):
        part = next(pt for pt in u.parts if pt.axis == "col")
        owner[part.layer][part.start:part.stop] = i
    return owner


def learn(model, by_name: dict[str, Prunable], units: list, names: list[str], mean: dict[str, torch.Tensor],
          embeds: torch.Tensor, batch: Batch, dense: float, steps: int = STEPS["head"]) -> torch.Tensor:
    """theta [units] after the search (see the module's docstring)."""
    owner = _columns(units, names, {n: mean[n].numel() for n in names})
    theta = torch.full((len(units),), START, requires_grad=True)
    gate_of = {"g": None}  # the gates of this pass, once per pass, then one more always open: column -1 (no unit)

    def open_last(gates: torch.Tensor) -> torch.Tensor:
        return torch.cat([gates, torch.ones(1)])

    def gated(name):
        cols = owner[name]

        def pre(_module, args):
            x = args[0]
            g = gate_of["g"][cols].to(x.device)
            m = mean[name].to(x.device)
            return ((m + g * (x.float() - m)).to(x.dtype), *args[1:])
        return pre

    hs = [by_name[n].module.register_forward_pre_hook(gated(n)) for n in names]
    try:
        with torch.no_grad():
            gate_of["g"] = open_last(torch.zeros(len(units)))
            empty = float(_logit_diff(model, embeds, batch).mean())
        span = dense - empty
        if abs(span) < 1e-6:  # the task does not depend on these units at all: nothing to rank by
            return torch.zeros(len(units))
        opt = torch.optim.Adam([theta], lr=LR)
        for step in range(steps):
            lam = LAMBDA * (step + 1) / steps
            with torch.enable_grad():
                gates = torch.sigmoid(theta)
                gate_of["g"] = open_last(gates)
                f = (_logit_diff(model, embeds, batch).mean() - empty) / span
                loss = torch.relu(1 - f) ** 2 + lam * gates.mean()  # above the dense model is no loss
                opt.zero_grad()
                loss.backward()
            opt.step()
    finally:
        for h in hs:
            h.remove()
    return theta.detach()


def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    units, by_name, outs, embeds, mean, sq, dense = clean_pass(model, layers, batch, "learned-mask")
    for kind, names in outs.items():
        if not names:  # a model without units of this kind
            state.add(KEYS[kind], torch.zeros(0))
            continue
        theta = learn(model, by_name, units[kind], names, mean, embeds, batch, dense, steps=STEPS[kind])
        state.add(KEYS[kind], theta * batch.size)
    for name, s in sq.items():
        state.add(name, s)


def finish_units(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    # softplus(theta): positive, as CAP's weight scaling expects, in theta's order, and unlike the gate itself
    # never equal at the top (a float32 sigmoid is 1.0 from theta = 17 on)
    return {kind: torch.nn.functional.softplus(state.sums[key] / max(state.samples, 1)) for kind, key in KEYS.items()}


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return weight_scores(model, layers, state, finish_units(model, layers, state, options)["head"])
