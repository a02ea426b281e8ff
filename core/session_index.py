"""A cheap listing of sessions: reads manifests only (no torch import)."""

from __future__ import annotations

import json
from pathlib import Path

from core.session_paths import MANIFEST


def describe_sessions(store: Path) -> list[dict]:
    rows = []
    if not Path(store).is_dir():
        return rows
    for folder in sorted(Path(store).iterdir()):
        mf = folder / MANIFEST
        if not mf.is_file():
            continue
        try:
            m = json.loads(mf.read_text(encoding="utf-8"))
        except ValueError:
            rows.append({"name": folder.name, "model": None, "scorer": None, "sparsity": None, "updated": "corrupt manifest"})
            continue
        rows.append({
            "name": folder.name,
            "model": (m.get("model") or {}).get("source"),
            "scorer": (m.get("score_config") or {}).get("scorer"),
            "sparsity": (m.get("masks") or {}).get("sparsity"),
            "updated": m.get("updated"),
        })
    return rows
