"""Shared by the fault tests (tests/test_faults_*.py): the one-line error check, a scored session, a folder's bytes."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_line(result, needle: str, code: int | None = None) -> str:
    assert result.exit_code != 0 if code is None else result.exit_code == code, result.output
    # progress lines (`scoring reference: 2/6 samples ...`) may come first; the error is one line after them
    err = "\n".join(line for line in result.output.strip().splitlines() if not line.startswith("scoring ")).strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "unexpected" not in err, err
    assert needle in err, err
    return err


def scored(invoke, model_dir, name="s", *extra):
    invoke("score", "--session", name, "--model", str(model_dir), "--reference", "builtin:general", "--samples", "4",
           "--seq-len", "24", *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
