"""Scorers compute what they claim, accumulate exactly, and resume after an interruption."""

import threading

import pytest
import torch

from core.attribution.runner import finish, run_scorer
from core.attribution.state import ScorerOptions, ScoreState
from core.data.tokens import batch_sequences, pack_windows
from core.errors import Cancelled, WorkbenchError
from core.model.layers import prunable_layers, weight_view
from core.settings import ScoreConfig
from tests.conftest import CORPUS, make_tiny

SUM = ScorerOptions.of(ScoreConfig(reduce="abs", target="logit", damping=0.0))  # the formulas these tests check


@pytest.fixture
def data(tokenizer):
    return pack_windows(tokenizer, CORPUS.split("\n\n")[1:20], 24)[:8]


def test_magnitude_is_abs_weight(tiny_llama):
    layers = prunable_layers(tiny_llama.model)
    state = run_scorer("magnitude", tiny_llama.model, layers, [])
    assert state.samples == 0 and not state.sums  # no data read
    scores = finish("magnitude", tiny_llama.model, layers, state)
    for p in layers:
        assert torch.equal(scores[p.name], weight_view(p).abs())


def test_wanda_matches_definition(tiny_llama, data):
    model, layers = tiny_llama.model, prunable_layers(tiny_llama.model)
    p = next(x for x in layers if x.name.endswith("mlp.down_proj"))
    captured = []
    handle = p.module.register_forward_hook(lambda m, i, o: captured.append(i[0].reshape(-1, i[0].shape[-1])))
    b = batch_sequences(data, 0, len(data))[0]
    ids, mask = b.ids, b.mask
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    handle.remove()
    x = captured[0][mask.reshape(-1).bool()]
    expected = weight_view(p).abs() * x.norm(dim=0).unsqueeze(0)
    state = run_scorer("wanda", model, layers, batch_sequences(data, 0, 3))
    assert state.sums[p.name].shape == (p.shape[1],)  # Wanda sums one number per input channel
    assert torch.allclose(finish("wanda", model, layers, state)[p.name], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scorer", ["lrp", "gradient"])
def test_batching_does_not_change_sums(tiny_llama, data, scorer):
    layers = prunable_layers(tiny_llama.model)
    one = run_scorer(scorer, tiny_llama.model, layers, batch_sequences(data, 0, len(data)), SUM)
    many = run_scorer(scorer, tiny_llama.model, layers, batch_sequences(data, 0, 3), SUM)
    assert one.samples == many.samples == len(data)
    for p in layers:
        assert torch.allclose(one.sums[p.name], many.sums[p.name], rtol=1e-4, atol=1e-6)


def test_gradient_is_weight_times_grad(tiny_llama, data):
    model, layers = tiny_llama.model, prunable_layers(tiny_llama.model)
    b = batch_sequences(data[:2], 0, 2)[0]
    ids, mask = b.ids, b.mask
    w = layers[0].module.weight
    w.requires_grad_(True)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    picked = logits.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    picked[valid].sum().backward()
    expected = (w * w.grad).detach()
    w.requires_grad_(False)
    w.grad = None
    state = run_scorer("gradient", model, layers, [b], SUM)
    assert torch.allclose(state.sums[layers[0].name], expected, rtol=1e-4, atol=1e-7)
    assert torch.allclose(finish("gradient", model, layers, state, SUM)[layers[0].name], expected / 2, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scorer", ["lrp", "gradient"])
def test_abs_sample_sums_per_sample_magnitudes(tiny_llama, data, scorer):
    layers = prunable_layers(tiny_llama.model)
    together = run_scorer(scorer, tiny_llama.model, layers, batch_sequences(data[:4], 0, 4), SUM.but(reduce="abs-sample"))
    singles = [run_scorer(scorer, tiny_llama.model, layers, batch_sequences([s], 0, 1), SUM) for s in data[:4]]
    for p in layers:
        expected = sum(st.sums[p.name].abs() for st in singles)
        assert torch.allclose(together.sums[p.name], expected, rtol=1e-4, atol=1e-6)
    signed = run_scorer(scorer, tiny_llama.model, layers, batch_sequences(data[:4], 0, 4), SUM)
    name = layers[0].name
    assert (signed.sums[name].abs() <= together.sums[name] + 1e-6).all()
    assert not torch.allclose(signed.sums[name].abs(), together.sums[name])


@pytest.mark.parametrize("scorer", ["lrp", "wanda"])
def test_cancelled_scoring_keeps_whole_batches_and_resumes_to_the_same_sums(tiny_llama, data, scorer):
    layers = prunable_layers(tiny_llama.model)
    batches = batch_sequences(data, 0, 2)
    full = run_scorer(scorer, tiny_llama.model, layers, batches)
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p.samples_done)
        if p.samples_done >= 4:
            cancel.set()

    part = ScoreState()
    with pytest.raises(Cancelled, match="scoring cancelled"):
        run_scorer(scorer, tiny_llama.model, layers, batches, state=part, progress=progress, cancel=cancel)
    assert part.samples == 4 and seen == [2, 4] and not part.torn
    resumed = run_scorer(scorer, tiny_llama.model, layers, batches,
                         state=ScoreState({k: v.clone() for k, v in part.sums.items()}, part.samples, part.tokens))
    assert resumed.samples == full.samples
    for p in layers:
        assert torch.allclose(resumed.sums[p.name], full.sums[p.name], rtol=1e-4, atol=1e-6)


def test_random_is_seeded(tiny_llama):
    layers = prunable_layers(tiny_llama.model)
    a, b, c = (finish("random", tiny_llama.model, layers, ScoreState(), ScorerOptions.of(ScoreConfig(reduce="abs", seed=s))) for s in (1, 1, 2))
    name = layers[0].name
    assert torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])


