"""One smoke test per maintained benchmark under bench/ that the other tests do not run: each runs at its
smallest size and prints (or writes) its report. The numbers themselves are the benchmarks' business."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: int = 600) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_engine_bench_prints_its_table(tiny_model_dir):
    text = _run("bench/engine.py", "--quick", "--model", str(tiny_model_dir), "--no-first-apply", "--samples", "4",
                "--seq-len", "32", "--long-seq-len", "64")
    assert "measure" in text and "met" in text and "LRP" in text


def test_tui_bench_measures_the_first_paint():
    text = _run("bench/tui.py", "--paint-only")
    assert "first paint" in text and "bare Textual" in text


def test_circuits_bench_writes_its_report(tiny_model_dir, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("circuits_bench", ROOT / "bench" / "circuits.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["circuits_bench"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    (tmp_path / "circuits.md").write_text("# Circuits\n\nkept\n")
    assert mod.main(["--size", "tiny", "--model", str(tiny_model_dir), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "circuits.md").read_text()
    name = mod.run_name("tiny", str(tiny_model_dir))  # a run on another model than the default is named by it
    assert name == f"tiny-{tiny_model_dir.name}" and mod.run_name("tiny", "default") == "tiny"
    assert "kept" in text and text.count(f"<!-- circuits-{name}:start -->") == 1
    data = json.loads((tmp_path / f"circuits-{name}.json").read_text())
    assert data["complete"] and {c["granularity"] for c in data["circuits"]} == {"global", "neuron", "head"}
    assert {(c["scorer"], c["ablation"]) for c in data["circuits"] if c["granularity"] == "head"} == {
        (s, a) for s in ("lrp", "cap", "eap-ig") for a in ("zero", "patch")}
    assert "patch ablation" in text and "(area under the curve)" in text
    assert "Tasks builtin:ioi:" in text and "Dense builtin:ioi logit difference on the evaluation items" in text
    assert (tmp_path / f"circuits-{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_circuits_run_without_head_circuits_names_no_heads():
    """A neurons-only run still ranks heads on the way; its report must not say a head circuit keeps 0 heads."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("circuits_bench", ROOT / "bench" / "circuits.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["circuits_bench"] = mod
    spec.loader.exec_module(mod)
    circuit = {"scorer": "lrp", "granularity": "neuron", "task": "builtin:ioi", "ablation": "zero", "seed": 0,
               "circuit_kept": 0.5, "area": 0.6, "score_s": 7.0, "dense": 4.7}
    report = mod.Report("neurons", "default", "bench/circuits.py --size neurons", "cpu", "2026-12-07",
                        circuits=[circuit], top_heads={"lrp": ["23.3", "29.1"]}, complete=True)
    neurons = mod.markdown(report, mod.SIZES["neurons"], "x.png")
    assert "| lrp | 0.5 (0.6) | 7 s |" in neurons and "head circuit" not in neurons
    heads = mod.markdown(mod.Report("heads-seeds", "default", "c", "cpu", "d", circuits=[dict(circuit, granularity="head")],
                                    top_heads={"lrp": ["23.3"]}), mod.SIZES["heads-seeds"], "x.png")
    assert "its head circuit (zero ablation) keeps" in heads


def test_random_model_is_loadable(tiny_model_dir, tmp_path):
    _run("bench/random_model.py", "--like", str(tiny_model_dir), "--out", str(tmp_path / "m"), "--dtype", "float32")
    from core.model.loading import load_model

    lm = load_model(str(tmp_path / "m"), "cpu", "float32")
    assert lm.model.config.num_hidden_layers == json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]


def test_compression_bench_writes_its_report(tiny_model_dir, tmp_path):
    """The workbench's side of the peer benchmark (the peer needs its own environment: `--peer ''` skips it)."""
    text = _run("bench/compression.py", "--model", str(tiny_model_dir), "--samples", "4", "--configs", "0.5,2:4",
                "--scorers", "wanda,wanda-seq,sparsegpt,lrp+sgpt,lrp+sgpt-layer,lrp+sgpt-ts", "--peer", "", "--work", str(tmp_path / "work"),
                "--out", str(tmp_path))
    rows = json.loads((tmp_path / "compression.json").read_text())
    assert {(r["method"], r["config"]) for r in rows if r["method"] != "dense"} == {
        (f"workbench {m}", c) for m in ("wanda", "wanda-seq", "sparsegpt", "lrp+sgpt", "lrp+sgpt-ts") for c in ("50%", "2:4")} | {
        ("workbench lrp+sgpt-layer", "50%")}  # per layer differs from per row only without an N:M pattern
    granularity = {(r["method"], r["config"]): r["granularity"] for r in rows if r["method"] != "dense"}
    assert granularity[("workbench lrp+sgpt-layer", "50%")] == granularity[("workbench sparsegpt", "50%")] == "layer"
    assert granularity[("workbench lrp+sgpt", "50%")] == "row"
    assert {r["allocation"] for r in rows if r["method"] == "workbench lrp+sgpt-layer"} == {"relevance"}
    assert {r["chosen_by"] for r in rows if r["method"] == "workbench sparsegpt"} == {"sparsegpt"}
    assert "| 2:4 | workbench sparsegpt |" in text and "<!-- compression:start -->" in (tmp_path / "compression.md").read_text()


def test_wanda_seq_removes_as_many_per_row_as_llm_compressor():
    """llm-compressor's Wanda removes int(s x n) weights of each row; the workbench's plans round(s x n). The
    reproduction row asks for the peer's count, so at 60 % of 576 inputs it removes 345, not 346."""
    import importlib.util
    from types import SimpleNamespace

    from core.pruning.ranking import row_counts

    spec = importlib.util.spec_from_file_location("compression_bench", ROOT / "bench" / "compression.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    layers = [SimpleNamespace(name=f"model.layers.0.{k}", shape=(8, n)) for k, n in (("q", 576), ("down", 1536), ("o", 100))]
    plan = mod.peer_count_plan(layers, 0.6, "row")
    for p in layers:
        n = p.shape[1]
        ranked = SimpleNamespace(shape=p.shape)
        assert int(row_counts(ranked, plan.for_layer(p.name))[0]) == int(0.6 * n)  # what the workbench will remove
    assert int(row_counts(SimpleNamespace(shape=(8, 576)), 0.6)[0]) == 346  # the default count, which differs
    assert mod.counts_as_peer("workbench wanda-seq", "uniform", "row")
    assert not mod.counts_as_peer("workbench wanda", "uniform", "row")
    assert not mod.counts_as_peer("workbench wanda-seq", "relevance", "row")
