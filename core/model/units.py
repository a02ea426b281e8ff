"""Components larger than a weight: attention heads and MLP neurons, as rows and columns of prunable layers.

A head h of a decoder block is its query rows, its key and value rows and its output
projection's input columns; removing it is zeroing all of them. With grouped-query
attention a key/value head serves several query heads: its rows go only when every
query head of its group goes (they are the head's `shared` parts). An MLP neuron i is
the i-th output row of the up (and gate) projection and the i-th input column of the
down projection. Supported layouts:

  q_proj k_proj v_proj o_proj / gate_proj up_proj down_proj   Llama, Qwen2/3, Gemma 3, Mistral
  q_proj k_proj v_proj out_proj / fc1 fc2                      OPT
  c_attn (query, key, value stacked) c_proj / c_fc c_proj      GPT-2
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from core.errors import WorkbenchError
from core.model.layers import Prunable, block_prefix

UNIT_KINDS = ("head", "neuron")
#: the stable key of a unit kind's values among layer tensors (scores, sums): "@units::head" -> [n heads]
UNIT_SUMS = "@units::"


def unit_key(kind: str) -> str:
    return UNIT_SUMS + kind


def unit_kind_of(key: str) -> str | None:
    """The unit kind a key holds values of, or None for a layer's key."""
    return key[len(UNIT_SUMS):] if key.startswith(UNIT_SUMS) else None


class Part(NamedTuple):  # a tuple, made fast: a model has tens of thousands of neurons, each with three parts
    layer: str  # prunable layer name
    axis: str  # "row" (output rows) or "col" (input columns) of the [out, in] weight
    start: int
    stop: int


class Unit(NamedTuple):
    kind: str  # "head" or "neuron"
    block: int
    index: int  # head or neuron number within its block
    parts: tuple[Part, ...]  # removed with the unit
    shared: tuple[Part, ...] = ()  # removed only with every unit of its group
    group: int = 0  # units of one block that share `shared` parts have the same group

    @property
    def primary(self) -> str:
        """The layer whose target sparsity governs the unit."""
        return self.parts[0].layer


def _config(model: nn.Module):
    cfg = model.config
    return getattr(cfg, "get_text_config", lambda: cfg)()


def _blocks(layers: list[Prunable]) -> dict[int, dict[str, Prunable]]:
    """block -> {layer name after the block prefix: layer}."""
    out: dict[int, dict[str, Prunable]] = {}
    for p in layers:
        out.setdefault(p.block, {})[p.name[len(block_prefix(p)) + 1 :]] = p
    return out


def _find(block: dict[str, Prunable], *suffixes: str) -> Prunable | None:
    for suffix in suffixes:
        for name, p in block.items():
            if name.endswith(suffix):
                return p
    return None


def heads(model: nn.Module, layers: list[Prunable]) -> list[Unit]:
    cfg = _config(model)
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    if not n_heads:
        raise WorkbenchError(f"head granularity: the config of {type(model).__name__} does not say how many heads it has")
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    per_group = n_heads // n_kv
    units = []
    for b, block in sorted(_blocks(layers).items()):
        fused = _find(block, "attn.c_attn")
        out_proj = _find(block, "o_proj", "out_proj", "attn.c_proj")
        if fused is not None and out_proj is not None:  # GPT-2: query, key, value stacked in one layer
            width = fused.shape[0] // 3
            hd = width // n_heads
            for h in range(n_heads):
                parts = tuple(Part(fused.name, "row", s * width + h * hd, s * width + (h + 1) * hd) for s in range(3))
                units.append(Unit("head", b, h, parts + (Part(out_proj.name, "col", h * hd, (h + 1) * hd),), group=h))
            continue
        q, k, v = (_find(block, f"{x}_proj") for x in "qkv")
        if not (q and k and v and out_proj):
            raise WorkbenchError(f"head granularity needs q/k/v and output projections in block {b}; this model's "
                                 f"layer names ({', '.join(sorted(block))}) are not a layout the workbench knows")
        hd = q.shape[0] // n_heads
        for h in range(n_heads):
            g = h // per_group
            units.append(Unit("head", b, h, (Part(q.name, "row", h * hd, (h + 1) * hd),
                                             Part(out_proj.name, "col", h * hd, (h + 1) * hd)),
                              shared=(Part(k.name, "row", g * hd, (g + 1) * hd), Part(v.name, "row", g * hd, (g + 1) * hd)),
                              group=g))
    return units


