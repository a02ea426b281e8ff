"""`--device-map`: a model spread by accelerate (CPU blocks, disk-offloaded blocks on `meta`) scores,
prunes, evaluates, generates and exports exactly like the same model on one device.

This machine has no GPU, so the split here is CPU + disk: the offloaded blocks' weights are on the
`meta` device between passes and stream in through accelerate's hooks, which is the path a GPU map
also takes (hooks moving activations, weights read from a map). GPU maps ran on the device machine
(README, "Scale").
"""

import json

import pytest
import torch

from core.attribution.runner import finish, finish_units, run_scorer
from core.attribution.state import ScorerOptions
from core.data.tokens import batch_sequences
from core.errors import WorkbenchError
from core.model.layers import prunable_layers
from core.model.loading import load_model
from core.model.placement import input_device, is_dispatched, parse_device_map, placement
from core.pruning.masks import Pruner
from core.pruning.ranking import Ranking
from core.pruning.plan import SparsityPlan
from core.settings import ScoreConfig

#: the tiny Llama of conftest (2 blocks): block 1 and the head offloaded to disk, the rest on the CPU
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu",
         "model.rotary_emb": "cpu", "lm_head": "disk"}


#: with a GPU (the device machine): block 0 on it, block 1 offloaded to CPU RAM (run on the GPU), the head on disk
GPU_SPLIT = {**SPLIT, "model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "model.norm": 0,
             "model.rotary_emb": 0}
MAPS = [SPLIT] + ([GPU_SPLIT] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=MAPS, ids=lambda m: "gpu+cpu+disk" if 0 in m.values() else "cpu+disk")
def pair(tiny_model_dir, request):
    plain = load_model(str(tiny_model_dir), "cpu", "float32")
    split = load_model(str(tiny_model_dir), "cpu", "float32", device_map=json.dumps(request.param))
    return plain, split


TOL = 1e-4 if torch.cuda.is_available() else 1e-5  # CUDA kernels sum in another order than the CPU's


@pytest.fixture(scope="module")
def batches(tokenizer):
    torch.manual_seed(0)
    seqs = torch.randint(1, len(tokenizer), (4, 12)).tolist()
    return batch_sequences(seqs, 0, 2)


def test_the_split_model_really_is_split(pair):
    _, split = pair
    assert is_dispatched(split.model)
    where = placement(split.model)
    gpu = torch.device("cuda", 0) if split.model.hf_device_map["model.layers.0"] == 0 else None
    assert set(where) == ({"cuda:0", "cpu (offloaded)", "disk"} if gpu else {"cpu", "disk"})
    assert all(n > 0 for n in where.values())
    q = split.model.model.layers[1].self_attn.q_proj
    assert q.weight.device.type == "meta"  # offloaded: streamed in per pass
    assert input_device(split.model) == (gpu or torch.device("cpu"))
    assert split.info()["placement"] == where


@pytest.mark.parametrize("scorer,options", [
    ("lrp", ScorerOptions.of(ScoreConfig(reduce="abs-sample"))),
    ("lrp", ScorerOptions.of(ScoreConfig(rules="cplrp", reduce="token-rms"))),
    ("lrp", ScorerOptions.of(ScoreConfig(reduce="abs-sample"), recompute=True)),
    ("gradient", ScorerOptions.of(ScoreConfig(reduce="token-abs"))),
    ("wanda", ScorerOptions.of(ScoreConfig(reduce="abs-sample"))),
    ("cap", ScorerOptions.of(ScoreConfig(reduce="abs-sample"))),
    ("cap-linear", ScorerOptions.of(ScoreConfig(reduce="abs-sample"))),
    ("magnitude", ScorerOptions.of(ScoreConfig(reduce="abs-sample"))),
    ("random", ScorerOptions.of(ScoreConfig(reduce="abs-sample"))),
])
def test_every_scorer_gives_the_same_scores_split(pair, batches, scorer, options):
    got = []
    for lm in pair:
        layers = prunable_layers(lm.model)
        state = run_scorer(scorer, lm.model, layers, batches, options)
        got.append((finish(scorer, lm.model, layers, state, options), finish_units(scorer, lm.model, layers, state, options)))
    (plain, plain_units), (split, split_units) = got
    tol = TOL * 100 if scorer == "cap" and torch.cuda.is_available() else TOL  # CAP's damage: a difference of near-equal sums
    assert set(plain) == set(split)
    for name in plain:
        assert split[name].device.type == "cpu"
        torch.testing.assert_close(split[name], plain[name], rtol=tol, atol=tol / 10, msg=name)
    assert set(plain_units) == set(split_units)
    for kind in plain_units:
        torch.testing.assert_close(split_units[kind], plain_units[kind], rtol=tol, atol=tol / 10)
    if scorer in ("lrp", "gradient"):
        assert any(bool(s.any()) for s in split.values())


