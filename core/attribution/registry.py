"""Every scorer the workbench offers: what it needs, what its sums mean, how they are finished.

This is the only place that knows scorers by name. The runner, the engine, the session's
cache keys, the CLI's help and the TUI's choices all read it. Adding a scorer is one new
file in core/attribution/scorers/ (an `accumulate` if it reads data, and a `finish`) plus
one entry here. The module is plain data, so `--help` and the TUI's first paint import
it without torch.

Also here: the choices that tune the data-driven scorers (targets, LRP rules,
reductions) and how a contrastive set is put on the reference's scale (normalizations).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class ScorerInfo:
    name: str
    summary: str
    """One line for `workbench catalog`, the CLI's help and the TUI."""
    needs_data: bool
    """Reads calibration batches; without data the scores come from the weights alone."""
    needs_gradients: bool
    """Runs a backward pass per batch."""
    lrp_rules: bool
    """The backward pass follows LRP rules (`--rules`), applied around it and undone after."""
    uses_target: bool
    """Explains a scalar target (`--target`); the others ignore it."""
    reducible: bool
    """Per-sample results are combined by `--reduce`; the others have one way."""
    seeded: bool
    """`--seed` changes the scores themselves, not only which samples are read."""
    sums: str
    """What the accumulated sums hold while scoring (they are checkpointed to resume)."""
    finish: str
    """How the sums become one score per weight (higher = keep)."""
    module: str
    """The implementation: a module with `finish(layers, state, options)` and, with data, `accumulate`."""
    reconstructs: bool = False
    """A method, not only a ranking: which weights go is decided while the kept weights are updated
    (core/pruning/reconstruct.py), so `prune` reconstructs with it unless told `--mask-only`."""
    revision: str | None = None
    """Set when the method changed its results: part of the cache key, so scores of the former method are not reused."""


SCORERS: dict[str, ScorerInfo] = {
    s.name: s
    for s in (
        ScorerInfo(
            "lrp", "weight x gradient under LRP rules (lxt): the relevance of each weight (paper Eq. 8)",
            needs_data=True, needs_gradients=True, lrp_rules=True, uses_target=True, reducible=True, seeded=False,
            sums="per weight, the relevance w * dT/dw of each sample combined by --reduce, summed over samples",
            finish="the sum divided by the number of samples", module="core.attribution.scorers.lrp"),
        ScorerInfo(
            "gradient", "weight x plain gradient of the same target (first-order Taylor)",
            needs_data=True, needs_gradients=True, lrp_rules=False, uses_target=True, reducible=True, seeded=False,
            sums="as lrp, with the plain gradient", finish="the sum divided by the number of samples",
            module="core.attribution.scorers.gradient"),
        ScorerInfo(
            "wanda", "|weight| x L2 norm of the layer's input activation (Sun et al. 2023)",
            needs_data=True, needs_gradients=False, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="per input channel of each layer, the sum over tokens of x^2",
            finish="|w_ij| * sqrt(sum x_j^2)", module="core.attribution.scorers.wanda"),
        ScorerInfo(
            "sparsegpt", "SparseGPT (Frantar & Alistarh 2023): OBS saliency w^2/[H^-1]_jj^2, chosen per block of columns "
            "while the kept weights are updated",
            needs_data=True, needs_gradients=False, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="as wanda: per input channel of each layer, the sum over tokens of x^2",
            finish="the saliency's diagonal form |w_ij| * sqrt(sum x_j^2), which sets each layer's share (allocation) "
                   "and the mask-only preview; reconstruction then re-chooses the weights by the full saliency",
            module="core.attribution.scorers.sparsegpt", reconstructs=True),
        ScorerInfo(
            "cap", "causal attention heads: the loss (or task) damage of zeroing each head, on Wanda's scores (CAP, arXiv 2606.19350)",
            needs_data=True, needs_gradients=False, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="per head, the damage of zeroing it (loss increase, or task logit-difference drop) summed over samples; "
                 "per input channel of each layer, the sum over tokens of x^2",
            finish="Wanda's |w| sqrt(sum x^2), scaled on each head's rows and columns by its importance over the mean; "
                   "heads also keep their own scores for --granularity head", module="core.attribution.scorers.cap"),
        ScorerInfo(
            "cap-linear", "CAP's linear approximation (attribution patching): gradient x activation at each head, one backward pass",
            needs_data=True, needs_gradients=True, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="as cap, with each head's damage estimated as gradient . activation", finish="as cap",
            module="core.attribution.scorers.cap_linear"),
        ScorerInfo(
            "eap-ig", "EAP-IG at node level (Hanna et al. 2024): integrated gradients of the task's logit difference from "
            "each head's and neuron's corrupted to its clean output, times their difference (task sets with corrupted "
            "counterparts)",
            needs_data=True, needs_gradients=True, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="per head and per MLP neuron, the IG score summed over items; per input channel of each layer, the sum "
                 "over tokens of x^2",
            finish="|mean IG score| per head and neuron (--granularity head, neuron); weights: Wanda's score scaled by "
                   "the heads' scores, as cap", module="core.attribution.scorers.eap_ig"),
        ScorerInfo(
            "eap-ig-mean", "EAP-IG with the mean as counterpart: integrated gradients from each head's and neuron's "
            "mean output to its clean output, times their difference (for circuits with --ablation mean; any task set)",
            needs_data=True, needs_gradients=True, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="per head and per MLP neuron, the gradient of the task's logit difference with respect to a gate "
                 "g on its output, mean + g (output - mean), averaged over 20 steps of every gate from 0 to 1 and "
                 "summed over items; per input channel of each layer, the sum over tokens of x^2",
            finish="as eap-ig", module="core.attribution.scorers.eap_ig_mean"),
        ScorerInfo(
            "learned-mask", "a learned mask (subnetwork probing): a gate on each head's and neuron's output, trained by "
            "gradient descent to keep the task's logit difference with as few units open as possible, closed units at "
            "their mean output (for circuits with --ablation mean; any task set)",
            needs_data=True, needs_gradients=True, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="per head and per MLP neuron, its gate's final logit after 80 (heads) or 40 (neurons) Adam steps on "
                 "max(0, 1 - faithfulness)^2 + lambda * mean gate (lambda 0 -> 0.5), times the batch's items; per input "
                 "channel of each layer, the sum over tokens of x^2",
            finish="softplus of the mean gate logit per head and neuron (--granularity head, neuron); weights: Wanda's "
                   "score scaled by the heads' scores, as cap", module="core.attribution.scorers.learned_mask",
            revision="heads-80-steps"),
        ScorerInfo(
            "magnitude", "|weight|",
            needs_data=False, needs_gradients=False, lrp_rules=False, uses_target=False, reducible=False, seeded=False,
            sums="none", finish="|w_ij|", module="core.attribution.scorers.magnitude"),
        ScorerInfo(
            "random", "uniform random scores (a floor any method must beat)",
            needs_data=False, needs_gradients=False, lrp_rules=False, uses_target=False, reducible=False, seeded=True,
            sums="none", finish="uniform noise from a generator seeded with --seed",
            module="core.attribution.scorers.random_scores"),
    )
}

