"""Circuit discovery: how few components keep a task working, by a ranking's order.

Keep the top fraction k of the components (weights, MLP neurons or attention heads) by
the session's scores and prune the rest; measure the task on evaluation items no scorer
saw: accuracy and the logit difference, normalised so that the dense model is 1 and the
model with every component of that kind pruned is 0. "The circuit" is the smallest kept
fraction from which the curve stays at or above the threshold (80 % of the dense logit
difference) for every larger fraction on the grid (paper: a good attribution keeps the
task with fewer components than a weak one).

  weight   prunable weights ranked across the whole model (the paper's global ranking)
  neuron   MLP neurons (attention stays dense)
  head     attention heads (MLPs stay dense)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from core.data.tasks import TaskItem
from core.errors import WorkbenchError
from core.evaluation.metrics import task_logit_diffs
from core.pruning.registry import ABLATIONS, canonical, granularity
from core.pruning.registry import granularity as unit_of
from core.pruning.masks import Pruner
from core.pruning.plan import SparsityPlan

GRID = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05, 0.03, 0.02, 0.01, 0.005, 0.0)  # fractions kept
THRESHOLD = 0.8


@dataclass
class CurvePoint:
    kept: float  # fraction of components kept
    logit_diff: float  # normalised: dense 1, everything of this kind pruned 0
    accuracy: float  # share of items whose answer outscores the distractor
    raw_logit_diff: float  # mean logit difference, unnormalised


@dataclass
class Curve:
    granularity: str
    components: int  # how many weights, neurons or heads compete
    dense: float  # the dense model's mean logit difference
    empty: float  # with every component pruned
    points: list[CurvePoint] = field(default_factory=list)
    circuit_kept: float | None = None  # None: even the full model misses the threshold (it cannot, by definition)
    area: float | None = None  # the area under the curve over kept fractions: a threshold-free score (1: dense)

    def plan(self, kept: float) -> SparsityPlan:
        return plan_keeping(self.granularity, self.components, kept)


def plan_keeping(granularity: str, components: int, kept: float) -> SparsityPlan:
    """The plan that keeps `kept` of the components (a count: exact, and 0 % kept is expressible)."""
    return SparsityPlan(0.0, [], canonical(granularity), count=round((1.0 - kept) * components))


def components(pruner: Pruner, name: str) -> int:
    unit = granularity(name).unit
    if unit:
        return len(pruner.units(unit)[0])
    return sum(p.numel for p in pruner.layers)


def circuit_kept(points: list[CurvePoint], threshold: float = THRESHOLD) -> float | None:
    """The smallest kept fraction from which every larger one holds the threshold."""
    best = None
    for p in sorted(points, key=lambda p: -p.kept):
        if p.logit_diff < threshold:
            break
        best = p.kept
    return best


RESOLUTION = 0.01  # the circuit's size is found to this share of the components (or to one component)


@torch.no_grad()
def unit_input_means(pruner: Pruner, model, tokenizer, items: list[TaskItem]) -> dict[str, torch.Tensor]:
    """Per layer whose input columns are units' outputs (output and down projections): its mean input over the
    items' tokens, on the dense model (fp32, [in])."""
    from core.data.tokens import task_batches
    from core.model.placement import input_device

    targets = {p.name: p for p in pruner.layers if p.kind in ("attn", "mlp")}
    sums: dict[str, torch.Tensor] = {}
    count = [0]
    mask_now: list[torch.Tensor] = []

    def keep(name):
        def hook(module, args):
            x, m = args[0].float(), mask_now[0].to(args[0].device).bool()
            sums[name] = sums.get(name, 0) + x[m].sum(0)
        return hook

    pruner.use_pruned(False)
    handles = [p.module.register_forward_pre_hook(keep(n)) for n, p in targets.items()]
    try:
        device = input_device(model)
        for b in task_batches(tokenizer, items, 512, 32):
            mask_now[:] = [b.mask]
            model(input_ids=b.ids.to(device), attention_mask=b.mask.to(device), use_cache=False)
            count[0] += int(b.mask.sum())
    finally:
        for h in handles:
            h.remove()
    return {n: (v / max(count[0], 1)).cpu() for n, v in sums.items()}


@contextmanager
def mean_ablated(pruner: Pruner, means: dict[str, torch.Tensor]):
    """While a unit plan is applied: each removed unit outputs its mean instead of zero, as a constant added to
    the layer its output enters (its columns there are zero)."""
    handles = []
    for name, st in pruner.state.items():
        if st.cols is None or not bool(st.cols.any()) or name not in means:
            continue
        w = st.original.t() if st.p.transposed else st.original  # [out, in]
        cols = st.cols.to(w.device)
        shift = (w[:, cols].float() @ means[name].to(w.device)[cols]).to(w.dtype)
        handles.append(st.p.module.register_forward_hook(lambda module, args, out, shift=shift: out + shift))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def patchable(tokenizer, items: list[TaskItem]) -> list[TaskItem]:
    """The items whose corrupted counterpart has as many tokens as the prompt, so each position patches its own."""
    from core.data.tokens import encode

    return [it for it in items if it.corrupted is not None
            and len(encode(tokenizer, it.corrupted)) == len(encode(tokenizer, it.prompt))]


