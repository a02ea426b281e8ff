"""Weight x gradient: R_w = w * dT/dw, accumulated per sample or per token, with plain autograd.

No weight gets `.grad`. Backward runs from the input embeddings, and a hook on each
prunable layer's output sees the output gradient g [batch, seq, out] (LRP-modified
under LRP rules) and the saved input x [batch, seq, in]. The relevance of weight w_ij
at token t is w_ij x_tj g_ti, and each aggregation is one product of those two:

  sum         sum_t g x^T, signed (the weight gradient autograd would form: the
              paper's Eq. 8 summed over tokens and samples)
  abs-sample  per sample s, |w * sum_t g x^T|: signs cancel inside a sample only
  token-sq    (g*g)^T (x*x): sum over tokens of the squared per-token relevance / w^2;
              finished as |w| sqrt(. / tokens), the root mean square over tokens
  token-abs   |g|^T |x|: finished as |w| . / tokens, the mean per-token |relevance|

Units (attention heads, MLP neurons) get their own relevance: that of the unit's output,
the slice of the output projection's (down projection's) input it writes, r_tj =
x_tj (g_t W)_j summed over the unit's dimensions j; it is aggregated over tokens and
samples like the weights' (`finish_units`). Summing the unit's weight scores instead
adds magnitudes whose signs cancel in the unit's actual contribution (bench/results/circuits.md).

Relevance signs flip between tokens and samples; summing before taking magnitudes
cancels most of the signal (bench/results/quality.md). The per-token forms cost one matmul
per layer and batch, like the signed sum, and need no per-token tensor.
"""

from __future__ import annotations

import math
import weakref

import torch

from core.attribution.state import ScorerOptions, ScoreState
from core.attribution.targets import model_target
from core.data.tokens import Batch
from core.errors import WorkbenchError
from core.model.layers import Prunable, weight_view
from core.model.units import UNIT_KINDS, UNIT_SUMS, unit_key, units_of


_COLUMNS = weakref.WeakKeyDictionary()  # model -> (layer names, columns, sizes)


def unit_columns(model, layers: list[Prunable]) -> tuple[dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]], dict[str, int]]:
    """layer -> [(kind, unit index of each of its input columns or -1 [in], the global indices of its units)],
    and how many units of each kind there are. Built once per model and kept (every batch needs it)."""
    names = tuple(p.name for p in layers)
    cached = _COLUMNS.get(model)
    if cached is not None and cached[0] == names:
        return cached[1], cached[2]
    out: dict[str, list] = {}
    sizes: dict[str, int] = {}
    widths = {p.name: p.shape[1] for p in layers}
    for kind in UNIT_KINDS:
        try:
            units = units_of(model, layers, kind)
        except WorkbenchError:
            continue  # a layout without this kind of unit: its units are scored from their weights
        sizes[kind] = len(units)
        per_layer: dict[str, list[tuple[int, int, int]]] = {}
        for i, u in enumerate(units):
            for part in u.parts:
                if part.axis == "col":
                    per_layer.setdefault(part.layer, []).append((i, part.start, part.stop))
        for layer, spans in per_layer.items():
            local = torch.full((widths[layer],), -1, dtype=torch.long)
            for j, (_, start, stop) in enumerate(spans):
                local[start:stop] = j
            out.setdefault(layer, []).append((kind, local, torch.tensor([i for i, _, _ in spans])))
    _COLUMNS[model] = (names, out, sizes)
    return out, sizes


def _add_unit_relevance(state: ScoreState, cols, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor,
                        accumulate: str, sizes: dict[str, int]) -> None:
    """x [batch, seq, in], delta [batch, seq, out], w [out, in]: add each unit's output relevance."""
    r = x.float() * (delta.float() @ w)  # [batch, seq, in]: relevance of each input column at each token
    for kind, local, index in cols:
        keep = local >= 0
        u = torch.zeros(*r.shape[:2], len(index), device=r.device).index_add_(2, local[keep].to(r.device), r[..., keep.to(r.device)])
        if accumulate == "abs-sample":
            v = u.sum(1).abs().sum(0)
        elif accumulate == "token-sq":
            v = u.pow(2).sum((0, 1))
        elif accumulate == "token-abs":
            v = u.abs().sum((0, 1))
        else:
            v = u.sum((0, 1))
        key = unit_key(kind)
        if key not in state.sums:
            state.sums[key] = torch.zeros(sizes[kind], device=v.device)
        state.sums[key].index_add_(0, index.to(v.device), v)


