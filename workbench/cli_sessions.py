"""`workbench session list|show|delete`: the saved sessions of a store (sessions/README.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from workbench.cli_support import OPENED, human, store_of, fail, guarded, json_opt, store_opt

session_app = typer.Typer(help="List, show and delete saved sessions.", no_args_is_help=True, rich_markup_mode=None)


@session_app.command("list")
@guarded
def session_list(sessions_dir: Optional[Path] = store_opt(), as_json: bool = json_opt()):
    """Sessions in the store, with model, scorer, sparsity and size on disk."""
    from core.session.listing import list_sessions

    rows = list_sessions(store_of(sessions_dir))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no sessions in {store_of(sessions_dir)}")
    for r in rows:
        sp = "-" if r["sparsity"] is None else f"{r['sparsity']:.2%}"
        typer.echo(f"{r['name']:20s} model={r['model'] or '-':12s} scorer={r['scorer'] or '-':9s} sparsity={sp:8s} "
                   f"size={human(r['bytes']):>10s} updated={r['updated']}")


@session_app.command("show")
@guarded
def session_show(name: str, sessions_dir: Optional[Path] = store_opt()):
    """Print a session's manifest."""
    from core.session.store import Session

    typer.echo(Session.open(store_of(sessions_dir), name, mode="read").describe())


@session_app.command("delete")
@guarded
def session_delete(name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask."),
                   sessions_dir: Optional[Path] = store_opt()):
    """Delete a session folder."""
    from core.session.store import Session

    s = Session.open(store_of(sessions_dir), name)  # checks the name: only a session folder of the store, with a manifest
    OPENED.append(s)
    if not yes and not sys.stdin.isatty():
        fail(f"`session delete {name}` asks for confirmation and there is no terminal to ask; pass --yes")
    if not yes and not typer.confirm(f"delete session {name} ({s.path})?"):
        fail("not deleted")
    s.delete()
    typer.echo(f"deleted {name}")