@pytest.mark.parametrize("plan", [SparsityPlan(0.5), SparsityPlan(0.3, granularity="row"),
                                  SparsityPlan(0.25, granularity="neuron"), SparsityPlan(0.25, granularity="head"),
                                  SparsityPlan(0.5, granularity="2:4")])
def test_pruning_a_split_model_matches_the_plain_one(pair, batches, plan):
    ids = torch.cat([b.ids for b in batches])
    logits = []
    for lm in pair:
        layers = prunable_layers(lm.model)
        ranking = Ranking.from_values(finish("wanda", lm.model, layers, run_scorer("wanda", lm.model, layers, batches)), {})
        pruner = Pruner(layers, ranking, units=lambda kind, lm=lm, layers=layers: __import__(
            "core.model.units", fromlist=["units_of"]).units_of(lm.model, layers, kind))
        with torch.no_grad():
            dense = lm.model(ids).logits
            pruner.apply(SparsityPlan(0.1))  # a first plan, then the real one: the incremental paths too
            pruner.apply(plan)
            pruned = lm.model(ids).logits
            pruner.restore_dense()
            back = lm.model(ids).logits
        torch.testing.assert_close(back, dense, rtol=0, atol=0)
        logits.append(pruned.cpu())
    assert not torch.equal(logits[0], logits[1] * 0)  # something was computed
    torch.testing.assert_close(logits[1], logits[0], rtol=TOL, atol=TOL)


def _file_backed(t: torch.Tensor) -> bool:
    """Whether the tensor's memory is a file mapping (Linux: /proc/self/maps names a file for it)."""
    addr = t.data_ptr()
    for line in open("/proc/self/maps"):
        span, _, _, _, inode, *name = line.split()
        lo, hi = (int(x, 16) for x in span.split("-"))
        if lo <= addr < hi:
            return inode != "0" and bool(name)
    return False


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_disk_offloaded_layers_are_pruned_on_disk_not_in_ram(tiny_model_dir, batches, dtype):
    """Original and working copy of a disk-offloaded layer are file mappings (the checkpoint itself, or a
    converted copy for another dtype), and pruning gives what the same model on one device gives."""
    ids = torch.cat([b.ids for b in batches])
    plain = load_model(str(tiny_model_dir), "cpu", dtype)
    split = load_model(str(tiny_model_dir), "cpu", dtype, device_map=json.dumps(SPLIT))
    logits = []
    for lm in (plain, split):
        layers = prunable_layers(lm.model)
        gen = torch.Generator().manual_seed(3)
        ranking = Ranking.from_values({p.name: torch.rand(p.shape, generator=gen) for p in layers}, {})
        pruner = Pruner(layers, ranking)
        with torch.no_grad():
            pruner.apply(SparsityPlan(0.3, granularity="global"))
            pruner.apply(SparsityPlan(0.5))
            logits.append(lm.model(ids).logits)
            pruner.restore_dense()
            dense = lm.model(ids).logits
            pruner.apply(SparsityPlan(0.5))
            assert torch.equal(lm.model(ids).logits, logits[-1])
        disk = [st for st in pruner.state.values() if st.on_disk]
        if lm is split:
            assert {st.p.block for st in disk} == {1}
            assert all(_file_backed(st.original) and _file_backed(st.pruned) for st in disk)
            assert all(st.pruned.dtype == getattr(torch, dtype) for st in disk)
        else:
            assert not disk and not any(_file_backed(st.pruned) for st in pruner.state.values())
        assert not torch.equal(dense, logits[-1])
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)


def test_cli_scores_prunes_evaluates_generates_and_exports_split(invoke, tiny_model_dir, tmp_path):
    dm = tmp_path / "map.json"
    dm.write_text(json.dumps(SPLIT))
    out = json.loads(invoke("score", "--session", "big", "--model", str(tiny_model_dir), "--device-map", str(dm),
                            "--reference", "builtin:general", "--samples", "4", "--seq-len", "24", "--batch-size", "2",
                            "--json").stdout)
    assert out["scores"]["reference"]["samples"] == 4
    shown = invoke("session", "show", "big").stdout
    assert "map.json" in shown  # the session remembers the placement and reloads with it
    pruned = json.loads(invoke("prune", "--session", "big", "--sparsity", "0.5", "--json").stdout)
    ev = json.loads(invoke("eval", "--session", "big", "--json", "--metrics", "perplexity", "--gen-prompts", "1",
                           "--max-new-tokens", "4").stdout)
    assert ev["metrics"]["perplexity"]["pruned"] != ev["metrics"]["perplexity"]["dense"]
    gen = invoke("generate", "--session", "big", "--prompt", "The kettle", "--max-new-tokens", "4").stdout
    assert "[pruned] The kettle" in gen
    target = tmp_path / "exported"
    invoke("export", "--session", "big", "--out", str(target))
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(target)  # plain transformers, one device
    assert all(p.device.type == "cpu" for p in reloaded.parameters())
    info = json.loads((target / "pruning.json").read_text())
    zeros = sum(int((reloaded.get_parameter(name + ".weight") == 0).sum()) for name in info["per_layer_sparsity"])
    assert zeros == info["pruned_weights"] == pruned["pruned_weights"]


