"""Which weights are prunable: the linear layers inside decoder blocks.

Embeddings and the lm_head are never pruned (the paper's setting, and Wanda's).
GPT-2 stores its linears as `Conv1D` with the weight transposed ([in, out]); every
caller here sees weights as [out, in] through `weight_view`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from core.model.placement import real_tensor

_BLOCK_LISTS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "model.language_model.layers")


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


@dataclass(frozen=True)
class Prunable:
    name: str  # e.g. "model.layers.3.mlp.down_proj"
    module: nn.Module
    block: int  # decoder block index
    kind: str  # "attn" or "mlp"
    transposed: bool  # Conv1D: weight stored as [in, out]

    @property
    def shape(self) -> tuple[int, int]:
        w = self.module.weight
        return (w.shape[1], w.shape[0]) if self.transposed else (w.shape[0], w.shape[1])

    @property
    def numel(self) -> int:
        return self.module.weight.numel()


def weight_view(p: Prunable, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """The weight (or a tensor shaped like it) as [out, in]; an offloaded weight is read from its store."""
    t = real_tensor(p.module, "weight") if tensor is None else tensor
    return t.t() if p.transposed else t


def _kind(name: str) -> str:
    return "attn" if re.search(r"attn|attention", name) else "mlp"


def prunable_layers(model: nn.Module) -> list[Prunable]:
    """Every linear inside the decoder blocks, in model order."""
    found: list[Prunable] = []
    for name, module in model.named_modules():
        is_linear = isinstance(module, nn.Linear) or _is_conv1d(module)
        if not is_linear:
            continue
        m = None
        for prefix in _BLOCK_LISTS:
            m = re.match(rf"^{re.escape(prefix)}\.(\d+)\.", name)
            if m:
                break
        if m is None:
            continue
        found.append(Prunable(name, module, int(m.group(1)), _kind(name[m.end():]), _is_conv1d(module)))
    return found


def block_prefix(p: Prunable) -> str:
    """'model.layers.3.mlp.up_proj' (block 3) -> 'model.layers.3'."""
    parts = p.name.split(".")
    for i, part in enumerate(parts):
        if part == str(p.block) and i > 0:
            return ".".join(parts[: i + 1])
    raise ValueError(f"cannot find the block index {p.block} in layer name {p.name!r}")
