"""The two exceptions every caller handles, and how an error becomes one line for a user.

`WorkbenchError`: a problem the user can fix; the CLI prints it as one line and exits non-zero.
`Cancelled`: work stopped because someone asked it to. It is not a failure, so it is not a
`WorkbenchError`: a UI shows "cancelled", never an error, and partial work is kept where
the job says so (scoring keeps its completed batches).
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class Cancelled(Exception):
    """Raised inside model work whose cancel event was set (see core/model/interrupt.py)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted work kept (the CLI prints the message as it is)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (its type name when the message is empty).

    Errors of our own are shown as they are; anything else is prefixed with its type,
    because "KeyError: 'x'" says more than "'x'".
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, (WorkbenchError, Cancelled)):
        return line[:limit]
    return f"{type(exc).__name__}: {line}"[:limit] if text else line[:limit]
