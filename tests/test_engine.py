"""Engine behaviour the CLI and TUI rely on: masks replay exactly, scoring survives interrupts, one cancel."""

import os
import signal
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from core.engine import Workbench
from core.errors import Cancelled, WorkbenchError
from core.model.interrupt import interruptible
from core.pruning.masks import Pruner
from core.pruning.plan import SparsityPlan
from core.session.store import Session
from core.settings import EvalConfig, GenerationConfig, ModelSpec, ScoreConfig


@pytest.fixture
def wb(tmp_path, tiny_model_dir):
    w = Workbench(Session.create(tmp_path, "e"))
    w.load(ModelSpec(str(tiny_model_dir)))
    return w


def _weights(w):
    return {p.name: p.module.weight.detach().clone() for p in w.layers}


def test_saved_counts_replay_the_same_weights(wb, tmp_path, monkeypatch):
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="lrp"))
    plan = SparsityPlan(0.4, granularity="global")
    wb.prune(plan)
    expected = _weights(wb)
    assert wb.session.manifest.counts.plan == plan
    fresh = Workbench(Session.open(tmp_path, "e"))
    fresh.load()
    monkeypatch.setattr(Pruner, "targets", lambda self, plan: (_ for _ in ()).throw(AssertionError("searched")))
    fresh.restore_plan()  # from the saved counts: no threshold search
    got = _weights(fresh)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert fresh.prune_summary().sparsity == wb.prune_summary().sparsity
    monkeypatch.undo()
    fresh.prune(SparsityPlan(0.1))
    assert fresh.pruner.achieved_sparsity() == pytest.approx(0.1, abs=0.02)


def test_ranking_replaces_sums_and_is_reused(wb, monkeypatch):
    import core.engine_scoring

    cfg = ScoreConfig(samples=4, seq_len=24, scorer="gradient")
    first = wb.score(cfg)
    mf = wb.session.manifest
    assert not first["reference"].cached and mf.ranking.samples == {"reference": 4} and not mf.sums
    assert [f.name.split("-")[0] for f in wb.session.path.glob("*.safetensors")] == ["ranking"]
    real, calls = core.engine_scoring.run_scorer, []
    monkeypatch.setattr(core.engine_scoring, "run_scorer", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert wb.score(cfg)["reference"].cached and not calls
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="gradient", target="logit"))  # a different key: rescored
    assert calls and mf.ranking.key["sets"]["reference"]["target"] == "logit"


def test_ctrl_c_finishes_the_batch_and_keeps_it(wb, tmp_path, monkeypatch):
    import core.attribution.scorers.gradient as gradient

    calls = {"n": 0}
    real = gradient.accumulate

    def interrupted_during_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while batch 2 runs
        return real(*args, **kwargs)

    monkeypatch.setattr(gradient, "accumulate", interrupted_during_second_batch)
    cfg = ScoreConfig(samples=6, seq_len=24, batch_size=2, scorer="gradient")
    with pytest.raises(KeyboardInterrupt):
        wb.score(cfg)
    rec = Session.open(tmp_path, "e").manifest.sums["reference"]
    assert rec.samples == 4 and calls["n"] == 2  # batch 2 finished, batch 3 never started
    monkeypatch.setattr(gradient, "accumulate", real)
    summary = wb.score(cfg)
    assert summary["reference"].samples == 6 and wb.scores_ready()
    resumed = {p.name: wb.ranking().values(p.name) for p in wb.layers}

    other = Workbench(Session.create(tmp_path, "straight"))
    other.load(ModelSpec(wb.model_spec.source))
    other.score(cfg)
    assert all(torch.allclose(resumed[p.name].float(), other.ranking().values(p.name).float(), rtol=1e-2, atol=1e-6)
               for p in wb.layers)


def test_a_batch_torn_by_an_error_is_never_saved(wb, tmp_path, monkeypatch):
    import core.attribution.scorers.gradient as gradient

    real = gradient.accumulate

    def half_then_fail(model, layers, batch, state, options):
        real(model, layers, batch, state, options)
        raise RuntimeError("out of memory in the middle of a batch")

    monkeypatch.setattr(gradient, "accumulate", half_then_fail)
    with pytest.raises(RuntimeError):
        wb.score(ScoreConfig(samples=4, seq_len=24, batch_size=2, scorer="gradient"))
    assert not Session.open(tmp_path, "e").manifest.sums  # nothing half-added reached the disk


