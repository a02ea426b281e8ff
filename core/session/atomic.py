"""Atomic file writes: readers see the old file or the new one, never half of one.

Importing this module does not import torch (the session listing and the TUI's first
paint use it); writing tensors does.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import WorkbenchError

if TYPE_CHECKING:
    import torch


def umask() -> int:
    """The process's umask, read without changing it where the platform says it (Linux), else by a swap."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path | str, folder: bool = False) -> None:
    """Give a temporary file (0600) or folder (0700) the mode an ordinary one would get, so others on a
    shared machine can read what the user's umask lets them."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def ensure_space(folder: Path, needed: int, what: str) -> None:
    """Refuse, before writing, what the disk holding `folder` has no room for."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise WorkbenchError(f"not enough disk space in {folder}: {what} needs about {human(needed)}, "
                             f"{human(free)} is free; free some space or write elsewhere")


def disk_full(exc: OSError, folder: Path, needed: int, what: str) -> WorkbenchError | None:
    """The one-line error for a write that ran out of space (None: some other OSError)."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return WorkbenchError(f"the disk holding {folder} filled up while writing {what} (needs about {human(needed)}); "
                          "free some space or write elsewhere, then run the command again")


def checksum(t: "torch.Tensor") -> int:
    """CRC-32 of a tensor's bytes: the session records it per tensor, and refuses a file whose data changed."""
    import torch

    flat = t.detach().contiguous().cpu().reshape(-1)
    return zlib.crc32(memoryview(flat.view(torch.uint8).numpy())) if flat.numel() else 0


def _replace(tmp: str, path: Path) -> None:
    os.replace(tmp, path)
    try:  # make the rename itself durable where the platform allows it
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)
        _replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(exc, path.parent, len(text.encode()), path.name) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from None
        raise


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_safetensors(path: Path, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    needed = sum(v.numel() * v.element_size() for v in tensors.values())
    ensure_space(path.parent, needed, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        follow_umask(tmp)
        _replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(exc, path.parent, needed, path.name) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from None
        raise


#: safetensors' names for the dtypes the session writes
_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
           "int8": "I8", "uint8": "U8", "bool": "BOOL", "float64": "F64"}


class StreamedSafetensors:
    """A safetensors file written one tensor at a time, atomically.

    The header is laid out from the shapes given up front, so each tensor can be written
    to its place as soon as it exists and then dropped: the writer never holds more than
    the tensor it is given. The file appears under its name only when `commit()` finds
    every tensor written; until then it is a `.tmp` that the session's clean-up removes.
    As a context manager it commits when the block ends and removes the `.tmp` if it fails.
    """

    def __init__(self, path: Path, layout: dict[str, tuple["torch.dtype", tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        import math

        self.path = path
        header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
        self._where: dict[str, tuple[int, int, str, tuple[int, ...]]] = {}
        start = 0
        # widest dtypes first, as safetensors itself does, so every tensor starts aligned
        for name, (dtype, shape) in sorted(layout.items(), key=lambda kv: (-kv[1][0].itemsize, kv[0])):
            size = math.prod(shape) * dtype.itemsize
            code = _DTYPES[str(dtype).removeprefix("torch.")]
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [start, start + size]}
            self._where[name] = (start, size, str(dtype), tuple(shape))
            start += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-(len(text) + 8) % 8)  # data starts on an 8-byte boundary
        self._base = 8 + len(text)
        self._size = self._base + start
        path.parent.mkdir(parents=True, exist_ok=True)
        # the file is sparse until written: check the room it will take now, not half-way through
        ensure_space(path.parent, self._size, path.name)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self._file = os.fdopen(fd, "wb")
        self._file.write(len(text).to_bytes(8, "little") + text)
        self._file.truncate(self._size)
        self._left = set(self._where)

    def put(self, name: str, tensor: "torch.Tensor") -> None:
        start, size, dtype, shape = self._where[name]
        t = tensor.detach().contiguous().cpu()
        if str(t.dtype) != dtype or tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected {dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
        import torch

        self._file.seek(self._base + start)
        if size:
            self._file.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        self._left.discard(name)

    def commit(self) -> None:
        if self._left:
            raise ValueError(f"{len(self._left)} tensors were never written, e.g. {sorted(self._left)[0]}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        follow_umask(self._tmp)
        _replace(self._tmp, self.path)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> "StreamedSafetensors":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """Commit when the block ends normally; otherwise (or when a tensor is missing) leave nothing."""
        if kind is None:
            try:
                self.commit()
            except BaseException as failed:
                self.abort()
                self._raise_disk_full(failed)
                raise
        else:
            self.abort()
            self._raise_disk_full(exc)

    def _raise_disk_full(self, exc: BaseException | None) -> None:
        full = disk_full(exc, self.path.parent, self._size, self.path.name) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from None
