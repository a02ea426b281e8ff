"""Reconstruction after a mask (`prune --reconstruct`): the kept weights move so each layer's output changes less,
the pruned weights stay zero, and the result lives with its plan in the session and the export."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from safetensors import safe_open

from core.engine import Workbench
from core.pruning.plan import SparsityPlan
from core.pruning.reconstruct import LayerStatistics, reconstruct
from core.session.store import Session
from core.settings import ModelSpec, ScoreConfig


def _layer(seed=0, out=48, inn=64, tokens=300):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inn, generator=g)
    X = torch.randn(tokens, inn, generator=g) @ torch.randn(inn, inn, generator=g) * 0.3  # correlated, as activations are
    stats = LayerStatistics()
    for chunk in X.split(64):
        stats.add_batch(chunk)
    return W, X, stats.H


def _error(W, V, X):
    return float(((X @ (W - V).T) ** 2).sum().sqrt() / ((X @ W.T) ** 2).sum().sqrt())


@pytest.mark.parametrize("refine", [0, 16])
def test_reconstruction_keeps_the_mask_and_lowers_the_output_error(refine):
    W, X, H = _layer()
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    new, kept = reconstruct(W, mask, H, refine=refine)
    assert kept is mask and bool((new[mask] == 0).all()) and not torch.equal(new[~mask], W[~mask])
    assert _error(W, new, X) < 0.95 * _error(W, W * ~mask, X)
    assert torch.allclose(reconstruct(W, torch.zeros_like(mask), H, refine=refine)[0], W, atol=1e-5)


def test_the_refinement_reaches_the_least_squares_optimum():
    W, X, H = _layer(2)
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    Hd = H + 0.01 * torch.diag(H).mean() * torch.eye(H.shape[0])  # the damping reconstruct applies
    best = torch.zeros_like(W)
    for r in range(W.shape[0]):
        k = ~mask[r]
        best[r, k] = torch.linalg.solve(Hd[k][:, k], Hd[k] @ W[r])
    sparsegpt, refined = reconstruct(W, mask, H, refine=0)[0], reconstruct(W, mask, H, refine=32)[0]
    assert _error(W, refined, X) <= _error(W, best, X) * 1.01 < _error(W, sparsegpt, X)


@pytest.mark.parametrize("within", ["row", "layer", (2, 4)])
def test_reselection_keeps_the_plans_counts_and_beats_its_fixed_mask(within):
    """SparseGPT's own choice (OBS saliency as the pass proceeds) prunes as many weights per row, per layer or per
    N:M group as the plan, and leaves less output error than reconstructing the plan's own (Wanda) mask."""
    W, X, H = _layer(4, out=40, inn=200)
    wanda = W.abs() * X.pow(2).sum(0).sqrt()
    if within == (2, 4):
        g = wanda.view(40, 50, 4)
        mask = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(2, 2, largest=False).indices, True).view(40, 200)
    else:
        mask = wanda <= wanda.median(1, keepdim=True).values if within == "row" else wanda <= wanda.median()
    fixed, _ = reconstruct(W, mask, H, refine=0, columns=64)
    chosen, by = reconstruct(W, mask, H, refine=0, columns=64, reselect=within)
    assert not torch.equal(by, mask) and bool((chosen[by] == 0).all())
    if within == "row":
        assert torch.equal(by.sum(1), mask.sum(1))
    elif within == "layer":
        assert int(by.sum()) == int(mask.sum())
        assert [int(by[:, i:i + 64].sum()) for i in (0, 64, 128)] == [round(int(mask.sum()) * f) for f in (64 / 200, 64 / 200, 64 / 200)]
    else:
        assert bool((by.view(40, 50, 4).sum(2) == 2).all())
    assert _error(W, chosen, X) < _error(W, fixed, X)


def test_sequential_wanda_rechooses_by_the_inputs_it_is_given():
    """`rechoose`: no update, the plan's counts, and Wanda's |w| ||x|| on the inputs behind H."""
    from core.pruning.reconstruct import rechoose

    W, X, H = _layer(5, out=16, inn=64)
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask[:, :32] = True  # a plan that prunes the first half of each row
    new, by = rechoose(W, mask, H, "row")
    assert torch.equal(by.sum(1), mask.sum(1)) and torch.equal(new[~by], W[~by]) and bool((new[by] == 0).all())
    metric = W.abs() * X.pow(2).sum(0).sqrt()
    assert torch.equal(by, metric <= metric.median(1, keepdim=True).values)  # 64 columns: 32 go per row
    _, pattern = rechoose(W, mask, H, (2, 4))
    assert bool((pattern.view(16, 16, 4).sum(2) == 2).all())


