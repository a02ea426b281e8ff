"""Pruning from a compact ranking: exact sparsity, incremental moves, exact dense restore."""

import pytest
import torch

from core.errors import WorkbenchError
from core.model.layers import prunable_layers, weight_view
from core.pruning.masks import Pruner
from core.pruning.ranking import Ranking, threshold_counts
from core.pruning.plan import SparsityPlan, parse_override
from tests.conftest import make_tiny


def _setup(tokenizer, arch="llama", seed=0):
    lm = make_tiny(arch, tokenizer, seed)
    layers = prunable_layers(lm.model)
    gen = torch.Generator().manual_seed(seed + 100)
    for p in layers:  # random init leaves biases at zero; make them visible
        if getattr(p.module, "bias", None) is not None:
            p.module.bias.data = torch.rand(p.module.bias.shape, generator=gen) + 0.1
    scores = {p.name: torch.rand(p.shape, generator=gen) for p in layers}
    dense = {p.name: p.module.weight.detach().clone() for p in layers}
    return lm, layers, scores, dense


def _pruner(layers, scores):
    return Pruner(layers, Ranking.from_values(scores, {}))


def _zeros(layers):
    return sum(int((p.module.weight == 0).sum()) for p in layers)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_row_wise_prunes_lowest_scores_in_every_row(tokenizer, arch):
    lm, layers, scores, dense = _setup(tokenizer, arch)
    pruner = _pruner(layers, scores)
    pruner.apply(SparsityPlan(0.5))
    for p in layers:
        w = weight_view(p)
        out, inn = p.shape
        k = round(0.5 * inn)
        assert int((w == 0).sum()) == k * out
        lowest = scores[p.name].argsort(dim=1, stable=True)[:, :k]
        assert (w.gather(1, lowest) == 0).all()
        assert pruner.mask(p.name).sum() == k * out
        assert torch.equal(pruner.mask(p.name), w == 0)
    assert pruner.achieved_sparsity() == pytest.approx(_zeros(layers) / sum(p.numel for p in layers), abs=0)


def test_incremental_moves_match_fresh_application(tokenizer):
    """Small and large steps, across granularities: the weights always equal a fresh application."""
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = _pruner(layers, scores)
    steps = [(0.5, "row"), (0.2, "row"), (0.7, "row"), (0.72, "row"), (0.69, "global"), (0.3, "global"),
             (0.31, "global"), (0.31, "layer"), (0.4, "row"), (0.41, "layer"), (0.1, "global")]
    for s, g in steps:
        pruner.apply(SparsityPlan(s, granularity=g))
        moved = {p.name: p.module.weight.detach().clone() for p in layers}
        fresh = _pruner(layers, scores)
        pruner.use_pruned(False)
        fresh.apply(SparsityPlan(s, granularity=g))
        for p in layers:
            assert torch.equal(moved[p.name], p.module.weight), (s, g, p.name)
            assert torch.equal(pruner.mask(p.name), fresh.mask(p.name))
        fresh.use_pruned(False)
        pruner.use_pruned(True)


def test_back_to_dense_restores_exact_weights(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = _pruner(layers, scores)
    for g in ("row", "layer", "global"):
        pruner.apply(SparsityPlan(0.6, granularity=g))
        assert _zeros(layers) > 0
        pruner.apply(SparsityPlan(0.0, granularity=g))
        for p in layers:
            assert torch.equal(p.module.weight, dense[p.name])


def test_global_prunes_exact_count_with_lowest_scores(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = _pruner(layers, scores)
    pruner.apply(SparsityPlan(0.37, granularity="global"))
    total = sum(p.numel for p in layers)
    want = round(0.37 * total)
    assert _zeros(layers) == want == sum(pruner.pruned_counts().values())
    # thresholds compare bf16 values: everything pruned is at or below everything kept
    pruned = torch.cat([scores[p.name].bfloat16()[weight_view(p) == 0].float() for p in layers])
    kept = torch.cat([scores[p.name].bfloat16()[weight_view(p) != 0].float() for p in layers])
    assert pruned.max() <= kept.min()


def test_threshold_ties_are_broken_by_layer_row_then_position():
    from core.pruning.ranking import layer_ranking

    a = layer_ranking(torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.5, 3.0]]), 0.0)  # row 1 has its 2.0 first
    b = layer_ranking(torch.tensor([[2.0, 2.0, 9.0]]), 0.0)
    # below 2.0: 1.0 and 0.5 (2 weights); then five 2.0s: rows of a first, then b
    counts = threshold_counts([a, b], 5)
    assert [c.tolist() for c in counts] == [[3, 2], [0]]
    assert [c.tolist() for c in threshold_counts([a, b], 6)] == [[3, 2], [1]]
    assert [c.tolist() for c in threshold_counts([a, b], 0)] == [[0, 0], [0]]
    assert [c.tolist() for c in threshold_counts([a, b], 9)] == [[3, 3], [3]]


