"""Sessions on disk: a folder with a typed manifest plus safetensors files it names.

Crash safety: every file is written atomically, and tensor files get a fresh name on
each write (`ranking-0003.safetensors`). The manifest is written last and names the files
it relies on, so a run killed at any point leaves a session that opens at its last good
state; files no manifest names are removed at the next save. The format is documented in
sessions/README.md.

Threads: the engine changes the manifest from worker threads while a UI saves its own
settings; every change goes through `edit()`, which holds the session's lock while the
manifest is changed and written.
"""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from core.errors import WorkbenchError
from core.session.atomic import write_safetensors
from core.session.listing import list_sessions
from core.session.manifest import Manifest, read_manifest, write_manifest
from core.session.paths import MANIFEST, check_name


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lrp-workbench", "torch", "transformers", "lxt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Session:
    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self.path.name

    # ---- lifecycle -------------------------------------------------------------------
    @classmethod
    def create(cls, store: Path, name: str) -> "Session":
        check_name(name)
        path = Path(store) / name
        path.mkdir(parents=True, exist_ok=True)
        s = cls(path, Manifest(name=name, created=now()))
        s.save()
        return s

    @classmethod
    def open(cls, store: Path, name: str) -> "Session":
        path = Path(store) / name
        if not (path / MANIFEST).is_file():
            known = ", ".join(row["name"] for row in list_sessions(store)) or "none yet"
            raise WorkbenchError(f"no session {name!r} in {store} (known: {known}); start one with `workbench score --session {name}`")
        manifest, legacy = read_manifest(path / MANIFEST)
        session = cls(path, manifest)
        if legacy is not None:  # written by format 1: convert its tensors once, then save as format 2
            from core.session.migrate import finish_v1

            finish_v1(manifest, legacy, session.read_tensors, session.write_tensors)
            session.save()
        return session

    @classmethod
    def open_or_create(cls, store: Path, name: str) -> "Session":
        if (Path(store) / name / MANIFEST).exists():
            return cls.open(store, name)
        return cls.create(store, name)

    def save(self) -> None:
        with self._lock:
            self.manifest.updated = now()
            self.manifest.versions = versions()
            write_manifest(self.path / MANIFEST, self.manifest)
            self._collect_garbage()

    @contextmanager
    def edit(self, save: bool = True) -> Iterator[Manifest]:
        """Change the manifest under the session's lock; written when the block ends (unless `save` is off)."""
        with self._lock:
            yield self.manifest
            if save:
                self.save()

    def _collect_garbage(self) -> None:
        named = self.manifest.files()
        for f in self.path.glob("*.safetensors"):
            if f.name not in named:
                f.unlink(missing_ok=True)
        for f in self.path.glob(".*.tmp"):
            if time.time() - f.stat().st_mtime > 3600:  # stale leftovers of a killed writer
                f.unlink(missing_ok=True)

    # ---- tensors ---------------------------------------------------------------------
    def write_tensors(self, stem: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        """Write a new tensor file; the caller records its name in the manifest, which is saved after it."""
        with self._lock:
            self.manifest.counter += 1
            name = f"{stem}-{self.manifest.counter:04d}.safetensors"
        write_safetensors(self.path / name, tensors, metadata)
        return name

    def read_tensors(self, file: str) -> dict[str, torch.Tensor]:
        path = self.path / file
        if not path.is_file():
            raise WorkbenchError(f"session {self.name!r} lost {file}; re-run `workbench score --session {self.name}`")
        try:
            with safe_open(path, framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise WorkbenchError(f"{path} is unreadable ({exc}); re-run `workbench score --session {self.name}`") from None

    def describe(self) -> str:
        """The manifest as indented JSON (`workbench session show`)."""
        return self.manifest.model_dump_json(indent=2)

    def delete(self) -> None:
        shutil.rmtree(self.path)