def _scored(tiny_model_dir, tmp_path, name="r"):
    wb = Workbench(Session.create(tmp_path / "store", name))
    wb.load(ModelSpec(str(tiny_model_dir), "cpu", "float32"))
    wb.score(ScoreConfig(reference="builtin:general", scorer="wanda", samples=8, seq_len=32))
    return wb


def _weights(wb):
    return {p.name: wb.pruner.state[p.name].pruned.clone() for p in wb.layers}


@pytest.mark.parametrize("plan", [SparsityPlan(0.5), SparsityPlan(0.5, [], "2:4"), SparsityPlan(0.0, [], "neuron", count=16)],
                         ids=["row", "2:4", "neurons"])
def test_reconstruct_any_plan_and_keep_it_with_its_plan(tiny_model_dir, tmp_path, plan):
    wb = _scored(tiny_model_dir, tmp_path)
    wb.prune(plan)
    masks = {p.name: wb.pruner.mask(p.name) for p in wb.layers}
    mask_only = _weights(wb)
    rec = wb.reconstruct(choose="plan")  # the plan's own mask (at N:M the default lets SparseGPT choose)
    assert rec.layers > 0 and rec.samples == 8 and 0 <= rec.error < 1
    rebuilt = _weights(wb)
    assert any(not torch.equal(rebuilt[n], mask_only[n]) for n in rebuilt)
    for p in wb.layers:  # the plan's zeros stay zeros
        assert bool((rebuilt[p.name].t() if p.transposed else rebuilt[p.name])[masks[p.name]].eq(0).all())
    assert wb.prune_summary().sparsity == pytest.approx(wb.pruner.achieved_sparsity())
    wb.session.close()

    again = Workbench(Session.open(tmp_path / "store", "r"))  # a new process: the session brings it back
    again.ensure_model()
    again.restore_plan()
    assert all(torch.equal(again.pruner.state[n].pruned, rebuilt[n]) for n in rebuilt)
    again.prune(SparsityPlan(0.3))  # another plan is mask-only ...
    assert not again.prune_summary().reconstructed
    again.undo()  # ... and undo comes back to the reconstructed state without recomputing
    assert again.prune_summary().reconstructed
    assert all(torch.equal(again.pruner.state[n].pruned, rebuilt[n]) for n in rebuilt)
    again.prune(plan, mask_only=True)  # dropped on request: the plan's mask alone
    assert all(torch.equal(again.pruner.state[n].pruned, mask_only[n]) for n in mask_only)
    assert again.session.manifest.reconstruction is None and not again.prune_summary().reconstructed
    again.session.close()


def test_prune_reconstruct_on_the_cli_and_in_the_export(invoke, tiny_model_dir, tmp_path):
    invoke("score", "--session", "c", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--samples", "8",
           "--seq-len", "32", "--scorer", "wanda")
    res = invoke("prune", "--session", "c", "--sparsity", "0.5", "--reconstruct")
    assert "reconstructed" in res.stdout and "output error left" in res.stdout
    before = json.loads(invoke("eval", "--session", "c", "--metrics", "perplexity", "--json").stdout)
    invoke("export", "--session", "c", "--out", str(tmp_path / "model"))
    info = json.loads((tmp_path / "model" / "pruning.json").read_text())
    assert info["reconstructed"] is True and info["sparsity"] == pytest.approx(0.5, abs=0.01)
    m = json.loads((tmp_path / "store" / "c" / "manifest.json").read_text())
    with safe_open(str(tmp_path / "store" / "c" / m["reconstruction"]["file"]), framework="pt") as f, \
            safe_open(str(tmp_path / "model" / "model.safetensors"), framework="pt") as g:
        name = next(iter(f.keys()))
        assert torch.equal(f.get_tensor(name), g.get_tensor(name + ".weight"))
    assert "reconstructed: this plan" in invoke("prune", "--session", "c", "--sparsity", "0.5").stdout  # the state stays
    invoke("prune", "--session", "c", "--sparsity", "0.5", "--mask-only")
    after = json.loads(invoke("eval", "--session", "c", "--metrics", "perplexity", "--json").stdout)
    assert after["metrics"]["perplexity"]["pruned"] != before["metrics"]["perplexity"]["pruned"]
    res = invoke("prune", "--session", "c", "--sparsity", "0", "--reconstruct", ok=False)
    assert "nothing is pruned" in res.output


