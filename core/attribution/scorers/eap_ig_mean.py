"""EAP-IG with the mean as counterpart: each attention head and MLP neuron scored by integrated gradients of the
task's logit difference along the path from every unit at its mean output to every unit at its own output.

`eap-ig` interpolates the input embeddings from a corrupted prompt, so it estimates what patching does; a circuit
measured with `--ablation mean` replaces removed units by their mean output instead, and this scorer estimates
that. Each head (or, in a second pass, each neuron) outputs mean + g (x - mean), x being what it computes from its
inputs in this pass, with one gate g per unit; all gates move together from 0 to 1 (g = k/m, k = 1..m, m = 20)
and a unit's score is the mean gradient of the task's logit difference with respect to its gate. Because later
units respond to earlier ones, a head that matters through the heads after it gets that credit, and the scores
add up to the difference between the model and the model with every head mean-ablated (the one a head circuit's
curve starts from). The mean is over the batch's tokens, as `circuit --ablation mean` averages over the task's
scoring items. Works on any task set (no counterparts needed).
"""

from __future__ import annotations

import torch

from core.attribution.scorers import eap_ig
from core.attribution.scorers.cap import _sq_hooks
from core.attribution.scorers.eap_ig import _logit_diff, _units, unit_sums
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.errors import WorkbenchError
from core.model.layers import Prunable

KEYS = {"head": "@eap-mean-head", "neuron": "@eap-mean-neuron"}
STEPS = 20  # its path crosses a broken model (every head at its mean), far longer than eap-ig's corrupted-to-clean path


def clean_pass(model, layers: list[Prunable], batch: Batch, who: str):
    """One pass on the batch as it is: the units, the layers their outputs enter (per kind), the input embeddings,
    each of those layers' mean input over the batch's tokens, Wanda's statistics, and the mean logit difference."""
    if batch.answers is None:
        raise WorkbenchError(f"{who} needs a task reference (builtin:ioi, builtin:agreement or a task file)")
    units = _units(model, layers)
    by_name = {p.name: p for p in layers}
    outs = {kind: sorted({part.layer for u in us for part in u.parts if part.axis == "col"}) for kind, us in units.items()}
    keep = batch.mask.bool()
    embeds = model.get_input_embeddings()(batch.ids).detach()
    clean: dict[str, torch.Tensor] = {}
    sq: dict[str, torch.Tensor] = {}

    def grab(name):
        def pre(_module, args):
            clean[name] = args[0].detach()
        return pre

    handles = [by_name[n].module.register_forward_pre_hook(grab(n)) for ns in outs.values() for n in ns]
    handles += _sq_hooks(layers, keep, sq)  # Wanda's statistics for the weight scores
    try:
        with torch.no_grad():
            dense = float(_logit_diff(model, embeds, batch).mean())
    finally:
        for h in handles:
            h.remove()
    tokens = keep.to(next(iter(clean.values())).device)
    mean = {n: a.float()[tokens].mean(0) for n, a in clean.items()}
    return units, by_name, outs, embeds, mean, sq, dense


def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    units, by_name, outs, embeds, mean, sq, _ = clean_pass(model, layers, batch, "eap-ig-mean")
    for kind, names in outs.items():
        grads: dict[str, torch.Tensor] = {}
        if not names:  # a model without units of this kind
            state.add(KEYS[kind], torch.zeros(0))
            continue
        for k in range(1, STEPS + 1):
            gates: dict[str, torch.Tensor] = {}

            def interpolate(name, a=k / STEPS):
                def pre(_module, args):
                    x = args[0]
                    gate = torch.full((x.shape[-1],), a, device=x.device, dtype=torch.float32, requires_grad=True)
                    gates[name] = gate
                    m = mean[name].to(x.device)
                    return ((m + gate * (x.float() - m)).to(x.dtype), *args[1:])
                return pre

            hs = [by_name[n].module.register_forward_pre_hook(interpolate(n)) for n in names]
            try:
                with torch.enable_grad():
                    _logit_diff(model, embeds, batch).sum().backward()
            finally:
                for h in hs:
                    h.remove()
            for n, gate in gates.items():
                grads[n] = grads.get(n, 0) + gate.grad.float() / STEPS
        state.add(KEYS[kind], unit_sums(units[kind], grads))
    for name, s in sq.items():
        state.add(name, s)


def finish_units(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return eap_ig.finish_units(model, layers, state, options, KEYS)


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    return eap_ig.finish(model, layers, state, options, KEYS)