def test_cancelled_scoring_keeps_completed_batches(wb, tmp_path):
    cancel = threading.Event()

    def progress(which, p):
        if p.samples_done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        wb.score(ScoreConfig(samples=6, seq_len=24, batch_size=2, scorer="wanda"), progress=progress, cancel=cancel)
    assert Session.open(tmp_path, "e").manifest.sums["reference"].samples == 2
    assert not wb.scores_ready()
    with pytest.raises(WorkbenchError, match="interrupted"):
        wb.ranking()


def test_rescoring_keeps_dense_weights_intact(wb):
    dense = _weights(wb)
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="magnitude"))
    wb.prune(SparsityPlan(0.5))
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="wanda"))  # drops the old pruner
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in wb.layers)
    wb.prune(SparsityPlan(0.0))
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in wb.layers)


def test_dense_metrics_are_cached_and_history_grows(wb):
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="magnitude"))
    wb.prune(SparsityPlan(0.3))
    first = wb.evaluate(EvalConfig(metrics=("perplexity",)))
    wb.prune(SparsityPlan(0.6))
    second = wb.evaluate(EvalConfig(metrics=("perplexity",)))
    assert first.metrics["perplexity"].dense == second.metrics["perplexity"].dense
    assert second.metrics["perplexity"].pruned != first.metrics["perplexity"].pruned
    assert [h["sparsity"] for h in wb.history()] == [first.sparsity, second.sparsity]


def test_unknown_choices_are_refused_before_any_work(wb):
    with pytest.raises(WorkbenchError, match="unknown --scorer 'psychic'"):
        wb.score(ScoreConfig(scorer="psychic"))
    with pytest.raises(WorkbenchError, match="unknown --metrics 'charm'"):
        wb.evaluate(EvalConfig(metrics=("perplexity", "charm")))


def test_cancel_stops_evaluation_inside_a_forward_pass(wb):
    """A slider move cancels evaluation; it must not wait for a whole batch to finish."""
    cancel = threading.Event()
    calls = {"n": 0}

    def set_cancel_on_first_layer(module, args):
        calls["n"] += 1
        cancel.set()

    first = wb.layers[0].module
    handle = first.register_forward_pre_hook(set_cancel_on_first_layer)
    try:
        with pytest.raises(Cancelled, match="evaluation cancelled"):
            wb.evaluate(EvalConfig(samples=4, seq_len=24, metrics=("perplexity",)), cancel=cancel)
    finally:
        handle.remove()
    assert calls["n"] == 1  # raised in the same forward pass, at the next layer
    assert not wb.history()  # nothing recorded for a cancelled run
    assert all(not p.module._forward_pre_hooks for p in wb.layers)  # hooks removed
    res = wb.evaluate(EvalConfig(samples=4, seq_len=24, metrics=("perplexity",)), cancel=threading.Event())
    assert res.metrics["perplexity"].dense > 1
    with interruptible(wb.layers, None, "x"):  # no event: no hooks at all
        assert all(not p.module._forward_pre_hooks for p in wb.layers)


def test_cancelled_is_not_a_user_error():
    """The UI tells a cancel from a failure by type, never by the message's words."""
    assert not issubclass(Cancelled, WorkbenchError)


def test_cancelled_stream_stops_quietly_mid_token(wb):
    cancel = threading.Event()
    pieces = []
    for piece in wb.stream("Hello there", GenerationConfig(max_new_tokens=20), pruned=False, cancel=cancel):
        pieces.append(piece)
        cancel.set()  # the next token's forward pass raises inside; the stream just ends
    assert len(pieces) == 1
    assert all(not p.module._forward_pre_hooks for p in wb.layers)


def test_a_file_given_only_for_evaluation_is_evaluated_whole(wb, tmp_path):
    from core.data.tokens import pack_windows

    paras = [f"Paragraph {i} talks about the kettle, the toast and the morning light in the kitchen." for i in range(12)]
    f = tmp_path / "held-out.txt"
    f.write_text("\n\n".join(paras))
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="magnitude"))
    res = wb.evaluate(EvalConfig(eval_data=str(f), metrics=("perplexity",), seq_len=24))
    assert res.eval_split == "all"
    assert res.eval_samples == len(pack_windows(wb.lm.tokenizer, paras, 24))  # every paragraph, not every fourth
    ref = wb.evaluate(EvalConfig(metrics=("perplexity",), seq_len=24))  # the scored set: its held-out split only
    assert ref.eval_split == "eval"