def test_sparsegpt_chooses_its_weights_within_the_plans_counts(tiny_model_dir, tmp_path, invoke):
    """The sparsegpt ranking sets the counts; reconstruction picks the weights (OBS saliency), per row here, and
    whole-unit plans refuse SparseGPT's choice with a way out."""
    from core.errors import WorkbenchError

    wb = Workbench(Session.create(tmp_path / "store", "s"))
    wb.load(ModelSpec(str(tiny_model_dir), "cpu", "float32"))
    wb.score(ScoreConfig(reference="builtin:general", scorer="sparsegpt", samples=8, seq_len=32))
    assert wb.default_choice() == "sparsegpt"
    assert wb.prune(SparsityPlan(0.5)).chosen_on_reconstruct  # the mask alone is SparseGPT's preview
    planned = {p.name: wb.pruner.mask(p.name) for p in wb.layers}
    rec = wb.reconstruct()
    assert rec.chosen_by == "sparsegpt" and wb.session.manifest.reconstruction.chosen_by == "sparsegpt"
    moved = 0
    for p in wb.layers:
        W = wb.pruner.state[p.name].pruned
        zeros = (W.t() if p.transposed else W) == 0
        assert torch.equal(zeros.sum(1), planned[p.name].sum(1))  # the plan's share per row, exactly
        moved += int((zeros & ~planned[p.name]).sum())
    assert moved > 0  # ... but not the plan's weights
    wb.export(str(tmp_path / "out"))
    with safe_open(str(tmp_path / "out" / "masks.safetensors"), framework="pt") as f:  # the masks SparseGPT chose
        for p in wb.layers:
            W = wb.pruner.state[p.name].pruned
            assert torch.equal(f.get_tensor(p.name + ".weight"), (W.t() if p.transposed else W) == 0)
    assert wb.reconstruct(choose="plan").chosen_by == "plan"
    before = {p.name: wb.pruner.original(p.name) for p in wb.layers}
    assert wb.reconstruct(choose="wanda").chosen_by == "wanda"
    for p in wb.layers:  # nothing updated: every weight is its original or zero
        W = wb.pruner.state[p.name].pruned
        W = (W.t() if p.transposed else W)
        assert bool(((W == before[p.name]) | (W == 0)).all())
    wb.prune(SparsityPlan(0.0, [], "neuron", count=8))
    with pytest.raises(WorkbenchError, match="--choose plan"):
        wb.reconstruct(choose="sparsegpt")
    assert wb.reconstruct().chosen_by == "plan"  # whole units are the plan's choice by default
    wb.session.close()
    invoke("score", "--session", "t", "--model", str(tiny_model_dir), "--reference", "builtin:general", "--samples", "4",
           "--seq-len", "32", "--scorer", "sparsegpt")
    out = invoke("prune", "--session", "t", "--sparsity", "0.5", "--granularity", "2:4").stdout
    assert "SparseGPT choosing the weights" in out  # the method reconstructs without being asked
    assert "reconstructed" not in invoke("prune", "--session", "t", "--sparsity", "0.4", "--mask-only").stdout


def test_a_cancelled_reconstruction_leaves_the_mask_only_weights(tiny_model_dir, tmp_path):
    import threading

    from core.errors import Cancelled

    wb = _scored(tiny_model_dir, tmp_path)
    wb.prune(SparsityPlan(0.5))
    mask_only = _weights(wb)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        wb.reconstruct(progress=lambda done, total: cancel.set(), cancel=cancel)  # after the first block
    assert all(torch.equal(wb.pruner.state[n].pruned, mask_only[n]) for n in mask_only)
    assert wb.session.manifest.reconstruction is None and wb.pruner.reconstructed_for is None
    wb.session.close()