def neurons(model: nn.Module, layers: list[Prunable]) -> list[Unit]:
    units = []
    for b, block in sorted(_blocks(layers).items()):
        up = _find(block, "up_proj", "fc1", "mlp.c_fc")
        gate = _find(block, "gate_proj")
        down = _find(block, "down_proj", "fc2", "mlp.c_proj")
        if up is None or down is None:
            raise WorkbenchError(f"neuron granularity needs the MLP's input and output projections in block {b}; "
                                 f"found {', '.join(sorted(block))}")
        for i in range(up.shape[0]):
            parts = (Part(up.name, "row", i, i + 1),) + ((Part(gate.name, "row", i, i + 1),) if gate else ())
            units.append(Unit("neuron", b, i, parts + (Part(down.name, "col", i, i + 1),), group=i))
    return units


@contextmanager
def collector_paused():
    """Making 46k neurons makes 180k objects, and the cyclic collector would run over them again and again while
    they are made (nine tenths of the time), and again while loops over them make their small tuples."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def units_of(model: nn.Module, layers: list[Prunable], kind: str) -> list[Unit]:
    if kind not in UNIT_KINDS:
        raise WorkbenchError(f"unknown unit {kind!r}; choose one of {', '.join(UNIT_KINDS)}")
    with collector_paused():
        return heads(model, layers) if kind == "head" else neurons(model, layers)


def unit_masks(units: list[Unit], removed: torch.Tensor, shapes: dict[str, tuple[int, int]]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rows and columns to zero when the units flagged in `removed` (bool [n]) go.

    Returns per layer a bool [out] of dead rows and a bool [in] of dead columns (only for
    layers a unit touches). A shared part goes when every unit of its (block, group) goes.
    """
    with collector_paused():
        return _unit_masks(units, removed.tolist(), shapes)


def _unit_masks(units: list[Unit], gone: list[bool], shapes: dict[str, tuple[int, int]]
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    whole: dict[tuple[int, int], bool] = {}  # (block, group) -> every unit of it goes
    for u, g in zip(units, gone):
        key = (u.block, u.group)
        whole[key] = whole.get(key, True) and g
    spans: dict[tuple[str, str], tuple[list[int], list[int]]] = {}  # (layer, axis) -> starts, stops of dead parts
    for u, g in zip(units, gone):  # every layer a unit could touch gets an entry, so leaving a plan restores it
        for part in u.parts:
            starts, stops = spans.setdefault((part.layer, part.axis), ([], []))
            if g:
                starts.append(part.start)
                stops.append(part.stop)
        for part in u.shared:
            starts, stops = spans.setdefault((part.layer, part.axis), ([], []))
            if whole[(u.block, u.group)]:
                starts.append(part.start)
                stops.append(part.stop)
    rows: dict[str, torch.Tensor] = {}
    cols: dict[str, torch.Tensor] = {}
    for (layer, axis), (starts, stops) in spans.items():
        size = shapes[layer][0 if axis == "row" else 1]
        edges = torch.zeros(size + 1, dtype=torch.int32)  # +1 where a dead span starts, -1 where it stops
        edges.index_add_(0, torch.tensor(starts, dtype=torch.long), torch.ones(len(starts), dtype=torch.int32))
        edges.index_add_(0, torch.tensor(stops, dtype=torch.long), torch.full((len(stops),), -1, dtype=torch.int32))
        (rows if axis == "row" else cols)[layer] = edges.cumsum(0)[:size] > 0
    return rows, cols