def test_fewer_samples_than_asked_is_said(wb):
    summary = wb.score(ScoreConfig(reference="builtin:general", samples=500, seq_len=64, scorer="wanda"))
    s = summary["reference"]
    assert s.samples < 500 and "fewer than the 500 asked for" in s.short
    assert wb.score(ScoreConfig(samples=2, seq_len=64, scorer="wanda"))["reference"].short is None


def test_long_windows_keep_to_the_token_budget(wb, monkeypatch):
    import core.engine_scoring

    seen = []
    real = core.engine_scoring.run_scorer
    monkeypatch.setattr(core.engine_scoring, "run_scorer", lambda name, model, layers, batches, *a, **k:
                        seen.extend(int(b.ids.numel()) for b in batches) or real(name, model, layers, batches, *a, **k))
    wb.score(ScoreConfig(samples=6, seq_len=200, batch_size=8, batch_tokens=256, scorer="wanda"))
    assert seen and max(seen) <= 256  # one 200-token window per pass, not eight


@pytest.mark.parametrize("scorer,reduce", [("wanda", None), ("magnitude", None), ("lrp", "token-rms")])
def test_scores_come_from_the_dense_weights_even_while_pruned(wb, tmp_path, scorer, reduce):
    """Scoring again while a plan is applied must not see the pruned zeros."""
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="random"))
    wb.prune(SparsityPlan(0.5))
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer=scorer, reduce=reduce))
    fresh = Workbench(Session.create(tmp_path, "fresh"))
    fresh.load(ModelSpec(wb.model_spec.source))
    fresh.score(ScoreConfig(samples=4, seq_len=24, scorer=scorer, reduce=reduce))
    for p in wb.layers:
        assert torch.equal(wb.ranking()[p.name].rank, fresh.ranking()[p.name].rank), p.name


@pytest.mark.parametrize("scorer,reduce,damping", [("lrp", "abs", 0.0), ("gradient", "token-rms", 1.0),
                                                   ("wanda", None, 0.0)])
def test_scoring_ends_layer_by_layer_with_the_same_ranking(wb, scorer, reduce, damping):
    """Layer-local scorers finish one layer at a time (bounded RAM); the ranking is the all-at-once one."""
    from core.pruning.compact import compact_ranking
    from core.attribution.runner import run_scorer
    from core.attribution.samples import scoring_batches
    from core.attribution.state import ScorerOptions

    cfg = ScoreConfig(reference="builtin:general", contrastive="builtin:repetition", scorer=scorer, samples=4,
                      seq_len=24, reduce=reduce, damping=damping).resolved("text")
    options = ScorerOptions.of(cfg)
    states = {}
    for which, spec in (("reference", cfg.reference), ("contrastive", cfg.contrastive)):
        batches = scoring_batches(wb.lm, wb.prompt_set(spec), cfg, 2)
        states[which] = run_scorer(scorer, wb.lm.model, wb.layers, batches, options)
    args = (scorer, wb.lm.model, wb.layers, states, options, cfg.reduce, cfg.normalize, {})
    streamed, unscored_a = compact_ranking(*args, layer_by_layer=True)
    whole, unscored_b = compact_ranking(*args, layer_by_layer=False)
    assert unscored_a == unscored_b
    a, b = streamed.tensors(), whole.tensors()
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_zero_shot_accuracy_through_lm_eval_dense_and_pruned(wb):
    """`eval --tasks`: lm-eval on the in-memory model, with a task YAML whose data is local (offline)."""
    from core.evaluation.registry import improved

    task = str(Path(__file__).parent / "data" / "tasks" / "tiny_choice.yaml")
    wb.score(ScoreConfig(samples=4, seq_len=24, scorer="magnitude"))
    wb.prune(SparsityPlan(0.5))
    res = wb.evaluate(EvalConfig(metrics=("perplexity",), samples=2, seq_len=24, tasks=(task,)))
    acc = res.metrics["tiny_choice/acc"]
    assert 0 <= acc.dense <= 1 and 0 <= acc.pruned <= 1 and acc.delta == acc.pruned - acc.dense
    assert "tiny_choice/acc_norm" in res.metrics and wb.history()[-1]["metrics"]["tiny_choice/acc"] == asdict(acc)
    assert improved("tiny_choice/acc", 0.1) and not improved("tiny_choice/acc", -0.1)  # accuracy: higher is better
    with pytest.raises(WorkbenchError, match="task file .* not found"):
        wb.evaluate(EvalConfig(metrics=("perplexity",), samples=2, seq_len=24, tasks=("missing.yaml",)))
