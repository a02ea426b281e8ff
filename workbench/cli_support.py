"""What every `workbench` subcommand shares: options declared by core/settings.py, one-line
errors instead of tracebacks, the sessions a command opened (and their locks), output."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from core.catalog import choices as choices_in
from core.errors import WorkbenchError, first_line
from core.settings import choices_of, cli_flag, default_of, help_of


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


def json_opt() -> Any:
    return typer.Option(False, "--json", help="Print one JSON object instead of text.")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn):
    """One-line errors instead of tracebacks (WORKBENCH_DEBUG=1 re-raises)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except WorkbenchError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; completed work was saved in the session (run the same command to resume)", 130)
        except MemoryError:
            fail("out of memory; lower --samples, --seq-len or --batch-size, or use a machine with more memory")
        except Exception as exc:  # noqa: BLE001 - last line of defence for the user
            if os.environ.get("WORKBENCH_DEBUG"):
                raise
            if type(exc).__name__ == "OutOfMemoryError":
                fail("GPU out of memory; lower --samples, --seq-len or --batch-size, or use --device cpu")
            fail(f"unexpected {first_line(exc)} (re-run with WORKBENCH_DEBUG=1 for the traceback and report it)")
        finally:
            _close_sessions()

    return wrapper


def _store(path: Optional[Path]) -> Path:
    from core.session.paths import default_store

    return path or default_store()


_OPENED: list = []  # sessions this command opened; their locks go when it ends (the process may go on: tests)


def _close_sessions() -> None:
    while _OPENED:
        _OPENED.pop().close()


def _open(name: str, store: Optional[Path], create: bool = False, read: bool = False):
    """The session's workbench; `read`: commands that change nothing of the session's own open it read-only
    when another process has it (they still compute; nothing is saved)."""
    from core.model.loading import quiet_libraries

    quiet_libraries()
    from core.engine import Workbench
    from core.session.store import Session

    if create:
        s = Session.open_or_create(_store(store), name)
    else:
        s = Session.open(_store(store), name, mode="read" if read else "write")
    _OPENED.append(s)
    if s.read_only:
        typer.echo(f"note: {s.busy}; opened read-only, nothing is saved to it", err=True)
    return Workbench(s)


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
