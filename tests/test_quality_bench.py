"""bench/quality.py's smoke test: one run at its tiny size on a tiny model (the real run is in bench/results/quality.md)."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quality():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "bench" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def test_quality_report_tables_plot_and_markers(tiny_model_dir, tmp_path):
    q = _quality()
    (tmp_path / "quality.md").write_text("# Quality\n\n## An earlier section\nkept\n")
    assert q.main(["--size", "tiny", "--model", str(tiny_model_dir), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "quality-tiny.json").read_text())
    cells = data["cells"]
    assert {c["variant"] for c in cells} == set(q.VARIANTS)
    assert {c["sparsity"] for c in cells} >= {0.3, 0.5}
    assert all(c["perplexity"] > 1 and c["validation"] > 1 for c in cells)
    assert {c["plan"] for c in cells} == {"uniform", "relevance", "owl", "hybrid", "2:4"}
    # seeds pick different reference windows for sampling scorers; magnitude has one run
    assert {c["seed"] for c in cells if c["variant"] == "lrp"} == {0, 1}
    assert {c["seed"] for c in cells if c["variant"] == "magnitude"} == {0}
    assert {c["samples"] for c in cells} == {2, 4}  # the reference-size sweep
    text = (tmp_path / "quality.md").read_text()
    assert "## An earlier section\nkept" in text and text.count("<!-- quality:start -->") == 1
    assert "| Wanda, uniform |" in text and "| lrp | relevance 0.1 |" in text and "| lrp | relevance auto |" in text
    assert "quality-tiny.png" in text
    assert (tmp_path / "quality-tiny.png").read_bytes()[:4] == b"\x89PNG"
    # --replot redraws from the JSON alone, replacing its section; an interrupted run says so
    data["cells"] = [c for c in cells if c["seed"] == 0 and c["samples"] == 4 and c["variant"] in ("lrp", "wanda")]
    data["complete"] = False
    (tmp_path / "quality-tiny.json").write_text(json.dumps(data))
    assert q.main(["--replot", str(tmp_path / "quality-tiny.json"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "quality.md").read_text()
    assert text.count("<!-- quality:start -->") == 1 and "## An earlier section\nkept" in text
    assert f"stopped after {len(data['cells'])} of {len(cells)} cells" in text


def test_validation_text_is_never_scored():
    q = _quality()
    from core.data.prompt_sets import load_prompt_set

    full = load_prompt_set("builtin:fortunes")
    reference, validation = q.split_validation(full)
    assert set(reference.score).isdisjoint(validation.eval)
    assert set(validation.eval) <= set(full.score) and set(reference.eval) == set(full.eval)
    assert len(validation.eval) > 800 and len(reference.score) + len(validation.eval) == len(full.score)
