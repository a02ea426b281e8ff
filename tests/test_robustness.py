"""Bad input that fails fast, one writer per session, and kills (SIGKILL) that leave every session whole."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.data.prompt_sets import load_prompt_set
from core.errors import WorkbenchError
from core.model.loading import load_model
from core.session.store import Session

ROOT = Path(__file__).resolve().parent.parent


def _one_line(result, needle: str) -> None:
    assert result.exit_code != 0
    err = result.output.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


# ---- bad input -------------------------------------------------------------------------
def test_binary_and_non_utf8_files_are_refused(tmp_path, invoke, tiny_model_dir):
    binary = tmp_path / "noise.txt"
    binary.write_bytes(bytes(range(256)) * 16)  # 4 KB, NUL bytes included
    with pytest.raises(WorkbenchError, match="binary file"):
        load_prompt_set(str(binary))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\xe9 cr\xe8me, deux fois.\n\nUn autre paragraphe, assez long pour compter.\n".encode("latin-1"))
    with pytest.raises(WorkbenchError, match="not UTF-8 text .byte 3"):
        load_prompt_set(str(latin))
    invoke("score", "--session", "b", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--samples", "4",
           "--seq-len", "24")
    before = (tmp_path / "store" / "b" / "manifest.json").read_text()
    _one_line(invoke("score", "--session", "b", "--reference", str(binary), ok=False), "not text")
    after = json.loads((tmp_path / "store" / "b" / "manifest.json").read_text())
    assert after["ranking"] == json.loads(before)["ranking"]  # nothing changed


def test_hf_spec_without_network_fails_at_once(monkeypatch, tmp_path):
    import core.hub

    monkeypatch.setattr(core.hub, "hub_reachable", lambda timeout=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(WorkbenchError, match="cannot be reached and the dataset is not in the local cache") as err:
        load_prompt_set("hf:no-such-owner/no-such-dataset-xyz")
    assert time.perf_counter() - t0 < 10 and "\n" not in str(err.value)
    rows = tmp_path / "rows.jsonl"  # a local file through the hf: route needs no network
    rows.write_text("\n".join(json.dumps({"text": f"row number {i}"}) for i in range(12)))
    assert len(load_prompt_set(f"hf:json,data_files={rows},split=train").score) == 9


def test_model_path_that_does_not_exist_says_so(tmp_path, invoke):
    for missing in (str(tmp_path / "no-model"), "./models/nothing-here", "~/nowhere/model"):
        with pytest.raises(WorkbenchError, match="does not exist"):
            load_model(missing)
    _one_line(invoke("score", "--session", "m", "--model", str(tmp_path / "no-model"), ok=False),
              "does not exist")


# ---- one writer per session ------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from core.session.store import Session
s = Session.open(Path(sys.argv[1]), sys.argv[2])
print("held", flush=True)
time.sleep(120)
"""


def _hold(store: Path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store), name], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_readers_open_read_only(invoke, tiny_model_dir, tmp_path):
    invoke("score", "--session", "demo", "--model", str(tiny_model_dir), "--reference", "builtin:general",
           "--samples", "4", "--seq-len", "24")
    invoke("prune", "--session", "demo", "--sparsity", "0.3")
    manifest = tmp_path / "store" / "demo" / "manifest.json"
    proc = _hold(tmp_path / "store", "demo")
    try:
        before = manifest.read_text()
        res = invoke("prune", "--session", "demo", "--sparsity", "0.6", ok=False)
        _one_line(res, f"pid {proc.pid}")
        assert "is open in another process" in res.output
        _one_line(invoke("score", "--session", "demo", "--seed", "3", ok=False), "open in another process")
        _one_line(invoke("session", "delete", "demo", "--yes", ok=False), "open in another process")
        ev = invoke("eval", "--session", "demo", "--json", "--metrics", "perplexity")  # a reader still works
        assert "opened read-only" in ev.stderr
        assert json.loads(ev.stdout)["sparsity"] == pytest.approx(0.3, abs=0.02)
        assert manifest.read_text() == before  # ... and wrote nothing
        invoke("export", "--session", "demo", "--out", str(tmp_path / "out"))
        assert (tmp_path / "out" / "pruning.json").is_file()
        assert manifest.read_text() == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    invoke("prune", "--session", "demo", "--sparsity", "0.6")  # a killed holder leaves no stale lock


