"""Session names and locations, importable without torch (the TUI checks them before first paint).

A session name is a name, never a path: every way in (each subcommand's `--session`, `session
show/delete`, the TUI) forms the folder through `session_path`, which checks the name first.
"""

import os
import re
from pathlib import Path

from core.errors import WorkbenchError

MANIFEST = "manifest.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        shown = name if len(str(name)) <= 40 else str(name)[:37] + "..."
        raise WorkbenchError(f"session name {shown!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit (a name, not a path)")
    return name


def session_path(store: Path, name: str) -> Path:
    """The folder of session `name` inside `store`; refuses a name that is not one, or a folder that a link
    takes outside the store."""
    check_name(name)
    store = Path(store)
    path = store / name
    if path.is_symlink() or (path.exists() and path.resolve().parent != store.resolve()):
        raise WorkbenchError(f"{path} is a link out of the session store; sessions are plain folders in {store}")
    return path


def default_store() -> Path:
    return Path(os.environ.get("WORKBENCH_SESSIONS_DIR", "sessions"))
