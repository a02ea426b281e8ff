"""EAP-IG (Hanna et al. 2024) at node level: each attention head and MLP neuron scored by integrated gradients of
the task's logit difference along the path from its corrupted to its clean activation, times their difference.

For a task item and its corrupted counterpart (same length in tokens), the input embeddings are interpolated,
e_k = e_corrupted + k/m (e_clean - e_corrupted) for k = 1..m (m = STEPS), and the gradient of the logit
difference with respect to each unit's output (its slice of the output projection's input for a head, its
input column of the down projection for a neuron) is averaged over the steps. A unit's score is that mean
gradient times (its clean output - its corrupted output), summed over the unit's dimensions and the tokens;
the ranking takes |mean over items|, as circuit discovery ranks by the size of an effect. Weight scores
(for `global` and compression) are Wanda's scaled by the heads' scores, as CAP's are
(core/attribution/scorers/cap.py); EAP-IG is meant for `--granularity head` and `neuron`.
"""

from __future__ import annotations

import torch

from core.attribution.scorers.cap import _sq_hooks, weight_scores
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.errors import WorkbenchError
from core.model.last_logits import last_logits
from core.model.layers import Prunable
from core.model.units import heads, neurons

STEPS = 5  # integration steps (EAP-IG's usual 5)
KEYS = {"head": "@eap-head", "neuron": "@eap-neuron"}


def _logit_diff(model, embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
    last = last_logits(model, batch.mask, inputs_embeds=embeds).float()
    return last.gather(1, batch.answers.to(last.device)[:, None]).squeeze(1) - \
        last.gather(1, batch.distractors.to(last.device)[:, None]).squeeze(1)


def _units(model, layers: list[Prunable]) -> dict[str, list]:
    return {"head": heads(model, layers), "neuron": neurons(model, layers)}


def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    if batch.corrupted is None or batch.answers is None:
        raise WorkbenchError("eap-ig needs a task reference with corrupted counterparts (builtin:ioi, builtin:agreement)")
    units = _units(model, layers)
    by_name = {p.name: p for p in layers}
    outs = sorted({part.layer for us in units.values() for u in us for part in u.parts if part.axis == "col"})
    keep = batch.mask.bool()
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def grab(name):
        def pre(_module, args):
            a = args[0]
            acts[name] = a.detach()
            if a.requires_grad:
                a.register_hook(lambda g: grads.__setitem__(name, grads.get(name, 0) + g.detach().float()))
        return pre

    embed = model.get_input_embeddings()
    sq: dict[str, torch.Tensor] = {}
    handles = [by_name[n].module.register_forward_pre_hook(grab(n)) for n in outs]
    try:
        with torch.no_grad():
            clean_e, corrupt_e = embed(batch.ids).detach(), embed(batch.corrupted.to(batch.ids.device)).detach()
            sq_handles = _sq_hooks(layers, keep, sq)  # Wanda's statistics for the weight scores, on the clean run
            try:
                _logit_diff(model, clean_e, batch)
            finally:
                for h in sq_handles:
                    h.remove()
            clean = {n: a.float() for n, a in acts.items()}
            _logit_diff(model, corrupt_e, batch)
            delta = {n: clean[n] - acts[n].float() for n in outs}
        for k in range(1, STEPS + 1):
            with torch.enable_grad():
                e = (corrupt_e + k / STEPS * (clean_e - corrupt_e)).requires_grad_(True)
                _logit_diff(model, e, batch).sum().backward()
    finally:
        for h in handles:
            h.remove()
    tokens = keep.to(next(iter(delta.values())).device).unsqueeze(-1)
    products = {n: (delta[n] * grads[n] / STEPS * tokens).reshape(-1, delta[n].shape[-1]).sum(0) for n in outs}
    for kind, us in units.items():
        state.add(KEYS[kind], unit_sums(us, products))
    for name, s in sq.items():
        state.add(name, s)


def unit_sums(us: list, per_column: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each unit's score: the sum of a per-input-column score over the columns it writes (its output slice)."""
    scores = torch.zeros(len(us))
    for i, u in enumerate(us):
        part = next(pt for pt in u.parts if pt.axis == "col")
        scores[i] = per_column[part.layer][part.start:part.stop].sum()
    return scores


def finish_units(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions,
                 keys: dict[str, str] = KEYS) -> dict[str, torch.Tensor]:
    return {kind: (state.sums[key] / max(state.samples, 1)).abs() for kind, key in keys.items()}


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions,
           keys: dict[str, str] = KEYS) -> dict[str, torch.Tensor]:
    return weight_scores(model, layers, state, finish_units(model, layers, state, options, keys)["head"])
