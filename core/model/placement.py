"""Where a model's weights live when accelerate spreads it over devices (`--device-map`).

We never shard by hand: `from_pretrained(device_map=...)` lets accelerate place each block
on a GPU, the CPU or disk and hook the blocks so activations follow. Two things differ
from a model on one device, and every engine path goes through this module for them:

  inputs    go to the device of the input embedding (its hook's execution device when
            the embedding itself is offloaded), not to "the model's device"
  weights   of an offloaded block sit on the `meta` device between forward passes; the
            real tensor is in the block hook's weights map (CPU RAM, or a file on disk).
            Scorers read it there and the pruner re-points the map's entry, so the next
            forward pass streams in the pruned copy.
  disk      a block offloaded to disk stays there while it is pruned: its original is a
            memory map of the file accelerate reads it from, and its pruned working copy a
            memory map of a file of its own, so the kernel pages both in and out and the
            pruner holds no RAM for them (`disk_original`, `disk_scratch`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

import torch
from torch import nn

from core.errors import WorkbenchError

#: accelerate's named strategies (`infer_auto_device_map` through from_pretrained)
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
PLACES = "a GPU index (0, 1, ...), \"cuda:N\", \"cpu\" or \"disk\""


def parse_device_map(spec: str | None) -> str | dict[str, int | str] | None:
    """`--device-map`: a strategy name, a JSON object {module prefix: place}, or a .json file holding one."""
    if spec in (None, "", "none"):
        return None
    if spec in STRATEGIES:
        return spec
    text = spec
    if not spec.lstrip().startswith(("{", "[")):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WorkbenchError(f"--device-map {spec!r}: give {', '.join(STRATEGIES)}, a JSON object "
                                 "such as '{\"model.layers.0\": 0, \"lm_head\": \"cpu\"}' or a .json file holding one")
        text = path.read_text(encoding="utf-8", errors="replace")
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"--device-map is not valid JSON ({exc.msg} at character {exc.pos}); "
                             "give an object such as '{\"model.layers.0\": 0, \"lm_head\": \"cpu\"}'") from None
    if not isinstance(mapping, dict) or not mapping:
        raise WorkbenchError("--device-map JSON must be a non-empty object {module name: place}")
    for name, place in mapping.items():
        if isinstance(place, bool) or not (isinstance(place, int) and place >= 0
                                           or isinstance(place, str) and (place in ("cpu", "disk", "meta")
                                                                          or place.startswith("cuda"))):
            raise WorkbenchError(f"--device-map: {name!r} -> {place!r} is not a place; use {PLACES}")
        if place == "meta":
            raise WorkbenchError(f"--device-map: {name!r} -> \"meta\" holds no weights; use \"disk\" to offload it")
    check_gpus(mapping)
    return mapping


def check_gpus(mapping: dict[str, int | str]) -> None:
    """Every GPU the map names exists here (module names are checked by transformers while loading)."""
    gpus = torch.cuda.device_count()
    for name, place in mapping.items():
        if isinstance(place, int):
            index = place
        elif place.startswith("cuda"):
            suffix = place.partition(":")[2]
            if place != "cuda" and not suffix.isdigit():
                raise WorkbenchError(f"--device-map: {name!r} -> {place!r} is not a place; use {PLACES}")
            index = int(suffix or 0)
        else:
            continue
        if index >= gpus:
            raise WorkbenchError(f"--device-map puts {name!r} on GPU {index}, but this machine has "
                                 f"{gpus} GPU{'s' if gpus != 1 else ''}; use \"cpu\" or \"disk\" for it")


def is_dispatched(model: nn.Module) -> bool:
    return getattr(model, "hf_device_map", None) is not None


def _hooks(module: nn.Module):
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", [hook]))


def _offload_map(module: nn.Module):
    """The weights map of an offloaded module's accelerate hook (None: its weights are real tensors)."""
    for hook in _hooks(module):
        if getattr(hook, "offload", False) and getattr(hook, "weights_map", None) is not None:
            return hook.weights_map
    return None


def _execution_device(module: nn.Module) -> torch.device | None:
    for hook in _hooks(module):
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return None


