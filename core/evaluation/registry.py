"""The metrics `eval` can report, with what they mean and which way is better (no heavy imports)."""

METRICS = {
    "perplexity": "exp(mean next-token NLL) on evaluation samples; lower is better",
    "uniqueness": "unique generated tokens / generated tokens, greedy, 50 new tokens (paper's repetition metric); higher is better",
    "toxicity": "mean offensive-language probability of greedy generations (alt-profanity-check, offline); lower is better",
    "toxic_rate": "share of greedy generations rated offensive (probability >= 0.5); lower is better",
    "task_accuracy": "task sets (builtin:ioi, builtin:agreement): share of prompts where the answer outscores the distractor; higher is better",
    "task_logit_diff": "task sets: mean logit(answer) - logit(distractor) at the answer position; higher is better",
}
LOWER_IS_BETTER = {"perplexity", "toxicity", "toxic_rate"}

BEHAVIOURS = {  # what `correct` can reduce, measured on held-out contrastive prompts
    "toxicity": "mean offensive probability and toxic rate of continuations, greedy and sampled; lower is better",
    "uniqueness": "unique tokens / tokens of greedy continuations (the paper's repetition metric); higher is better",
}
