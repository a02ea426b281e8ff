"""Masks from a compact ranking, applied in place without reloading or re-scoring.

Every prunable layer keeps its original weight (never written) and a pruned working
copy. Switching dense <-> pruned re-points the parameters (O(1)), so "back to dense"
restores the exact original weights and dense-vs-pruned comparisons need no reload.

The state of a layer is one count per row: row r has its first `counts[r]` positions
(least important first) pruned. Every granularity is such counts (see
core/pruning/order.py), so a plan change only touches the positions whose status
changes, whatever the granularity was before:

  a first application, or many positions change   the layer rebuilt from `rank < counts`:
                                                  one comparison and one multiply
  same count in every row before and after        one slice of the rows' `order`, scattered
  whole rows on or off (neurons)                  those rows zeroed or copied back
  few positions change                            (row, position) pairs gathered from the
                                                  ragged ranges, then indexed
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import WorkbenchError
from core.model.layers import Prunable, weight_view
from core.pruning.order import LayerRanking, Ranking, neuron_counts, row_counts, threshold_counts
from core.pruning.plan import SparsityPlan, n_m

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


class Pruner:
    """Owns the dense and pruned copies of every prunable weight and moves between plans."""

    def __init__(self, layers: list[Prunable], ranking: Ranking):
        missing = {p.name for p in layers} - ranking.names()
        if missing:
            raise WorkbenchError("the session's ranking does not match this model's layers; re-run `workbench score`")
        self.layers = layers
        self.ranking = ranking
        self.plan = SparsityPlan()
        self.pruned_active = False
        self.state: dict[str, LayerState] = {}
        for p in layers:
            bias = p.module.bias.data if getattr(p.module, "bias", None) is not None else None
            self.state[p.name] = LayerState(p, p.module.weight.data, bias, torch.zeros(p.shape[0], dtype=torch.int64))

    # ---- plan -> counts per row ------------------------------------------------------
    def targets(self, plan: SparsityPlan) -> dict[str, torch.Tensor]:
        g = plan.granularity
        if g == "row":
            return {n: row_counts(self.ranking[n], plan.for_layer(n)) for n in self.state}
        if g == "neuron":
            return {n: neuron_counts(self.ranking[n], plan.for_layer(n)) for n in self.state}
        if g == "layer":
            return {n: threshold_counts([self.ranking[n]], round(plan.for_layer(n) * st.p.numel))[0]
                    for n, st in self.state.items()}
        groups: dict[float, list[str]] = {}  # global: weights compete across layers sharing a target
        for n in self.state:
            groups.setdefault(plan.for_layer(n), []).append(n)
        out: dict[str, torch.Tensor] = {}
        for s, names in groups.items():
            k = round(s * sum(self.state[n].p.numel for n in names))
            out.update(zip(names, threshold_counts([self.ranking[n] for n in names], k)))
        return out

    # ---- applying --------------------------------------------------------------------
    def apply(self, plan: SparsityPlan, counts: dict[str, torch.Tensor] | None = None) -> None:
        """Make the model follow `plan`; dense plans point every parameter at its original.

        `counts` (per layer, from `row_counts()` of an earlier application of the same plan)
        skips working them out again.
        """
        plan.check_patterns(list(self.state))
        if plan.is_dense():
            # Keep the working copies as they are, so going back is a pointer swap too.
            self.plan = plan
            self.use_pruned(False)
            return
        pattern = n_m(plan.granularity)
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
                if st.pattern is not None:  # leaving an N:M plan: rebuild from the ranks
                    st.pattern = None
                    st.counts = torch.full_like(st.counts, -1)
                self._move(st, self.ranking[name], targets[name])
                self._set_bias(st, plan.granularity)
        self.plan = plan
        self.use_pruned(True)

    def _move(self, st: LayerState, lr: LayerRanking, new: torch.Tensor) -> None:
        if st.pruned is None:  # first plan: the working copy is written in full, from the ranks
            st.pruned = torch.empty_like(st.original)
            st.pruned_bias = None if st.original_bias is None else st.original_bias.clone()
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
        width = W.shape[1]
        if bool((old == old[0]).all()) and bool((new == new[0]).all()):  # row-wise: one slice of the order
            a, b = int(old[0]), int(new[0])
            idx = lr.order[:, min(a, b) : max(a, b)].long()
            if b > a:
                P.scatter_(1, idx, 0.0)
            else:
                P.scatter_(1, idx, W.gather(1, idx))
        elif bool(((old == 0) | (old == width)).all() and ((new == 0) | (new == width)).all()):  # neurons
            P[(new > 0) & (old == 0)] = 0.0
            back = (new == 0) & (old > 0)
            P[back] = W[back]
        elif int((new - old).abs().sum()) > REBUILD_FROM * st.p.numel:
            self._rebuild(st, lr, new)
        else:
            for grow, start, value in (((new - old).clamp(min=0), old, None), ((old - new).clamp(min=0), new, W)):
                total = int(grow.sum())
                if total == 0:
                    continue
                rows = torch.repeat_interleave(torch.arange(grow.numel()), grow)
                pos = start[rows] + torch.arange(total) - (grow.cumsum(0) - grow)[rows]
                cols = lr.order[rows, pos].long()
                P[rows, cols] = 0.0 if value is None else value[rows, cols]
        st.counts = new

    @staticmethod
    def _rebuild(st: LayerState, lr: LayerRanking, counts: torch.Tensor) -> None:
        """The whole working copy from the ranks: one comparison and one multiply, in cache layer by layer."""
        W, P = weight_view(st.p, st.original), weight_view(st.p, st.pruned)
        torch.mul(W, lr.mask(counts).logical_not_(), out=P)
        P.add_(0.0)  # -w * 0 is -0.0; keep pruned weights +0.0 like every other path

    @staticmethod
    def _apply_pattern(st: LayerState, lr: LayerRanking, pattern: tuple[int, int] | None) -> None:
        """N:M: every group of M consecutive weights of a row loses its N least important (None: dense layer)."""
        if st.pruned is None:
            st.pruned = torch.empty_like(st.original)
            st.pruned_bias = None if st.original_bias is None else st.original_bias.clone()
        W, P = weight_view(st.p, st.original), weight_view(st.p, st.pruned)
        if pattern is None:
            P.copy_(W)
            st.counts = torch.zeros_like(st.counts)
        else:
            mask = lr.n_m_mask(*pattern)
            torch.mul(W, mask.logical_not(), out=P)
            P.add_(0.0)
            st.counts = mask.sum(dim=1)
        st.pattern = pattern if pattern is not None else (0, 1)

    @staticmethod
    def _set_bias(st: LayerState, granularity: str) -> None:
        # Only a whole neuron takes its bias with it; partially pruned rows keep theirs.
        if st.pruned_bias is None:
            return
        dead = st.counts == st.p.shape[1] if granularity == "neuron" else torch.zeros_like(st.counts, dtype=torch.bool)
        torch.where(dead, torch.zeros_like(st.original_bias), st.original_bias, out=st.pruned_bias)

    def prepare_moves(self) -> None:
        """Derive every layer's order now (about 0.3 s on the default model), so the first slider step is quick too."""
        for p in self.layers:
            self.ranking[p.name].order  # noqa: B018 - derived and kept on first access

    def use_pruned(self, on: bool) -> None:
        """Point every prunable parameter at the pruned working copy (on) or the original (off)."""
        on = on and all(st.pruned is not None for st in self.state.values())
        for st in self.state.values():
            st.p.module.weight.data = st.pruned if on else st.original
            if st.original_bias is not None:
                st.p.module.bias.data = st.pruned_bias if on else st.original_bias
        self.pruned_active = on

    def restore_dense(self) -> None:
        self.use_pruned(False)

    # ---- reporting -------------------------------------------------------------------
    def row_counts(self) -> dict[str, torch.Tensor] | None:
        """Pruned leading positions per row, per layer: with the ranking, these are the masks (None under N:M)."""
        if any(st.pattern is not None for st in self.state.values()):
            return None
        return {name: st.counts for name, st in self.state.items()}

    def pruned_counts(self) -> dict[str, int]:
        """Pruned weights per layer under the current plan (exact)."""
        if self.plan.is_dense():
            return {name: 0 for name in self.state}
        return {name: int(st.counts.sum()) for name, st in self.state.items()}

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
        return self.ranking[name].mask(st.counts)
