"""Sessions on disk: a folder with a JSON manifest plus safetensors for scores and masks.

Crash safety: every file is written atomically, and tensor files get a fresh name on
each write (`scores-reference-0003.safetensors`). The manifest is written last and
names the files it relies on, so a run killed at any point leaves a session that opens
at its last good state; files no manifest names are removed at the next save.
The format is documented in sessions/README.md.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from core.atomic import write_json, write_safetensors
from core.errors import WorkbenchError
from core.session_paths import MANIFEST, check_name, default_store  # noqa: F401 - default_store is re-exported

FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lrp-workbench", "torch", "transformers", "lxt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Session:
    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.path.name

    # ---- lifecycle -------------------------------------------------------------------
    @classmethod
    def create(cls, store: Path, name: str) -> "Session":
        check_name(name)
        path = Path(store) / name
        path.mkdir(parents=True, exist_ok=True)
        s = cls(path, {"format": FORMAT_VERSION, "name": name, "created": _now(), "history": []})
        s.save()
        return s

    @classmethod
    def open(cls, store: Path, name: str) -> "Session":
        path = Path(store) / name
        mf = path / MANIFEST
        if not mf.is_file():
            known = ", ".join(list_sessions(store)) or "none yet"
            raise WorkbenchError(f"no session {name!r} in {store} (known: {known}); start one with `workbench score --session {name}`")
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict) or "format" not in manifest:
                raise ValueError("not a workbench manifest")
        except (ValueError, UnicodeDecodeError) as exc:
            raise WorkbenchError(
                f"session {name!r} has a corrupt manifest ({mf}: {exc}); restore it or remove the folder"
            ) from None
        if manifest["format"] > FORMAT_VERSION:
            raise WorkbenchError(f"session {name!r} was written by a newer LRP Workbench (format {manifest['format']}); upgrade")
        return cls(path, manifest)

    @classmethod
    def open_or_create(cls, store: Path, name: str) -> "Session":
        if (Path(store) / name / MANIFEST).exists():
            return cls.open(store, name)
        return cls.create(store, name)

    def save(self) -> None:
        self.manifest["updated"] = _now()
        self.manifest["versions"] = versions()
        write_json(self.path / MANIFEST, self.manifest)
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        named = set()
        for entry in (self.manifest.get("scores") or {}).values():
            named.add(entry.get("file"))
        if self.manifest.get("masks"):
            named.add(self.manifest["masks"].get("file"))
        for f in self.path.glob("*.safetensors"):
            if f.name not in named:
                f.unlink(missing_ok=True)
        for f in self.path.glob(".*.tmp"):
            if time.time() - f.stat().st_mtime > 3600:  # stale leftovers of a killed writer
                f.unlink(missing_ok=True)

    # ---- tensors ---------------------------------------------------------------------
    def _next_file(self, stem: str) -> str:
        n = self.manifest.get("_counter", 0) + 1
        self.manifest["_counter"] = n
        return f"{stem}-{n:04d}.safetensors"

    def write_tensors(self, stem: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        """Write a new tensor file; the caller records its name in the manifest and saves."""
        name = self._next_file(stem)
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

    def delete(self) -> None:
        shutil.rmtree(self.path)


def list_sessions(store: Path) -> list[str]:
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if (p / MANIFEST).is_file())
