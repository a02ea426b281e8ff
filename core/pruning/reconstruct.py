"""Reconstruction: after any mask, update the kept weights so each layer's output changes as little as possible.

A mask alone leaves the kept weights as they were. SparseGPT (Frantar & Alistarh 2023) also updates
them: for a layer with inputs X (calibration tokens) it minimises ||W X - W' X||^2 with W' zero where the
mask prunes, by the optimal-brain-surgeon update. With H = X X^T + lambda I and the upper Cholesky factor
U of H^-1, the columns are visited in order; each pruned weight's error w / U[i, i] is spread over the
not-yet-visited weights of its row along U[i, i:], in blocks of columns so most of the work is one
matmul. The mask here is the plan's, whatever its scorer, granularity or allocation; only the kept
weights change.

Blocks are reconstructed in order and each block's inputs come from the blocks before it as already
pruned and reconstructed (sequential, as SparseGPT and llm-compressor do). One pass of the model captures
the first block's inputs and every block's other arguments; each block then runs on the kept inputs, so any
architecture and `--device-map` work. Only one block's statistics (d_in^2 fp32 per layer) are in memory at a
time, on the layer's own device, plus the blocks' inputs (calibration tokens x hidden size).

The per-layer interface is SparseGPT's: `LayerStatistics.add_batch(x)`, then `reconstruct(W, mask, H)`.

With `reselect`, the plan decides how many weights go and SparseGPT which: as its pass reaches each block
of columns it re-chooses the pruned weights there by the OBS saliency w^2 / U[j, j]^2 of the weights as
updated so far, keeping the plan's count per row ("row"), per layer ("layer") or per N:M group ((N, M)).
That is SparseGPT's own mask choice (llm-compressor's SparseGPTModifier: "layer", its 2:4: (2, 4)).
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Callable, ContextManager

import torch

from core.errors import Cancelled, WorkbenchError
from core.model.interrupt import interruptible
from core.model.layers import Prunable, block_prefix
from core.model.placement import input_device

DAMP = 0.01  # lambda = DAMP * mean(diag(H)), SparseGPT's default
COLUMNS = 128  # columns updated together (SparseGPT's blocksize)
REFINE = 16  # conjugate-gradient steps after SparseGPT's pass (0: SparseGPT's update alone)


class LayerStatistics:
    """H = 2/n sum_t x_t x_t^T over a layer's calibration inputs (fp32, on the device the inputs arrive on)."""

    def __init__(self) -> None:
        self.H: torch.Tensor | None = None
        self.tokens = 0

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        if self.H is None:
            self.H = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float32, device=x.device)
        m = x.shape[0]
        self.H.mul_(self.tokens / (self.tokens + m))
        self.tokens += m
        x = x * math.sqrt(2 / self.tokens)
        self.H.addmm_(x.t(), x)


