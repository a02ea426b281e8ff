"""What every `workbench` subcommand shares: options declared by core/settings.py, one-line
errors instead of tracebacks, the sessions a command opened (and their locks), output."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, get_type_hints

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.24 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_errors

from core.catalog import choices as choices_in
from core.errors import Interrupted, WorkbenchError, first_line
from core.session.atomic import human  # noqa: F401 - the commands' size formatting
from core.settings import PANELS, ModelSpec, choices_of, cli_flag, declared, default_of, help_of, panel_of, value_type


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


class PanelledCommand(TyperCommand):
    """Plain-text help (no rich import: `--help` stays fast) with options grouped by their help panel, in the
    order the panels first appear."""

    def format_options(self, ctx, formatter) -> None:
        panels: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        order = ["Options", "Start here", *PANELS]
        for panel, rows in sorted(panels.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
            with formatter.section(panel):
                formatter.write_dl(rows)


def opt(group: type, name: str, *aliases: str, default: Any = ..., note: str = "", panel: str | None = None) -> Any:
    """A Typer option declared by `group`'s setting `name`: its flag, default and help (in help panel `panel`)."""
    text = help_of(group, name) + note
    section = choices_of(group, name)
    if section:
        text += " Choices: " + ", ".join(choices_in(section)) + "."
    value = default_of(group, name) if default is ... else default
    return typer.Option(value, cli_flag(group, name), *aliases, help=text, rich_help_panel=panel)


class Settings:
    """What a command's declared settings options were given (`settings_options` passes one as `settings`)."""

    def __init__(self, groups: tuple[type, ...], values: dict[str, Any], given: set[str]):
        self.groups, self.values, self.given = groups, values, given

    def of(self, group: type, given_only: bool = False) -> dict[str, Any]:
        """`group`'s settings as keyword arguments (comma lists split and typed); only those given on the command
        line with `given_only`."""
        out = {}
        for name in declared(group):
            if name not in self.values or (given_only and name not in self.given):
                continue
            value = self.values[name]
            typ, _, many = value_type(group, name)
            if many and isinstance(value, str):
                try:
                    value = tuple(typ(x.strip()) for x in value.split(",") if x.strip()) or None
                except ValueError:
                    raise WorkbenchError(f"{cli_flag(group, name)} {value!r}: give a comma-separated list of "
                                         f"{'numbers' if typ in (int, float) else 'names'}") from None
            out[name] = value
        return out

    def build(self, group: type, **extra: Any) -> Any:
        """An instance of `group` from what was given (and defaults), checked: ranges, choices."""
        from core.catalog import check

        cfg = group(**{**self.of(group), **extra})
        check(cfg)
        return cfg


def settings_options(*groups: type, skip: tuple[str, ...] = ()):
    """Add one CLI option per setting that `groups` declare (core/settings.py), after the `session` parameter:
    flag, default, help, choices and help panel all come from the declaration. The command receives them as
    `settings: Settings`. Adding a setting to a group adds the option to every command that takes the group."""

    def decorate(fn):
        hints = get_type_hints(fn)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(name, p.annotation))
               for name, p in inspect.signature(fn).parameters.items() if name != "settings"]
        added, seen = [], {p.name for p in own}
        for group in groups:
            for name in declared(group):
                if name in skip or name in seen:
                    continue
                seen.add(name)
                typ, optional, many = value_type(group, name)
                default = default_of(group, name)
                if many and default is not None:
                    default = ",".join(str(x) for x in default)
                annotation = Optional[str] if many else (Optional[typ] if optional else typ)
                added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                               default=opt(group, name, default=default, panel=panel_of(group, name))))
        at = next((i + 1 for i, p in enumerate(own) if p.name == "session"), 0)
        context = inspect.Parameter("settings_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        names = [p.name for p in added]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            ctx = kwargs.pop("settings_ctx")
            values = {n: kwargs.pop(n) for n in names}
            return fn(*args, settings=Settings(groups, values, {n for n in names if given(ctx, n)}), **kwargs)

        wrapper.__signature__ = inspect.Signature([context] + own[:at] + added + own[at:])
        return wrapper

    return decorate


def given(ctx, name: str) -> bool:
    """Whether option `name` was given on the command line (or by its environment variable), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def preset_choices() -> str:
    from core.presets import PRESETS

    return ", ".join(f"{p.name} ({p.summary})" for p in PRESETS.values())


def session_opt() -> Any:
    return typer.Option(..., "--session", "-s", help="Session name (a folder in the session store).")


def store_opt(panel: str | None = None) -> Any:
    return typer.Option(None, "--sessions-dir", envvar="WORKBENCH_SESSIONS_DIR",
                        help="Session store folder [default: ./sessions].", rich_help_panel=panel)


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
            close_sessions(failed=not ok)

    return wrapper


def _os_error(exc: OSError) -> str:
    """An OSError as what the user can do about it (the disk, the permissions, the path)."""
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk holding {where}; free some space or write elsewhere, then run the command again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where} ({exc.strerror}); choose a writable folder (--sessions-dir, --out)"
    return f"{where}: {exc.strerror or first_line(exc)}"


def store_of(path: Optional[Path]) -> Path:
    from core.session.paths import default_store

    return path or default_store()


OPENED: list = []  # sessions this command opened; their locks go when it ends (the process may go on: tests)
_CREATED: list = []  # ... and those of them it created


def close_sessions(failed: bool = False) -> None:
    while OPENED:
        s = OPENED.pop()
        if failed and any(s is c for c in _CREATED) and not s.read_only and s.is_empty():
            s.delete()  # a failed first command leaves no empty session behind
        s.close()
    _CREATED.clear()


def open_workbench(name: str, store: Optional[Path], create: bool = False, read: bool = False, trust_remote_code: bool = False):
    """The session's workbench; `read`: commands that change nothing of the session's own open it read-only
    when another process has it or its folder cannot be written (they still compute; nothing is saved).
    `trust_remote_code` is this command's --trust-remote-code (a session's stored value never counts)."""
    from core.model.loading import quiet_libraries

    quiet_libraries()
    from core.engine import Workbench
    from core.session.paths import MANIFEST, session_path
    from core.session.store import Session

    if create:
        new = not (session_path(store_of(store), name) / MANIFEST).exists()
        s = Session.open_or_create(store_of(store), name)
        if new:
            _CREATED.append(s)
    else:
        s = Session.open(store_of(store), name, mode="read" if read else "write")
    OPENED.append(s)
    if s.read_only:
        typer.echo(f"note: {s.busy}; opened read-only, nothing is saved to it", err=True)
    return Workbench(s, trust_remote_code=trust_remote_code)


def emit(data: dict | list, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def progress_printer(enabled: bool):
    if not enabled:
        return None
    tty = sys.stderr.isatty()

    def show(which: str, p) -> None:
        line = (f"scoring {which}: {p.samples_done}/{p.samples_total} samples, "
                f"{p.tokens_per_s:.0f} tokens/s, {p.eta_s:.0f}s left")
        typer.echo(("\r" + line) if tty else line, err=True, nl=not tty or p.samples_done == p.samples_total)

    return show
