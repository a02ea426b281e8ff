"""Where the default model's offensive continuations come from: copied from the prompt, or its own?

    uv run python bench/toxicity_copying.py

The held-out prompts of builtin:toxicity are continued by the dense model with the sampling
seeds the correction runs use (0, 1, 2). For each continuation the classifier rates
offensive (alt-profanity-check, >= 0.5), the word that adds most to its rating (the bag-of-
words model's coefficient times the word's weight in the text) is looked up in the prompt.
A continuation whose strongest offensive word is already in the prompt repeats the prompt
more than it produces toxicity of its own; no neuron count removes that without removing
copying, which general text needs too. Writes a section of bench/RESULTS.md.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.table import write_section  # noqa: E402 - after the path insert

SEEDS, NEW_TOKENS = 3, 32  # as the CI-size correction runs (bench/correction.py --size ci)


def strongest_word(text: str, words, coef) -> str | None:
    """The word of `text` that raises alt-profanity-check's rating most (None when none raises it)."""
    from profanity_check import profanity_check as pc

    x = pc.vectorizer.transform([text])
    best = max(((coef[i] * x[0, i], words[i]) for i in x.nonzero()[1]), default=(0.0, None))
    return best[1] if best[0] > 0 else None


def classifier_words():
    """alt-profanity-check's vocabulary and each word's coefficient (read once: the vocabulary is large)."""
    from profanity_check import profanity_check as pc

    model = pc.model if hasattr(pc.model, "coef_") else pc.model.calibrated_classifiers_[0].estimator
    return pc.vectorizer.get_feature_names_out(), model.coef_[0]


def main() -> int:
    from core.data.prompt_sets import load_prompt_set
    from core.evaluation import metrics as M
    from core.model.loading import load_model, quiet_libraries
    from core.settings import CorrectConfig, GenerationConfig

    quiet_libraries()
    lm = load_model(None, "cpu", "float32")
    prompts = load_prompt_set("builtin:toxicity").generation_prompts(CorrectConfig().prompts)
    words, coef = classifier_words()
    offensive, copied, examples = 0, 0, []
    for seed in range(SEEDS):
        outs = M.generations(lm.model, lm.tokenizer, prompts, NEW_TOKENS, sample=replace(GenerationConfig(), greedy=False, seed=seed))
        texts = [t for _, t in outs]
        for prompt, text, p in zip(prompts, texts, M.toxicity_probs(texts)):
            if p < M.TOXIC:
                continue
            word = strongest_word(text, words, coef)
            repeated = word is not None and word in re.findall(r"[a-z']+", prompt.lower())
            offensive += 1
            copied += repeated
            if len(examples) < 8:
                examples.append((prompt, text, p, word, repeated))
    own = sum(p >= M.TOXIC for p in M.toxicity_probs(prompts))
    flat = lambda s: " ".join(s.split()).replace("|", "/")  # noqa: E731
    md = [f"### Where the offensive continuations come from (`uv run python bench/toxicity_copying.py`)", "",
          f"Default model, dense; the {len(prompts)} held-out prompts of `builtin:toxicity`, {SEEDS} sampled continuations "
          f"each (seeds 0 to {SEEDS - 1}, {NEW_TOKENS} new tokens). {offensive} of {SEEDS * len(prompts)} continuations are "
          f"rated offensive; in {copied} of them ({copied / max(offensive, 1):.0%}) the word that raises the rating most is "
          f"already in the prompt. {own} of the {len(prompts)} prompts are rated offensive themselves.", "",
          "| prompt | continuation | rating | strongest word | in the prompt |", "|---|---|---:|---|---|"]
    md += [f"| {flat(p)[:60]} | {flat(t)[:80]} | {r:.2f} | {w} | {'yes' if c else 'no'} |" for p, t, r, w, c in examples]
    text = "\n".join(md)
    write_section(text, HERE / "RESULTS.md", "toxicity-copying")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
