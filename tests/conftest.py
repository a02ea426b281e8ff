"""Fixtures: tiny random models built from configs (fast) and the real embedded model (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

from core.model.loading import LoadedModel  # noqa: E402

CORPUS = (Path(__file__).parent.parent / "core" / "data" / "builtin" / "general.txt").read_text(encoding="utf-8")


def _train_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained on the built-in text: no download needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # The IOI names, often enough that each becomes one token (" Mary"), as in real vocabularies.
    from core.data.tasks import _NAMES

    tok.train_from_iterator(CORPUS.splitlines() + [" " + " ".join(_NAMES)] * 200, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return _train_tokenizer()


def tiny_config(arch: str, vocab: int):
    common = dict(vocab_size=vocab)
    if arch == "llama":
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=256, eos_token_id=0, pad_token_id=0, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=256, eos_token_id=0, pad_token_id=0, **common)
    if arch == "qwen3":
        return Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=8,
                           num_key_value_heads=2, max_position_embeddings=256, eos_token_id=0, pad_token_id=0, **common)
    if arch == "opt":
        return OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
                         max_position_embeddings=256, eos_token_id=0, pad_token_id=0, bos_token_id=0, **common)
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, eos_token_id=0, bos_token_id=0, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             max_position_embeddings=256, eos_token_id=0, **common)
    raise ValueError(arch)


MODEL_CLASSES = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "qwen3": Qwen3ForCausalLM, "opt": OPTForCausalLM,
                 "gpt2": GPT2LMHeadModel, "gpt_neox": GPTNeoXForCausalLM}


def make_tiny(arch: str, tokenizer, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    model = MODEL_CLASSES[arch](tiny_config(arch, len(tokenizer))).eval()
    model.requires_grad_(False)
    return LoadedModel(model, tokenizer, f"tiny-{arch}", torch.device("cpu"), torch.float32)


@pytest.fixture
def tiny_llama(tokenizer) -> LoadedModel:
    return make_tiny("llama", tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A save_pretrained folder of a tiny Llama, loadable with `--model <folder>`."""
    path = tmp_path_factory.mktemp("tiny-llama")
    lm = make_tiny("llama", tokenizer)
    lm.model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def embedded():
    """The real embedded default model (SmolLM2-135M-Instruct), loaded once per test run."""
    from core.model.loading import load_model

    return load_model("default", device="cpu", dtype="float32")


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    """Run the CLI in-process with a fresh session store, in tmp_path; asserts success unless ok=False."""
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.setenv("WORKBENCH_SESSIONS_DIR", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


# ---- tiers ---------------------------------------------------------------------------------------
#: Tests outside the unit tier (`uv run pytest -m "not slow"`, under 90 s on two cores): the real models,
#: subprocesses that are killed, Pilot sessions of the TUI, snapshots and the research benches' reports.
#: CI runs every tier (`uv run pytest`). A test file listed alone is slow as a whole.
INTEGRATION = {
    "test_quality_bench.py": None,
    "test_benches.py": None,
    "test_correction_bench.py": None,
    "test_snapshots.py": None,
    "test_tui.py": None,
    "test_tui_correct.py": None,
    "test_tui_settings.py": None,
    "test_tui_resume.py": None,
    "test_tui_truth.py": {"test_fast_moves_start_nothing_for_a_stale_plan_and_the_last_move_wins",
                          "test_the_status_bar_marks_metrics_of_another_plan",
                          "test_scoring_says_at_once_what_it_does_and_escape_is_acknowledged",
                          "test_small_things_say_what_is_true"},
    "test_robustness.py": None,
    "test_device_map.py": None,
    "test_migration.py": None,
    "test_engine.py": {"test_dense_metrics_are_cached_and_history_grows",
                       "test_a_file_given_only_for_evaluation_is_evaluated_whole",
                       "test_scoring_ends_layer_by_layer_with_the_same_ranking",
                       "test_fewer_samples_than_asked_is_said",
                       "test_scores_come_from_the_dense_weights_even_while_pruned",
                       "test_cancelled_scoring_keeps_completed_batches",
                       "test_ctrl_c_finishes_the_batch_and_keeps_it",
                       "test_long_windows_keep_to_the_token_budget",
                       "test_zero_shot_accuracy_through_lm_eval_dense_and_pruned"},
    "test_ranking_on_disk.py": {"test_engine_writes_the_ranking_while_scoring_and_reads_it_lazily"},
    "test_faults_sessions.py": {"test_a_reader_never_removes_temporaries"},
    "test_faults_models.py": {"test_a_sessions_stored_trust_remote_code_runs_nothing"},
    "test_faults_scoring.py": {"test_a_damaged_ranking_is_refused_and_score_recovers"},
    "test_faults_input.py": {"test_a_full_disk_says_how_much_and_where"},
    "test_presets.py": {"test_the_tui_preset_sets_the_sets_and_the_scorer",
                        "test_scoring_with_a_preset_records_it_and_says_what_comes_next"},
    "test_reconstruction.py": {"test_prune_reconstruct_on_the_cli_and_in_the_export", "test_the_tui_reconstructs_in_a_worker",
                               "test_the_reconstruction_bench_prints_its_table"},
    "test_correction.py": {"test_correct_sweeps_records_and_applies_the_choice",
                           "test_correct_measures_on_validation_data_or_a_given_prompt_set",
                           "test_prune_a_count_of_neurons_after_a_contrastive_score",
                           "test_validation_refuses_when_the_score_drew_everything"},
    "test_correction_granularity.py": {"test_correct_prunes_weights_by_default"},
    "test_circuits.py": {"test_compare_scorers_in_one_command", "test_circuit_curve_json_map_and_session"},
    "test_contrastive_scoring.py": {"test_score_with_a_pair_scores_three_sets_keys_them_and_refuses_text",
                                    "test_a_toxicity_score_says_how_many_scored_continuations_are_offensive"},
    "test_cli.py": {"test_score_prune_eval_generate_export", "test_unsupported_architecture_for_lrp_only"},
    "test_cap.py": {"test_cap_equals_zeroing_each_head_in_a_full_forward"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = INTEGRATION.get(Path(str(item.fspath)).name, ())
        if names is None or item.originalname in (names or ()):
            item.add_marker(pytest.mark.slow)