def reconstruct(W: torch.Tensor, mask: torch.Tensor, H: torch.Tensor, damp: float = DAMP,
                columns: int = COLUMNS, refine: int | None = None, reselect: str | tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] with the weights `mask` (bool, True = pruned) set to zero and the kept ones updated to
    minimise the change of the layer's output on the inputs behind H [in, in]. Returns the weights (fp32) and
    the mask they were pruned by: `mask` itself, or with `reselect` the one SparseGPT's saliency chose.

    SparseGPT's pass compensates each pruned weight only on the columns after it, so with a mask fixed in
    advance it stops short of the least-squares optimum; `refine` steps of conjugate gradients on every row at
    once (one [out, in] x [in, in] product each, Jacobi-preconditioned) then solve H_KK w_K = (H w)_K for the
    kept set K of each row."""
    W = W.detach().float().clone()
    original = W.clone()
    H = H.detach().float().clone()
    mask = mask.to(W.device)
    dead = torch.diag(H) == 0  # inputs that are always zero: their weights do nothing
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    n = H.shape[0]
    for attempt in range(4):  # a singular H (few tokens, repeated inputs) takes more damping
        try:
            Hd = H + (damp * 10 ** attempt) * torch.mean(torch.diag(H)) * torch.eye(n, device=H.device)
            U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
            original[:, dead] = 0.0
            break
        except RuntimeError:
            continue
    else:
        raise WorkbenchError("reconstruction failed: the calibration inputs of a layer are degenerate; "
                             "score with more --samples")
    if reselect is not None:
        mask = mask.clone()
        counts = mask.sum(1) if reselect == "row" else mask.sum()  # the plan's share, spread evenly over the columns
    for i1 in range(0, n, columns):
        i2 = min(i1 + columns, n)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        if reselect in ("row", "layer"):
            mask[:, i1:i2] = _least_salient(W1, U1, torch.round(counts * i2 / n) - torch.round(counts * i1 / n), reselect)
        M1 = mask[:, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if isinstance(reselect, tuple) and i % reselect[1] == 0:  # each N:M group chosen as the pass reaches it
                N, M = reselect
                sal = W1[:, i:i + M] ** 2 / torch.diag(U1)[i:i + M].unsqueeze(0) ** 2
                group = torch.zeros_like(sal, dtype=torch.bool).scatter_(1, sal.topk(N, 1, largest=False).indices, True)
                M1[:, i:i + M] = group
            w = W1[:, i]
            err = torch.where(M1[:, i], w, torch.zeros_like(w)) / U1[i, i]  # kept weights carry no error
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    W[mask] = 0.0
    refine = REFINE if refine is None else refine
    if refine:
        W = _least_squares(W, original, mask, Hd, refine)
    return W, mask


def rechoose(W: torch.Tensor, mask: torch.Tensor, H: torch.Tensor, within: str | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Wanda's choice without an update: the plan's counts, the weights of lowest |w_ij| ||x_j|| on the inputs behind
    H (in a sequential pass: the already pruned blocks' outputs, as llm-compressor's Wanda calibrates)."""
    W = W.detach().float()
    metric = W.abs() * torch.diag(H).clamp(min=0).sqrt().unsqueeze(0)
    if isinstance(within, tuple):
        N, M = within
        g = metric.view(W.shape[0], -1, M)
        chosen = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(N, 2, largest=False).indices, True).view_as(W)
    else:
        chosen = _lowest(metric, mask.sum(1) if within == "row" else mask.sum(), within)
    return W.masked_fill(chosen, 0.0), chosen


def _lowest(sal: torch.Tensor, count: torch.Tensor, within: str) -> torch.Tensor:
    """The `count` lowest entries of `sal`: per row (`count` [out]) or across it all (a scalar)."""
    if within == "row":
        order = sal.argsort(1)  # its inverse permutation is each entry's rank in its row
        positions = torch.arange(sal.shape[1], device=sal.device).expand_as(order).contiguous()
        rank = torch.empty_like(order).scatter_(1, order, positions)
        return rank < count.to(rank.device).unsqueeze(1)
    k, flat = int(count), sal.flatten()
    if k <= 0 or k >= flat.numel():
        return torch.full_like(sal, k > 0, dtype=torch.bool)
    threshold = flat.kthvalue(k).values  # a selection, not a sort: six times faster on a block of columns
    chosen = flat < threshold
    short = k - int(chosen.sum())
    if short > 0:  # ties at the threshold: the first ones, so the count is exact
        chosen[(flat == threshold).nonzero().flatten()[:short]] = True
    return chosen.view_as(sal)


def _least_salient(W1: torch.Tensor, U1: torch.Tensor, count: torch.Tensor, within: str) -> torch.Tensor:
    """The `count` weights of lowest OBS saliency w^2 / U[j, j]^2 in this block of columns: per row (`count` [out])
    or across the block (a scalar)."""
    return _lowest(W1 ** 2 / torch.diag(U1).unsqueeze(0) ** 2, count, within)


def _least_squares(V: torch.Tensor, W: torch.Tensor, mask: torch.Tensor, H: torch.Tensor, steps: int) -> torch.Tensor:
    """Preconditioned conjugate gradients for min ||(W - V) X||^2 over V with V[mask] = 0, every row at once,
    started from V."""
    keep = (~mask).to(V.dtype)
    inv_diag = 1.0 / torch.diag(H).clamp(min=1e-12)
    R = ((W - V) @ H) * keep
    Z = R * inv_diag
    P = Z.clone()
    rz = (R * Z).sum(1, keepdim=True)
    for _ in range(steps):
        AP = (P @ H) * keep
        alpha = rz / (P * AP).sum(1, keepdim=True).clamp(min=1e-30)
        V = V + alpha * P
        R = R - alpha * AP
        Z = R * inv_diag
        rz_new = (R * Z).sum(1, keepdim=True)
        P = Z + (rz_new / rz.clamp(min=1e-30)) * P
        rz = rz_new
    return V * keep


class _BlockDone(Exception):
    """Raised once every block's arguments are captured: the rest of the model need not run."""