def test_one_process_may_open_a_session_twice(tmp_path):
    a = Session.create(tmp_path, "twice")
    b = Session.open(tmp_path, "twice")
    assert not a.read_only and not b.read_only
    a.close()
    b.close()
    assert b.read_only


# ---- SIGKILL in the middle -------------------------------------------------------------------
KILL = """
import os, signal, sys
point = sys.argv[1]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "scoring":
    import core.attribution.runner as r
    impl = r.implementation
    calls = []
    class Wrapped:
        def __init__(self, inner): self.inner = inner
        def __getattr__(self, name): return getattr(self.inner, name)
        def accumulate(self, *a, **k):
            calls.append(1)
            if len(calls) == 2: die()
            return self.inner.accumulate(*a, **k)
    r.implementation = lambda name: Wrapped(impl(name))
elif point == "ranking":
    import core.engine_scoring as es
    compact = es.compact_layers
    def first_layer_then_die(*a, **k):
        for n, item in enumerate(compact(*a, **k)):
            if n == 1: die()
            yield item
    es.compact_layers = first_layer_then_die
elif point == "pruning":
    import core.session.store as st
    write = st.write_safetensors
    def write_then_die(path, *a, **k):
        write(path, *a, **k)
        if "counts" in str(path): die()
    st.write_safetensors = write_then_die
elif point == "evaluating":
    import core.evaluation.metrics as m
    m.perplexity = die
elif point == "exporting":
    import core.session.export as ex
    ex.write_json = die
from workbench.cli import app
app(sys.argv[2:])
"""


@pytest.mark.parametrize("point,args", [
    ("scoring", ["score", "--session", "k", "--samples", "6", "--batch-size", "2", "--seed", "5"]),
    ("ranking", ["score", "--session", "k", "--scorer", "magnitude"]),
    ("pruning", ["prune", "--session", "k", "--sparsity", "0.6"]),
    ("evaluating", ["eval", "--session", "k", "--metrics", "perplexity"]),
    ("exporting", ["export", "--session", "k", "--out", "{out}"]),
])
def test_a_kill_leaves_the_session_at_its_last_good_state(invoke, tiny_model_dir, tmp_path, point, args):
    store = tmp_path / "store"
    invoke("score", "--session", "k", "--model", str(tiny_model_dir), "--reference", "builtin:general",
           "--samples", "4", "--seq-len", "24")
    invoke("prune", "--session", "k", "--sparsity", "0.3")
    invoke("eval", "--session", "k", "--metrics", "perplexity")
    good = Session.open(store, "k").manifest
    out = tmp_path / "exported"
    env = {**os.environ, "WORKBENCH_SESSIONS_DIR": str(store)}
    proc = subprocess.run([sys.executable, "-c", KILL, point, *[a.format(out=out) for a in args]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    s = Session.open(store, "k")
    m = s.manifest
    assert m.ranking == good.ranking and m.plan == good.plan and m.counts == good.counts
    assert m.score_config == good.score_config  # a killed re-score leaves the settings with the ranking they describe
    assert len(m.history) == len(good.history)
    s.read_tensors(m.ranking.file), s.read_tensors(m.counts.file)  # the files it names are whole
    s.close()
    assert not out.exists()
    res = json.loads(invoke("eval", "--session", "k", "--metrics", "perplexity", "--json").stdout)
    assert res["sparsity"] == pytest.approx(0.3, abs=0.02)
    if point == "exporting":
        assert list(tmp_path.glob(".exported.*"))  # the killed export's temporary folder ...
        invoke("export", "--session", "k", "--out", str(out))
        assert (out / "pruning.json").is_file() and not list(tmp_path.glob(".exported.*"))  # ... goes with the next