def real_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The tensor `module.<name>` stands for: itself, or its offloaded copy when it is on `meta`."""
    t = getattr(module, name, None)
    if t is None or t.device.type != "meta":
        return None if t is None else t.data
    store = _offload_map(module)
    if store is None:
        raise WorkbenchError(f"{type(module).__name__}.{name} is on the meta device with no offloaded copy; "
                             "load the model again")
    return store[name]


def set_tensor(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Make `module.<name>` be `tensor` from the next forward pass on (offloaded: the map's entry is replaced)."""
    t = getattr(module, name)
    store = _offload_map(module) if t.device.type == "meta" else None
    if store is None:
        t.data = tensor
        return
    # PrefixedDataset -> OffloadedWeightsLoader, whose in-memory state dict takes priority over disk
    loader, key = store.dataset, store.prefix + name
    if not hasattr(loader, "state_dict"):
        raise WorkbenchError(f"cannot re-point the offloaded weight {key}; load without disk offload")
    loader.state_dict[key] = tensor


def _loader_key(module: nn.Module, name: str):
    store = _offload_map(module)
    if store is None:
        return None, None
    return store.dataset, store.prefix + name


def on_disk(module: nn.Module, name: str = "weight") -> bool:
    """Whether `module.<name>` is offloaded to disk (read from a file per pass), not held in RAM."""
    t = getattr(module, name, None)
    if t is None or t.device.type != "meta":
        return False
    loader, key = _loader_key(module, name)
    return loader is not None and key not in getattr(loader, "state_dict", {}) and key in getattr(loader, "index", {})


def _file_map(path: str | Path, dtype: torch.dtype, shape: tuple[int, ...], offset: int = 0, mode: str = "c") -> torch.Tensor:
    import numpy as np

    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.memmap(path, dtype=np.uint8, mode=mode, offset=offset, shape=(nbytes,))
    return torch.from_numpy(raw).view(dtype).view(shape)


def _safetensors_entry(path: str, key: str) -> tuple[int, tuple[int, ...], str]:
    """(byte offset, shape, safetensors dtype) of one tensor in a safetensors file, from its header."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    entry = header[key]
    return 8 + size + entry["data_offsets"][0], tuple(entry["shape"]), entry["dtype"]


_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def scratch_folder(module: nn.Module) -> Path:
    loader, _ = _loader_key(module, "weight")
    folder = getattr(loader, "save_folder", None)
    return Path(folder) if folder else Path(tempfile.gettempdir())


def disk_scratch(module: nn.Module, name: str, like: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """A tensor shaped like `like` whose memory is a file beside the offloaded weights (its contents
    when `copy`, else zeros). The file is unlinked at once: it lives as long as the tensor does."""
    folder = scratch_folder(module)
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f".{name}-", suffix=".pruned", dir=folder)
    try:
        os.ftruncate(fd, max(1, like.numel() * like.element_size()))
        t = _file_map(path, like.dtype, tuple(like.shape), mode="r+")
    finally:
        os.close(fd)
        try:
            os.unlink(path)  # the mapping keeps the data; the disk space goes with the last reference
        except OSError:
            pass
    if copy:
        t.copy_(like)
    return t


def disk_original(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """A disk-offloaded weight as a read-only memory map of the file accelerate streams it from (no RAM
    held); stored in another dtype than the model's, it is converted once into a file of its own."""
    loader, key = _loader_key(module, name)
    info = loader.index[key]
    dtype = getattr(torch, info["dtype"]) if "dtype" in info else None
    if info.get("safetensors_file"):
        offset, shape, code = _safetensors_entry(info["safetensors_file"], info.get("weight_name", key))
        if _SAFETENSORS_DTYPES.get(code) is not None and (dtype is None or _SAFETENSORS_DTYPES[code] == dtype):
            return _file_map(info["safetensors_file"], _SAFETENSORS_DTYPES[code], shape, offset)
    elif loader.save_folder is not None and dtype is not None:
        return _file_map(Path(loader.save_folder) / f"{key}.dat", dtype, tuple(info["shape"]))
    return disk_scratch(module, name, loader[key], copy=True)  # one layer in RAM, briefly


def input_device(model: nn.Module) -> torch.device:
    """Where input ids must go: the input embedding's device (its execution device when offloaded)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None:
        dev = _execution_device(emb)
        if dev is not None:
            return dev
        w = getattr(emb, "weight", None)
        if w is not None and w.device.type != "meta":
            return w.device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def placement(model: nn.Module) -> dict[str, int]:
    """Parameters (numbers of elements) per place: cuda:0, cpu, disk (offloaded, on meta between passes)."""
    out: dict[str, int] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.device.type == "meta":
                store = _offload_map(module)
                where = "cpu (offloaded)"
                if store is not None and store.prefix + name not in getattr(store.dataset, "state_dict", {}):
                    where = "disk"
            else:
                where = str(p.device)
            out[where] = out.get(where, 0) + p.numel()
    return out
