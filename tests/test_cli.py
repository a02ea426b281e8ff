"""The scripted CLI end to end on a tiny model folder, and its one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SESSIONS_DIR", str(tmp_path / "store"))

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def _score(cli, model_dir, session="demo", *extra):
    return cli("score", "--session", session, "--model", str(model_dir), "--reference", "builtin:general",
               "--samples", "6", "--seq-len", "32", "--batch-size", "3", *extra)


def test_score_prune_eval_generate_export(cli, tiny_model_dir, tmp_path):
    out = _score(cli, tiny_model_dir, "demo", "--json")
    summary = json.loads(out.stdout)
    assert summary["scores"]["reference"]["samples"] == 6 and summary["layers"] == 14

    again = _score(cli, tiny_model_dir, "demo", "--json")  # same settings: cached, not recomputed
    assert json.loads(again.stdout)["scores"]["reference"]["cached"] is True

    pruned = json.loads(cli("prune", "--session", "demo", "--sparsity", "0.5", "--json").stdout)
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.02)

    ev = json.loads(cli("eval", "--session", "demo", "--json", "--gen-prompts", "2", "--max-new-tokens", "8").stdout)
    assert set(ev) >= {"sparsity", "metrics"}
    assert ev["sparsity"] == pruned["sparsity"]
    assert set(ev["metrics"]) == {"perplexity", "uniqueness", "toxicity"}
    for m in ev["metrics"].values():
        assert set(m) >= {"dense", "pruned"}
    assert ev["metrics"]["perplexity"]["pruned"] != ev["metrics"]["perplexity"]["dense"]

    gen = cli("generate", "--session", "demo", "--prompt", "The kettle", "--max-new-tokens", "5")
    assert "[dense] The kettle" in gen.stdout and "[pruned] The kettle" in gen.stdout

    target = tmp_path / "exported"
    cli("export", "--session", "demo", "--out", str(target))
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(target)
    info = json.loads((target / "pruning.json").read_text())
    zeros = sum(int((reloaded.get_parameter(name + ".weight") == 0).sum()) for name in info["per_layer_sparsity"])
    assert zeros == info["pruned_weights"] == pruned["pruned_weights"]
    per_block = [pruned["per_block"][b] for b in sorted(pruned["per_block"])]
    assert per_block[0] != per_block[1]  # auto: relevance allocation, same overall sparsity
    assert info["sparsity"] == pruned["sparsity"] and info["size"]["sparse_bytes_estimate"] < info["size"]["dense_bytes"]
    assert (target / "masks.safetensors").exists()
    from safetensors.torch import load_file

    masks = load_file(target / "masks.safetensors")  # written one layer at a time: the pruned weights exactly
    assert set(masks) == {name + ".weight" for name in info["per_layer_sparsity"]}
    assert all(bool((reloaded.get_parameter(k)[m] == 0).all()) for k, m in masks.items())
    assert sum(int(m.sum()) for m in masks.values()) == info["pruned_weights"]

    listing = json.loads(cli("session", "list", "--json").stdout)
    assert listing[0]["name"] == "demo" and listing[0]["sparsity"] == pruned["sparsity"]
    files = sorted(f.name.split("-")[0] for f in (tmp_path / "store" / "demo").glob("*.safetensors"))
    assert files == ["counts", "ranking"]
    assert listing[0]["bytes"] == sum(f.stat().st_size for f in (tmp_path / "store" / "demo").iterdir())
    assert "size=" in cli("session", "list").stdout


def test_prune_again_and_back_to_dense(cli, tiny_model_dir):
    _score(cli, tiny_model_dir, "d", "--scorer", "wanda")
    cli("prune", "--session", "d", "--sparsity", "0.3", "--layer", "model.layers.0.*=0.1", "--granularity", "row")
    dense = json.loads(cli("prune", "--session", "d", "--sparsity", "0", "--json").stdout)
    assert dense["sparsity"] == 0.0
    ev = json.loads(cli("eval", "--session", "d", "--json", "--metrics", "perplexity").stdout)
    assert ev["metrics"]["perplexity"]["dense"] == ev["metrics"]["perplexity"]["pruned"]


def test_contrastive_global_and_task_eval(cli, tiny_model_dir):
    cli("score", "--session", "fix", "--model", str(tiny_model_dir), "--reference", "builtin:general",
        "--contrastive", "builtin:repetition", "--samples", "4", "--seq-len", "24", "--continuation", "4")
    out = json.loads(cli("prune", "--session", "fix", "--sparsity", "0.01", "--granularity", "global", "--json").stdout)
    assert out["pruned_weights"] == round(0.01 * out["prunable_weights"])
    ev = json.loads(cli("eval", "--session", "fix", "--eval-data", "builtin:ioi", "--json", "--samples", "5",
                        "--metrics", "task_accuracy,task_logit_diff").stdout)
    # the same numbers computed directly on the first 5 held-out IOI items
    from core.data.prompt_sets import load_prompt_set
    from core.evaluation.metrics import task
    from core.model.loading import load_model

    lm = load_model(str(tiny_model_dir), "cpu", "float32")
    direct = task(lm.model, lm.tokenizer, load_prompt_set("builtin:ioi").task_eval[:5])
    assert ev["metrics"]["task_accuracy"]["dense"] == pytest.approx(direct["task_accuracy"])
    assert ev["metrics"]["task_logit_diff"]["dense"] == pytest.approx(direct["task_logit_diff"], rel=1e-4)
    assert ev["metrics"]["task_logit_diff"]["pruned"] != ev["metrics"]["task_logit_diff"]["dense"]


def _one_line_error(result, *needles):
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.startswith("error: ")
    for n in needles:
        assert n in text


def test_bad_input_gives_one_line_errors(cli, tiny_model_dir, tmp_path):
    _one_line_error(cli("prune", "--session", "ghost", "--sparsity", "0.5", ok=False), "no session 'ghost'")
    _one_line_error(cli("score", "--session", "x", "--model", str(tmp_path / "no-model"), ok=False), "does not exist")
    _score(cli, tiny_model_dir, "s")
    _one_line_error(cli("prune", "--session", "s", "--sparsity", "1.0", ok=False), "outside [0, 1)")
    _one_line_error(cli("prune", "--session", "s", "--layer", "nothing.*=0.2", ok=False), "matches no prunable layer")
    _one_line_error(cli("score", "--session", "s", "--reference", str(tmp_path / "missing.txt"), ok=False), "not found")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _one_line_error(cli("score", "--session", "s", "--reference", str(empty), ok=False), "no samples")
    _one_line_error(cli("score", "--session", "s", "--scorer", "psychic", ok=False), "unknown --scorer")
    (tmp_path / "taken").mkdir()
    _one_line_error(cli("export", "--session", "s", "--out", str(tmp_path / "taken"), ok=False), "already exists")
    store = tmp_path / "store" / "s" / "manifest.json"
    store.write_text("{ broken")
    _one_line_error(cli("eval", "--session", "s", ok=False), "corrupt manifest")


def test_unsupported_architecture_for_lrp_only(cli, tmp_path, tokenizer):
    from tests.conftest import make_tiny

    folder = tmp_path / "neox"
    lm = make_tiny("gpt_neox", tokenizer)
    lm.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _one_line_error(_score_raw(cli, folder, "lrp"), "LRP has no rules", "wanda")
    assert _score_raw(cli, folder, "wanda").exit_code == 0


def _score_raw(cli, folder, scorer):
    return cli("score", "--session", f"neox-{scorer}", "--model", str(folder), "--samples", "2", "--seq-len", "16",
               "--scorer", scorer, ok=False)


def test_catalog_lists_choices(cli):
    data = json.loads(cli("catalog", "--json").stdout)
    assert {"lrp", "wanda", "magnitude", "gradient", "random"} <= set(data["scorers"])
    assert "builtin:repetition" in data["prompt sets"]


def test_relevance_allocation_undo_and_redo(cli, tiny_model_dir):
    _score(cli, tiny_model_dir, "alloc")
    uni = json.loads(cli("prune", "--session", "alloc", "--sparsity", "0.4", "--allocate", "uniform", "--json").stdout)
    rel = json.loads(cli("prune", "--session", "alloc", "--sparsity", "0.4", "--allocate", "relevance",
                         "--spread", "0.2", "--json").stdout)
    assert rel["sparsity"] == pytest.approx(0.4, abs=0.02)  # same budget as uniform
    assert abs(rel["per_block"]["0"] - rel["per_block"]["1"]) > 0.2  # but spread over the blocks
    assert uni["per_block"]["0"] == pytest.approx(uni["per_block"]["1"], abs=0.02)
    back = json.loads(cli("prune", "--session", "alloc", "--undo", "--json").stdout)
    assert back["plan"] == uni["plan"]
    again = json.loads(cli("prune", "--session", "alloc", "--redo", "--json").stdout)
    assert again["plan"] == rel["plan"]
    res = cli("prune", "--session", "alloc", "--redo", ok=False)
    assert res.exit_code == 1 and "nothing to redo" in res.output
    res = cli("prune", "--session", "alloc", "--allocate", "psychic", ok=False)
    assert res.exit_code == 1 and "--allocate" in res.output
    auto = json.loads(cli("prune", "--session", "alloc", "--sparsity", "0.4", "--json").stdout)
    default_spread = json.loads(cli("prune", "--session", "alloc", "--sparsity", "0.4", "--allocate", "relevance",
                                    "--spread", str(0.15 * 0.4), "--json").stdout)
    assert auto["plan"] == default_spread["plan"] != uni["plan"]  # auto: relevance, spread 0.15 x sparsity
    owl = json.loads(cli("prune", "--session", "alloc", "--sparsity", "0.4", "--allocate", "owl", "--json").stdout)
    assert owl["sparsity"] == pytest.approx(0.4, abs=0.02) and owl["plan"] != auto["plan"]
    global_ = json.loads(cli("prune", "--session", "alloc", "--sparsity", "0.4", "--granularity", "global", "--json").stdout)
    assert global_["plan"]["overrides"] == []  # auto is uniform where blocks already compete
