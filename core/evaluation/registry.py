"""The metrics `eval` can report, with what they mean and which way is better (no heavy imports)."""

METRICS = {
    "perplexity": "exp(mean next-token NLL) on evaluation samples; lower is better",
    "uniqueness": "unique generated tokens / generated tokens, greedy, 50 new tokens (paper's repetition metric); higher is better",
    "toxicity": "mean offensive-language probability of generations (alt-profanity-check, offline); lower is better",
    "ioi_accuracy": "share of IOI prompts where the indirect object outscores the subject; higher is better",
    "ioi_logit_diff": "mean logit(IO) - logit(S) at the answer position; higher is better",
}
LOWER_IS_BETTER = {"perplexity", "toxicity"}
