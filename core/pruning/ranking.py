"""What ranking needs, stored compactly: where each weight stands in its row, and the row's values in order.

A finished score is one fp32 value per weight. Pruning never needs that value again,
only comparisons, so each layer keeps:

  rank    int16 [out, in]  rank[r, c] = position of weight (r, c) in row r's order, least
                           important first (stable: equal scores keep column order).
                           int32 for rows of 32,768 weights or more.
  sorted  bf16  [out, in]  row r's ranking values in that order (ascending)
  rows    fp32  [out]      each row's summed ranking value
  cols    fp32  [in]       each column's summed ranking value (with rows: a head's or a
                           neuron's score is the sum over its rows and columns)
  mass    fp32  []         summed |reference score| of the layer (allocation, relevance views)
  hist    int32 [4096]     the layer's values per bin of 16 consecutive bf16 values, so a
                           threshold search reads a few rows' worth of data per step

4 bytes per weight for any session, where the raw fp32 scores took 4 per weight and
per prompt set. Every granularity becomes "prune the first c_r positions of row r", and
the mask of such counts is one comparison, `rank < counts[:, None]`:

  row      the same count in every row: no comparison across rows at all, so the
           exact fp32 order decides everything
  layer    one threshold over the layer's rows; global: over all layers sharing a
           target. Counts come from the histograms and a binary search over bf16 values
           inside one bin (4 steps of one batched searchsorted); ties at the threshold
           are broken by layer order, then row, then the exact within-row order, so
           exactly round(s * n) weights go.
  neuron   whole rows (c_r = in), the rows with the lowest summed value first

Reading the ranks from disk replaces a sort of every row (3.6 s on the default model):
a first application is one comparison per weight. Small moves (a slider step) need the
inverse, each row's `order` (column of the j-th position), which is derived once per
layer when first needed.

A session's ranking is read lazily (`Ranking.open`): the small parts at once, each layer's
rank and sorted values when a plan touches that layer, and its order when a move needs it,
kept while they fit a RAM budget (least recently used dropped first). Every plan visits the
layers one at a time (a global threshold too: each of its passes reads one layer after
another), so a ranking larger than RAM prunes exactly like one in RAM, only slower.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch

from core.model.units import collector_paused, unit_key, unit_kind_of

HIST_SHIFT = 4  # histogram bins of 16 consecutive bf16 values: 4096 bins per layer
CACHE_ENV = "WORKBENCH_RANKING_CACHE_MB"  # RAM for rank/sorted/order of a ranking read from disk
SMALL = ("rows", "cols", "mass", "hist")  # per-layer parts always kept in RAM (a few bytes per row and column)


def cache_budget() -> int:
    """Bytes of `rank`, `sorted` and `order` kept in RAM for a ranking read from disk: $WORKBENCH_RANKING_CACHE_MB,
    else a quarter of the machine's RAM. Layers beyond it are read again from the session file when needed."""
    if os.environ.get(CACHE_ENV, "").strip():
        return int(float(os.environ[CACHE_ENV]) * 2**20)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def rank_dtype(width: int) -> torch.dtype:
    return torch.int16 if width < 2**15 else torch.int32


def _inverse(rank: torch.Tensor) -> torch.Tensor:
    out, inn = rank.shape
    positions = torch.arange(inn, dtype=rank.dtype).expand(out, inn)
    return torch.empty_like(rank).scatter_(1, rank.long(), positions)


