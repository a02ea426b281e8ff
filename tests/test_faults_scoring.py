"""Scoring: a failed or killed score changes nothing, damaged rankings are refused and re-scored, Ctrl-C says what happened (items 4, 5, 6, 13)."""

from __future__ import annotations

import json

import pytest

import core.engine
from core.errors import WorkbenchError
from core.session.store import Session
from faults_support import one_line, scored


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
