"""Masks from cached rankings, applied in place without reloading or re-scoring.

All prunable weights live in two flat buffers: the originals (never written; the
model's parameters are views into it while dense) and a pruned working copy.
Switching dense <-> pruned re-points the parameters (O(1)), so "back to dense"
restores the exact original weights and dense-vs-pruned comparisons need no reload.

Rankings are stored as "units" per layer: an int32 tensor [positions, unit_size] of
flat storage indices, least important position first. Pruning k positions of a layer
means zeroing `units[:k]`. A sparsity change only touches the positions whose status
changes, and all layers are gathered into one index_fill_/index_copy_, so a slider
step costs time in proportion to the step, not to the number of layers.

  row     units [out, in]:  position j (a column) = the j-th least important weight of every row;
                            kept row-major so one step touches each row's memory once
  layer   units [numel, 1]: position j = the j-th least important weight of the layer
  global  as layer; one score threshold over all layers sets each layer's k
  neuron  units [out, in]:  position j = every weight of the j-th least important row
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import WorkbenchError
from core.layers import Prunable, weight_view
from core.plan import SparsityPlan


@dataclass
class LayerState:
    p: Prunable
    offset: int  # start of this layer in the flat buffers
    original: torch.Tensor  # view of the flat original buffer, storage orientation
    pruned: torch.Tensor  # view of the flat working buffer, storage orientation
    original_bias: torch.Tensor | None
    pruned_bias: torch.Tensor | None
    k: int = 0  # positions currently pruned in `pruned`
    fixed_mask: torch.Tensor | None = None  # set when built from saved masks instead of scores


# Row-wise units are stored position-major ([in, out]), so a step's indices are one slice.
# Above this many positions per row in one step, writing them row by row (a transposed
# copy) is faster: the writes then stay within a row (bench/engine.py, default model:
# 12 gave 25 / 80 / 569 ms for 1 % / 5 % / 50 % steps, against 29 / 124 / 692 without).
ROW_MAJOR_FROM = 12


class Pruner:
    """Owns the dense and pruned copies of every prunable weight and the rankings."""

    def __init__(self, layers: list[Prunable], scores: dict[str, torch.Tensor]):
        self.layers = layers
        self.scores = scores  # name -> [out, in] fp32, higher = keep
        self._units: dict[tuple[str, str], torch.Tensor] = {}
        self._sorted: dict[str, torch.Tensor] = {}  # flat sorted scores per layer (global granularity)
        self.state: dict[str, LayerState] = {}
        self.granularity: str | None = None
        self.plan = SparsityPlan()
        self.pruned_active = False
        first = layers[0].module.weight
        if any(p.module.weight.dtype != first.dtype or p.module.weight.device != first.device for p in layers):
            raise WorkbenchError("prunable weights differ in dtype or device; load the model with one --dtype and --device")
        total = sum(p.numel for p in layers)
        self.flat_original = torch.empty(total, dtype=first.dtype, device=first.device)
        self.flat_pruned = torch.empty_like(self.flat_original)
        offset = 0
        with torch.no_grad():
            for p in layers:
                w = p.module.weight.data
                n = w.numel()
                orig = self.flat_original[offset : offset + n].view(w.shape)
                orig.copy_(w)
                pruned = self.flat_pruned[offset : offset + n].view(w.shape)
                pruned.copy_(w)
                b = p.module.bias.data if getattr(p.module, "bias", None) is not None else None
                self.state[p.name] = LayerState(p, offset, orig, pruned, b, None if b is None else b.clone())
                p.module.weight.data = orig  # the model's own copy is released
                offset += n

    @classmethod
    def from_masks(cls, layers: list[Prunable], masks: dict[str, torch.Tensor], plan: SparsityPlan) -> "Pruner":
        """A pruner that replays saved masks (bool [out, in], True = pruned); it cannot re-rank."""
        pruner = cls(layers, {})
        pruner.granularity, pruner.plan = "fixed", plan
        with torch.no_grad():
            for name, st in pruner.state.items():
                m = masks[name].to(st.pruned.device)
                weight_view(st.p, st.pruned).masked_fill_(m, 0.0)
                if st.pruned_bias is not None and plan.granularity == "neuron":
                    st.pruned_bias.masked_fill_(m.all(dim=1), 0.0)
                st.k, st.fixed_mask = int(m.sum()), m.cpu()
        pruner.use_pruned(not plan.is_dense())
        return pruner

    @property
    def can_rerank(self) -> bool:
        return self.granularity != "fixed"

    # ---- rankings ------------------------------------------------------------------
    def _storage_index(self, st: LayerState) -> torch.Tensor:
        """int64 [out, in]: flat-buffer index of each weight, in [out, in] orientation."""
        out, inn = st.p.shape
        idx = torch.arange(st.offset, st.offset + out * inn, dtype=torch.int64, device=st.pruned.device)
        return idx.view(inn, out).t() if st.p.transposed else idx.view(out, inn)

    def units(self, name: str, granularity: str) -> torch.Tensor:
        kind = "layer" if granularity == "global" else granularity
        key = (name, kind)
        st = self.state[name]
        s = self.scores[name].to(st.pruned.device)  # [out, in]
        if key not in self._units:
            where = self._storage_index(st)  # [out, in]
            if kind == "row":
                # position-major, so the weights one slider step moves are one contiguous slice
                u = where.gather(1, s.argsort(dim=1, stable=True)).t()  # [in, out]
            elif kind == "neuron":
                u = where[s.sum(dim=1).argsort(stable=True)]  # [out, in]
            else:
                order = s.reshape(-1).argsort(stable=True)
                u = where.reshape(-1)[order].unsqueeze(1)  # [numel, 1]
            self._units[key] = u.to(torch.int32).contiguous()
        if granularity == "global" and name not in self._sorted:
            self._sorted[name] = s.reshape(-1).sort(stable=True).values
        return self._units[key]

    def positions(self, name: str, granularity: str) -> int:
        out, inn = self.state[name].p.shape
        return {"row": inn, "neuron": out}.get(granularity, out * inn)

    # ---- plan -> pruned positions per layer ------------------------------------------
    def targets(self, plan: SparsityPlan) -> dict[str, int]:
        g = plan.granularity
        if g != "global":
            return {n: round(plan.for_layer(n) * self.positions(n, g)) for n in self.state}
        groups: dict[float, list[str]] = {}
        for n in self.state:
            groups.setdefault(plan.for_layer(n), []).append(n)
        ks: dict[str, int] = {}
        for s, names in groups.items():
            ks.update(self._global_counts(names, s))
        return ks

    def _global_counts(self, names: list[str], sparsity: float) -> dict[str, int]:
        """Exactly round(s * total) weights across `names`, lowest scores first, ties by layer order."""
        for n in names:
            self.units(n, "global")
        vals = [self._sorted[n] for n in names]
        total = sum(v.numel() for v in vals)
        want = round(sparsity * total)
        if want == 0:
            return {n: 0 for n in names}
        lo = min(float(v[0]) for v in vals)
        hi = max(float(v[-1]) for v in vals)

        def count_le(t: float) -> int:
            q = torch.tensor([t], dtype=vals[0].dtype, device=vals[0].device)
            return sum(int(torch.searchsorted(v, q, right=True)) for v in vals)

        if count_le(lo) >= want:
            hi = lo
            lo = float(np.nextafter(np.float32(lo), np.float32(-np.inf)))
        else:
            for _ in range(100):  # bisect down to adjacent floats: everything between is a tie at hi
                mid = float(np.float32((lo + hi) / 2))
                if mid <= lo or mid >= hi:
                    break
                if count_le(mid) >= want:
                    hi = mid
                else:
                    lo = mid
        q_lo = torch.tensor([lo], dtype=vals[0].dtype, device=vals[0].device)
        q_hi = torch.tensor([hi], dtype=vals[0].dtype, device=vals[0].device)
        ks = {n: int(torch.searchsorted(v, q_lo, right=True)) for n, v in zip(names, vals)}
        left = want - sum(ks.values())
        for n, v in zip(names, vals):
            if left <= 0:
                break
            extra = min(left, int(torch.searchsorted(v, q_hi, right=True)) - ks[n])
            ks[n] += extra
            left -= extra
        return ks

    # ---- applying --------------------------------------------------------------------
    def apply(self, plan: SparsityPlan) -> None:
        """Make the model follow `plan`; dense plans point every parameter at its original."""
        if not self.can_rerank:
            raise WorkbenchError("this pruner replays saved masks; build one from scores to change the plan")
        plan.check_patterns(list(self.state))
        if plan.is_dense():
            # Point at the originals and keep the working copies as they are, so going back
            # to the previous sparsity is a pointer swap too.
            self.plan = plan
            self.use_pruned(False)
            return
        if plan.granularity != self.granularity:
            self._reset_working_copies()
            self.granularity = plan.granularity
        self._move_all(self.targets(plan))
        self.plan = plan
        self.use_pruned(True)

    def _reset_working_copies(self) -> None:
        with torch.no_grad():
            self.flat_pruned.copy_(self.flat_original)
            for st in self.state.values():
                if st.pruned_bias is not None:
                    st.pruned_bias.copy_(st.original_bias)
                st.k = 0

    def _move_all(self, ks: dict[str, int]) -> None:
        g = self.granularity
        to_prune, to_restore = [], []
        for name, st in self.state.items():
            k = ks[name]
            if k == st.k:
                continue
            u = self.units(name, g)
            span = u[min(k, st.k) : max(k, st.k)]
            if g == "row" and span.shape[0] > ROW_MAJOR_FROM:
                span = span.t()
            (to_prune if k > st.k else to_restore).append(span.reshape(-1))
            if st.pruned_bias is not None and g == "neuron":
                rows = (u[min(k, st.k) : max(k, st.k), 0].long() - st.offset)
                rows = rows % st.p.shape[0] if st.p.transposed else rows // st.p.shape[1]
                st.pruned_bias[rows] = 0.0 if k > st.k else st.original_bias[rows]
            st.k = k
        with torch.no_grad():
            if to_prune:
                self.flat_pruned.index_fill_(0, torch.cat(to_prune).long(), 0.0)
            if to_restore:
                idx = torch.cat(to_restore).long()
                self.flat_pruned.index_copy_(0, idx, self.flat_original.index_select(0, idx))

    def use_pruned(self, on: bool) -> None:
        """Point every prunable parameter at the pruned working copy (on) or the original (off)."""
        for st in self.state.values():
            st.p.module.weight.data = st.pruned if on else st.original
            if st.original_bias is not None:
                st.p.module.bias.data = st.pruned_bias if on else st.original_bias
        self.pruned_active = on

    def restore_dense(self) -> None:
        self.use_pruned(False)

    # ---- reporting -------------------------------------------------------------------
    def pruned_counts(self) -> dict[str, int]:
        """Pruned weights per layer under the current plan (exact)."""
        if self.plan.is_dense():
            return {name: 0 for name in self.state}
        out = {}
        for name, st in self.state.items():
            o, i = st.p.shape
            per_position = {"row": o, "neuron": i}.get(self.granularity or "row", 1)  # "fixed": k counts weights
            out[name] = st.k * per_position
        return out

    def achieved_sparsity(self) -> float:
        total = sum(st.p.numel for st in self.state.values())
        return sum(self.pruned_counts().values()) / total if total else 0.0

    def mask(self, name: str) -> torch.Tensor:
        """Boolean [out, in]: True where the weight is pruned."""
        st = self.state[name]
        out, inn = st.p.shape
        if self.plan.is_dense() or self.granularity is None:
            return torch.zeros((out, inn), dtype=torch.bool)
        if st.fixed_mask is not None:
            return st.fixed_mask
        flat = torch.zeros(out * inn, dtype=torch.bool)
        u = self.units(name, self.granularity)
        taken = u[: st.k]
        flat[taken.reshape(-1).long().cpu() - st.offset] = True
        return flat.view(inn, out).t().contiguous() if st.p.transposed else flat.view(out, inn)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """bool [out, in] -> uint8 [ceil(out*in/8)] (8x smaller on disk)."""
    return torch.from_numpy(np.packbits(mask.numpy().reshape(-1)))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    n = shape[0] * shape[1]
    return torch.from_numpy(np.unpackbits(packed.numpy())[:n].astype(bool)).view(shape)
