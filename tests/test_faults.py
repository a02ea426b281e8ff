"""The faults and bad inputs a careless or hostile user reaches: each case fails in one line and leaves
nothing of the user's changed (issue "Nothing outside the sessions folder ...", items 1-14)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import core.engine
from core.errors import WorkbenchError
from core.session.store import Session

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


# ---- 1. a session name is a name -----------------------------------------------------------------
BAD_NAMES = ["../victim", "{victim}", "a" * 300, "", ".hidden", "x/../../victim"]
COMMANDS = [
    ["session", "show", "{name}"],
    ["session", "delete", "{name}", "--yes"],
    ["prune", "--session", "{name}", "--sparsity", "0.1"],
    ["eval", "--session", "{name}", "--metrics", "perplexity"],
    ["generate", "--session", "{name}", "--max-new-tokens", "2"],
    ["export", "--session", "{name}", "--out", "{out}"],
    ["score", "--session", "{name}", "--samples", "2"],
]


@pytest.fixture
def victim(invoke, tiny_model_dir, tmp_path):
    """A real session, moved outside the store, with a file of the user's beside its manifest."""
    scored(invoke, tiny_model_dir, "v")
    invoke("prune", "--session", "v", "--sparsity", "0.3")
    folder = tmp_path / "victim"
    shutil.move(str(tmp_path / "store" / "v"), folder)
    (folder / "precious.safetensors").write_bytes(b"the user's own file")
    return folder


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_session_name_never_reaches_outside_the_store(invoke, victim, tmp_path, args):
    before = snapshot(victim)
    for name in BAD_NAMES:
        name = name.format(victim=victim)
        one_line(invoke(*[a.format(name=name, out=tmp_path / "out") for a in args], ok=False), "session name")
        assert snapshot(victim) == before, name
    link = tmp_path / "store" / "link"
    link.symlink_to(victim, target_is_directory=True)
    one_line(invoke(*[a.format(name="link", out=tmp_path / "out") for a in args], ok=False), "link out of the session store")
    assert snapshot(victim) == before and not (tmp_path / "out").exists()


# ---- 2. a session file never switches on remote code -----------------------------------------------
CUSTOM = """
import os, pathlib
pathlib.Path(os.environ["WORKBENCH_TEST_MARKER"]).write_text("remote code ran")
from transformers import LlamaForCausalLM


class CustomLlama(LlamaForCausalLM):
    pass
"""


