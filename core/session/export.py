"""Export a pruned checkpoint that plain `AutoModelForCausalLM.from_pretrained` loads.

The folder holds the safetensors weights (pruned weights are zeros), config and
tokenizer, `masks.safetensors` (bool [out, in], True = pruned, keyed by weight name)
and `pruning.json` saying how it was made. Zeros in dense tensors do not make the file
smaller: `pruning.json` reports the real file size and what a sparse format would take.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from core.errors import WorkbenchError
from core.model.layers import Prunable
from core.session.atomic import StreamedSafetensors, disk_full, ensure_space, follow_umask, write_json

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


MARKER = ".workbench-export.json"  # inside a temporary export folder: who is writing it


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an earlier export of the workbench (its pruning.json says so)."""
    try:
        return json.loads((folder / "pruning.json").read_text(encoding="utf-8")).get("tool") == "lrp-workbench"
    except (OSError, ValueError, AttributeError):
        return False


def check_export_target(out: str, overwrite: bool = False) -> Path:
    """The folder `out` as an absolute path, or a one-line refusal: an existing folder is replaced only with
    `overwrite` and only when it is an earlier export; never the current folder or one that holds it."""
    if not str(out).strip():
        raise WorkbenchError("--out is empty; give a folder path for the export")
    dest = Path(out).expanduser().absolute()
    resolved = dest.resolve()
    if resolved == Path(resolved.anchor) or Path.cwd().resolve().is_relative_to(resolved):
        raise WorkbenchError(f"--out {out} is the current folder or holds it; give a new folder, e.g. --out exports/NAME")
    if dest.exists():
        if not dest.is_dir():
            raise WorkbenchError(f"{dest} is a file; give a folder path for --out")
        if not overwrite:
            raise WorkbenchError(f"{dest} already exists; choose another --out or pass --overwrite")
        if not is_export(dest):
            raise WorkbenchError(f"{dest} exists and is not an earlier export (no workbench pruning.json in it); "
                                 "--overwrite replaces only exports: choose another --out")
    return resolved


def _mark(folder: Path) -> None:
    """Name this process as the writer of a temporary folder (`_remove_dead_temporaries` reads it)."""
    (folder / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")


def _alive(marker: Path) -> bool:
    """Whether the writer a temporary export's marker names may still be running (unknown counts as alive)."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("host") != socket.gethostname():
            return True
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return True


def _remove_dead_temporaries(dest: Path) -> None:
    """Temporary folders of exports to `dest` whose writer is gone; nothing without our marker is touched."""
    for stale in dest.parent.glob(f".{dest.name}.*"):
        marker = stale / MARKER
        if stale.is_dir() and not stale.is_symlink() and marker.is_file() and not _alive(marker):
            shutil.rmtree(stale, ignore_errors=True)


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
    The sparsity it reports is counted from the masks written.
    """
    dest = check_export_target(out, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(dest)
    dense_bytes = sparse_size(model, layers, pruned_counts)["dense_bytes"]
    ensure_space(dest.parent, dense_bytes + sum(p.numel for p in layers), f"the export {dest.name}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _mark(tmp)
        follow_umask(tmp, folder=True)
        prunable = sum(p.numel for p in layers)
        with warnings.catch_warnings():  # offloaded blocks (--device-map with disk) are gathered one by one
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        counted = dict(pruned_counts)
        if mask is not None:
            # one layer's mask at a time (1 B per weight): never every mask in RAM together
            layout = {f"{p.name}.weight": (torch.bool, tuple(p.shape)) for p in layers}
            with StreamedSafetensors(tmp / "masks.safetensors", layout) as masks:
                for p in layers:
                    m = mask(p.name)
                    counted[p.name] = int(m.sum())  # what the masks do, whatever the plan's bookkeeping says
                    masks.put(f"{p.name}.weight", m)
        pruned = sum(counted.values())
        file_bytes = sum(f.stat().st_size for f in tmp.glob("model*.safetensors"))
        sizes = sparse_size(model, layers, counted)
        info = {
            "tool": "lrp-workbench",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **provenance,
            "sparsity": pruned / prunable if prunable else 0.0,
            "pruned_weights": pruned,
            "prunable_weights": prunable,
            "per_layer_sparsity": {p.name: counted[p.name] / p.numel for p in layers},
            "size": {"safetensors_file_bytes": file_bytes, **sizes, "note": SIZE_NOTE},
        }
        write_json(tmp / "pruning.json", info)
        (tmp / MARKER).unlink()
        if dest.exists():
            if not overwrite or not is_export(dest):  # another export got there while this one was written
                raise WorkbenchError(f"{dest} appeared while exporting (another export to the same --out?); "
                                     "nothing was replaced: choose another --out or pass --overwrite")
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            _mark(old)
            dest.rename(old / "export")
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(dest)
            except OSError:
                if dest.exists():
                    raise WorkbenchError(f"{dest} appeared while exporting (another export to the same --out?); "
                                         "nothing was replaced: choose another --out or pass --overwrite") from None
                raise
    except OSError as exc:
        full = disk_full(exc, dest.parent, dense_bytes, f"the export {dest.name}")
        if full is not None:
            raise full from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(dest), "sparsity": info["sparsity"], **info["size"]}
