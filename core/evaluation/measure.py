"""The inputs of one evaluation pass, each expensive one computed once however many metrics read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from core.data.tasks import TaskItem
from core.evaluation import metrics as M


@dataclass
class Measurement:
    """One model state (dense or pruned) against one evaluation set; the metrics of core/evaluation/registry.py
    read it."""

    model: object
    tokenizer: object
    windows: list[list[int]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 50
    tasks: list[TaskItem] = field(default_factory=list)

    @cached_property
    def generations(self) -> list[tuple[list[int], str]]:
        return M.generations(self.model, self.tokenizer, self.prompts, self.max_new_tokens)

    @cached_property
    def _task(self) -> dict[str, float]:
        return M.task(self.model, self.tokenizer, self.tasks)

    def perplexity(self) -> float:
        return M.perplexity(self.model, self.tokenizer, self.windows)

    def uniqueness(self) -> float:
        return sum(M.uniqueness(ids) for ids, _ in self.generations) / max(len(self.generations), 1)

    def toxicity(self) -> float:
        return M.toxicity([t for _, t in self.generations])

    def toxic_rate(self) -> float:
        return M.toxic_rate([t for _, t in self.generations])

    def task(self) -> dict[str, float]:
        return self._task

    def samples(self, n: int = 3) -> list[str]:
        """The first continuations, if this pass generated any (shown beside the numbers)."""
        return [t for _, t in self.generations[:n]] if "generations" in self.__dict__ else []