def test_targets_differ(tiny_llama, data):
    layers = prunable_layers(tiny_llama.model)
    batches = batch_sequences(data[:2], 0, 2)
    sums = {t: run_scorer("lrp", tiny_llama.model, layers, batches, ScorerOptions.of(ScoreConfig(reduce="abs", target=t))).sums[layers[0].name]
            for t in ("logit", "logprob", "predicted")}
    assert not torch.allclose(sums["logit"], sums["logprob"])
    assert not torch.allclose(sums["logit"], sums["predicted"])


def test_unknown_scorer_and_target_are_one_line_errors(tiny_llama):
    layers = prunable_layers(tiny_llama.model)
    with pytest.raises(WorkbenchError, match="unknown scorer 'psychic'"):
        run_scorer("psychic", tiny_llama.model, layers, [])
    with pytest.raises(WorkbenchError, match="unknown target"):
        run_scorer("lrp", tiny_llama.model, layers, [], ScorerOptions.of(ScoreConfig(reduce="abs", target="vibes")))


def test_gpt2_conv1d_scores_are_out_by_in(tokenizer, data):
    lm = make_tiny("gpt2", tokenizer)
    layers = prunable_layers(lm.model)
    c_fc = next(p for p in layers if p.name.endswith("mlp.c_fc"))
    assert c_fc.transposed and c_fc.shape == (128, 32)
    state = run_scorer("lrp", lm.model, layers, batch_sequences(data[:2], 0, 2))
    assert state.sums[c_fc.name].shape == (128, 32)


