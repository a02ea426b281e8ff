"""Masks from cached rankings, applied in place without reloading or re-scoring.

Each prunable weight keeps two tensors: the original (never written) and a pruned
working copy. Switching the model between dense and pruned swaps which tensor the
parameter points at (O(1)), so "back to dense" restores the exact original weights
and dense-vs-pruned comparisons need no reload. A sparsity change edits the working
copy incrementally: only the weights whose pruned/kept status changes are written,
so small slider moves cost time in proportion to the move.

Rankings ("units", least important first) per granularity:
  row     order [out, in]: argsort within each row; k weights pruned in every row
  layer   order [out*in]:  argsort over the layer (storage order); k weights pruned
  global  as layer, with k per layer set by one threshold over all layers in a group
  neuron  order [out]:     rows ranked by summed score; k whole rows (and biases) pruned
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.layers import Prunable, weight_view
from core.plan import SparsityPlan


def _small_index(t: torch.Tensor, bound: int) -> torch.Tensor:
    return t.to(torch.int16) if bound <= 32767 else t.to(torch.int32)


@dataclass
class LayerState:
    p: Prunable
    original: torch.Tensor  # the dense weight, storage orientation
    pruned: torch.Tensor  # working copy, storage orientation
    original_bias: torch.Tensor | None
    pruned_bias: torch.Tensor | None
    k: int = 0  # units currently pruned in `pruned`
    fixed_mask: torch.Tensor | None = None  # set when built from saved masks instead of scores


class Pruner:
    """Owns the dense and pruned copies of every prunable weight and the rankings."""

    def __init__(self, layers: list[Prunable], scores: dict[str, torch.Tensor]):
        self.layers = layers
        self.scores = scores  # name -> [out, in] fp32, higher = keep
        self._orders: dict[tuple[str, str], torch.Tensor] = {}
        self._sorted: dict[str, torch.Tensor] = {}  # flat sorted scores per layer (global granularity)
        self.state: dict[str, LayerState] = {}
        self.granularity: str | None = None
        self.plan = SparsityPlan()
        self.pruned_active = False
        for p in layers:
            w = p.module.weight.data
            b = p.module.bias.data if getattr(p.module, "bias", None) is not None else None
            self.state[p.name] = LayerState(p, w, w.clone(), b, None if b is None else b.clone())

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
    def _order(self, name: str, granularity: str) -> torch.Tensor:
        kind = "layer" if granularity == "global" else granularity
        key = (name, kind)
        s = self.scores[name]  # [out, in]
        storage = (s.t() if self.state[name].p.transposed else s).reshape(-1)
        if key not in self._orders:
            if kind == "row":
                self._orders[key] = _small_index(s.argsort(dim=1, stable=True), s.shape[1])
            elif kind == "neuron":
                self._orders[key] = s.sum(dim=1).argsort(stable=True)
            else:
                order = storage.argsort(stable=True)
                self._orders[key] = order.to(torch.int32) if order.numel() < 2**31 else order
        if granularity == "global" and name not in self._sorted:
            self._sorted[name] = storage[self._orders[key].long()]
        return self._orders[key]

    def units(self, name: str, granularity: str) -> int:
        out, inn = self.state[name].p.shape
        return {"row": inn, "neuron": out}.get(granularity, out * inn)

    # ---- plan -> pruned units per layer ----------------------------------------------
    def targets(self, plan: SparsityPlan) -> dict[str, int]:
        g = plan.granularity
        if g != "global":
            return {n: round(plan.for_layer(n) * self.units(n, g)) for n in self.state}
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
            self._order(n, "global")
        vals = [self._sorted[n] for n in names]
        total = sum(v.numel() for v in vals)
        want = round(sparsity * total)
        if want == 0:
            return {n: 0 for n in names}
        lo = min(float(v[0]) for v in vals)
        hi = max(float(v[-1]) for v in vals)

        def count_le(t: float) -> int:
            q = torch.tensor([t], dtype=vals[0].dtype)
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
        q_lo = torch.tensor([lo], dtype=vals[0].dtype)
        q_hi = torch.tensor([hi], dtype=vals[0].dtype)
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
        plan.check_patterns(list(self.state))
        if plan.granularity != self.granularity:
            self._reset_working_copies()
            self.granularity = plan.granularity
        ks = self.targets(plan)
        with torch.no_grad():
            for name, st in self.state.items():
                self._move(st, ks[name])
        self.plan = plan
        self.use_pruned(not plan.is_dense())

    def _reset_working_copies(self) -> None:
        with torch.no_grad():
            for st in self.state.values():
                if st.k:
                    st.pruned.copy_(st.original)
                    if st.pruned_bias is not None:
                        st.pruned_bias.copy_(st.original_bias)
                st.k = 0

    def _move(self, st: LayerState, k: int) -> None:
        g = self.granularity
        if k == st.k:
            return
        order = self._order(st.p.name, g)
        lo, hi = sorted((st.k, k))
        prune = k > st.k
        if g == "row":
            idx = order[:, lo:hi].long()  # [out, hi-lo]
            view, orig = weight_view(st.p, st.pruned), weight_view(st.p, st.original)
            view.scatter_(1, idx, 0.0 if prune else orig.gather(1, idx))
        elif g == "neuron":
            rows = order[lo:hi]
            view, orig = weight_view(st.p, st.pruned), weight_view(st.p, st.original)
            if prune:
                view.index_fill_(0, rows, 0.0)
            else:
                view.index_copy_(0, rows, orig.index_select(0, rows))
            if st.pruned_bias is not None:
                st.pruned_bias[rows] = 0.0 if prune else st.original_bias[rows]
        else:
            idx = order[lo:hi].long()
            flat = st.pruned.view(-1)
            if prune:
                flat.index_fill_(0, idx, 0.0)
            else:
                flat.index_copy_(0, idx, st.original.view(-1).index_select(0, idx))
        st.k = k

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
        out = {}
        for name, st in self.state.items():
            o, i = st.p.shape
            per_unit = {"row": o, "neuron": i}.get(self.granularity or "row", 1)  # "fixed": k counts weights
            out[name] = st.k * per_unit
        return out

    def achieved_sparsity(self) -> float:
        total = sum(st.p.numel for st in self.state.values())
        return sum(self.pruned_counts().values()) / total if total else 0.0

    def mask(self, name: str) -> torch.Tensor:
        """Boolean [out, in]: True where the weight is pruned."""
        st = self.state[name]
        if st.fixed_mask is not None:
            return st.fixed_mask
        out, inn = st.p.shape
        m = torch.zeros((out, inn), dtype=torch.bool)
        if not st.k or self.granularity is None:
            return m
        order = self._order(name, self.granularity).cpu()
        if self.granularity == "row":
            m.scatter_(1, order[:, : st.k].long(), True)
        elif self.granularity == "neuron":
            m[order[: st.k]] = True
        else:
            flat = torch.zeros(out * inn, dtype=torch.bool)
            flat[order[: st.k].long()] = True
            sm = flat.view(inn, out) if st.p.transposed else flat.view(out, inn)
            m = sm.t().contiguous() if st.p.transposed else sm
        return m


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """bool [out, in] -> uint8 [ceil(out*in/8)] (8x smaller on disk)."""
    return torch.from_numpy(np.packbits(mask.numpy().reshape(-1)))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    n = shape[0] * shape[1]
    return torch.from_numpy(np.unpackbits(packed.numpy())[:n].astype(bool)).view(shape)
