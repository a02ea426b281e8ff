"""Export a pruned checkpoint that plain `AutoModelForCausalLM.from_pretrained` loads.

The folder holds the safetensors weights (pruned weights are zeros), config and
tokenizer, `masks.safetensors` (bool [out, in], True = pruned, keyed by weight name)
and `pruning.json` saying how it was made. Zeros in dense tensors do not make the file
smaller: `pruning.json` reports the real file size and what a sparse format would take.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from core.errors import WorkbenchError
from core.model.layers import Prunable
from core.session.atomic import StreamedSafetensors, write_json

SIZE_NOTE = (
    "Pruned weights are stored as zeros in dense tensors, so the safetensors files are as large as the "
    "dense model's. sparse_bytes_estimate is what the weights would take in a sparse format "
    "(per layer the smaller of CSR and bitmask+values); runtimes only get faster with sparse kernels."
)


def sparse_size(model: torch.nn.Module, layers: list[Prunable], pruned_counts: dict[str, int]) -> dict:
    """Dense bytes of all parameters, and what a sparse format would take (per layer the smaller of CSR and bitmask)."""
    prunable = {id(p.module.weight): p for p in layers}
    dense_bytes = sparse_bytes = 0
    seen = set()
    for param in model.parameters():
        if id(param) in seen:  # tied weights are stored once
            continue
        seen.add(id(param))
        nbytes = param.numel() * param.element_size()
        dense_bytes += nbytes
        p = prunable.get(id(param))
        if p is None:
            sparse_bytes += nbytes
            continue
        out, inn = p.shape
        nnz = p.numel - pruned_counts[p.name]
        e = param.element_size()
        csr = nnz * (e + (2 if inn <= 65536 else 4)) + (out + 1) * 4
        bitmask = nnz * e + (p.numel + 7) // 8
        sparse_bytes += min(csr, bitmask, nbytes)
    return {"dense_bytes": dense_bytes, "sparse_bytes_estimate": sparse_bytes}


def export_checkpoint(
    model: torch.nn.Module,
    tokenizer,
    layers: list[Prunable],
    pruned_counts: dict[str, int],
    mask: Callable[[str], torch.Tensor] | None,
    provenance: dict,
    out: str,
    overwrite: bool = False,
) -> dict:
    """Write `model` as it is now (the caller points it at the pruned weights) into the folder `out`.

    `mask(name)` gives a layer's bool [out, in] mask (None: dense); `provenance` goes into
    pruning.json as it is (session, model, scoring settings, plan, last metrics, versions).
    """
    dest = Path(out).expanduser()
    if dest.exists() and not overwrite:
        raise WorkbenchError(f"{dest} already exists; choose another --out or pass --overwrite")
    if dest.exists() and not dest.is_dir():
        raise WorkbenchError(f"{dest} is a file; give a folder path for --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*"):  # an export to this folder that was killed half-way
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        prunable = sum(p.numel for p in layers)
        pruned = sum(pruned_counts.values())
        with warnings.catch_warnings():  # offloaded blocks (--device-map with disk) are gathered one by one
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if mask is not None:
            # one layer's mask at a time (1 B per weight): never every mask in RAM together
            layout = {f"{p.name}.weight": (torch.bool, tuple(p.shape)) for p in layers}
            with StreamedSafetensors(tmp / "masks.safetensors", layout) as masks:
                for p in layers:
                    masks.put(f"{p.name}.weight", mask(p.name))
        file_bytes = sum(f.stat().st_size for f in tmp.glob("model*.safetensors"))
        sizes = sparse_size(model, layers, pruned_counts)
        info = {
            "tool": "lrp-workbench",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **provenance,
            "sparsity": pruned / prunable if prunable else 0.0,
            "pruned_weights": pruned,
            "prunable_weights": prunable,
            "per_layer_sparsity": {p.name: pruned_counts[p.name] / p.numel for p in layers},
            "size": {"safetensors_file_bytes": file_bytes, **sizes, "note": SIZE_NOTE},
        }
        write_json(tmp / "pruning.json", info)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{int(time.time())}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(dest), "sparsity": info["sparsity"], **info["size"]}
