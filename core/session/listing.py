"""The sessions in a store, with what each holds and its size on disk (reads manifests only, no torch)."""

from __future__ import annotations

from pathlib import Path

from core.errors import WorkbenchError
from core.session.manifest import read_manifest
from core.session.paths import MANIFEST


def folder_bytes(path: Path) -> int:
    """What the session's own files take (half-written `.tmp` files of a killed writer are not the session's)."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and not f.name.endswith(".tmp"))


def list_sessions(store: Path) -> list[dict]:
    """One row per session folder: name, model, scorer, sparsity, updated, bytes on disk."""
    rows = []
    store = Path(store)
    if not store.is_dir():
        return rows
    for folder in sorted(p for p in store.iterdir() if (p / MANIFEST).is_file()):
        row = {"name": folder.name, "model": None, "scorer": None, "sparsity": None, "updated": None,
               "bytes": folder_bytes(folder)}
        try:
            m, legacy = read_manifest(folder / MANIFEST)
        except WorkbenchError:
            row["updated"] = "corrupt manifest"
            rows.append(row)
            continue
        row["model"] = m.model.spec.source if m.model else None
        row["scorer"] = m.score_config.scorer if m.score_config else None
        if m.sparsity is not None:
            row["sparsity"] = m.sparsity if m.plan is not None else 0.0
        elif m.counts is not None:
            row["sparsity"] = m.counts.sparsity
        elif legacy is not None and legacy.masks:
            row["sparsity"] = legacy.masks.get("sparsity")
        row["updated"] = m.updated
        rows.append(row)
    return rows