def test_a_sessions_stored_trust_remote_code_runs_nothing(invoke, tiny_model_dir, tmp_path, monkeypatch):
    model = tmp_path / "custom-model"
    shutil.copytree(tiny_model_dir, model)
    (model / "custom_model.py").write_text(CUSTOM)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "custom_model.CustomLlama"}
    (model / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    monkeypatch.setenv("WORKBENCH_TEST_MARKER", str(marker))
    scored(invoke, model, "r")
    manifest = tmp_path / "store" / "r" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"]["spec"]["trust_remote_code"] = True  # as a session from someone else may say
    manifest.write_text(json.dumps(data))
    invoke("eval", "--session", "r", "--metrics", "perplexity")
    invoke("generate", "--session", "r", "--max-new-tokens", "2")
    invoke("prune", "--session", "r", "--sparsity", "0.2")
    assert not marker.exists()
    assert json.loads(manifest.read_text())["model"]["spec"]["trust_remote_code"] is False  # the record says so too


# ---- 3. export removes only its own dead temporaries, and refuses folders that are not exports ---------
def test_export_touches_only_what_is_its_own(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.3")
    out = tmp_path / "x" / "model"
    backup = tmp_path / "x" / ".model.backup"
    backup.mkdir(parents=True)
    (backup / "keep.txt").write_text("mine")
    live = tmp_path / "x" / ".model.live"  # another export under way: its writer is this very process
    live.mkdir()
    (live / ".workbench-export.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / "x" / ".model.dead"
    dead.mkdir()
    (dead / ".workbench-export.json").write_text(json.dumps({"pid": int(gone.stdout), "host": os.uname().nodename}))
    invoke("export", "--session", "s", "--out", str(out))
    assert (backup / "keep.txt").read_text() == "mine" and live.is_dir() and not dead.exists()
    assert (out / "pruning.json").is_file()
    one_line(invoke("export", "--session", "s", "--out", ".", "--overwrite", ok=False), "current folder")
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_text("meow")
    one_line(invoke("export", "--session", "s", "--out", str(user), "--overwrite", ok=False), "not an earlier export")
    assert (user / "cat.jpg").read_text() == "meow"
    invoke("export", "--session", "s", "--out", str(out), "--overwrite")  # an earlier export may be replaced


def test_an_export_that_finds_its_folder_taken_at_the_end_replaces_nothing(invoke, tiny_model_dir, tmp_path, monkeypatch):
    import core.session.export as ex

    scored(invoke, tiny_model_dir)
    out = tmp_path / "model"
    write = ex.write_json

    def other_export_finishes_first(path, data):
        write(path, data)
        out.mkdir()
        (out / "pruning.json").write_text(json.dumps({"tool": "lrp-workbench", "by": "the other export"}))

    monkeypatch.setattr(ex, "write_json", other_export_finishes_first)
    one_line(invoke("export", "--session", "s", "--out", str(out), ok=False), "appeared while exporting")
    assert json.loads((out / "pruning.json").read_text())["by"] == "the other export"
    assert not list(tmp_path.glob(".model.*"))


def test_files_follow_the_umask(invoke, tiny_model_dir, tmp_path):
    old = os.umask(0o022)
    try:
        scored(invoke, tiny_model_dir)
        invoke("prune", "--session", "s", "--sparsity", "0.3")
        invoke("export", "--session", "s", "--out", str(tmp_path / "model"))
    finally:
        os.umask(old)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    for f in ["model/pruning.json", "model/masks.safetensors", "store/s/manifest.json"]:
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o644, f
    ranking = next((tmp_path / "store" / "s").glob("ranking-*.safetensors"))
    assert ranking.stat().st_mode & 0o777 == 0o644


# ---- 4. a failed or killed score changes nothing ------------------------------------------------------
def test_a_failed_score_leaves_the_settings_as_they_were(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    manifest = tmp_path / "store" / "s" / "manifest.json"
    before = json.loads(manifest.read_text())
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line(invoke("score", "--session", "s", "--reference", str(empty), ok=False), "empty.txt")
    import core.engine_scoring as es

    def boom(*a, **k):
        raise WorkbenchError("the ranking could not be finished")

    with monkeypatch.context() as mp:
        mp.setattr(es, "compact_layers", boom)  # fails while the new ranking streams
        one_line(invoke("score", "--session", "s", "--scorer", "magnitude", ok=False), "could not be finished")
    after = json.loads(manifest.read_text())
    assert after["score_config"] == before["score_config"] and after["ranking"] == before["ranking"]
    invoke("eval", "--session", "s", "--metrics", "perplexity")
    assert json.loads(invoke("session", "list", "--json").stdout)[0]["scorer"] == "lrp"


# ---- 5, 6. the advised recovery recovers; changed data is refused --------------------------------------
@pytest.mark.parametrize("damage", ["delete", "truncate", "overwrite data"])
def test_a_damaged_ranking_is_refused_and_score_recovers(invoke, tiny_model_dir, tmp_path, damage):
    scored(invoke, tiny_model_dir)
    ranking = next((tmp_path / "store" / "s").glob("ranking-*.safetensors"))
    if damage == "delete":
        ranking.unlink()
    elif damage == "truncate":
        ranking.write_bytes(ranking.read_bytes()[: ranking.stat().st_size // 2])
    else:  # the header stays: only the data is changed, as a bad disk or a stray write would
        raw = bytearray(ranking.read_bytes())
        start = 8 + int.from_bytes(raw[:8], "little")
        raw[start:] = bytes([0x5A]) * (len(raw) - start)
        ranking.write_bytes(bytes(raw))
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.4", ok=False), "re-run `workbench score --session s`")
    res = invoke("score", "--session", "s", "--model", str(tiny_model_dir), "--reference", "builtin:general",
                 "--samples", "4", "--seq-len", "24")
    assert "cached" not in res.output
    out = json.loads(invoke("prune", "--session", "s", "--sparsity", "0.4", "--json").stdout)
    assert out["sparsity"] == pytest.approx(0.4, abs=0.01)


def test_export_counts_sparsity_from_the_masks_it_writes(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.4", "--granularity", "neuron")
    invoke("export", "--session", "s", "--out", str(tmp_path / "model"))
    info = json.loads((tmp_path / "model" / "pruning.json").read_text())
    with safe_open(str(tmp_path / "model" / "masks.safetensors"), framework="pt") as f:
        pruned = sum(int(f.get_tensor(k).sum()) for k in f.keys())
    assert info["pruned_weights"] == pruned and info["sparsity"] == pytest.approx(pruned / info["prunable_weights"])


# ---- 7. a reader keeps the files of the manifest it read ------------------------------------------------
def test_a_reader_keeps_its_files_while_a_writer_replaces_them(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.3")
    store = tmp_path / "store"
    import core.session.store as st

    real = st.acquire

    def busy(path):
        raise st.SessionBusy("held by another process")

    monkeypatch.setattr(st, "acquire", busy)
    reader = Session.open(store, "s", mode="read")
    monkeypatch.setattr(st, "acquire", real)
    assert reader.read_only
    old_counts, old_ranking = reader.manifest.counts.file, reader.manifest.ranking.file
    expected = Session.open(store, "s", mode="read").read_tensors(old_counts)
    invoke("prune", "--session", "s", "--sparsity", "0.6")  # new counts; the old file is removed
    invoke("score", "--session", "s", "--seed", "3")  # a new ranking; the old file is removed
    assert not (store / "s" / old_counts).exists() and not (store / "s" / old_ranking).exists()
    got = reader.read_tensors(old_counts)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    wb = core.engine.Workbench(reader)
    wb.ensure_model()
    assert wb.prune_summary()["sparsity"] == pytest.approx(0.3, abs=0.02)  # the plan it read, from the files it read


# ---- 8. read-only storage ----------------------------------------------------------------------------
def test_read_only_storage_serves_the_read_only_commands(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    invoke("prune", "--session", "s", "--sparsity", "0.3")
    folder = tmp_path / "store" / "s"
    before = snapshot(folder)
    import core.session.lock as lock

    real = os.access
    monkeypatch.setattr(lock.os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode))
    assert '"name": "s"' in invoke("session", "show", "s").stdout
    res = invoke("eval", "--session", "s", "--metrics", "perplexity")
    assert "opened read-only" in res.stderr and "cannot be written" in res.stderr
    invoke("export", "--session", "s", "--out", str(tmp_path / "model"))
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.5", ok=False), "cannot be written")
    assert snapshot(folder) == before


def test_a_lock_that_is_a_folder_is_one_line(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    lock = tmp_path / "store" / "s" / ".lock"
    lock.unlink()
    lock.mkdir()
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.3", ok=False), "is a folder")


# ---- 9, 12. the GGUF cache: one conversion per content, never replaced under a reader -------------------
def test_the_gguf_cache_is_keyed_by_content_and_never_replaced(tmp_path, monkeypatch, tiny_model_dir):
    import core.model.loading as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    conversions = []

    def convert(path):
        conversions.append(path)
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)

    monkeypatch.setattr(loading, "_from_gguf", convert)
    a, b = tmp_path / "one" / "m.gguf", tmp_path / "two" / "m.gguf"  # two checkouts, one file
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"GGUF the same content")
    first = loading.gguf_cache(a, "m")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert loading.gguf_cache(b, "m") == first and len(conversions) == 1
    assert (first / "config.json").stat().st_mtime_ns == stamp
    b.write_bytes(b"GGUF other content")
    assert loading.gguf_cache(b, "m") != first and len(conversions) == 2

    c = tmp_path / "three" / "m.gguf"
    c.parent.mkdir()
    c.write_bytes(b"GGUF third")
    winner = tmp_path / "cache" / f"m-{loading.file_digest(c)[:16]}"

    def racing(path):
        out = convert(path)
        shutil.copytree(first, winner)  # another process's finished folder lands while we convert
        return out

    monkeypatch.setattr(loading, "_from_gguf", racing)
    assert loading.gguf_cache(c, "m") == winner and (winner / "source.json").is_file()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".m-")]


def test_a_truncated_gguf_is_one_line(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 100)
    one_line(invoke("score", "--session", "g", "--model", str(bad), ok=False), "not a GGUF model")
    assert not (tmp_path / "store" / "g").exists()  # and no empty session is left (item 14)


# ---- 10. pickles are refused ------------------------------------------------------------------------------
def test_pickled_weights_are_refused_with_how_to_convert(invoke, tiny_model_dir, tmp_path):
    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    for f in model.glob("*.safetensors"):
        f.unlink()
    torch.save({"w": torch.zeros(1)}, model / "pytorch_model.bin")
    one_line(invoke("score", "--session", "p", "--model", str(model), ok=False), "save_pretrained")


# ---- 11. numbers out of range fail before any model loads ---------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["eval", "--session", "s", "--samples", "0"], "--samples 0 must be at least 1"),
    (["eval", "--session", "s", "--samples", "-3"], "--samples -3"),
    (["eval", "--session", "s", "--max-new-tokens", "-1"], "--max-new-tokens -1"),
    (["generate", "--session", "s", "--max-new-tokens", "-1"], "--max-new-tokens -1"),
    (["generate", "--session", "s", "--top-p", "2"], "--top-p 2 is outside (0, 1]"),
    (["generate", "--session", "s", "--temperature", "0", "--sample"], "--temperature 0 must be above 0"),
    (["score", "--session", "s", "--damping", "-1"], "--damping -1"),
    (["score", "--session", "s", "--samples", "0"], "--samples 0"),
    (["prune", "--session", "s", "--sparsity", "1.5"], "--sparsity 1.5 is outside [0, 1)"),
    (["correct", "--session", "s", "--prompts", "0"], "--prompts 0"),
    (["circuit", "--session", "s", "--threshold", "0"], "--threshold 0"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_numbers_out_of_range_are_refused_before_the_model_loads(invoke, tiny_model_dir, monkeypatch, args, needle):
    scored(invoke, tiny_model_dir)

    def no_load(*a, **k):
        raise AssertionError("the model was loaded for a refused command")

    monkeypatch.setattr(core.engine, "load_model", no_load)
    one_line(invoke(*args, ok=False), needle)


def test_numbers_the_model_bounds_are_refused(invoke, tiny_model_dir, tmp_path):
    scored(invoke, tiny_model_dir)
    one_line(invoke("score", "--session", "s", "--seq-len", "100000", ok=False), "longer than the model's 256 positions")
    one_line(invoke("prune", "--session", "s", "--granularity", "neuron", "--count", "1000000000", ok=False),
             "this model has 128 neurons")
    one_line(invoke("prune", "--session", "s", "--granularity", "head", "--count", "99", ok=False), "8 heads")
    pruned = json.loads(invoke("prune", "--session", "s", "--granularity", "neuron", "--count", "32", "--json").stdout)
    assert pruned["sparsity"] > 0.05
    row = json.loads(invoke("session", "list", "--json").stdout)[0]
    assert row["sparsity"] == pytest.approx(pruned["sparsity"])  # not the stale row-plan counts


# ---- 12. ordinary errors are ordinary -----------------------------------------------------------------
def test_a_full_disk_says_how_much_and_where(invoke, tiny_model_dir, tmp_path, monkeypatch):
    import core.session.atomic as atomic

    scored(invoke, tiny_model_dir)
    real = shutil.disk_usage
    with monkeypatch.context() as mp:
        mp.setattr(atomic.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
        err = one_line(invoke("score", "--session", "s", "--seed", "9", ok=False), "not enough disk space in")
        assert "needs about" in err and str(tmp_path / "store" / "s") in err
        err = one_line(invoke("export", "--session", "s", "--out", str(tmp_path / "model"), ok=False), "not enough disk space")
        assert "export model" in err and not list(tmp_path.glob(".model.*"))

    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    one_line(invoke("prune", "--session", "s", "--sparsity", "0.3", ok=False), "filled up while writing counts")
    assert not list((tmp_path / "store" / "s").glob(".*.tmp"))


def test_ordinary_mistakes_are_one_error_line(invoke, tiny_model_dir, tmp_path, monkeypatch):
    scored(invoke, tiny_model_dir)
    one_line(invoke("prune", "--session", "s", "--sparsity", "abc", ok=False), "Invalid value for '--sparsity'", 2)
    one_line(invoke("prune", "--session", "s", "--bogus", ok=False), "No such option", 2)
    one_line(invoke("session", "delete", "s", ok=False), "pass --yes")  # no terminal to ask
    assert (tmp_path / "store" / "s" / "manifest.json").is_file()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a paragraph of text\n")
    real = Path.read_bytes

    def unreadable(self):
        if self.name == "prompts.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    one_line(invoke("score", "--session", "s", "--reference", str(prompts), ok=False), "cannot read prompt file")


# ---- 13. Ctrl-C says what happened ---------------------------------------------------------------------
def _interrupt_on(monkeypatch, call: int):
    import core.attribution.runner as runner

    impl, calls = runner.implementation, []

    class Wrapped:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def accumulate(self, *a, **k):
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
            return self.inner.accumulate(*a, **k)

    monkeypatch.setattr(runner, "implementation", lambda name: Wrapped(impl(name)))


def test_ctrl_c_before_the_first_batch_says_nothing_was_saved(invoke, tiny_model_dir, tmp_path, monkeypatch):
    _interrupt_on(monkeypatch, 1)
    one_line(invoke("score", "--session", "c", "--model", str(tiny_model_dir), "--reference", "builtin:general",
                    "--samples", "4", "--seq-len", "24", "--batch-size", "2", ok=False), "nothing of it was saved", 130)
    assert not (tmp_path / "store" / "c").exists()  # the session it would have created is not left empty


def test_ctrl_c_during_a_checkpoint_keeps_the_last_one_and_stops(invoke, tiny_model_dir, tmp_path, monkeypatch):
    import core.attribution.runner as runner
    import core.session.store as st

    monkeypatch.setattr(runner, "CHECKPOINT_S", -1.0)  # a checkpoint after every batch
    streams = []
    real = st.Session.stream_tensors

    def stream(self, stem, *a, **k):
        streams.append(stem)
        if stem.startswith("sums") and len(streams) == 2:
            raise KeyboardInterrupt  # the second checkpoint is under way
        return real(self, stem, *a, **k)

    monkeypatch.setattr(st.Session, "stream_tensors", stream)
    err = one_line(invoke("score", "--session", "c", "--model", str(tiny_model_dir), "--reference", "builtin:general",
                          "--samples", "6", "--seq-len", "24", "--batch-size", "2", ok=False), "holds 2 scored samples", 130)
    assert streams == ["sums-reference", "sums-reference"], streams  # the sums were not written a third time
    assert "resume" in err
    m = json.loads((tmp_path / "store" / "c" / "manifest.json").read_text())
    assert m["sums"]["reference"]["samples"] == 2


# ---- 14. nothing left lying --------------------------------------------------------------------------
def test_nothing_is_left_behind(invoke, tiny_model_dir, tmp_path):
    missing = tmp_path / "nothing.txt"
    one_line(invoke("score", "--session", "first", "--model", str(tiny_model_dir), "--reference", str(missing), ok=False),
             "not found")
    assert "no sessions" in invoke("session", "list").stdout
    scored(invoke, tiny_model_dir)
    folder = tmp_path / "store" / "s"
    stale = folder / ".ranking-0009.safetensors.abc123.tmp"
    stale.write_bytes(b"\0" * 500_000)  # a killed writer's half file
    row = json.loads(invoke("session", "list", "--json").stdout)[0]
    assert row["bytes"] < sum(f.stat().st_size for f in folder.iterdir())  # not counted as the session's
    invoke("eval", "--session", "s", "--metrics", "perplexity")  # the next lock holder removes it
    assert not stale.exists()


def test_a_reader_never_removes_temporaries(tmp_path):
    s = Session.create(tmp_path, "t")
    stale = tmp_path / "t" / ".counts-0001.safetensors.x.tmp"
    stale.write_bytes(b"x")
    code = ("import sys; from pathlib import Path; from core.session.store import Session; "
            "s = Session.open(Path(sys.argv[1]), 't', mode='read'); print(s.read_only)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    assert stale.exists()  # the writer (this process) may still be writing it
    s.close()
    proc = subprocess.Popen([sys.executable, "-c", code.replace("mode='read'", "mode='write'"), str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=120)[0].strip() == "False"
    assert not stale.exists()
    assert proc.returncode != -signal.SIGKILL
