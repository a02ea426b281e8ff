"""Masks from a compact ranking, applied in place without reloading or re-scoring.

Every prunable layer keeps its original weight (never written) and a pruned working
copy. Switching dense <-> pruned re-points the parameters (O(1)), so "back to dense"
restores the exact original weights and dense-vs-pruned comparisons need no reload.

The state of a layer is one count per row: row r has its first `counts[r]` positions
(least important first) pruned. Every granularity is such counts (see
core/pruning/ranking.py), so a plan change only touches the positions whose status
changes, whatever the granularity was before:

  a first application, or many positions change   the layer rebuilt from `rank < counts`:
                                                  one comparison and one multiply
  same count in every row before and after        one slice of the rows' `order`, scattered
  few positions change                            (row, position) pairs gathered from the
                                                  ragged ranges, then indexed

Heads and MLP neurons (core/model/units.py) are whole rows and columns: a unit plan picks
the lowest-scoring units and masks their rows (counts = the row's width) and columns.
N:M plans mask within groups of each row. Leaving either rebuilds from the ranks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from core.errors import WorkbenchError
from core.model.layers import Prunable, weight_view
from core.model.placement import disk_original, disk_scratch, on_disk, real_tensor, set_tensor
from core.model.units import Unit, unit_masks
from core.pruning.ranking import LayerRanking, Ranking, row_counts, threshold_counts
from core.pruning.plan import SparsityPlan
from core.pruning.registry import granularity as granularity_of

REBUILD_FROM = 0.125  # above this share of a layer's weights changing, rebuild it from the ranks in one pass


@dataclass
class LayerState:
    p: Prunable
    original: torch.Tensor  # the model's own weight tensor (storage orientation)
    original_bias: torch.Tensor | None
    counts: torch.Tensor  # int64 [out]: pruned leading positions per row (pruned weights per row under N:M)
    pruned: torch.Tensor | None = None  # working copy, made on the first non-dense plan
    pruned_bias: torch.Tensor | None = None
    pattern: tuple[int, int] | None = None  # (N, M) while an N:M plan is applied: counts are not prefixes then
    cols: torch.Tensor | None = None  # bool [in]: dead input columns while a unit plan is applied
    on_disk: bool = False  # offloaded to disk: original and working copy are memory-mapped files, not RAM


def _working_copy(st: LayerState) -> None:
    """The pruned copy of a layer, written on its first plan: in RAM beside the original, or a file
    beside an original that is on disk."""
    st.pruned = disk_scratch(st.p.module, "weight", st.original) if st.on_disk else torch.empty_like(st.original)
    st.pruned_bias = None if st.original_bias is None else st.original_bias.clone()


class Pruner:
    """Owns the dense and pruned copies of every prunable weight and moves between plans."""

    def __init__(self, layers: list[Prunable], ranking: Ranking, units: Callable[[str], list[Unit]] | None = None):
        missing = {p.name for p in layers} - ranking.names()
        if missing:
            raise WorkbenchError("the session's ranking does not match this model's layers; re-run `workbench score`")
        self.layers = layers
        self.ranking = ranking
        self._unit_source = units
        self._units: dict[str, tuple[list[Unit], torch.Tensor]] = {}  # kind -> (units, their scores)
        self.removed_units: tuple[str, torch.Tensor] | None = None  # the last unit plan: (kind, bool [n units])
        self.plan = SparsityPlan()
        self.pruned_active = False
        self.reconstructed_for: SparsityPlan | None = None  # the plan whose kept weights were reconstructed
        self.state: dict[str, LayerState] = {}
        for p in layers:
            # an offloaded layer's real tensors live in accelerate's weights map (core/model/placement.py)
            disk = on_disk(p.module, "weight")
            weight = disk_original(p.module, "weight") if disk else real_tensor(p.module, "weight")
            bias = real_tensor(p.module, "bias")
            self.state[p.name] = LayerState(p, weight, bias, torch.zeros(p.shape[0], dtype=torch.int64), on_disk=disk)

    # ---- plan -> counts per row ------------------------------------------------------
    def targets(self, plan: SparsityPlan) -> dict[str, torch.Tensor]:
        g = plan.granularity
        if g == "row":
            return {n: row_counts(self.ranking[n], plan.for_layer(n)) for n in self.state}
        if g == "layer":
            return {n: threshold_counts([self.ranking[n]], round(plan.for_layer(n) * st.p.numel))[0]
                    for n, st in self.state.items()}
        if plan.count is not None:  # exactly `count` weights, the lowest of the whole model
            names = list(self.state)
            return dict(zip(names, threshold_counts([self.ranking[n] for n in names], plan.count)))
        groups: dict[float, list[str]] = {}  # global: weights compete across layers sharing a target
        for n in self.state:
            groups.setdefault(plan.for_layer(n), []).append(n)
        out: dict[str, torch.Tensor] = {}
        for s, names in groups.items():
            k = round(s * sum(self.state[n].p.numel for n in names))
            out.update(zip(names, threshold_counts([self.ranking[n] for n in names], k)))
        return out

    def units(self, kind: str) -> tuple[list[Unit], torch.Tensor]:
        """The model's heads or neurons and their scores (higher = keep)."""
        if kind not in self._units:
            if self._unit_source is None:
                raise WorkbenchError(f"{kind} granularity needs the model's structure; this pruner was made without it")
            units = self._unit_source(kind)
            self._units[kind] = (units, self.ranking.unit_scores(units, kind))
        return self._units[kind]

    def removed(self, plan: SparsityPlan) -> torch.Tensor:
        """bool [n units]: the units a head or neuron plan removes, lowest scores first (ties: model order)."""
        units, scores = self.units(plan.granularity)
        removed = torch.zeros(len(units), dtype=torch.bool)
        if plan.count is not None:
            groups = {None: list(range(len(units)))}
        else:
            groups = {}
            target = {}  # per layer, not per unit: a pattern match per neuron costs more than the rest
            for i, u in enumerate(units):
                layer = u.primary
                if layer not in target:
                    target[layer] = plan.for_layer(layer)
                groups.setdefault(target[layer], []).append(i)
        for target, members in groups.items():
            k = min(plan.count, len(members)) if plan.count is not None else round(target * len(members))
            idx = torch.tensor(members, dtype=torch.long)
            removed[idx[scores[idx].argsort(stable=True)[:k]]] = True
        return removed

    # ---- applying --------------------------------------------------------------------
    def apply(self, plan: SparsityPlan, counts: dict[str, torch.Tensor] | None = None) -> None:
        """Make the model follow `plan`; dense plans point every parameter at its original.

        `counts` (per layer, from `row_counts()` of an earlier application of the same plan)
        skips working them out again.
        """
        plan.check_patterns(list(self.state))
        if self.reconstructed_for is not None and plan == self.reconstructed_for:
            self.plan = plan  # the working copies hold this plan's reconstruction: a pointer swap
            self.use_pruned(True)
            return
        if self.reconstructed_for is not None and not plan.is_dense():
            self.forget_reconstruction()
        if plan.is_dense():
            # Keep the working copies as they are, so going back is a pointer swap too.
            self.plan = plan
            self.use_pruned(False)
            return
        if granularity_of(plan.granularity).unit:
            removed = self.removed(plan)
            rows, cols = unit_masks(self.units(plan.granularity)[0], removed, {n: st.p.shape for n, st in self.state.items()})
            with torch.no_grad():
                for name, st in self.state.items():
                    self._apply_rows_cols(st, rows.get(name), cols.get(name))
                    self._set_bias(st, plan.granularity)
            self.removed_units = (plan.granularity, removed)
            self.plan = plan
            self.use_pruned(True)
            return
        pattern = granularity_of(plan.granularity).pattern
        if pattern:
            with torch.no_grad():
                for name, st in self.state.items():
                    self._apply_pattern(st, self.ranking[name], pattern if plan.for_layer(name) > 0 else None)
                    self._set_bias(st, plan.granularity)
            self.plan = plan
            self.use_pruned(True)
            return
        targets = {n: c.to(torch.int64) for n, c in counts.items()} if counts is not None else self.targets(plan)
        with torch.no_grad():
            for name, st in self.state.items():
                if st.pattern is not None or st.cols is not None:  # leaving an N:M or unit plan: rebuild from the ranks
                    st.pattern, st.cols = None, None
                    st.counts = torch.full_like(st.counts, -1)
                self._move(st, self.ranking[name], targets[name])
                self._set_bias(st, plan.granularity)
        self.plan = plan
        self.use_pruned(True)

    def _move(self, st: LayerState, lr: LayerRanking, new: torch.Tensor) -> None:
        if st.pruned is None:  # first plan: the working copy is written in full, from the ranks
            _working_copy(st)
            self._rebuild(st, lr, new)
            st.counts = new
            return
        old = st.counts
        if torch.equal(old, new):
            return
        if bool((old < 0).any()):  # unknown state (after N:M): rebuild
            self._rebuild(st, lr, new)
            st.counts = new
            return
        W, P = weight_view(st.p, st.original), weight_view(st.p, st.pruned)  # [out, in]
        if bool((old == old[0]).all()) and bool((new == new[0]).all()):  # row-wise: one slice of the order
            a, b = int(old[0]), int(new[0])
            idx = lr.order[:, min(a, b) : max(a, b)].long().to(P.device)
            if b > a:
                P.scatter_(1, idx, 0.0)
            else:
                P.scatter_(1, idx, W.gather(1, idx))
        elif int((new - old).abs().sum()) > REBUILD_FROM * st.p.numel:
            self._rebuild(st, lr, new)
        else:
            for grow, start, value in (((new - old).clamp(min=0), old, None), ((old - new).clamp(min=0), new, W)):
                total = int(grow.sum())
                if total == 0:
                    continue
                rows = torch.repeat_interleave(torch.arange(grow.numel()), grow)
                pos = start[rows] + torch.arange(total) - (grow.cumsum(0) - grow)[rows]
                cols = lr.order[rows, pos].long().to(P.device)
                rows = rows.to(P.device)
                P[rows, cols] = 0.0 if value is None else value[rows, cols]
        st.counts = new

    @staticmethod
    def _rebuild(st: LayerState, lr: LayerRanking, counts: torch.Tensor) -> None:
        """The whole working copy from the ranks: one comparison and one multiply, in cache layer by layer."""
        W, P = weight_view(st.p, st.original), weight_view(st.p, st.pruned)
        torch.mul(W, lr.mask(counts).logical_not_().to(W.device), out=P)
        P.add_(0.0)  # -w * 0 is -0.0; keep pruned weights +0.0 like every other path

    @staticmethod
    def _apply_rows_cols(st: LayerState, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
        """Unit plans: zero the dead rows (bool [out]) and columns (bool [in]); a layer no unit touches is dense."""
        if st.pruned is None:
            _working_copy(st)
            st.counts = torch.full_like(st.counts, -1)  # nothing written yet
        out, inn = st.p.shape
        dead_rows = rows if rows is not None else torch.zeros(out, dtype=torch.bool)
        new_counts = torch.where(dead_rows, inn, 0)
        if st.pattern is None and st.cols is not None and cols is not None and torch.equal(st.cols, cols) \
                and torch.equal(st.counts, new_counts):
            return
        W, P = weight_view(st.p, st.original), weight_view(st.p, st.pruned)
        mask = dead_rows.unsqueeze(1) | (cols if cols is not None else torch.zeros(inn, dtype=torch.bool)).unsqueeze(0)
        torch.mul(W, mask.logical_not_().to(W.device), out=P)
        P.add_(0.0)
        st.counts, st.cols, st.pattern = new_counts, (cols if cols is not None else torch.zeros(inn, dtype=torch.bool)), None

    @staticmethod
    def _apply_pattern(st: LayerState, lr: LayerRanking, pattern: tuple[int, int] | None) -> None:
        """N:M: every group of M consecutive weights of a row loses its N least important (None: dense layer)."""
        if st.pruned is None:
            _working_copy(st)
        W, P = weight_view(st.p, st.original), weight_view(st.p, st.pruned)
        if pattern is None:
            P.copy_(W)
            st.counts = torch.zeros_like(st.counts)
        else:
            mask = lr.n_m_mask(*pattern)
            torch.mul(W, mask.logical_not().to(W.device), out=P)
            P.add_(0.0)
            st.counts = mask.sum(dim=1)
        st.pattern = pattern if pattern is not None else (0, 1)

    @staticmethod
    def _set_bias(st: LayerState, granularity: str) -> None:
        # Only a whole neuron takes its bias with it; partially pruned rows keep theirs.
        if st.pruned_bias is None:
            return
        dead = st.counts == st.p.shape[1] if granularity_of(granularity).unit else torch.zeros_like(st.counts, dtype=torch.bool)
        torch.where(dead.to(st.original_bias.device), torch.zeros_like(st.original_bias), st.original_bias,
                    out=st.pruned_bias)

    def prepare_moves(self) -> None:
        """Derive every layer's order now (about 0.3 s on the default model), so the first slider step is quick too.
        Not for a ranking larger than its RAM cache: each layer's order is then derived when a move needs it."""
        if not self.ranking.fits():
            return
        for p in self.layers:
            self.ranking[p.name].order  # noqa: B018 - derived and kept on first access

    def use_pruned(self, on: bool) -> None:
        """Point every prunable parameter at the pruned working copy (on) or the original (off)."""
        on = on and all(st.pruned is not None for st in self.state.values())
        for st in self.state.values():
            set_tensor(st.p.module, "weight", st.pruned if on else st.original)
            if st.original_bias is not None:
                set_tensor(st.p.module, "bias", st.pruned_bias if on else st.original_bias)
        self.pruned_active = on

    def restore_dense(self) -> None:
        self.use_pruned(False)

    # ---- reconstruction (core/pruning/reconstruct.py) --------------------------------------
    def original(self, name: str) -> torch.Tensor:
        """A layer's dense weight as [out, in]."""
        st = self.state[name]
        return weight_view(st.p, st.original)

    def write_reconstructed(self, name: str, weight: torch.Tensor) -> None:
        """Put a reconstructed [out, in] weight (zeros where pruned) into the layer's pruned copy."""
        st = self.state[name]
        P = weight_view(st.p, st.pruned)
        with torch.no_grad():
            P.copy_(weight.to(device=P.device, dtype=P.dtype))

    @contextmanager
    def dense_layers(self, names: list[str]) -> Iterator[None]:
        """Run these layers on their original weights for the block (the rest as they are)."""
        for n in names:
            st = self.state[n]
            set_tensor(st.p.module, "weight", st.original)
            if st.original_bias is not None:
                set_tensor(st.p.module, "bias", st.original_bias)
        try:
            yield
        finally:
            for n in names:
                st = self.state[n]
                on = self.pruned_active and st.pruned is not None
                set_tensor(st.p.module, "weight", st.pruned if on else st.original)
                if st.original_bias is not None:
                    set_tensor(st.p.module, "bias", st.pruned_bias if on else st.original_bias)

    def mask_only(self) -> None:
        """Back to the current plan's mask-only weights (after a reconstruction, or one cut short)."""
        plan = self.plan
        self.forget_reconstruction()
        self.apply(plan)

    def forget_reconstruction(self) -> None:
        """The next plan rewrites every working copy from the originals (incremental moves assume W * mask)."""
        for st in self.state.values():
            if st.pruned is not None:
                st.counts = torch.full_like(st.counts, -1)
                if st.pattern is not None:
                    st.pattern = None
        self.reconstructed_for = None

    # ---- reporting -------------------------------------------------------------------
    def row_counts(self) -> dict[str, torch.Tensor] | None:
        """Pruned leading positions per row, per layer: with the ranking, these are the masks (None under N:M)."""
        if any(st.pattern is not None or st.cols is not None for st in self.state.values()):
            return None
        return {name: st.counts for name, st in self.state.items()}

    def pruned_counts(self) -> dict[str, int]:
        """Pruned weights per layer under the current plan (exact)."""
        if self.plan.is_dense():
            return {name: 0 for name in self.state}
        out = {}
        for name, st in self.state.items():
            n = int(st.counts.clamp(min=0).sum())
            if st.cols is not None:  # dead columns, outside the dead rows
                n += int(st.cols.sum()) * (st.p.shape[0] - int((st.counts == st.p.shape[1]).sum()))
            out[name] = n
        return out

    def achieved_sparsity(self) -> float:
        total = sum(st.p.numel for st in self.state.values())
        return sum(self.pruned_counts().values()) / total if total else 0.0

    def mask(self, name: str) -> torch.Tensor:
        """Boolean [out, in]: True where the weight is pruned."""
        st = self.state[name]
        if self.plan.is_dense() or st.pattern == (0, 1):
            return torch.zeros(st.p.shape, dtype=torch.bool)
        if st.pattern is not None:
            return self.ranking[name].n_m_mask(*st.pattern)
        mask = self.ranking[name].mask(st.counts.clamp(min=0))
        if st.cols is not None:
            mask |= st.cols.unsqueeze(0)
        return mask