def _block_arguments(model: torch.nn.Module, blocks: list[torch.nn.Module], batches: list, device) -> tuple[list, list]:
    """One pass of the model: each batch's input to the first block, and every block's other arguments per batch
    (attention masks and rotary embeddings may differ by block, e.g. Gemma's sliding layers; the same tensors are
    shared, not copied). The blocks do not compute in this pass: each hands its input on unchanged (the model
    derives the masks and position embeddings before its first block), so it costs the embeddings alone."""
    first: list[torch.Tensor] = []
    rest: list[list[tuple[tuple, dict]]] = [[] for _ in blocks]

    def record(b: int, args: tuple, kwargs: dict) -> torch.Tensor:
        kwargs = dict(kwargs)
        hidden, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        if b == 0:
            first.append(hidden.detach())
        rest[b].append((args, kwargs))
        if b == len(blocks) - 1:
            raise _BlockDone
        return hidden

    def skipped(b: int, *args, **kwargs) -> torch.Tensor:  # the block's forward, replaced: its input goes on
        return record(b, args, kwargs)

    def observed(b: int, _module, args: tuple, kwargs: dict) -> None:  # a pre-hook: the block then runs as it is
        record(b, args, kwargs)

    def run(replace: bool) -> None:
        first.clear()
        for r in rest:
            r.clear()
        saved = [blk.__dict__.get("forward") for blk in blocks]  # accelerate's dispatch wraps forward this way
        hooks = []
        for b, blk in enumerate(blocks):
            if replace:
                blk.forward = functools.partial(skipped, b)
            else:
                hooks.append(blk.register_forward_pre_hook(functools.partial(observed, b), with_kwargs=True))
        try:
            with torch.no_grad():
                for batch in batches:
                    try:
                        model(input_ids=batch.ids.to(device), attention_mask=batch.mask.to(device), use_cache=False)
                    except _BlockDone:
                        pass
        finally:
            for h in hooks:
                h.remove()
            for blk, forward in zip(blocks, saved):
                if forward is None:
                    blk.__dict__.pop("forward", None)
                else:
                    blk.forward = forward

    try:
        run(replace=True)
    except Exception:  # a model whose code between blocks needs each block's real output: run them all
        run(replace=False)
    return first, rest


def reconstruct_model(model: torch.nn.Module, layers: list[Prunable], batches: list, masks: Callable[[str], torch.Tensor],
                      originals: Callable[[str], torch.Tensor], write: Callable[[str, torch.Tensor], None],
                      dense: Callable[[list[str]], ContextManager], progress: Callable[[int, int], None] | None = None,
                      cancel: threading.Event | None = None, reselect: str | tuple[int, int] | None = None,
                      refine: int | None = None, update: bool = True, true_sequential: bool = False) -> dict[str, float]:
    """Reconstruct every pruned layer, block after block, on calibration `batches` (core.data.tokens.Batch).

    The model must run its pruned weights; `masks(name)` is a layer's mask, `originals(name)` its dense weight
    [out, in], `write(name, W)` puts the reconstructed [out, in] weight into the pruned copy, and `dense(names)`
    runs those layers on their original weights while their block is calibrated (as SparseGPT does: a block's own
    layers see the dense block's inputs, so a removed neuron or head is compensated by the ones that stay).
    The blocks' inputs are kept between blocks (calibration tokens x hidden size, as SparseGPT and llm-compressor
    keep them), so each block runs twice per batch: dense to collect its statistics, then as reconstructed to feed
    the next. `reselect`: SparseGPT chooses which weights go, keeping the plan's counts (see `reconstruct`); with
    `update=False` no weight moves and Wanda's metric chooses them on these sequential inputs (`rechoose`).
    `true_sequential`: within a block too, each group of layers that reads the same input (q, k and v; gate and up)
    is calibrated on the inputs the groups before it give as reconstructed, not as dense (SparseGPT's reference code's
    --true-sequential); one more partial pass of the block per group.
    Returns per layer the relative output error it left, as ||(W - W') X|| / ||W X|| on the calibration inputs."""
    device = input_device(model)
    by_block: dict[int, list[Prunable]] = {}
    for p in layers:
        by_block.setdefault(p.block, []).append(p)
    order = sorted(by_block)
    modules = [model.get_submodule(block_prefix(by_block[b][0])) for b in order]
    errors: dict[str, float] = {}
    with interruptible(layers, cancel, "reconstruction"):
        pruned_in = {b: [p for p in by_block[b] if bool(masks(p.name).any())] for b in order}
        last = max((i for i, b in enumerate(order) if pruned_in[b]), default=-1)
        if last < 0:
            return errors
        hidden, arguments = _block_arguments(model, modules[: last + 1], batches, device)
        keeps = [batch.mask.bool() for batch in batches]  # pads are no calibration tokens
        for i, b in enumerate(order[: last + 1]):
            block, members = modules[i], pruned_in[b]
            if members:
                names = [p.name for p in by_block[b]]
                groups = (_input_groups(block, members, hidden[0], arguments[i][0], dense, names) if true_sequential
                          else [members])
                for g, group in enumerate(groups):
                    # earlier groups of the block run as reconstructed, this one and the later ones dense
                    later = [n for n in names if n not in {p.name for grp in groups[:g] for p in grp}]
                    for p, err in _reconstruct_group(block, group, hidden, arguments[i], keeps, later, dense, masks,
                                                     originals, write, reselect, refine, update, true_sequential):
                        errors[p.name] = err
            if i < last:  # the next block's inputs: this one as pruned and reconstructed
                _advance(block, hidden, arguments[i])
            if progress is not None:
                progress(i + 1, last + 1)
            if cancel is not None and cancel.is_set():
                raise Cancelled("reconstruction")
    return errors