def patched_logit_diffs(pruner: Pruner, model, tokenizer, items: list[TaskItem], batch_size: int = 32) -> torch.Tensor:
    """task_logit_diffs under the current unit plan, each removed unit outputting what it output on the item's
    corrupted counterpart in the dense model (activation patching), at every position: its columns in the layer
    its output enters are zero, so its corrupted contribution W[:, unit] x_corrupted[unit] is added there."""
    from dataclasses import replace as swap

    from core.model.placement import input_device

    layers = {n: st for n, st in pruner.state.items() if st.cols is not None and bool(st.cols.any())}
    device = input_device(model)
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        corrupted: dict[str, torch.Tensor] = {}

        def grab(name):
            def hook(_module, args):
                corrupted[name] = args[0].detach()
            return hook

        was = pruner.pruned_active
        pruner.use_pruned(False)
        handles = [st.p.module.register_forward_pre_hook(grab(n)) for n, st in layers.items()]
        try:
            with torch.no_grad():
                task_logit_diffs(model, tokenizer, [swap(it, prompt=it.corrupted) for it in chunk], batch_size)
        finally:
            for h in handles:
                h.remove()
            pruner.use_pruned(was)
        handles = []
        for name, st in layers.items():
            w = st.original.t() if st.p.transposed else st.original  # [out, in]
            cols = st.cols.to(w.device)
            x = corrupted[name]
            shift = (x[..., cols].to(w.dtype) @ w[:, cols].t())  # [batch, seq, out]
            handles.append(st.p.module.register_forward_hook(lambda m, a, o, shift=shift: o + shift.to(o.device, o.dtype)))
        try:
            with torch.no_grad():
                out.append(task_logit_diffs(model, tokenizer, chunk, batch_size))
        finally:
            for h in handles:
                h.remove()
    return torch.cat(out) if out else torch.zeros(0)


def area(points: list[CurvePoint]) -> float:
    """The area under the normalised logit difference over kept fractions 0..1 (trapezoids over the measured
    points): a threshold-free score of a ranking, as MIB's circuit localisation track scores methods."""
    pts = sorted(points, key=lambda p: p.kept)
    return sum((b.kept - a.kept) * (a.logit_diff + b.logit_diff) / 2 for a, b in zip(pts, pts[1:]))


def measure_curve(pruner: Pruner, model, tokenizer, items: list[TaskItem], granularity: str,
                  grid: tuple[float, ...] = GRID, threshold: float = THRESHOLD,
                  resolution: float = RESOLUTION, ablation: str = "zero",
                  reference: list[TaskItem] | None = None) -> Curve:
    """The task along the grid of kept fractions, then a bisection between the grid points around the circuit
    until its size is known to `resolution` of the components (the model is left dense). With `ablation`
    mean, removed units output their mean over `reference` items instead of zero; with patch, their output on
    each item's corrupted counterpart (the items must be `patchable`)."""
    n = components(pruner, granularity)
    if ablation not in ABLATIONS:
        raise WorkbenchError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
    means = None
    if ablation != "zero" and not unit_of(granularity).unit:
        raise WorkbenchError(f"--ablation {ablation} replaces heads or neurons by another output; give --granularity "
                             "head or neuron (weights are always zeroed)")
    if ablation == "mean":
        means = unit_input_means(pruner, model, tokenizer, reference or items)

    def measured() -> torch.Tensor:
        if ablation == "patch":
            return patched_logit_diffs(pruner, model, tokenizer, items)
        if means is None:
            return task_logit_diffs(model, tokenizer, items)
        with mean_ablated(pruner, means):
            return task_logit_diffs(model, tokenizer, items)

    pruner.use_pruned(False)
    dense = task_logit_diffs(model, tokenizer, items)
    pruner.apply(plan_keeping(granularity, n, 0.0))
    empty = measured()
    span = float(dense.mean() - empty.mean())
    curve = Curve(granularity, n, float(dense.mean()), float(empty.mean()))

    def point(k: float) -> CurvePoint:
        if k == 1.0:
            diffs = dense
        elif k == 0.0:
            diffs = empty
        else:
            pruner.apply(plan_keeping(granularity, n, k))
            diffs = measured()
        norm = (float(diffs.mean()) - curve.empty) / span if abs(span) > 1e-9 else float("nan")
        return CurvePoint(k, norm, float((diffs > 0).float().mean()), float(diffs.mean()))

    curve.points = [point(k) for k in grid]
    kept = circuit_kept(curve.points, threshold)
    step = max(resolution, 1.0 / max(n, 1))
    while kept is not None:
        below = max((p.kept for p in curve.points if p.kept < kept), default=None)
        if below is None or kept - below <= step:
            break
        mid = round((kept + below) / 2 * n) / n  # a whole number of components
        if mid in (kept, below):
            break
        curve.points.append(point(mid))
        kept = circuit_kept(curve.points, threshold)
    pruner.use_pruned(False)
    curve.points.sort(key=lambda p: -p.kept)
    curve.circuit_kept = kept
    curve.area = area(curve.points)
    return curve


def circuit_map(pruner: Pruner, granularity: str, removed: torch.Tensor | None = None) -> dict:
    """Per block what the circuit keeps: heads (kept flags) and how many MLP neurons, or the kept share of weights."""
    unit = unit_of(granularity).unit
    if unit:
        units, _ = pruner.units(unit)
        removed = pruner.removed_units[1] if removed is None else removed
        out: dict[int, list[bool]] = {}
        for u, gone in zip(units, removed.tolist()):
            out.setdefault(u.block, []).append(not gone)
        return {"granularity": granularity, "blocks": {b: flags for b, flags in sorted(out.items())}}
    counts = pruner.pruned_counts()
    per_block: dict[int, list[int]] = {}
    for p in pruner.layers:
        agg = per_block.setdefault(p.block, [0, 0])
        agg[0] += p.numel - counts[p.name]
        agg[1] += p.numel
    return {"granularity": granularity, "blocks": {b: kept / total for b, (kept, total) in sorted(per_block.items())}}
