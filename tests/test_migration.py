"""Sessions written by the previous release (format 1) open, keep their work, evaluate and export.

tests/data/v1_sessions was written by that release's own code (commit 9c14e7b) on a tiny
Llama (the folder `tiny-model`); `expected.json` holds what that code computed for them.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.engine import Workbench
from core.pruning.plan import SparsityPlan
from core.session.listing import list_sessions
from core.session.store import Session
from core.settings import EvalConfig

DATA = Path(__file__).parent / "data" / "v1_sessions"
EXPECTED = json.loads((DATA / "expected.json").read_text())


@pytest.fixture
def store(tmp_path):
    model = tmp_path / "tiny-model"
    shutil.copytree(DATA / "tiny-model", model)
    for name in EXPECTED:
        shutil.copytree(DATA / name, tmp_path / "store" / name)
        mf = tmp_path / "store" / name / "manifest.json"
        mf.write_text(mf.read_text().replace("TINY_MODEL", str(model)))
    return tmp_path / "store"


def _plan(data):
    return SparsityPlan(data["default"], [tuple(o) for o in data["overrides"]], data["granularity"])


def test_listing_reads_format_1_without_converting(store):
    rows = {r["name"]: r for r in list_sessions(store)}
    assert rows["v1-lrp-global"]["scorer"] == "lrp"
    assert rows["v1-lrp-global"]["sparsity"] == pytest.approx(EXPECTED["v1-lrp-global"]["sparsity"])
    assert json.loads((store / "v1-lrp-global" / "manifest.json").read_text())["format"] == 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format_1_session_keeps_scores_plan_masks_and_history(store, name):
    expected = EXPECTED[name]
    session = Session.open(store, name)
    mf = session.manifest
    assert mf.format == 2 and mf.ranking is not None and not mf.sums
    assert json.loads((store / name / "manifest.json").read_text())["format"] == 2  # converted once, on disk
    assert not list((store / name).glob("scores-*")) and not list((store / name).glob("masks-*"))
    assert mf.plan == _plan(expected["plan"])
    assert mf.undo == [_plan(u) for u in expected["undo"]]
    assert [h.model_dump()["metrics"] for h in mf.history] == [h["metrics"] for h in expected["history"]]

    wb = Workbench(session)
    wb.load()
    wb.restore_plan()
    for p in wb.layers:  # the same weights are pruned as the release pruned
        got = wb.pruner.mask(p.name).sum(dim=1).tolist()
        assert got == expected["row_counts"][p.name], p.name
    assert wb.pruner.achieved_sparsity() == pytest.approx(expected["sparsity"])


def test_format_1_session_evaluates_exports_and_rescores_with_todays_windows(store, tmp_path, monkeypatch):
    import core.engine_scoring

    wb = Workbench(Session.open(store, "v1-lrp-global"))
    wb.load()
    cfg = wb.score_config
    assert cfg.rules == "attnlrp"  # format 1 called it `variant`
    res = wb.evaluate(EvalConfig(metrics=("perplexity",), samples=4, seq_len=24))
    assert res.sparsity == pytest.approx(EXPECTED["v1-lrp-global"]["sparsity"])
    info = wb.export(str(tmp_path / "out"))
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    zeros = sum(int((reloaded.get_parameter(p.name + ".weight") == 0).sum()) for p in wb.layers)
    assert zeros == round(info.sparsity * sum(p.numel for p in wb.layers))
    wb.prune(SparsityPlan(0.1))  # it can change its plan
    assert wb.prune_summary().sparsity == pytest.approx(0.1, abs=0.02)
    # Format 1 scored windows without the BOS prefix: the same settings today mean other inputs, so they are scored again.
    assert wb.session.manifest.ranking.key["sets"]["reference"]["inputs"].startswith("format-1")
    real, calls = core.engine_scoring.run_scorer, []
    monkeypatch.setattr(core.engine_scoring, "run_scorer", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert not wb.score(cfg)["reference"].cached and calls
    assert torch.isfinite(torch.tensor(res.metrics["perplexity"].dense))
