"""The one way model work stops part-way: once a cancel event is set, the next prunable layer raises.

Every long job (scoring, evaluation, generation, circuit sweeps) runs its forward passes
inside `interruptible`. A forward pre-hook on each prunable layer raises `Cancelled` when
the event is set, so a job stops within one layer, not at the end of a batch or a
generated token: one perplexity batch on a CPU can take more than a second, and a
slider move waits for the engine lock until the job ends. Jobs decide what to keep:
scoring saves its completed batches before the exception leaves the engine.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from core.errors import Cancelled
from core.model.layers import Prunable


@contextmanager
def interruptible(layers: list[Prunable], cancel: threading.Event | None, what: str) -> Iterator[None]:
    """Raise `Cancelled(f"{what} cancelled")` at the next prunable layer once `cancel` is set."""
    if cancel is None:
        yield
        return
    if cancel.is_set():
        raise Cancelled(f"{what} cancelled")

    def check(module, args) -> None:
        if cancel.is_set():
            raise Cancelled(f"{what} cancelled")

    handles = [p.module.register_forward_pre_hook(check) for p in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
