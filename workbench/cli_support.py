"""What every `workbench` subcommand shares: options declared by core/settings.py, one-line
errors instead of tracebacks, the sessions a command opened (and their locks), output."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_errors

from core.catalog import choices as choices_in
from core.errors import Interrupted, WorkbenchError, first_line
from core.settings import ModelSpec, choices_of, cli_flag, default_of, help_of


class OneLineErrors(TyperGroup):
    """The top command group: a mistyped command line gets the same one `error:` line as every other
    mistake (not Click's usage block), and an unanswerable question is an error, not "Aborted!"."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "workbench"
            typer.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
            rv = exc.exit_code
        except click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            rv = exc.exit_code
        except click_errors.Abort:
            typer.echo("error: aborted; nothing was changed", err=True)
            rv = 1
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def opt(group: type, name: str, *aliases: str, default: Any = ..., note: str = "") -> Any:
    """A Typer option declared by `group`'s setting `name`: its flag, default and help."""
    text = help_of(group, name) + note
    section = choices_of(group, name)
    if section:
        text += " Choices: " + ", ".join(choices_in(section)) + "."
    value = default_of(group, name) if default is ... else default
    return typer.Option(value, cli_flag(group, name), *aliases, help=text)


def session_opt() -> Any:
    return typer.Option(..., "--session", "-s", help="Session name (a folder in the session store).")


def store_opt() -> Any:
    return typer.Option(None, "--sessions-dir", envvar="WORKBENCH_SESSIONS_DIR",
                        help="Session store folder [default: ./sessions].")


def trust_opt() -> Any:
    return typer.Option(False, "--trust-remote-code", help=help_of(ModelSpec, "trust_remote_code")
                        + " Given each time: a session never switches it on.")


def json_opt() -> Any:
    return typer.Option(False, "--json", help="Print one JSON object instead of text.")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn):
    """One-line errors instead of tracebacks (WORKBENCH_DEBUG=1 re-raises). A session this command created
    is removed again when the command fails before computing anything in it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ok = False
        try:
            out = fn(*args, **kwargs)
            ok = True
            return out
        except typer.Exit as exc:
            ok = exc.exit_code == 0
            raise
        except typer.Abort:
            raise
        except WorkbenchError as exc:
            fail(str(exc))
        except KeyboardInterrupt as exc:
            fail(str(exc) if isinstance(exc, Interrupted) and str(exc) else
                 "interrupted; the session keeps its last saved state (run the same command again)", 130)
        except MemoryError:
            fail("out of memory; lower --samples, --seq-len or --batch-size, or use a machine with more memory")
        except OSError as exc:
            if os.environ.get("WORKBENCH_DEBUG"):
                raise
            fail(_os_error(exc))
        except Exception as exc:  # noqa: BLE001 - last line of defence for the user
            if os.environ.get("WORKBENCH_DEBUG"):
                raise
            if type(exc).__name__ == "OutOfMemoryError":
                fail("GPU out of memory; lower --samples, --seq-len or --batch-size, or use --device cpu")
            fail(f"unexpected {first_line(exc)} (re-run with WORKBENCH_DEBUG=1 for the traceback and report it)")
        finally:
            _close_sessions(failed=not ok)

    return wrapper


def _os_error(exc: OSError) -> str:
    """An OSError as what the user can do about it (the disk, the permissions, the path)."""
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk holding {where}; free some space or write elsewhere, then run the command again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where} ({exc.strerror}); choose a writable folder (--sessions-dir, --out)"
    return f"{where}: {exc.strerror or first_line(exc)}"


def _store(path: Optional[Path]) -> Path:
    from core.session.paths import default_store

    return path or default_store()


_OPENED: list = []  # sessions this command opened; their locks go when it ends (the process may go on: tests)
_CREATED: list = []  # ... and those of them it created


def _close_sessions(failed: bool = False) -> None:
    while _OPENED:
        s = _OPENED.pop()
        if failed and any(s is c for c in _CREATED) and not s.read_only and s.is_empty():
            s.delete()  # a failed first command leaves no empty session behind
        s.close()
    _CREATED.clear()


def _open(name: str, store: Optional[Path], create: bool = False, read: bool = False, trust_remote_code: bool = False):
    """The session's workbench; `read`: commands that change nothing of the session's own open it read-only
    when another process has it or its folder cannot be written (they still compute; nothing is saved).
    `trust_remote_code` is this command's --trust-remote-code (a session's stored value never counts)."""
    from core.model.loading import quiet_libraries

    quiet_libraries()
    from core.engine import Workbench
    from core.session.paths import MANIFEST, session_path
    from core.session.store import Session

    if create:
        new = not (session_path(_store(store), name) / MANIFEST).exists()
        s = Session.open_or_create(_store(store), name)
        if new:
            _CREATED.append(s)
    else:
        s = Session.open(_store(store), name, mode="read" if read else "write")
    _OPENED.append(s)
    if s.read_only:
        typer.echo(f"note: {s.busy}; opened read-only, nothing is saved to it", err=True)
    return Workbench(s, trust_remote_code=trust_remote_code)


def _emit(data: dict | list, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _progress_printer(enabled: bool):
    if not enabled:
        return None
    tty = sys.stderr.isatty()

    def show(which: str, p) -> None:
        line = (f"scoring {which}: {p.samples_done}/{p.samples_total} samples, "
                f"{p.tokens_per_s:.0f} tokens/s, {p.eta_s:.0f}s left")
        typer.echo(("\r" + line) if tty else line, err=True, nl=not tty or p.samples_done == p.samples_total)

    return show


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
