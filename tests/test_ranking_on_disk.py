"""A ranking larger than RAM: written to the session layer by layer as scoring finishes each, read
back one layer at a time, and pruning that gives the same masks whatever the RAM cache holds."""

import pytest
import torch
from safetensors.torch import load_file

from core.engine import Workbench
from core.model.layers import prunable_layers
from core.model.units import unit_kind_of
from core.pruning.masks import Pruner
from core.pruning.ranking import CACHE_ENV, Ranking
from core.pruning.plan import SparsityPlan
from core.session.atomic import StreamedSafetensors
from core.session.store import Session
from core.settings import ModelSpec, ScoreConfig
from tests.conftest import make_tiny

PLANS = [SparsityPlan(0.5), SparsityPlan(0.45), SparsityPlan(0.3, granularity="global"),
         SparsityPlan(0.31, granularity="global"), SparsityPlan(0.4, granularity="layer"),
         SparsityPlan(0.0, [("*mlp*", 0.6)], "global"), SparsityPlan(0.5, granularity="2:4"),
         SparsityPlan(0.0, granularity="neuron", count=20), SparsityPlan(0.25, granularity="head"), SparsityPlan(0.0, granularity="global", count=1234),
         SparsityPlan(0.2)]


def test_streamed_file_is_plain_safetensors(tmp_path):
    tensors = {"a::rank": torch.randint(0, 99, (3, 5), dtype=torch.int16), "a::sorted": torch.randn(3, 5).bfloat16(),
               "a::mass": torch.tensor(2.5), "b::rows": torch.randn(7), "b::hist": torch.arange(11, dtype=torch.int32),
               "empty": torch.zeros(0), "wide": torch.randint(0, 9, (4,), dtype=torch.int64)}
    path = tmp_path / "x.safetensors"
    stream = StreamedSafetensors(path, {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}, {"k": "v"})
    for k in reversed(list(tensors)):  # any order: each tensor has its place already
        stream.put(k, tensors[k])
        assert not path.exists()  # nothing under its name before commit
    stream.commit()
    back = load_file(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_streamed_file_refuses_wrong_shapes_and_missing_tensors(tmp_path):
    path = tmp_path / "x.safetensors"
    stream = StreamedSafetensors(path, {"a": (torch.float32, (2, 2)), "b": (torch.float32, (3,))})
    with pytest.raises(ValueError, match="expected"):
        stream.put("a", torch.zeros(2, 3))
    stream.put("a", torch.zeros(2, 2))
    with pytest.raises(ValueError, match="never written"):
        stream.commit()
    stream.abort()
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left


def _ranking_file(tokenizer, tmp_path):
    lm = make_tiny("llama", tokenizer, 0)
    layers = prunable_layers(lm.model)
    gen = torch.Generator().manual_seed(7)
    scores = {p.name: torch.rand(p.shape, generator=gen) for p in layers}
    scores[layers[0].name][0, :4] = 0.5  # ties across layers and rows
    scores[layers[1].name][:, :3] = 0.5
    in_ram = Ranking.from_values(scores, {p.name: float(i) for i, p in enumerate(layers)})
    path = tmp_path / "ranking.safetensors"
    stream = StreamedSafetensors(path, Ranking.layout({p.name: p.shape for p in layers}))
    for name, lr in in_ram.layers.items():
        for k, t in Ranking.layer_tensors(name, lr).items():
            stream.put(k, t)
    stream.commit()
    return lm, layers, in_ram, path


@pytest.mark.parametrize("budget", [0, 20_000, None])
def test_a_ranking_read_lazily_prunes_exactly_like_one_in_ram(tokenizer, tmp_path, budget):
    """Budget 0 keeps one part at a time (a ranking far larger than RAM), 20 kB a few layers, None all."""
    lm, layers, in_ram, path = _ranking_file(tokenizer, tmp_path)
    lazy = Ranking.open(path, budget)
    assert lazy.names() == in_ram.names()
    for name in in_ram.names():
        assert lazy[name].mass == in_ram[name].mass and lazy[name].shape == in_ram[name].shape
        assert torch.equal(lazy[name].rows, in_ram[name].rows) and torch.equal(lazy[name].hist, in_ram[name].hist)
    from core.model.units import units_of

    units = lambda kind: units_of(lm.model, layers, kind)  # noqa: E731
    a, b = Pruner(layers, in_ram, units=units), Pruner(layers, lazy, units=units)
    for plan in PLANS:  # every granularity, and small moves after big ones
        a.apply(plan)
        want = {p.name: p.module.weight.detach().clone() for p in layers}
        b.apply(plan)
        for p in layers:
            assert torch.equal(p.module.weight, want[p.name]), (plan, p.name)
            assert torch.equal(b.mask(p.name), a.mask(p.name)), (plan, p.name)
    if budget is not None:
        largest = max(lr.numel * 4 for lr in in_ram.layers.values())
        assert lazy.parts.held_bytes <= max(budget, largest)  # never more than the budget (or the one part in use)
        assert not lazy.fits()
    else:
        assert lazy.fits()


def test_a_small_cache_reads_layers_again_and_a_large_one_does_not(tokenizer, tmp_path):
    lm, layers, in_ram, path = _ranking_file(tokenizer, tmp_path)
    for budget, more in ((0, True), (10**9, False)):
        lazy = Ranking.open(path, budget)
        pruner = Pruner(layers, lazy)
        pruner.apply(SparsityPlan(0.3, granularity="global"))
        first = lazy.parts.reads
        assert first >= len(layers)
        pruner.apply(SparsityPlan(0.35, granularity="global"))
        assert (lazy.parts.reads > first) == more


def test_engine_writes_the_ranking_while_scoring_and_reads_it_lazily(tmp_path, tiny_model_dir, monkeypatch):
    """Scoring streams the ranking into the session; a cache of 0 MB gives the same pruned model."""
    results = {}
    for mb in ("0", "512"):
        monkeypatch.setenv(CACHE_ENV, mb)
        wb = Workbench(Session.create(tmp_path / mb, "e"))
        wb.load(ModelSpec(str(tiny_model_dir)))
        wb.score(ScoreConfig(samples=4, seq_len=24, scorer="lrp", contrastive="builtin:repetition"))
        ranking = wb.ranking()
        assert ranking.parts is not None and ranking.parts.budget == int(mb) * 2**20
        on_disk = load_file(wb.session.path / wb.session.manifest.ranking.file)
        layer_keys = {k for k in on_disk if not unit_kind_of(k)}
        assert layer_keys == set(Ranking.layout({p.name: p.shape for p in wb.layers}))
        weights = []
        for plan in PLANS:
            wb.prune(plan)
            weights.append({p.name: p.module.weight.detach().clone() for p in wb.layers})
        results[mb] = weights
        wb.session.close()
    for small, large in zip(results["0"], results["512"]):
        for name in small:
            assert torch.equal(small[name], large[name]), name
