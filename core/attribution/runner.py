"""One loop for every scorer: batches, LRP rules, progress, checkpoints, cancel, resume.

The registry says what a scorer needs; this loop provides it. A scorer without data
accumulates nothing (its `finish` reads the weights). A data-driven scorer's
`accumulate` is called once per batch not yet in the state, inside `interruptible`, so a
set cancel event stops it at the next layer with `Cancelled`.

The contract that keeps partial states exact: an `accumulate` adds to the state only
after its forward pass has finished (gradient scorers in their backward pass, Wanda
after the forward). Cancelling raises inside the forward pass, so the state then holds
whole batches. Ctrl-C in a terminal is deferred to the end of the batch for the same
reason (a second Ctrl-C stops at once). Any other failure mid-batch marks the state
`torn`, and callers do not save it.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch

from core.attribution.registry import TARGETS, implementation, scorer
from core.attribution.state import Progress, ProgressFn, ScorerOptions, ScoreState
from core.data.tokens import Batch
from core.errors import Cancelled, WorkbenchError
from core.model.interrupt import interruptible
from core.model.layers import Prunable
from core.model.placement import input_device
from core.model.recompute import recomputed_blocks

CHECKPOINT_S = 30.0  # a long run writes its sums this often, so a kill loses little


def run_scorer(
    name: str,
    model: torch.nn.Module,
    layers: list[Prunable],
    batches: list[Batch],
    options: ScorerOptions | None = None,
    *,
    state: ScoreState | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    checkpoint: Callable[[ScoreState], None] | None = None,
) -> ScoreState:
    """Accumulate `name`'s sums over the batches not yet in `state` (all of them for a new state)."""
    info = scorer(name)
    options = options or ScorerOptions.default()
    if options.target not in TARGETS:
        raise WorkbenchError(f"unknown target {options.target!r}; choose one of {', '.join(TARGETS)}")
    state = state or ScoreState()
    if not info.needs_data:
        return state
    impl = implementation(name)
    total = sum(b.size for b in batches)
    device = input_device(model)
    rules = nullcontext()
    if info.lrp_rules:
        from core.attribution.lrp_rules import lrp_rules

        rules = lrp_rules(model, options.rules)
    seen, tokens_run, done_at_start = 0, 0, state.samples
    start = last_checkpoint = time.perf_counter()
    recompute = recomputed_blocks(model, layers, options.recompute and info.needs_gradients)
    with rules, recompute, _tensor_cores_for_bf16(model), interruptible(layers, cancel, "scoring"), \
            _ctrl_c_between_batches() as interrupted:
        for batch in batches:
            n = batch.size
            if seen + n <= state.samples:  # resumed: this batch is already in the sums
                seen += n
                continue
            if interrupted.is_set():
                raise KeyboardInterrupt
            state.torn = True
            try:
                impl.accumulate(model, layers, batch.to(device), state, options)
            except Cancelled:
                state.torn = False  # raised in the forward pass, before anything was added
                raise
            state.torn = False
            seen += n
            state.samples += n
            state.tokens += int(batch.mask.sum())
            tokens_run += int(batch.mask.sum())
            if progress is not None:
                elapsed = time.perf_counter() - start
                per_sample = elapsed / (state.samples - done_at_start)
                progress(Progress(state.samples, total, tokens_run / max(elapsed, 1e-9), per_sample * (total - state.samples)))
            if checkpoint is not None and time.perf_counter() - last_checkpoint > CHECKPOINT_S:
                checkpoint(state)
                last_checkpoint = time.perf_counter()
        if interrupted.is_set():
            raise KeyboardInterrupt
    return state


@contextmanager
def _tensor_cores_for_bf16(model: torch.nn.Module) -> Iterator[None]:
    """A bf16 model on CUDA: the fp32 relevance products (g^T x) run in TF32 on tensor cores.

    x and g come out of bf16 layers, so TF32's 10-bit mantissa holds them exactly; only
    squared terms (token-rms) are rounded, to about 5e-4 relative. Plain fp32 runs these
    products on the SIMT units: 3.8x a plain forward+backward pass instead of 2.1x on an
    H100 for a 1.1 B model (bench/results/gpu.md). fp32 models keep exact fp32.
    """
    p = next(model.parameters(), None)
    if p is None or p.dtype != torch.bfloat16 or not torch.cuda.is_available():
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@contextmanager
def _ctrl_c_between_batches() -> Iterator[threading.Event]:
    """In the main thread: the first SIGINT is remembered (and acted on between batches), a second one raises."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def handler(signum, frame) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def finish(name: str, model: torch.nn.Module, layers: list[Prunable], state: ScoreState,
           options: ScorerOptions | None = None) -> dict[str, torch.Tensor]:
    """One fp32 score [out, in] per layer from a complete state (higher = keep; signed where the scorer is).

    Scores come back on the CPU: rankings and masks are built there, whatever device a layer ran on.
    """
    options = options or ScorerOptions.default()
    return {n: s.cpu() for n, s in implementation(name).finish(model, layers, state, options).items()}


def finish_units(name: str, model: torch.nn.Module, layers: list[Prunable], state: ScoreState,
                 options: ScorerOptions | None = None) -> dict[str, torch.Tensor]:
    """Scores of whole units ("head" -> [n heads]) where the scorer measures them directly (CAP); else none."""
    impl = implementation(name)
    if not hasattr(impl, "finish_units"):
        return {}
    return {k: v.cpu() for k, v in impl.finish_units(model, layers, state, options or ScorerOptions.default()).items()}
