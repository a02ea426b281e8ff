"""Prompt sets: built-ins shipped with the package, local files, Hugging Face datasets.

Every set has disjoint scoring and evaluation samples, so metrics never reward
memorising the data that was scored. Specs:
  builtin:general | builtin:repetition | builtin:fortunes | builtin:toxicity | builtin:ioi | builtin:agreement
  builtin:agreement-subject (agreement's items, the subject's number flipped in the counterparts)
  path/to/file.txt    one sample per non-empty paragraph (blank-line separated)
  path/to/file.jsonl  one JSON object per line with a "text" field
  hf:NAME[,config=C][,split=S][,column=T][,data_files=F]   via `datasets`
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from core.data import toxicity
from core.data.fortune_files import fortune_file
from core.data.registry import BUILTINS as _DESCRIBED
from core.data.tasks import TASKS, TaskItem
from core.data.tokens import pack_windows
from core.errors import WorkbenchError, first_line

BUILTINS = {k.removeprefix("builtin:"): v for k, v in _DESCRIBED.items()}
EVAL_MARKER = "=== eval ==="


@dataclass
class PromptSet:
    """`kind` says how samples become token sequences:
    text     documents, packed into windows of seq_len tokens (like C4 windows for Wanda)
    prompts  prompts; scoring appends the model's own continuation, since the behaviour
             to find is in what the model writes: the greedy one (repetition), or for
             builtin:toxicity the most offensive of several sampled ones (--continue-by)
    task     task items (core/data/tasks.py): a prompt, its answer and a distractor; scorers
             explain the task's logit difference at the answer position
    """

    spec: str
    score: list[str]
    eval: list[str]
    kind: str = "text"
    task_score: list[TaskItem] = field(default_factory=list)
    task_eval: list[TaskItem] = field(default_factory=list)
    _windows: dict = field(default_factory=dict, repr=False, compare=False)

    def texts(self, split: str) -> list[str]:
        """"score", "eval", or "all" (a file given only for evaluation has nothing to keep apart)."""
        return {"score": self.score, "eval": self.eval, "all": self.score + self.eval}[split]

    def windows(self, tokenizer, split: str, seq_len: int) -> list[list[int]]:
        """Text sets: the split packed into seq_len-token windows (memoised: large sets take seconds)."""
        key = (id(tokenizer), split, seq_len)
        if key not in self._windows:
            self._windows[key] = pack_windows(tokenizer, self.texts(split), seq_len)
        return self._windows[key]

    @property
    def builtin(self) -> bool:
        return self.spec.startswith("builtin:")

    def summary(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "score_samples": len(self.score), "eval_samples": len(self.eval)}

    def generation_prompts(self, n: int, split: str = "eval") -> list[str]:
        """Prompts to generate from when measuring uniqueness and toxicity (by default the evaluation split)."""
        if self.task_eval:
            return [i.prompt for i in (self.task_eval if split == "eval" else self.task_score + self.task_eval)[:n]]
        if self.kind == "prompts":
            return self.texts(split)[:n]
        return [" ".join(t.split()[:12]) for t in self.texts(split)[:n]]

    def held_out_split(self, scored: tuple[str | None, ...]) -> str:
        """The split never scored: a built-in's or a scored set's evaluation split; all of any other set."""
        return "eval" if self.builtin or self.spec in scored else "all"


def _paragraphs(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    paras = [" ".join(p.split()) for p in "\n".join(lines).split("\n\n")]
    return [p for p in paras if p]


def _split(samples: list[str], spec: str) -> tuple[list[str], list[str]]:
    """Every fourth sample goes to evaluation (deterministic, order-preserving)."""
    if len(samples) < 2:
        raise WorkbenchError(f"{spec} has {len(samples)} sample(s); give at least 2 so scoring and evaluation can differ")
    score = [s for i, s in enumerate(samples) if i % 4 != 3]
    ev = [s for i, s in enumerate(samples) if i % 4 == 3]
    return score, ev


def _builtin_text(name: str) -> tuple[list[str], list[str]]:
    text = resources.files("core.data.builtin").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    head, _, tail = text.partition(EVAL_MARKER)
    return _paragraphs(head), _paragraphs(tail)


def _fortunes() -> list[str]:
    """Entries of FreeBSD's classic `fortunes` file (the inoffensive set), whitespace-normalised."""
    text = fortune_file("fortunes").read_text(encoding="utf-8", errors="replace")
    entries = text.split("\n%\n")[1:]  # the first is a $FreeBSD$ header
    out = []
    for e in entries:
        text = " ".join(e.split())
        letters = sum(c.isalpha() for c in text)
        if len(text) >= 40 and letters >= 0.6 * len(text):  # drop ASCII art and one-liners
            out.append(text)
    return out


