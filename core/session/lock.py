"""One writer per session: an OS lock on `<session>/.lock`, held while a process has the session open.

Without it, the TUI open on a session and a script pruning the same session would both
write its manifest, and the last writer would silently drop the other's plan, history or
scores. The lock is `flock` on an open file: the OS releases it when the process ends,
however it ends (a SIGKILL leaves no stale lock). The file holds the holder's pid and
command, so a second writer is told who has it.

Within one process a session may be opened several times (the TUI reopens it, tests open
it beside the CLI); those share one lock, counted. Where `fcntl` does not exist
(Windows), sessions are not locked.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from core.errors import WorkbenchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"

_held: dict[str, list] = {}  # resolved session path -> [open lock file, how many Session objects use it]
_guard = threading.Lock()


class SessionBusy(WorkbenchError):
    """Another process has the session open for writing."""


class SessionUnwritable(WorkbenchError):
    """The session's folder cannot be written (read-only storage, no permission): it can only be read."""


def holder(path: Path) -> str:
    """Who holds the lock, as the lock file says ("pid 123: workbench tui")."""
    try:
        info = json.loads((path / LOCK_FILE).read_text(encoding="utf-8"))
        return f"pid {info['pid']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire(path: Path) -> str:
    """Take the session's writer lock (or count one more user of this process's); SessionBusy if another has it."""
    key = str(path.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return key
        if fcntl is None:
            _held[key] = [None, 1]
            return key
        try:
            if not os.access(path, os.W_OK):  # the lock file may be writable where its folder is not
                raise PermissionError(13, "Permission denied")
            f = open(path / LOCK_FILE, "a+", encoding="utf-8")
        except IsADirectoryError:
            raise WorkbenchError(f"{path / LOCK_FILE} is a folder, not the session's lock file; remove it "
                                 f"(`rmdir {path / LOCK_FILE}`) and try again") from None
        except OSError as exc:  # read-only mount, no permission: readers go on read-only, writers are told
            raise SessionUnwritable(f"session {path.name!r} cannot be written ({exc.strerror or exc}: {path}); make "
                                    "the folder writable, or copy the session to a writable --sessions-dir") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise SessionBusy(f"session {path.name!r} is open in another process ({holder(path)}); close it there "
                              "or wait for it to finish") from None
        f.seek(0)
        f.truncate()
        command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv and sys.argv[0] else "python"
        f.write(json.dumps({"pid": os.getpid(), "command": command[:200]}))
        f.flush()
        _held[key] = [f, 1]
        return key


def first_holder(key: str) -> bool:
    """Whether `acquire` just took the lock for this process (no other open session of it shares the lock)."""
    with _guard:
        entry = _held.get(key)
        return entry is not None and entry[1] == 1


def release(key: str) -> None:
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        if entry[0] is not None:
            entry[0].close()  # closing the file releases the flock