class _GroupDone(Exception):
    """Raised once every layer of a group has seen its input: the rest of the block need not run."""


def _run(block, h, args, kwargs):
    try:
        out = block(h, *args, **kwargs)
    except _GroupDone:
        return None
    return (out[0] if isinstance(out, tuple) else out).detach()


def _advance(block, stream: list, arguments: list) -> None:
    """Each batch of `stream` through the block as it is now."""
    with torch.no_grad():
        for j, (args, kwargs) in enumerate(arguments):
            stream[j] = _run(block, stream[j], args, kwargs)


def _input_groups(block, members: list[Prunable], h, arguments, dense, names: list[str]) -> list[list[Prunable]]:
    """The block's pruned layers in the order they run, those fed the same tensor (q, k and v) grouped together."""
    order: list[tuple[Prunable, int]] = []
    hooks = [p.module.register_forward_pre_hook(lambda m, inp, p=p: order.append((p, inp[0].data_ptr()))) for p in members]
    try:
        with torch.no_grad(), dense(names):
            _run(block, h, *arguments)
    finally:
        for hk in hooks:
            hk.remove()
    groups: list[list[Prunable]] = []
    placed: set[str] = set()
    last_input = None
    for p, ptr in order:
        if p.name in placed:
            continue  # a layer called twice keeps its first place
        if groups and ptr == last_input:
            groups[-1].append(p)
        else:
            groups.append([p])
        placed.add(p.name)
        last_input = ptr
    missing = [p for p in members if p.name not in placed]
    return groups + ([missing] if missing else [])


def _reconstruct_group(block, group: list[Prunable], hidden: list, arguments: list, keeps: list, later: list[str],
                       dense, masks, originals, write, reselect, refine, update: bool, stop: bool
                       ) -> list[tuple[Prunable, float]]:
    """Collect one group's statistics over the calibration batches (the `later` layers dense), then reconstruct it.
    `stop`: the block's pass ends once the group has its inputs (a whole pass keeps offloading hooks balanced).
    Returns each layer with the relative output error it left."""
    stats = {p.name: LayerStatistics() for p in group}
    current: dict = {"seen": set()}

    def collect(_m, inputs, name):
        x, keep = inputs[0].detach(), current["keep"]
        stats[name].add_batch(x[keep.to(x.device)] if tuple(x.shape[:2]) == tuple(keep.shape) else x)
        current["seen"].add(name)
        if stop and len(current["seen"]) == len(group):
            raise _GroupDone

    hooks = [p.module.register_forward_pre_hook(lambda m, inp, name=p.name: collect(m, inp, name)) for p in group]
    try:
        with torch.no_grad(), dense(later):
            for h, (args, kwargs), keep in zip(hidden, arguments, keeps):
                current.update(keep=keep, seen=set())
                _run(block, h, args, kwargs)
    finally:
        for hk in hooks:
            hk.remove()
    done = []
    for p in group:
        H = stats[p.name].H
        if H is None:
            continue
        W = originals(p.name).to(H.device)
        new, _ = (reconstruct(W, masks(p.name), H, refine=refine, reselect=reselect) if update
                  else rechoose(W, masks(p.name), H, reselect))
        write(p.name, new)
        delta = W.float() - new
        base = torch.einsum("oi,ij,oj->", W.float(), H, W.float())
        done.append((p, float(torch.einsum("oi,ij,oj->", delta, H, delta).clamp(min=0).sqrt() / base.clamp(min=1e-12).sqrt())))
        stats[p.name].H = None
    return done