def accumulate(model, layers: list[Prunable], batch: Batch, state: ScoreState, options: ScorerOptions) -> None:
    handles = []
    size = batch.size
    columns, sizes = unit_columns(model, layers)

    def hook_for(p: Prunable):
        def forward_hook(_module, inputs, output):
            if not output.requires_grad:
                return
            # [batch, seq, in]; OPT flattens to [batch*seq, in]. Autograd keeps x alive anyway.
            x = inputs[0].detach().reshape(size, -1, inputs[0].shape[-1])

            def on_grad(delta: torch.Tensor) -> None:
                delta = delta.reshape(size, -1, delta.shape[-1])  # [batch, seq, out]
                w = weight_view(p).detach().to(delta.device).float()  # [out, in]
                acc = state.sums.get(p.name)
                if acc is None:
                    acc = state.sums[p.name] = torch.zeros_like(w)
                g, xs = delta.float().reshape(-1, delta.shape[-1]), x.float().reshape(-1, x.shape[-1])  # [tokens, .]
                if options.accumulate == "abs-sample":
                    # One sample at a time: a [batch, out, in] temporary would dominate peak memory.
                    for b in range(size):
                        acc += (delta[b].float().t() @ x[b].float()).mul_(w).abs_()
                elif options.accumulate == "token-sq":
                    gg, xx = g * g, xs * xs
                    acc += gg.t() @ xx
                    # per input channel sum x^2 and per output row sum g^2: enough to damp the token weighting later
                    state.add(p.name + "::x2", xx.sum(0))
                    state.add(p.name + "::g2", gg.sum(0))
                elif options.accumulate == "token-abs":
                    acc += g.abs().t() @ xs.abs()
                else:
                    acc += (g.t() @ xs).mul_(w)
                if p.name in columns:
                    _add_unit_relevance(state, columns[p.name], x, delta, w, options.accumulate, sizes)

            output.register_hook(on_grad)

        return forward_hook

    try:
        for p in layers:
            handles.append(p.module.register_forward_hook(hook_for(p)))
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(batch.ids).detach().requires_grad_(True)
            model_target(model, embeds, batch, options.target).backward()
    finally:
        for h in handles:
            h.remove()


def finish(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    out = {}
    for p in layers:
        acc = state.sums.get(p.name)
        if acc is None:  # no relevance reached it (CP-LRP stops at q/k projections and MLP gates): zero
            out[p.name] = torch.zeros(p.shape)
        elif options.accumulate == "token-sq":
            sq = acc
            if options.damping and p.name + "::x2" in state.sums:
                # each token weighted by g^2 + damping * mean(g^2) instead of g^2: between LRP (0) and |w| ||x|| (inf)
                g2 = state.sums[p.name + "::g2"] / max(state.tokens, 1)  # [out] mean g^2 per row
                uniform = g2.unsqueeze(1) * state.sums[p.name + "::x2"].unsqueeze(0)
                sq = uniform if math.isinf(options.damping) else acc + options.damping * uniform
            out[p.name] = weight_view(p).detach().abs().float().to(acc.device) * (sq / max(state.tokens, 1)).sqrt()
        elif options.accumulate == "token-abs":
            out[p.name] = weight_view(p).detach().abs().float().to(acc.device) * (acc / max(state.tokens, 1))
        else:
            out[p.name] = acc / max(state.samples, 1)
    return out


def finish_units(model, layers: list[Prunable], state: ScoreState, options: ScorerOptions) -> dict[str, torch.Tensor]:
    """Each unit's output relevance, aggregated like the weights' (signed for `sum`; `reduced` makes it absolute)."""
    out = {}
    for key, acc in state.sums.items():
        if not key.startswith(UNIT_SUMS):
            continue
        acc = acc.float().cpu()
        if options.accumulate == "token-sq":
            v = (acc / max(state.tokens, 1)).sqrt()
        elif options.accumulate == "token-abs":
            v = acc / max(state.tokens, 1)
        else:
            v = acc / max(state.samples, 1)
        out[key[len(UNIT_SUMS):]] = v
    return out
