"""What `correct` prunes when no granularity is given: the paper's choice per behaviour, resolved by the engine,
recorded in the session, and amounts the granularity cannot mean refused in one line."""

import json

import pytest

from core.applications.correction import DEFAULT_GRANULARITY, check_steps, describe, resolved_granularity
from core.errors import WorkbenchError


def test_the_granularity_follows_the_behaviour_unless_given():
    assert DEFAULT_GRANULARITY == {"toxicity": "global", "uniqueness": "global"}  # validation's choice for both
    assert resolved_granularity(None, "uniqueness") == "global" and resolved_granularity(None, "toxicity") == "global"
    assert resolved_granularity("head", "uniqueness") == "head"
    assert describe(3e-4, "global") == "0.03% of the weights" and describe(100, "neuron") == "100 neurons"
    assert describe(3e-4, None) == "0.03% of the weights" and describe(25, None) == "25 neurons"  # the defaults


@pytest.mark.parametrize("granularity,good,bad,words", [("global", (1e-4, 3e-4), (1e-4, 2), "between 0 and 1"),
                                                          ("neuron", (10, 50), (10, 0.5), "whole counts"),
                                                          ("head", (1, 2), (2.5,), "whole counts")])
def test_amounts_the_granularity_cannot_mean_are_refused(granularity, good, bad, words):
    check_steps(granularity, good)
    with pytest.raises(WorkbenchError, match=words):
        check_steps(granularity, bad)


def test_correct_prunes_weights_by_default(invoke, tmp_path, tiny_model_dir):
    invoke("score", "--session", "rep", "--model", str(tiny_model_dir), "--reference", "builtin:general",
           "--contrastive", "builtin:repetition", "--samples", "4", "--seq-len", "16")
    common = ("--prompts", "2", "--new-tokens", "4", "--eval-windows", "2", "--bound", "1.0", "--no-plot")
    out = json.loads(invoke("correct", "--session", "rep", "--steps", "0.001,0.01", "--json", *common).stdout)
    assert out["granularity"] == "global" and [s["amount"] for s in out["steps"]] == [0, 0.001, 0.01]
    assert out["steps"][1]["sparsity"] == pytest.approx(0.001, rel=0.05)  # a share of all prunable weights
    from core.session.store import Session

    assert Session.open(tmp_path / "store", "rep").manifest.correction.granularity == "global"
    bad = invoke("correct", "--session", "rep", "--steps", "10,50", *common, ok=False)  # counts: units, not weights
    assert bad.exit_code != 0 and "--granularity neuron" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    text = invoke("correct", "--session", "rep", "--granularity", "neuron", "--steps", "2", *common).stdout
    assert "neuron sweep" in text
