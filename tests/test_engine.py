"""Engine behaviour the CLI and TUI rely on: saved masks replay exactly, scoring survives interrupts."""

import pytest
import torch

from core.engine import ModelSpec, ScoreConfig, Workbench
from core.plan import SparsityPlan
from core.session import Session


@pytest.fixture
def wb(tmp_path, tiny_model_dir):
    w = Workbench(Session.create(tmp_path, "e"))
    w.load(ModelSpec(str(tiny_model_dir)))
    return w


def _weights(w):
    return {p.name: p.module.weight.detach().clone() for p in w.layers}


def test_saved_masks_replay_the_same_weights(wb, tmp_path):
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="lrp"))
    wb.prune(SparsityPlan(0.4, granularity="global"))
    expected = _weights(wb)
    fresh = Workbench(Session.open(tmp_path, "e"))
    fresh.load()
    fresh.restore_plan()
    assert fresh.pruner.granularity == "fixed"  # replayed from masks, no re-ranking
    got = _weights(fresh)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert fresh.prune_summary()["sparsity"] == wb.prune_summary()["sparsity"]
    fresh.prune(SparsityPlan(0.1))  # a new plan needs rankings again: rebuilt from cached scores
    assert fresh.pruner.can_rerank and fresh.pruner.achieved_sparsity() == pytest.approx(0.1, abs=0.02)


def test_keyboard_interrupt_keeps_completed_samples(wb, tmp_path, monkeypatch):
    import core.scorers.gradient as gradient

    calls = {"n": 0}
    real = gradient.accumulate

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gradient, "accumulate", flaky)
    cfg = ScoreConfig(samples=6, seq_len=24, batch_size=2, scorer="gradient")
    with pytest.raises(KeyboardInterrupt):
        wb.score(cfg)
    entry = Session.open(tmp_path, "e").manifest["scores"]["reference"]
    assert entry["samples"] == 4 and entry["complete"] is False
    monkeypatch.setattr(gradient, "accumulate", real)
    summary = wb.score(cfg)
    assert summary["reference"]["samples"] == 6 and summary["reference"]["complete"]
    resumed = wb.session.read_tensors(wb.session.manifest["scores"]["reference"]["file"])

    other = Workbench(Session.create(tmp_path, "straight"))
    other.load(ModelSpec(wb.model_spec.source))
    other.score(cfg)
    straight = other.session.read_tensors(other.session.manifest["scores"]["reference"]["file"])
    assert all(torch.allclose(resumed[k], straight[k], rtol=1e-4, atol=1e-6) for k in straight)


def test_rescoring_keeps_dense_weights_intact(wb):
    dense = _weights(wb)
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="magnitude"))
    wb.prune(SparsityPlan(0.5))
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="wanda"))  # drops the old pruner
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in wb.layers)
    wb.prune(SparsityPlan(0.0))
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in wb.layers)


def test_dense_metrics_are_cached_and_history_grows(wb):
    from core.engine import EvalConfig

    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="magnitude"))
    wb.prune(SparsityPlan(0.3))
    first = wb.evaluate(EvalConfig(metrics=("perplexity",)))
    wb.prune(SparsityPlan(0.6))
    second = wb.evaluate(EvalConfig(metrics=("perplexity",)))
    assert first["metrics"]["perplexity"]["dense"] == second["metrics"]["perplexity"]["dense"]
    assert second["metrics"]["perplexity"]["pruned"] != first["metrics"]["perplexity"]["pruned"]
    assert [h["sparsity"] for h in wb.session.manifest["history"]] == [first["sparsity"], second["sparsity"]]


def test_cancel_stops_evaluation_inside_a_forward_pass(wb):
    """A slider move cancels evaluation; it must not wait for a whole batch to finish."""
    import threading

    from core.cancel import Cancelled, interruptible
    from core.engine import EvalConfig

    cancel = threading.Event()
    calls = {"n": 0}

    def set_cancel_on_first_layer(module, args):
        calls["n"] += 1
        cancel.set()

    first = wb.layers[0].module
    handle = first.register_forward_pre_hook(set_cancel_on_first_layer)
    try:
        with pytest.raises(Cancelled, match="evaluation cancelled"):
            wb.evaluate(EvalConfig(samples=4, seq_len=24, metrics=["perplexity"]), cancel=cancel)
    finally:
        handle.remove()
    assert calls["n"] == 1  # raised in the same forward pass, at the next layer
    assert not wb.session.manifest.get("history")  # nothing recorded for a cancelled run
    assert all(not p.module._forward_pre_hooks for p in wb.layers)  # hooks removed
    res = wb.evaluate(EvalConfig(samples=4, seq_len=24, metrics=["perplexity"]), cancel=threading.Event())
    assert res["metrics"]["perplexity"]["dense"] > 1
    with interruptible(wb.layers, None, "x"):  # no event: no hooks at all
        assert all(not p.module._forward_pre_hooks for p in wb.layers)


def test_cancelled_stream_stops_quietly_mid_token(wb):
    import threading

    from core.generation import GenerationConfig

    cancel = threading.Event()
    pieces = []
    for piece in wb.stream("Hello there", GenerationConfig(max_new_tokens=20), pruned=False, cancel=cancel):
        pieces.append(piece)
        cancel.set()  # the next token's forward pass raises inside; the stream just ends
    assert len(pieces) == 1
    assert all(not p.module._forward_pre_hooks for p in wb.layers)
