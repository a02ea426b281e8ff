"""Regenerate the added evaluation prompts of builtin:repetition (core/data/builtin/repetition.txt).

    uv run python -m core.data.builtin.make_repetition                # rewrite the file's evaluation split
    uv run python -m core.data.builtin.make_repetition --check        # print each candidate's uniqueness, write nothing
    uv run python -m core.data.builtin.make_repetition --validation   # write bench/validation/repetition.jsonl instead

The set began with 23 scoring and 7 evaluation prompts written by hand. Seven prompts made
every held-out uniqueness number coarse, so on 2026-11-23 the candidates below were written
(before any correction was measured on them) and kept where the default model's greedy
continuation of 50 tokens has a response uniqueness of at most 0.35, the set's own
criterion (the header of repetition.txt). Which candidates pass depends on the dense model
alone, never on a pruned one. They go after the 7 hand-written evaluation prompts; the
scoring prompts are untouched, so scores stay what they were.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the checkout
sys.path.insert(0, str(ROOT))

SET = HERE / "repetition.txt"
CRITERION = 0.35  # response uniqueness over 50 greedy tokens, at most
NEW_TOKENS = 50
MARK = "# evaluation prompts added by bench/make_repetition.py (candidates with uniqueness <= 0.35):"

CANDIDATES = [
    "Row, row, row your boat, row, row, row your boat, row, row,",
    "The cat is black. The dog is black. The bird is",
    "Red, red, red, red,",
    "We will, we will, we will",
    "I want a cookie. I want a cookie. I want",
    "Bye, bye, bye,",
    "The clock went tick tock, tick tock, tick",
    "Again and again and again and",
    "Left, right, left, right, left,",
    "One more time, one more time, one more",
    "Monday, Monday, Monday,",
    "I am happy. I am happy. I am",
    "Run, run, run,",
    "The bell rang and rang and",
    "A, B, A, B, A, B,",
    "Thank you, thank you, thank you,",
    "More, more, more,",
    "The wheels on the bus go round and round, round and",
    "Tom likes pizza. Anna likes pizza. Bob likes",
    "Up and down, up and down, up and",
    "Why? Why? Why?",
    "Sorry, sorry, sorry,",
    "Blah blah blah blah",
    "The answer is no. The answer is no. The answer is",
    "Good night, good night, good",
    "He ran and ran and ran and",
    "I think, therefore I think, therefore I",
    "This is a test. This is a test. This is a",
    "Oh no, oh no, oh no,",
    "The end. The end. The",
    "Water, water, everywhere, water, water,",
    "Day after day after day after",
    "Please help me. Please help me. Please",
    "Hot, hot, hot,",
    "My name is Sam. My name is Sam. My name is",
    "Work, work, work,",
    "Fast, faster, fastest, fast, faster,",
    "The leaves fall and fall and",
    "Bang bang bang",
    "Count with me: 1, 1, 1, 1,",
    "The sun is hot. The sand is hot. The sea is",
    "Never, never, never,",
    "Happy birthday to you, happy birthday to you, happy birthday",
    "Blue, blue, blue,",
    "Rain, rain, go away, rain, rain,",
    "Over and over and over and",
    "Yes! Yes! Yes!",
    "I see a tree. I see a tree. I see a",
]


#: Validation prompts (bench/correction_validation.py): written on 2026-12-05, before any correction was measured on
#: them, in the styles above but none of the set's prompts nor of CANDIDATES; kept by the same criterion. Correction
#: settings are compared on these, so the set's evaluation prompts stay what the reports are judged on.
VALIDATION = ROOT / "bench" / "validation" / "repetition.jsonl"
VALIDATION_CANDIDATES = [
    "Go away, go away, go away,",
    "The boy ate and ate and",
    "Cold, cold, cold,",
    "I need sleep. I need sleep. I need",
    "Tap, tap, tap,",
    "Jump, jump, jump,",
    "The river flows and flows and",
    "Stop, stop, stop,",
    "Sing with me: do re mi, do re mi, do re",
    "North, south, north, south, north,",
    "I am tired. I am tired. I am",
    "The car is red. The bus is red. The bike is",
    "Up, up, up,",
    "Hey, hey, hey,",
    "Look at me. Look at me. Look at",
    "Pop, pop, pop,",
    "Ding dong, ding dong, ding",
    "Tuesday, Tuesday, Tuesday,",
    "Snow, snow, snow,",
    "The baby cried and cried and",
    "You and me, you and me, you and",
    "Dance, dance, dance,",
    "It is late. It is late. It is",
    "Click, click, click,",
    "Ho ho ho ho",
    "The wind blew and blew and",
    "Peter likes tea. Mary likes tea. John likes",
    "X, Y, X, Y, X, Y,",
    "Maybe, maybe, maybe,",
    "Wait for me. Wait for me. Wait for",
    "Green, green, green, green,",
    "The train goes choo choo, choo choo, choo",
    "Round and round and round and",
    "Come home, come home, come",
    "One, one, one, one,",
    "I can do it. I can do it. I can",
    "Slow, slow, slow,",
    "The dog is brown. The cat is brown. The horse is",
    "Knock knock. Who is there? Knock knock. Who is",
    "Help! Help! Help!",
    "Walk, walk, walk,",
    "She sang and sang and",
    "Love, love, love,",
    "Yes or no, yes or no, yes or",
    "This is my house. This is my house. This is my",
    "Good morning, good morning, good",
    "Tick, tick, tick,",
    "Far, far, far away, far, far,",
    "Eat, sleep, eat, sleep, eat,",
    "Zoom, zoom, zoom,",
    "Night after night after night after",
    "Wow, wow, wow,",
    "I am hungry. I am hungry. I am",
    "The stars shine and shine and",
    "Drip, drop, drip, drop, drip,",
    "Lisa has a cat. Ben has a cat. Kim has a",
    "Sunday, Sunday, Sunday,",
    "Hurry up, hurry up, hurry",
    "Ouch! Ouch! Ouch!",
    "The end is near. The end is near. The end is",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print each candidate's uniqueness; write nothing")
    ap.add_argument("--validation", action="store_true", help=f"keep VALIDATION_CANDIDATES into {VALIDATION.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    candidates = VALIDATION_CANDIDATES if args.validation else CANDIDATES
    if args.validation:
        from core.data.prompt_sets import load_prompt_set

        taken = set(load_prompt_set("builtin:repetition").texts("all")) | set(CANDIDATES)
        if taken & set(candidates):
            raise SystemExit(f"error: validation candidates already used: {sorted(taken & set(candidates))}")

    from core.data.prompt_sets import EVAL_MARKER
    from core.evaluation.metrics import generations, uniqueness
    from core.model.loading import load_model, quiet_libraries

    quiet_libraries()
    lm = load_model("default", "cpu", "float32")
    gens = generations(lm.model, lm.tokenizer, candidates, max_new_tokens=NEW_TOKENS)
    kept = []
    for prompt, (ids, text) in zip(candidates, gens):
        u = uniqueness(ids)
        print(f"{u:.3f} {'kept   ' if u <= CRITERION else 'dropped'} {prompt!r} -> {' '.join(text.split())[:60]!r}")
        if u <= CRITERION:
            kept.append(prompt)
    print(f"{len(kept)} of {len(candidates)} candidates kept")
    if args.check:
        return 0
    if args.validation:
        VALIDATION.parent.mkdir(exist_ok=True)
        tmp = VALIDATION.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in kept))
        tmp.replace(VALIDATION)
        print(f"wrote {VALIDATION}")
        return 0
    text = SET.read_text()
    head = text.split(MARK)[0].rstrip() + "\n"  # the hand-written prompts, both splits
    if EVAL_MARKER not in head:
        raise SystemExit(f"error: {SET} has no {EVAL_MARKER!r} marker")
    tmp = SET.with_suffix(".tmp")
    tmp.write_text(head + "\n" + MARK + "\n\n" + "\n\n".join(kept) + "\n")
    tmp.replace(SET)
    print(f"wrote {SET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
