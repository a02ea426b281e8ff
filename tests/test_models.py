"""Model loading: sources, devices, dtypes and their one-line errors; bf16 scoring keeps fp32 sums."""

import pytest
import torch

from core.errors import WorkbenchError
from core.attribution.runner import run_scorer
from core.data.tokens import batch_sequences
from core.model.layers import prunable_layers
from core.model.loading import load_model, resolve_device, resolve_dtype
from tests.conftest import make_tiny


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(WorkbenchError, match="float16 is not supported"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(WorkbenchError, match="unknown"):
        resolve_dtype("int4", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(WorkbenchError, match="no CUDA device"):
            resolve_device("cuda")


def test_load_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkbenchError, match="GGUF file .* not found"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(WorkbenchError, match="cannot load model|cannot be reached and the model is not in the local cache") as err:
        load_model("no-such-org/no-such-model-xyz")
    assert "\n" not in str(err.value)


def test_local_folder_loads_in_bfloat16(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).dtype == torch.bfloat16
    assert lm.info()["dtype"] == "bfloat16"


def test_lrp_in_bfloat16_accumulates_fp32(tokenizer):
    lm = make_tiny("llama", tokenizer)
    lm.model.to(torch.bfloat16)
    layers = prunable_layers(lm.model)
    seqs = [tokenizer("The library is open from nine in the morning.")["input_ids"]] * 2
    state = run_scorer("lrp", lm.model, layers, batch_sequences(seqs, 0, 2))
    for p in layers:
        assert state.sums[p.name].dtype == torch.float32 and torch.isfinite(state.sums[p.name]).all()


def test_out_of_memory_is_one_line(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import core.engine
    from workbench.cli import app

    def oom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setenv("WORKBENCH_SESSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(core.engine.Workbench, "load", oom)
    result = CliRunner().invoke(app, ["score", "--session", "m"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: out of memory; lower --samples, --seq-len or --batch-size, or use a machine with more memory"
    ]