class _Parts:
    """The large parts (rank, sorted, order) of a ranking on disk, read on use and kept while they
    fit in `budget` bytes, least recently used dropped first (the one in use always stays)."""

    def __init__(self, path: Path, budget: int, check: Callable[[str, torch.Tensor], None] | None = None):
        from safetensors import safe_open

        self.file = safe_open(str(path), framework="pt")
        self.check = check  # check(key, tensor): raises when a tensor read from the file is not what was written
        self.budget = budget
        self._held: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.held_bytes = 0
        self.reads = 0  # parts read from the file (tests and benches watch this)
        self._lock = threading.Lock()

    def get(self, name: str, part: str, make: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        key = (name, part)
        with self._lock:
            t = self._held.get(key)
            if t is not None:
                self._held.move_to_end(key)
                return t
        if make is None:
            t = self.read(f"{name}::{part}")
            self.reads += 1
        else:
            t = make()
        with self._lock:
            if key not in self._held:
                self._held[key] = t
                self.held_bytes += t.numel() * t.element_size()
            while self.held_bytes > self.budget and len(self._held) > 1:
                old_key, old = next(iter(self._held.items()))
                if old_key == key:
                    break
                del self._held[old_key]
                self.held_bytes -= old.numel() * old.element_size()
        return t


    def read(self, key: str) -> torch.Tensor:
        t = self.file.get_tensor(key)
        if self.check is not None:
            self.check(key, t)
        return t


class LayerRanking:
    """One layer's compact ranking. In RAM (made by `layer_ranking`), or with `rank` and `sorted` on
    disk (`Ranking.open`), read when used; the small per-row and per-column parts are always in RAM."""

    def __init__(self, rank: torch.Tensor | None, sorted: torch.Tensor | None, rows: torch.Tensor, mass: float,
                 hist: torch.Tensor, cols: torch.Tensor | None = None, order: torch.Tensor | None = None, *,
                 shape: tuple[int, int] | None = None, parts: _Parts | None = None, name: str = ""):
        self._rank, self._sorted, self._order = rank, sorted, order
        self.rows = rows  # fp32 [out]
        self.mass = mass
        self.hist = hist  # int32 [4096]: how many of the layer's values fall in each key bin
        self.cols = cols  # fp32 [in]
        self._shape = tuple(rank.shape) if rank is not None else shape
        self._parts, self._name = parts, name

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def numel(self) -> int:
        return self._shape[0] * self._shape[1]

    @property
    def rank(self) -> torch.Tensor:
        """int16/int32 [out, in]"""
        return self._rank if self._rank is not None else self._parts.get(self._name, "rank")  # type: ignore[union-attr]

    @property
    def sorted(self) -> torch.Tensor:
        """bf16 [out, in], ascending along each row"""
        return self._sorted if self._sorted is not None else self._parts.get(self._name, "sorted")  # type: ignore[union-attr]

    @property
    def order(self) -> torch.Tensor:
        """[out, in]: order[r, j] = column of row r's j-th least important weight (the inverse of rank)."""
        if self._order is not None:
            return self._order
        if self._parts is not None:
            return self._parts.get(self._name, "order", lambda: _inverse(self.rank))
        self._order = _inverse(self.rank)
        return self._order

    def mask(self, counts: torch.Tensor) -> torch.Tensor:
        """bool [out, in]: True where the weight is among its row's first `counts` positions."""
        rank = self.rank
        return rank < counts.to(rank.dtype).unsqueeze(1)

    def n_m_mask(self, n: int, m: int) -> torch.Tensor:
        """bool [out, in]: in each group of m consecutive weights of a row, the n least important
        (ranks are distinct within a row, so every group loses exactly n). A tail shorter than m stays."""
        out, inn = self.shape
        whole = inn - inn % m
        groups = self.rank[:, :whole].reshape(out, whole // m, m)
        kth = groups.kthvalue(n, dim=-1, keepdim=True).values
        mask = torch.zeros(self.shape, dtype=torch.bool)
        mask[:, :whole] = (groups <= kth).reshape(out, whole)
        return mask


def layer_ranking(values: torch.Tensor, mass: float) -> LayerRanking:
    """values fp32 [out, in] (higher = keep) -> the compact form."""
    values = torch.nan_to_num(values.float(), nan=0.0) + 0.0  # + 0.0 turns -0.0 into +0.0: keys then order like values
    order = values.argsort(dim=1, stable=True)  # [out, in] int64
    sorted_values = values.gather(1, order).to(torch.bfloat16)
    dtype = rank_dtype(values.shape[1])
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(values.shape[1]).expand_as(order)).to(dtype)
    hist = torch.bincount(_bins(sorted_values).reshape(-1), minlength=65536 >> HIST_SHIFT).to(torch.int32)
    return LayerRanking(rank, sorted_values, values.sum(dim=1), float(mass), hist, values.sum(dim=0), order.to(dtype))


class Ranking:
    """Per-layer compact rankings of one session (see the module docstring), and unit scores where a
    scorer gives them directly (CAP's per-head scores), higher = keep."""

    def __init__(self, layers: dict[str, LayerRanking], units: dict[str, torch.Tensor] | None = None,
                 parts: _Parts | None = None):
        self.layers = layers
        self.units = units or {}  # "head" -> [n heads], in the order of core.model.units.heads()
        self.parts = parts  # None: every layer is in RAM

    @classmethod
    def from_values(cls, values: dict[str, torch.Tensor], mass: dict[str, float],
                    units: dict[str, torch.Tensor] | None = None) -> "Ranking":
        return cls({name: layer_ranking(v, mass.get(name, 0.0)) for name, v in values.items()}, units)

    def __getitem__(self, name: str) -> LayerRanking:
        return self.layers[name]

    def names(self) -> set[str]:
        return set(self.layers)

    def large_bytes(self) -> int:
        """Bytes of rank, sorted and order over all layers: what RAM holds when nothing is dropped."""
        return sum(lr.numel * (2 * rank_dtype(lr.shape[1]).itemsize + 2) for lr in self.layers.values())

    def fits(self) -> bool:
        """Whether every layer's rank, sorted and order stay in RAM (in RAM, or within the cache budget)."""
        return self.parts is None or self.large_bytes() <= self.parts.budget

    # ---- on disk ---------------------------------------------------------------------
    @staticmethod
    def layout(shapes: dict[str, tuple[int, int]], units: dict[str, torch.Tensor] | None = None
               ) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """Every tensor of the file for layers of these shapes [out, in]: known before any layer is finished."""
        out: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        for name, (rows, width) in shapes.items():
            out[f"{name}::rank"] = (rank_dtype(width), (rows, width))
            out[f"{name}::sorted"] = (torch.bfloat16, (rows, width))
            out[f"{name}::rows"] = (torch.float32, (rows,))
            out[f"{name}::mass"] = (torch.float32, ())
            out[f"{name}::hist"] = (torch.int32, (65536 >> HIST_SHIFT,))
            out[f"{name}::cols"] = (torch.float32, (width,))
        for kind, scores in (units or {}).items():
            out[unit_key(kind)] = (scores.dtype, tuple(scores.shape))
        return out

    @staticmethod
    def layer_tensors(name: str, lr: LayerRanking) -> dict[str, torch.Tensor]:
        cols = lr.cols if lr.cols is not None else lr.sorted.float().gather(1, lr.rank.long()).sum(0)
        return {f"{name}::rank": lr.rank, f"{name}::sorted": lr.sorted, f"{name}::rows": lr.rows,
                f"{name}::mass": torch.tensor(lr.mass, dtype=torch.float32), f"{name}::hist": lr.hist,
                f"{name}::cols": cols}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, lr in self.layers.items():
            out.update(self.layer_tensors(name, lr))
        for kind, scores in self.units.items():
            out[unit_key(kind)] = scores
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Ranking":
        units = {unit_kind_of(k): v for k, v in tensors.items() if unit_kind_of(k)}
        names = {k.rsplit("::", 1)[0] for k in tensors if not unit_kind_of(k)}
        return cls({n: LayerRanking(tensors[f"{n}::rank"], tensors[f"{n}::sorted"], tensors[f"{n}::rows"],
                                    float(tensors[f"{n}::mass"]), tensors[f"{n}::hist"], tensors.get(f"{n}::cols"))
                    for n in names}, units)

    @classmethod
    def open(cls, path: Path, budget: int | None = None,
             check: Callable[[str, torch.Tensor], None] | None = None) -> "Ranking":
        """A ranking file read lazily: the small parts now, each layer's rank and sorted when used,
        at most `budget` bytes of them (default `cache_budget()`) kept in RAM. `check(key, tensor)` sees
        every tensor read from the file (the session refuses one that changed since it was written)."""
        parts = _Parts(path, cache_budget() if budget is None else budget, check)
        f = parts.file
        keys = set(f.keys())
        units = {unit_kind_of(k): parts.read(k) for k in keys if unit_kind_of(k)}
        layers = {}
        for n in sorted({k.rsplit("::", 1)[0] for k in keys if not unit_kind_of(k)}):
            shape = tuple(f.get_slice(f"{n}::rank").get_shape())
            small = {p: parts.read(f"{n}::{p}") for p in SMALL if f"{n}::{p}" in keys}
            layers[n] = LayerRanking(None, None, small["rows"], float(small["mass"]), small["hist"], small.get("cols"),
                                     shape=shape, parts=parts, name=n)  # type: ignore[arg-type]
        return cls(layers, units, parts)

    def unit_scores(self, units: list, kind: str) -> torch.Tensor:
        """One score per unit (higher = keep): stored by the scorer, else the sum over the unit's rows and
        columns, a shared part counting once per group (split between the units that share it)."""
        if kind in self.units and self.units[kind].numel() == len(units):
            return self.units[kind].float()
        with collector_paused():
            return self._unit_sums(units)

    def _unit_sums(self, units: list) -> torch.Tensor:
        group_size: dict[tuple[int, int], int] = {}
        for u in units:
            group_size[(u.block, u.group)] = group_size.get((u.block, u.group), 0) + 1
        spans: dict[tuple[str, str], tuple[list[int], list[int], list[int], list[float]]] = {}
        for i, u in enumerate(units):  # per (layer, axis): each part's unit, start, stop and share of it
            share = 1.0 / group_size[(u.block, u.group)]
            for parts, weight in ((u.parts, 1.0), (u.shared, share)):
                for part in parts:
                    owner, starts, stops, weights = spans.setdefault((part.layer, part.axis), ([], [], [], []))
                    owner.append(i)
                    starts.append(part.start)
                    stops.append(part.stop)
                    weights.append(weight)
        scores = torch.zeros(len(units), dtype=torch.float64)
        for (layer, axis), (owner, starts, stops, weights) in spans.items():
            lr = self.layers[layer]
            line = lr.rows if axis == "row" else (lr.cols if lr.cols is not None else self.values(layer).float().sum(0))
            cs = torch.cat([torch.zeros(1, dtype=torch.float64), line.double().cumsum(0)])
            span = cs[torch.tensor(stops)] - cs[torch.tensor(starts)]
            scores.index_add_(0, torch.tensor(owner), span * torch.tensor(weights, dtype=torch.float64))
        return scores.float()

    def values(self, name: str) -> torch.Tensor:
        """The ranking values [out, in] in bf16 precision (for views and tests)."""
        lr = self.layers[name]
        return lr.sorted.gather(1, lr.rank.long())


# ---- exact counts from a threshold ------------------------------------------------------
def _key_to_bf16(key: int) -> torch.Tensor:
    """Inverse of the monotone integer key of a bf16 bit pattern (see `_keys`)."""
    bits = key if key >= 0 else -32769 - key
    return torch.tensor([bits], dtype=torch.int16).view(torch.bfloat16)


def _keys(values: torch.Tensor) -> torch.Tensor:
    """bf16 -> int32 keys that order like the values (sign-magnitude bits made monotone)."""
    b = values.view(torch.int16).to(torch.int32)
    return torch.where(b >= 0, b, -32769 - b)


def _bins(values: torch.Tensor) -> torch.Tensor:
    return (_keys(values) + 32768) >> HIST_SHIFT


def _count(group: list[LayerRanking], t: torch.Tensor, right: bool) -> list[torch.Tensor]:
    """Per row of each layer: how many values are below `t` (or at most `t`). One layer's values at a
    time, so a ranking on disk is read layer by layer."""
    out = []
    for lr in group:
        s = lr.sorted
        out.append(torch.searchsorted(s, t.expand(s.shape[0], 1).contiguous(), right=right).squeeze(1))
    return out


def threshold_counts(group: list[LayerRanking], k: int) -> list[torch.Tensor]:
    """Per row of every layer in `group`, how many leading positions to prune so that exactly
    `k` weights of the group go, lowest values first (ties: layer, then row, then position)."""
    total = sum(lr.numel for lr in group)
    if k <= 0:
        return [torch.zeros(lr.shape[0], dtype=torch.int64) for lr in group]
    if k >= total:
        return [torch.full((lr.shape[0],), lr.shape[1], dtype=torch.int64) for lr in group]
    # The histograms find the bin holding the k-th value; a binary search inside it (4 steps) the value.
    cum = torch.stack([lr.hist.long() for lr in group]).sum(0).cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([k]), right=False))
    lo = (b << HIST_SHIFT) - 32768 - 1  # every key <= lo is in an earlier bin: fewer than k values
    hi = ((b + 1) << HIST_SHIFT) - 32768 - 1  # every key <= hi: at least k values
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sum(int(c.sum()) for c in _count(group, _key_to_bf16(mid), right=True)) >= k:
            hi = mid
        else:
            lo = mid
    t = _key_to_bf16(hi)
    below = _count(group, t, right=False)  # strictly below the threshold: all pruned
    upto = _count(group, t, right=True)
    ties = torch.cat([u - b for u, b in zip(upto, below)])
    left = k - sum(int(b.sum()) for b in below)
    before = ties.cumsum(0) - ties  # ties in earlier rows
    take = (left - before).clamp(min=0).minimum(ties)
    out, at = [], 0
    for b in below:
        out.append(b + take[at : at + b.numel()])
        at += b.numel()
    return out


def row_counts(lr: LayerRanking, sparsity: float) -> torch.Tensor:
    out, inn = lr.shape
    return torch.full((out,), round(sparsity * inn), dtype=torch.int64)