def test_global_breaks_ties_exactly(tokenizer):
    lm, layers, _, dense = _setup(tokenizer)
    scores = {p.name: torch.zeros(p.shape) for p in layers}  # everything ties
    pruner = _pruner(layers, scores)
    pruner.apply(SparsityPlan(0.25, granularity="global"))
    assert _zeros(layers) == round(0.25 * sum(p.numel for p in layers))


def test_layer_overrides_by_pattern(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    plan = SparsityPlan(0.5, [parse_override("model.layers.0.*=0.1"), parse_override("*.mlp.down_proj=0.0")])
    pruner = _pruner(layers, scores)
    pruner.apply(plan)
    for p in layers:
        share = float((p.module.weight == 0).float().mean())
        want = 0.0 if p.name.endswith("down_proj") else (0.1 if p.name.startswith("model.layers.0.") else 0.5)
        assert share == pytest.approx(want, abs=1 / p.shape[1])


def test_pruned_and_dense_swap_is_exact(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = _pruner(layers, scores)
    pruner.apply(SparsityPlan(0.5))
    pruner.use_pruned(False)
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in layers)
    pruner.use_pruned(True)
    assert _zeros(layers) == sum(pruner.pruned_counts().values())


def test_counts_replay_the_same_masks(tokenizer):
    """A session stores per-row counts; applying them gives the same weights with no threshold search."""
    lm, layers, scores, dense = _setup(tokenizer)
    plan = SparsityPlan(0.33, granularity="global")
    first = _pruner(layers, scores)
    first.apply(plan)
    weights = {p.name: p.module.weight.clone() for p in layers}
    counts = {n: c.to(torch.int32) for n, c in first.row_counts().items()}
    first.use_pruned(False)
    again = _pruner(layers, scores)
    again.targets = lambda plan: (_ for _ in ()).throw(AssertionError("searched again"))
    again.apply(plan, counts)
    assert all(torch.equal(p.module.weight, weights[p.name]) for p in layers)


def test_ranking_is_compact_and_round_trips(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    ranking = Ranking.from_values(scores, {p.name: 1.5 for p in layers})
    tensors = ranking.tensors()
    name = layers[0].name
    assert tensors[f"{name}::rank"].dtype == torch.int16 and tensors[f"{name}::sorted"].dtype == torch.bfloat16
    per_weight = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.endswith(("rank", "sorted")))
    assert per_weight == 4 * sum(p.numel for p in layers)
    back = Ranking.from_tensors(tensors)
    assert torch.equal(back[name].rank, ranking[name].rank) and back[name].mass == 1.5
    assert torch.equal(back[name].order, ranking[name].order)  # derived from the ranks: the same as built
    assert torch.equal(back.values(name), scores[name].bfloat16())


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_range_is_refused(bad):
    with pytest.raises(WorkbenchError, match=r"outside \[0, 1\)"):
        SparsityPlan(bad)


def test_unknown_pattern_and_granularity_are_refused(tokenizer):
    lm, layers, scores, _ = _setup(tokenizer)
    with pytest.raises(WorkbenchError, match="matches no prunable layer"):
        _pruner(layers, scores).apply(SparsityPlan(0.5, [("decoder.nothing.*", 0.1)]))
    with pytest.raises(WorkbenchError, match="granularity"):
        SparsityPlan(0.5, granularity="diagonal")
    with pytest.raises(WorkbenchError, match="PATTERN=SPARSITY"):
        parse_override("model.layers.0.*")


def test_two_four_prunes_the_two_least_important_of_every_four(tokenizer):
    lm, layers, scores, dense = _setup(tokenizer)
    pruner = _pruner(layers, scores)
    pruner.apply(SparsityPlan(0.5, [("model.layers.0.mlp.*", 0.0)], granularity="2:4"))
    for p in layers:
        w = weight_view(p)
        groups = (w == 0).reshape(w.shape[0], -1, 4)
        if p.name.startswith("model.layers.0.mlp"):
            assert not groups.any()
            continue
        assert (groups.sum(-1) == 2).all()  # exactly 2 of every 4
        s = scores[p.name].reshape(w.shape[0], -1, 4)
        lowest = s.argsort(dim=-1, stable=True)[..., :2]
        assert groups.gather(-1, lowest).all()
        assert torch.equal(pruner.mask(p.name), w == 0)
    assert pruner.row_counts() is None  # not prefixes of the row order: the session replays the plan
    pruner.apply(SparsityPlan(0.3))  # and back to row-wise, as if fresh
    fresh = _pruner(layers, scores)
    moved = {p.name: p.module.weight.clone() for p in layers}
    pruner.use_pruned(False)
    fresh.apply(SparsityPlan(0.3))
    assert all(torch.equal(moved[p.name], p.module.weight) for p in layers)


def test_n_m_needs_its_own_sparsity():
    with pytest.raises(WorkbenchError, match="2:4 prunes exactly 50%"):
        SparsityPlan(0.3, granularity="2:4")
    SparsityPlan(0.0, granularity="2:4")  # dense is fine


def _unit_pruner(lm, layers, scores):
    from core.model.units import units_of

    return Pruner(layers, Ranking.from_values(scores, {}), units=lambda kind: units_of(lm.model, layers, kind))


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
def test_head_granularity_removes_whole_heads_and_shared_kv_with_their_group(tokenizer, arch):
    from core.model.units import heads

    lm, layers, scores, dense = _setup(tokenizer, arch)
    units = heads(lm.model, layers)
    assert len(units) == 2 * 4  # 2 blocks x 4 heads
    pruner = _unit_pruner(lm, layers, scores)
    pruner.apply(SparsityPlan(0.5, granularity="head"))
    kind, removed = pruner.removed_units
    assert kind == "head" and int(removed.sum()) == 4
    _, unit_scores = pruner.units("head")
    for b in (0, 1):  # per target group (here all), the lowest-scoring heads go
        assert unit_scores[removed].max() <= unit_scores[~removed].min()
    by_name = {p.name: p for p in layers}
    for u, gone in zip(units, removed.tolist()):
        for part in u.parts:
            w = weight_view(by_name[part.layer])
            sl = w[part.start : part.stop] if part.axis == "row" else w[:, part.start : part.stop]
            assert bool((sl == 0).all()) == gone, (u.block, u.index, part)
    if arch == "llama":  # 4 query heads share 2 key/value heads: k/v rows go only with both heads of a group
        for b in (0, 1):
            group_gone = [all(removed[i] for i, u in enumerate(units) if u.block == b and u.group == g) for g in (0, 1)]
            k = weight_view(by_name[f"model.layers.{b}.self_attn.k_proj"])
            for g in (0, 1):
                assert bool((k[g * 8 : (g + 1) * 8] == 0).all()) == group_gone[g]
    total_zero = _zeros(layers)
    assert total_zero == sum(pruner.pruned_counts().values())
    assert all(torch.equal(pruner.mask(p.name), weight_view(p) == 0) for p in layers)


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_neuron_count_removes_that_many_mlp_neurons(tokenizer, arch):
    from core.model.units import neurons

    lm, layers, scores, dense = _setup(tokenizer, arch)
    pruner = _unit_pruner(lm, layers, scores)
    pruner.apply(SparsityPlan(0.0, granularity="neuron", count=10))
    units = neurons(lm.model, layers)
    kind, removed = pruner.removed_units
    assert int(removed.sum()) == 10
    by_name = {p.name: p for p in layers}
    up = [u.parts[0].layer for u in units]
    for u, gone in zip(units, removed.tolist()):
        row = weight_view(by_name[u.parts[0].layer])[u.index]
        col = weight_view(by_name[u.parts[-1].layer])[:, u.index]
        assert bool((row == 0).all()) == gone and bool((col == 0).all()) == gone
        bias = by_name[up[0]].module.bias
        if bias is not None and gone:
            assert by_name[u.parts[0].layer].module.bias[u.index] == 0
    attn = [p for p in layers if p.kind == "attn"]
    assert all(torch.equal(p.module.weight, dense[p.name]) for p in attn)  # attention untouched
    # unit scores are the sums over each neuron's rows and column
    _, s = pruner.units("neuron")
    u = units[3]
    want = sum(float(scores[pt.layer][pt.start].sum()) if pt.axis == "row" else float(scores[pt.layer][:, pt.start].sum())
               for pt in u.parts)
    assert float(s[3]) == pytest.approx(want, rel=1e-4)
    pruner.apply(SparsityPlan(0.3))  # back to row-wise, as if fresh
    moved = {p.name: p.module.weight.clone() for p in layers}
    pruner.use_pruned(False)
    fresh = _pruner(layers, scores)
    fresh.apply(SparsityPlan(0.3))
    assert all(torch.equal(moved[p.name], p.module.weight) for p in layers)


def test_count_needs_a_granularity_that_can_count():
    with pytest.raises(WorkbenchError, match="--count works with"):
        SparsityPlan(0.0, granularity="row", count=5)
    assert SparsityPlan(0.0, granularity="global", count=0).is_dense()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("kind", ["head", "neuron"])
def test_unit_masks_and_scores_follow_each_units_parts(tokenizer, arch, kind):
    """Dead rows and columns are exactly the removed units' parts (a shared key/value part: only when its whole
    group goes; untouched layers of a kind still get an all-kept entry), and a unit's score is the sum over its
    parts plus its share of the shared ones, for any removal."""
    from core.model.units import unit_masks, units_of

    lm, layers, scores, _ = _setup(tokenizer, arch)
    units = units_of(lm.model, layers, kind)
    shapes = {p.name: tuple(weight_view(p).shape) for p in layers}
    ranking = Ranking.from_values(scores, {})
    got_scores = ranking.unit_scores(units, kind)
    size = {}
    for u in units:
        size[(u.block, u.group)] = size.get((u.block, u.group), 0) + 1
    line = {(n, "row"): ranking.values(n).float().sum(1) for n in shapes} | {(n, "col"): ranking.values(n).float().sum(0) for n in shapes}
    for i, u in enumerate(units):
        want = sum(float(line[(p.layer, p.axis)][p.start:p.stop].sum()) for p in u.parts) + \
            sum(float(line[(p.layer, p.axis)][p.start:p.stop].sum()) for p in u.shared) / size[(u.block, u.group)]
        assert float(got_scores[i]) == pytest.approx(want, rel=2e-3, abs=1e-6)  # values() are bf16, the sums not
    g = torch.Generator().manual_seed(0)
    for trial in range(4):
        removed = torch.rand(len(units), generator=g) < (0.0, 0.3, 0.7, 1.0)[trial]
        rows, cols = unit_masks(units, removed, shapes)
        want_rows = {p.layer: torch.zeros(shapes[p.layer][0], dtype=torch.bool) for u in units for p in u.parts + u.shared if p.axis == "row"}
        want_cols = {p.layer: torch.zeros(shapes[p.layer][1], dtype=torch.bool) for u in units for p in u.parts + u.shared if p.axis == "col"}
        for u, gone in zip(units, removed.tolist()):
            whole = all(bool(removed[j]) for j, v in enumerate(units) if (v.block, v.group) == (u.block, u.group))
            for parts, dead in ((u.parts, gone), (u.shared, whole)):
                for p in parts:
                    if dead:
                        (want_rows if p.axis == "row" else want_cols)[p.layer][p.start:p.stop] = True
        assert rows.keys() == want_rows.keys() and cols.keys() == want_cols.keys()
        assert all(torch.equal(rows[n], want_rows[n]) for n in rows) and all(torch.equal(cols[n], want_cols[n]) for n in cols)