def test_the_tui_reconstructs_in_a_worker(tiny_model_dir, tmp_path):
    from tui_pilot import loaded_and_scored, run, until
    from workbench.app import WorkbenchApp

    async def main():
        app = WorkbenchApp(session="rec", model=str(tiny_model_dir), store=tmp_path / "store")
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded_and_scored(pilot)
            app.jobs.wb.prune(SparsityPlan(0.5))
            await pilot.press("ctrl+k")
            await until(pilot, lambda: app.jobs.wb.pruner.reconstructed_for is not None and "reconstruct" not in app._jobs,
                        what="reconstruction")
            assert app.jobs.wb.session.manifest.reconstruction is not None

    run(main())


def test_the_reconstruction_bench_prints_its_table(tiny_model_dir):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "bench/reconstruction.py", "--model", str(tiny_model_dir), "--scorer", "wanda",
                          "--samples", "4", "--windows", "4", "--device", "cpu", "--dtype", "float32"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 50 %") or line.startswith("| 2:4")]
    assert len(rows) == 2 and "mask only" in out.stdout


def test_reconstruction_lets_sparsegpt_choose_single_weights_whatever_the_ranking(tiny_model_dir, tmp_path):
    """A plan of single weights of another ranking (row, or 2:4) reconstructs with SparseGPT's choice within the
    plan's counts; --choose plan keeps the mask; a head plan keeps its heads; only a reconstructing ranking makes
    prune reconstruct unasked."""
    wb = Workbench(Session.create(tmp_path / "store", "nm"))
    wb.load(ModelSpec(str(tiny_model_dir), "cpu", "float32"))
    wb.score(ScoreConfig(reference="builtin:general", scorer="wanda", samples=8, seq_len=32))
    assert not wb.reconstructs_by_default()
    summary = wb.prune(SparsityPlan(0.5))
    assert summary.chosen_on_reconstruct and not summary.reconstructed and wb.default_choice() == "sparsegpt"
    def zeros() -> dict[str, torch.Tensor]:
        return {p.name: (lambda W: (W.t() if p.transposed else W) == 0)(wb.pruner.state[p.name].pruned) for p in wb.layers}

    planned = zeros()
    assert wb.reconstruct().chosen_by == "sparsegpt"
    chosen = zeros()
    assert all(torch.equal(chosen[n].sum(1), planned[n].sum(1)) for n in planned)  # the plan's count per row
    assert any(not torch.equal(chosen[n], planned[n]) for n in planned)  # ... of SparseGPT's weights
    assert wb.reconstruct(choose="plan").chosen_by == "plan"
    assert all(torch.equal(z, planned[n]) for n, z in zeros().items())
    summary = wb.prune(SparsityPlan(0.5, [], "2:4"))
    assert summary.chosen_on_reconstruct and wb.default_choice() == "sparsegpt"
    assert wb.reconstruct().chosen_by == "sparsegpt"
    for p in wb.layers:
        W = wb.pruner.state[p.name].pruned
        zeros = (W.t() if p.transposed else W) == 0  # [out, in]: groups of 4 inputs
        assert bool((zeros.reshape(zeros.shape[0], -1, 4).sum(-1) >= 2).all())  # two of every four
    assert not wb.prune(SparsityPlan(0.5, [], "head")).chosen_on_reconstruct and wb.default_choice() == "plan"
    assert wb.reconstruct().chosen_by == "plan"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _gemma3(tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           max_position_embeddings=256, pad_token_id=0, eos_token_id=0, bos_token_id=0)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "gpt_neox", "gemma3"])