@pytest.mark.parametrize("reduce", ["token-rms", "token-abs"])
def test_per_token_reductions_match_their_definition(tiny_llama, data, reduce):
    """token-rms: |w| sqrt(mean_t x^2 g^2); token-abs: |w| mean_t |x||g|, g the output gradient at each token."""
    model, layers = tiny_llama.model, prunable_layers(tiny_llama.model)
    p = next(x for x in layers if x.name.endswith("mlp.up_proj"))
    batches = batch_sequences(data[:3], 0, 3)
    xs, gs = [], []

    def keep(module, inputs, output):
        xs.append(inputs[0].detach())
        output.register_hook(lambda g: gs.append(g.detach()))

    handle = p.module.register_forward_hook(keep)
    state = run_scorer("gradient", model, layers, batches, SUM.but(reduce=reduce))
    handle.remove()
    mask = batches[0].mask
    x, g = xs[0].reshape(-1, xs[0].shape[-1]), gs[0].reshape(-1, gs[0].shape[-1])  # [tokens, in], [tokens, out]
    per_token = g.unsqueeze(2) * x.unsqueeze(1) * weight_view(p).unsqueeze(0)  # [tokens, out, in]: w x g
    tokens = int(mask.sum())
    want = per_token.pow(2).sum(0).div(tokens).sqrt() if reduce == "token-rms" else per_token.abs().sum(0) / tokens
    got = finish("gradient", model, layers, state, SUM.but(reduce=reduce))[p.name]
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-8)
    split = run_scorer("gradient", model, layers, batch_sequences(data[:3], 0, 1), SUM.but(reduce=reduce))
    assert torch.allclose(split.sums[p.name], state.sums[p.name], rtol=1e-4, atol=1e-9)  # batching changes nothing


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_logit_target_without_full_logits_is_the_same_target(tokenizer, data, arch):
    """The `logit` target reads only each next token's row of the head; it must equal the full-logits target."""
    from core.attribution.targets import model_target, next_token_target, plain_head

    lm = make_tiny(arch, tokenizer)
    assert plain_head(lm.model) is not None
    b = batch_sequences(data[:3], 0, 3)[0]
    b.mask[2, 10:] = 0  # a padded row
    embeds = lm.model.get_input_embeddings()(b.ids)
    fast = model_target(lm.model, embeds, b, "logit")
    full = next_token_target(lm.model(inputs_embeds=embeds, attention_mask=b.mask).logits, b, "logit")
    assert torch.allclose(fast, full, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("scorer", ["lrp", "gradient"])
def test_unit_relevance_is_the_relevance_of_the_units_output(tiny_llama, data, scorer):
    """Signed sums: a neuron's relevance is its down-projection column's weight relevance summed over rows
    (x_j (W^T g)_j = sum_i w_ij x_j g_i); a head's is that summed over its output-projection columns."""
    from core.attribution.runner import finish_units
    from core.model.units import heads, neurons

    model, layers = tiny_llama.model, prunable_layers(tiny_llama.model)
    state = run_scorer(scorer, model, layers, batch_sequences(data[:3], 0, 3), SUM)
    units = finish_units(scorer, model, layers, state, SUM)
    assert set(units) == {"head", "neuron"}
    for kind, listed in (("neuron", neurons(model, layers)), ("head", heads(model, layers))):
        assert units[kind].shape == (len(listed),)
        for i, u in enumerate(listed):
            col = next(p for p in u.parts if p.axis == "col")
            expected = state.sums[col.layer][:, col.start : col.stop].sum() / 3
            assert float(units[kind][i]) == pytest.approx(float(expected), rel=1e-3, abs=1e-6)
    per_sample = run_scorer(scorer, model, layers, batch_sequences(data[:3], 0, 3), SUM.but(reduce="abs-sample"))  # abs-sample: |.| per sample
    singles = [finish_units(scorer, model, layers, run_scorer(scorer, model, layers, batch_sequences([s], 0, 1), SUM), SUM)
               for s in data[:3]]
    want = sum(s["head"].abs() for s in singles) / 3
    got = finish_units(scorer, model, layers, per_sample, SUM)["head"]
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("scorer", ["lrp", "gradient"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_recomputed_blocks_give_the_same_sums(tokenizer, data, scorer, arch):
    """Checkpointed blocks re-run their forward pass in the backward pass; the hooks must count each token once."""
    from dataclasses import replace

    from core.model.recompute import recomputed_blocks

    lm = make_tiny(arch, tokenizer)
    layers = prunable_layers(lm.model)
    batches = batch_sequences(data[:4], 0, 2)
    for opts in (SUM, SUM.but(reduce="token-rms")):
        kept = run_scorer(scorer, lm.model, layers, batches, opts)
        redone = run_scorer(scorer, lm.model, layers, batches, replace(opts, recompute=True))
        assert set(kept.sums) == set(redone.sums)
        for k in kept.sums:
            assert torch.allclose(kept.sums[k], redone.sums[k], rtol=1e-4, atol=1e-6), k
    mlp = next(p for p in layers if p.block == 0).module  # a layer inside block 0
    calls = []
    handle = mlp.register_forward_hook(lambda *a: calls.append(1))
    run_scorer(scorer, lm.model, layers, batches, SUM)
    plain = len(calls)
    run_scorer(scorer, lm.model, layers, batches, replace(SUM, recompute=True))
    handle.remove()
    assert plain == len(batches) and len(calls) - plain == 2 * len(batches)  # really re-run in the backward pass
    block = lm.model.get_submodule(layers[0].name.rsplit(".", 2)[0]) if arch == "llama" else None
    with recomputed_blocks(lm.model, layers):
        pass
    assert block is None or "forward" not in block.__dict__  # undone


def test_random_contrast_draws_each_set_apart(tmp_path, tiny_model_dir):
    """A contrastive random score is a random ranking: with one draw for both sets R_diff was zero everywhere and
    the pruned weights were the sort's tie order, the same for every seed. The reference draw is unchanged."""
    from core.attribution.keys import stream_seed
    from core.engine import Workbench
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import ModelSpec, ScoreConfig

    wb = Workbench(Session.create(tmp_path, "r"))
    wb.load(ModelSpec(str(tiny_model_dir)))

    def pruned(seed):
        wb.score(ScoreConfig(scorer="random", seed=seed, reference="builtin:general", contrastive="builtin:repetition",
                             samples=2, seq_len=8))
        wb.prune(SparsityPlan(0.1, granularity="global"))
        return {p.name: (p.module.weight == 0).clone() for p in wb.layers}

    a, b = pruned(0), pruned(2)
    assert any(not torch.equal(a[n], b[n]) for n in a)  # another seed, other weights
    per_layer = [float(a[n].float().mean()) for n in a]
    assert max(per_layer) < 0.5  # spread over the model, not the first layers in the sort's tie order
    assert stream_seed(0, "reference") == 0 and len({stream_seed(s, w) for s in range(3)
                                                      for w in ("reference", "contrastive", "paired")}) == 9
