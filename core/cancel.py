"""Stopping model work part-way: once a cancel event is set, the next prunable layer raises.

Checking between batches is not enough for a slider: one perplexity batch on a CPU can
take more than a second, and a slider move waits for the engine lock until it ends.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from core.errors import WorkbenchError
from core.layers import Prunable


class Cancelled(WorkbenchError):
    """Raised inside a forward pass whose cancel event was set."""


@contextmanager
def interruptible(layers: list[Prunable], cancel: threading.Event | None, what: str) -> Iterator[None]:
    if cancel is None:
        yield
        return

    def check(module, args) -> None:
        if cancel.is_set():
            raise Cancelled(f"{what} cancelled")

    handles = [p.module.register_forward_pre_hook(check) for p in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