def test_the_blocks_arguments_are_captured_without_running_the_blocks(arch, tokenizer):
    """The capture pass skips the blocks' compute, yet gives each block the same arguments a real pass does (Gemma's
    sliding and full layers get different masks), and leaves every block's forward as it was."""
    from conftest import make_tiny
    from core.data.tokens import Batch
    from core.model.layers import block_prefix, prunable_layers
    from core.pruning.reconstruct import _block_arguments

    model = _gemma3(tokenizer) if arch == "gemma3" else make_tiny(arch, tokenizer).model
    layers = prunable_layers(model)
    blocks = [model.get_submodule(p) for p in dict.fromkeys(block_prefix(x) for x in layers)]
    ids = torch.randint(1, len(tokenizer), (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    batches = [Batch(ids, mask), Batch(ids[:1, :5], mask[:1, :5])]

    real_first, real_rest = [], [[] for _ in blocks]

    def observe(b):
        def hook(_m, args, kwargs):
            kwargs = dict(kwargs)
            hidden, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
            if b == 0:
                real_first.append(hidden)
            real_rest[b].append((args, kwargs))
        return hook

    hooks = [blk.register_forward_pre_hook(observe(b), with_kwargs=True) for b, blk in enumerate(blocks)]
    with torch.no_grad():
        before = [model(input_ids=x.ids, attention_mask=x.mask, use_cache=False).logits for x in batches]
    for h in hooks:
        h.remove()

    originals = [blk.forward for blk in blocks]
    ran = []
    counting = [p.module.register_forward_hook(lambda *_: ran.append(1)) for p in layers]
    first, rest = _block_arguments(model, blocks, batches, torch.device("cpu"))
    for h in counting:
        h.remove()
    assert not ran  # no block computed
    assert _same(first, real_first) and _same(rest, real_rest)
    if arch == "gemma3":
        assert not _same(rest[0][0][1], rest[2][0][1])  # the sliding layer's mask is not the full layer's
    assert all("forward" not in blk.__dict__ and blk.forward == f for blk, f in zip(blocks, originals))
    with torch.no_grad():
        after = [model(input_ids=x.ids, attention_mask=x.mask, use_cache=False).logits for x in batches]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_a_model_that_needs_its_blocks_outputs_between_them_is_captured_by_running_them():
    """Code between blocks that cannot take a block's input in place of its output: the capture runs the blocks."""
    from core.data.tokens import Batch
    from core.pruning.reconstruct import _block_arguments

    class Block(torch.nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.proj = torch.nn.Linear(d_in, d_out)

        def forward(self, hidden, scale=1.0):
            return self.proj(hidden) * scale

    class Widening(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.blocks = torch.nn.ModuleList([Block(4, 8), Block(4, 4)])

        def forward(self, input_ids, attention_mask=None, use_cache=False):
            h = self.blocks[0](self.embed(input_ids), scale=2.0)
            return self.blocks[1](h.unflatten(-1, (2, 4)).sum(-2), scale=3.0)  # needs block 0's 8 features

    model = Widening()
    ids = torch.randint(0, 10, (2, 5))
    first, rest = _block_arguments(model, list(model.blocks), [Batch(ids, torch.ones_like(ids))], torch.device("cpu"))
    assert torch.equal(first[0], model.embed(ids)) and [r[0][1] for r in rest] == [{"scale": 2.0}, {"scale": 3.0}]
    assert all("forward" not in blk.__dict__ for blk in model.blocks)


def test_true_sequential_calibrates_each_group_on_the_groups_before_it_as_reconstructed(tiny_model_dir, tmp_path):
    """`true_sequential`: q, k and v (one input) are reconstructed as before; o_proj, gate/up and down then see the
    inputs their block's earlier groups give as reconstructed, so their weights differ; the plan's zeros stay."""
    from core.pruning.reconstruct import _input_groups

    wb = _scored(tiny_model_dir, tmp_path)
    block = wb.lm.model.get_submodule("model.layers.0")
    members = [p for p in wb.layers if p.block == 0]
    ids = torch.randint(1, 100, (1, 6))
    hidden = wb.lm.model.model.embed_tokens(ids)
    position = wb.lm.model.model.rotary_emb(hidden, torch.arange(6).unsqueeze(0))
    groups = _input_groups(block, members, hidden, ((), {"position_embeddings": position}), contextlib.nullcontext, [])
    short = [[p.name.split(".")[-1] for p in g] for g in groups]
    assert short == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]

    wb.prune(SparsityPlan(0.5))
    masks = {p.name: wb.pruner.mask(p.name) for p in wb.layers}
    wb.reconstruct(choose="plan")
    plain = _weights(wb)
    wb.reconstruct(choose="plan", true_sequential=True)
    chained = _weights(wb)
    for p in members:
        same = torch.allclose(plain[p.name], chained[p.name], atol=1e-6)
        assert same == p.name.endswith(("q_proj", "k_proj", "v_proj")), p.name
    for p in wb.layers:
        assert bool((chained[p.name].t() if p.transposed else chained[p.name])[masks[p.name]].eq(0).all())
    wb.session.close()