@pytest.mark.parametrize("spec,message", [
    ("everywhere", "give auto, balanced"),
    ("{not json", "not valid JSON"),
    ('{"model.layers.0": "gpu"}', "is not a place"),
    ('{"model.layers.0": 7}', "this machine has"),
    ("[]", "non-empty object"),
])
def test_bad_device_maps_fail_in_one_line(invoke, tiny_model_dir, spec, message):
    if "7" in spec and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(WorkbenchError, match=message):
        parse_device_map(spec)
    r = invoke("score", "--session", "bad", "--model", str(tiny_model_dir), "--device-map", spec,
               "--samples", "2", "--seq-len", "16", ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and message in r.output


def test_a_module_the_model_lacks_fails_in_one_line(invoke, tiny_model_dir):
    r = invoke("score", "--session", "bad", "--model", str(tiny_model_dir), "--device-map",
               json.dumps({**SPLIT, "model.layers.9": "cpu"}), "--samples", "2", "--seq-len", "16", ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_a_strategy_without_gpus_loads_on_the_cpu(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto spreads over it")
    lm = load_model(str(tiny_model_dir), "auto", "auto", device_map="auto")
    assert not is_dispatched(lm.model) and lm.device == torch.device("cpu")


def test_the_tui_refuses_a_bad_map_before_opening(invoke):
    r = invoke("--device-map", "{oops", ok=False)
    assert r.exit_code == 1 and "not valid JSON" in r.output and "Traceback" not in r.output


def test_the_tui_loads_with_a_device_map(tiny_model_dir, tmp_path):
    """The app's load worker takes --device-map, and the Model pane shows where the parameters went."""
    import asyncio

    from workbench.app import WorkbenchApp

    async def run() -> dict:
        app = WorkbenchApp(session="spread", model=str(tiny_model_dir), store=tmp_path / "store",
                           device_map=json.dumps(SPLIT))
        async with app.run_test(size=(100, 32)) as pilot:
            for _ in range(600):
                if app.state.model_info is not None:
                    break
                await pilot.pause(0.05)
            spec = app.jobs.wb.model_spec
            return {"info": app.state.model_info, "device_map": spec.device_map}

    got = asyncio.run(run())
    assert got["device_map"] == json.dumps(SPLIT)
    assert got["info"]["placement"] == {"cpu": got["info"]["placement"]["cpu"], "disk": got["info"]["placement"]["disk"]}


def test_a_session_keeps_its_map_for_the_same_model_until_none(tiny_model_dir, tmp_path):
    from core.engine import Workbench
    from core.session.store import Session
    from core.settings import ModelSpec

    wb = Workbench(Session.create(tmp_path, "keep"))
    wb.load(ModelSpec(str(tiny_model_dir), device_map=json.dumps(SPLIT)))
    wb.load(ModelSpec(str(tiny_model_dir)))  # as the TUI's Load button and `score --model` ask
    assert is_dispatched(wb.lm.model) and wb.model_spec.device_map == json.dumps(SPLIT)
    wb.load(ModelSpec(str(tiny_model_dir), device_map="none"))
    assert not is_dispatched(wb.lm.model)


def test_reconstruction_of_a_split_model_equals_the_one_device_one(tiny_model_dir, tmp_path):
    """Blocks offloaded to disk run from the kept block inputs through accelerate's hooks, and their reconstructed
    weights equal those of the same model on one device."""
    from core.engine import Workbench
    from core.session.store import Session
    from core.settings import ModelSpec

    weights = []
    for i, device_map in enumerate((None, json.dumps(SPLIT))):
        wb = Workbench(Session.create(tmp_path / "store", f"r{i}"))
        wb.load(ModelSpec(str(tiny_model_dir), "cpu", "float32", device_map=device_map))
        wb.score(ScoreConfig(reference="builtin:general", scorer="wanda", samples=8, seq_len=32))
        wb.prune(SparsityPlan(0.5))
        mask_only = {p.name: wb.pruner.state[p.name].pruned.clone() for p in wb.layers}
        wb.reconstruct()
        weights.append({p.name: wb.pruner.state[p.name].pruned.clone() for p in wb.layers})
        assert all(not torch.equal(weights[-1][n], mask_only[n]) for n in mask_only)  # every block, offloaded ones too
        wb.session.close()
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=0, atol=TOL)