def _task_set(spec: str, name: str) -> PromptSet:
    make = TASKS[name]
    score = make(64, seed=1)
    seen = {i.prompt for i in score}
    ev = [i for i in make(256, seed=2) if i.prompt not in seen][:64]  # no evaluated prompt was scored
    return PromptSet(spec, [f"{i.prompt} {i.answer}" for i in score], [f"{i.prompt} {i.answer}" for i in ev], "task",
                     task_score=score, task_eval=ev)


def _parse_hf(spec: str) -> dict:
    parts = spec.removeprefix("hf:").split(",")
    opts = {"path": parts[0], "config": None, "split": "train", "column": "text", "data_files": None}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in opts:
            raise WorkbenchError(f"bad hf: spec {spec!r}; use hf:NAME[,config=C][,split=S][,column=T][,data_files=F]")
        opts[key] = value
    return opts


def _load_hf(spec: str) -> list[str]:
    opts = _parse_hf(spec)
    import datasets

    from core.hub import hub_host, hub_reachable, offline

    online = hub_reachable()
    try:
        with offline(not online):  # no network: the local cache answers at once, instead of retries
            ds = datasets.load_dataset(opts["path"], opts["config"], split=opts["split"], data_files=opts["data_files"])
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        if not online:
            raise WorkbenchError(f"{spec}: the Hugging Face hub ({hub_host()}) cannot be reached and the dataset is not in "
                                 "the local cache; load it once with network, or give a local .txt/.jsonl file") from None
        raise WorkbenchError(f"cannot load dataset {spec!r}: {first_line(exc, 200)}") from exc
    if opts["column"] not in ds.column_names:
        raise WorkbenchError(f"{spec}: no column {opts['column']!r}; columns are {', '.join(ds.column_names)}")
    return [" ".join(str(t).split()) for t in ds[opts["column"]] if str(t).strip()]


def _read_text(path: Path, spec: str) -> str:
    """The file as UTF-8 text; a binary or otherwise encoded file is refused, not scored as mojibake."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkbenchError(f"cannot read prompt file {spec} ({exc.strerror or first_line(exc)}); check its "
                             "permissions, or give another file") from None
    expected = "a prompt set is a UTF-8 text file: paragraphs (.txt) or JSON lines (.jsonl)"
    if b"\0" in data[:65536]:
        raise WorkbenchError(f"{spec} is a binary file (it holds NUL bytes), not text; {expected}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{spec} is not UTF-8 text (byte {exc.start} is invalid); {expected}; "
                             "convert it, e.g. `iconv -f latin1 -t utf-8`") from None


def _load_file(spec: str) -> tuple[list[str], str]:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WorkbenchError(f"prompt file {spec} not found; give builtin:NAME, a .txt/.jsonl path, or hf:NAME")
    text = _read_text(path, spec)
    if path.suffix == ".jsonl":
        samples, kinds = [], set()
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise WorkbenchError(f"{spec}:{n} is not JSON; each line must be an object with a \"text\" field") from None
            field_name = "prompt" if isinstance(row, dict) and isinstance(row.get("prompt"), str) else "text"
            if not isinstance(row, dict) or not isinstance(row.get(field_name), str):
                raise WorkbenchError(f"{spec}:{n} has no string \"text\" (document) or \"prompt\" field")
            kinds.add(field_name)
            if row[field_name].strip():
                samples.append(row[field_name].strip())
        if len(kinds) > 1:
            raise WorkbenchError(f"{spec} mixes \"text\" and \"prompt\" rows; use one kind per file")
        return samples, "prompts" if kinds == {"prompt"} else "text"
    return _paragraphs(text), "text"


def load_prompt_set(spec: str) -> PromptSet:
    """Resolve a spec to a prompt set with disjoint scoring and evaluation samples."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTINS:
            raise WorkbenchError(f"unknown built-in set {name!r}; choose one of {', '.join(BUILTINS)}")
        if name in TASKS:
            return _task_set(spec, name)
        if name == "fortunes":
            score, ev = _split(_fortunes(), spec)
            return PromptSet(spec, score, ev, "text")
        if name == "toxicity":
            score, ev = toxicity.load()
            return PromptSet(spec, score, ev, "prompts")
        score, ev = _builtin_text(name)
        return PromptSet(spec, score, ev, "prompts" if name == "repetition" else "text")
    samples, kind = (_load_hf(spec), "text") if spec.startswith("hf:") else _load_file(spec)
    if not samples:
        raise WorkbenchError(f"{spec} holds no samples; add text (paragraphs, or JSONL lines with a \"text\" field)")
    score, ev = _split(samples, spec)
    return PromptSet(spec, score, ev, kind)