TARGETS = {
    "logit": "sum over positions of the logit of the actual next token (LRP's usual starting relevance)",
    "logprob": "sum over positions of the log-probability of the actual next token (= minus the LM loss)",
    "predicted": "sum over positions of the logit of the model's own top-1 prediction",
}

RULES = {
    "attnlrp": "AttnLRP rules: relevance also flows through softmax attention (Achtibat et al. 2024)",
    "cplrp": "CP-LRP: no relevance through attention scores; conserves relevance exactly",
}

REDUCTIONS = {
    "token-rms": "root mean square over tokens of each token's relevance w*x*g: |w| sqrt(mean x^2 g^2)",
    "token-abs": "mean over tokens of each token's |relevance|: |w| mean |x||g|",
    "abs-sample": "mean over samples of |relevance summed over the sample's tokens|",
    "abs": "|mean relevance| (paper Eq. 1 ranked by magnitude)",
    "signed": "signed mean relevance",
    "signed-contrast": "with --contrastive: |mean relevance| for the reference (and --pair's clean side), signed mean "
                       "relevance for the contrastive set, so what the unwanted behaviour relies on goes first and what "
                       "works against it stays; without a contrastive set, as abs",
}

RECOMPUTE = {
    "auto": "recompute block activations in the backward pass from --seq-len 1024 on (core/model/recompute.py)",
    "on": "always recompute: least memory, about one more forward pass of time",
    "off": "keep every block's activations: fastest, memory grows with seq_len^2",
}

CONTINUATIONS = {
    "greedy": "the model's greedy continuation (repetition shows there: the greedy text loops)",
    "most-toxic": "the most offensive (alt-profanity-check) of --draws sampled continuations: toxicity shows in sampled text, "
                  "rarely in the greedy one",
    "least-toxic": "the least offensive of --draws sampled continuations (the clean side of --pair for builtin:toxicity)",
    "no-repeat": "greedy, but never repeating a 3-token sequence (the clean side of --pair for builtin:repetition)",
}

#: how a contrastive prompt's wanted continuation is made for --pair clean: the counterpart of its unwanted one
CLEAN_COUNTERPART = {"most-toxic": "least-toxic", "greedy": "no-repeat", "least-toxic": "most-toxic", "no-repeat": "greedy"}

PAIRS = {
    "none": "R_diff = N(R_reference) - N(R_contrastive) (paper Eq. 7)",
    "clean": "also score the contrastive set's own prompts continued the wanted way (see --continue-by: least-toxic for "
             "most-toxic, no-repeat for greedy) and keep what either that or the reference needs: "
             "R_diff = max(N(R_reference), N(R_clean)) - N(R_contrastive); the prompt's own content then cancels",
}

EXPLAINED = {
    "all": "every token of a prompt-plus-continuation sample: the prompt text the model read and what it wrote",
    "continuation": "only the tokens of the model's own continuation (the prompt still feeds them): the behaviour, "
                    "not the prompt it read",
    "unwanted": "only the continuation tokens that carry the unwanted behaviour: with greedy continuations the tokens "
                "that repeat a 3-token sequence, with most-toxic draws the words alt-profanity-check rates offensive on "
                "their own (core/attribution/unwanted.py); samples without any are skipped, and wanted continuations "
                "(--pair clean) are explained whole",
}

NORMALIZATIONS = {
    "rank": "replace each layer's scores by their quantile in that layer (0..1): robust to outlier weights",
    "max": "divide each set by its largest |score| over all prunable weights",
    "layer-max": "divide each layer of each set by that layer's largest |score|",
    "l1": "divide each set by its total |score|",
    "none": "use the raw means",
}


#: scorers whose `finish` for one layer depends on that layer's sums alone (so scoring can end
#: layer by layer); CAP scales by head importance over all heads, random draws one stream
LAYER_LOCAL = frozenset({"lrp", "gradient", "wanda", "sparsegpt", "magnitude"})


def scorer(name: str) -> ScorerInfo:
    from core.errors import WorkbenchError

    if name not in SCORERS:
        raise WorkbenchError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")
    return SCORERS[name]


def implementation(name: str) -> ModuleType:
    """The scorer's module, imported on first use (it imports torch)."""
    return importlib.import_module(scorer(name).module)
