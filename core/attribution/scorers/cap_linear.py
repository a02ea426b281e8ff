"""CAP's linear approximation (attribution patching): each head's removal estimated from one backward pass.

Zeroing head h changes the measure M (minus the loss on text, the logit difference on a
task) by about -(dM/da_h) . a_h, where a_h is the head's slice of the output projection's
input: gradient times activation, summed over the head's dimensions and the tokens. One
forward and one backward pass score every head at once, where CAP runs a (partial)
forward per head; the two can be compared head by head (bench/circuits.py). Weight scores
are made from head scores as CAP's (core/attribution/scorers/cap.py).
"""

from __future__ import annotations

import torch

from core.attribution.scorers.cap import HEADS, _sq_hooks, finish, finish_units, per_sample_metric
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.model.layers import Prunable
from core.model.units import heads

__all__ = ["accumulate", "finish", "finish_units"]


def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    units = heads(model, layers)
    by_name = {p.name: p for p in layers}
    outs = sorted({part.layer for u in units for part in u.parts if part.axis == "col"})
    products: dict[str, torch.Tensor] = {}  # output projection -> sum over tokens of grad * activation [in]
    handles = []

    def pre_for(name: str):
        def pre(_module, args):
            a = args[0]
            if a.requires_grad:
                saved = a.detach()
                a.register_hook(lambda g: products.__setitem__(name, (g.float() * saved.float()).reshape(-1, g.shape[-1]).sum(0)))

        return pre

    sq: dict[str, torch.Tensor] = {}
    try:
        handles = [by_name[n].module.register_forward_pre_hook(pre_for(n)) for n in outs]
        handles += _sq_hooks(layers, batch.mask.bool(), sq)
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(batch.ids).detach().requires_grad_(True)
            model_inputs = Batch(batch.ids, batch.mask, batch.answers, batch.distractors, batch.explained)
            metric = per_sample_metric(_EmbedsModel(model, embeds), model_inputs)
            metric.sum().backward()
    finally:
        for h in handles:
            h.remove()
    damage = torch.zeros(len(units))
    for i, u in enumerate(units):
        part = next(pt for pt in u.parts if pt.axis == "col")
        damage[i] = products[part.layer][part.start : part.stop].sum()  # -dM = g . a
    for name, s in sq.items():
        state.add(name, s)
    state.add(HEADS, damage)


class _EmbedsModel:
    """Calls the model on fixed input embeddings (so gradients reach every activation)."""

    def __init__(self, model, embeds: torch.Tensor):
        self.model, self.embeds = model, embeds

    def __call__(self, input_ids=None, **kwargs):
        return self.model(inputs_embeds=self.embeds, **kwargs)
