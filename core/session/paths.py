"""Session names and locations, importable without torch (the TUI checks them before first paint)."""

import os
import re
from pathlib import Path

from core.errors import WorkbenchError

MANIFEST = "manifest.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise WorkbenchError(f"session name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def default_store() -> Path:
    return Path(os.environ.get("WORKBENCH_SESSIONS_DIR", "sessions"))
