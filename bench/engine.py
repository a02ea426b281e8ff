"""Engine speed and memory targets, measured as ratios within one run, printed as a table.

    uv run python bench/engine.py            # default model, CPU, 16 x 128 tokens
    uv run python bench/engine.py --quick    # fewer repeats
    python bench/engine.py --model FOLDER --device cuda --dtype bfloat16 --seq-len 2048 --batch-size 1 --samples 4

Each row: what is measured, the value, the target, and whether it is met. Timings are
medians over repeats; memory is peak RSS measured in separate child processes so one
measurement cannot inflate the next.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.table import print_table  # noqa: E402 - after the path insert

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


MODEL = {"source": "default", "device": "cpu", "dtype": "float32"}  # set from the command line in main()


def _sync() -> None:
    if MODEL["device"].startswith("cuda"):
        import torch

        torch.cuda.synchronize()  # CUDA work is queued: time it to the end


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_ratio(fn_a, fn_b, repeats: int) -> tuple[float, float, float]:
    """Median of time(a)/time(b) over alternating runs, so drift on a noisy machine hits both sides."""
    ratios, ta, tb = [], [], []
    for _ in range(repeats):
        a = median_time(fn_a, 1)
        b = median_time(fn_b, 1)
        ratios.append(a / b)
        ta.append(a)
        tb.append(b)
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def where() -> str:
    import torch

    if MODEL["device"].startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{torch.get_num_threads()} threads"


def batches_for(lm, n: int, seq_len: int, batch_size: int):
    from core.data.prompt_sets import load_prompt_set
    from core.data.tokens import batch_sequences, pack_windows, pad_id

    ps = load_prompt_set("builtin:general")
    windows = pack_windows(lm.tokenizer, ps.score + ps.eval, seq_len)
    windows = [w for w in windows if len(w) == seq_len]
    seqs = (windows * (n // len(windows) + 1))[:n]
    return [b.to(lm.device) for b in batch_sequences(seqs, pad_id(lm.tokenizer), batch_size)]


def plain_pass(lm, layers, batches):
    """Forward + backward of the same target with ordinary weight gradients (.grad kept)."""
    import torch

    from core.attribution.targets import next_token_target

    for p in layers:
        p.module.weight.requires_grad_(True)
    try:
        for b in batches:
            with torch.enable_grad():
                logits = lm.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False).logits
                next_token_target(logits, b, "logit").backward()
    finally:
        for p in layers:
            p.module.weight.requires_grad_(False)
            p.module.weight.grad = None


def child_peak(mode: str, samples: int, seq_len: int, batch: int) -> dict:
    """Peak memory above the loaded model while scoring, in a fresh process (KiB).

    CPU: a thread samples VmRSS every 2 ms (ru_maxrss would report the load's own peak).
    CUDA: the allocator's peak (max_memory_allocated) above what the loaded model holds.
    """
    code = f"""
import json, sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
from bench.engine import batches_for, plain_pass
from core.model.loading import load_model
from core.model.layers import prunable_layers
from core.attribution.runner import run_scorer
from core.attribution.state import ScorerOptions
from core.settings import ScoreConfig

def rss_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])

import torch
lm = load_model({MODEL['source']!r}, {MODEL['device']!r}, {MODEL['dtype']!r})
layers = prunable_layers(lm.model)
b = batches_for(lm, {samples}, {seq_len}, {batch})
import gc; gc.collect(); time.sleep(0.2)
cuda = lm.device.type == 'cuda'
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    rss_kib = lambda: torch.cuda.max_memory_allocated() // 1024
base = torch.cuda.memory_allocated() // 1024 if cuda else rss_kib(); peak = [base]; done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_kib()); time.sleep(0.002)
t = threading.Thread(target=sample); t.start()
if {mode!r} == 'lrp':
    st = run_scorer('lrp', lm.model, layers, b)
elif {mode!r} == 'lrp-recompute':
    from core.attribution.state import ScorerOptions
    st = run_scorer('lrp', lm.model, layers, b, ScorerOptions.of(ScoreConfig().resolved('text'), recompute=True))
else:
    plain_pass(lm, layers, b)
if cuda:
    torch.cuda.synchronize()
done.set(); t.join()
peak[0] = max(peak[0], rss_kib())
print(json.dumps({{'base_kib': base, 'peak_kib': peak[0]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_first_apply(granularity: str) -> dict:
    """The first application of a plan as a user meets it: a new process, the ranking read from a file."""
    code = f"""
import json, sys, tempfile, time
sys.path.insert(0, {str(ROOT)!r})
from safetensors.torch import load_file, save_file
from core.attribution.runner import finish, run_scorer
from core.model.layers import prunable_layers
from core.model.loading import load_model
from core.pruning.masks import Pruner
from core.pruning.ranking import Ranking
from core.pruning.plan import SparsityPlan

lm = load_model({MODEL['source']!r}, {MODEL['device']!r}, {MODEL['dtype']!r})
layers = prunable_layers(lm.model)
path = tempfile.mktemp(suffix='.safetensors')
save_file(Ranking.from_values(finish('magnitude', lm.model, layers, run_scorer('magnitude', lm.model, layers, [])), {{}}).tensors(), path)
ranking = Ranking.from_tensors(load_file(path))
from core.model.units import units_of
pruner = Pruner(layers, ranking, units=lambda kind: units_of(lm.model, layers, kind))
plan = SparsityPlan(0.5, granularity={granularity!r})
import torch
from core.pruning.registry import granularity as granularity_of
t0 = time.perf_counter()
counts = None if granularity_of(plan.granularity).unit else pruner.targets(plan)  # units are chosen inside apply
t1 = time.perf_counter()
pruner.apply(plan, counts)
if lm.device.type == 'cuda':
    torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps({{'threshold_ms': (t1 - t0) * 1000, 'apply_ms': (t2 - t1) * 1000}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_rows(lm, layers, long_len: int, repeats: int, row) -> None:
    """Memory per token of one long window with and without recomputing block activations, and the time it costs."""
    from core.attribution.runner import run_scorer
    from core.attribution.state import ScorerOptions
    from core.settings import ScoreConfig

    kept = child_peak("lrp", 1, long_len, 1)
    redone = child_peak("lrp-recompute", 1, long_len, 1)
    d_kept, d_redone = ((m["peak_kib"] - m["base_kib"]) / 1024 for m in (kept, redone))
    row(f"LRP scoring memory per token, one {long_len}-token window ({MODEL['dtype']})",
        f"{d_kept * 1024 / long_len:.0f} KiB kept vs {d_redone * 1024 / long_len:.0f} KiB recomputed "
        f"({d_kept:.0f} vs {d_redone:.0f} MiB)", "recomputed < kept", d_redone < d_kept)
    batches = batches_for(lm, 1, long_len, 1)
    slow, _, _ = paired_ratio(lambda: run_scorer("lrp", lm.model, layers, batches, ScorerOptions.of(ScoreConfig().resolved('text'), recompute=True)),
                              lambda: run_scorer("lrp", lm.model, layers, batches), repeats)
    row(f"LRP time with recomputation vs without ({long_len} tokens)", f"{slow:.2f}x", "<= 1.6x", slow <= 1.6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--long-seq-len", type=int, default=1024, help="window for the recomputation memory rows")
    ap.add_argument("--long-only", action="store_true", help="only the long-window recomputation rows")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="default", help="a folder, hub id or `default`")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the default model's targets were set on the CPU)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-first-apply", action="store_true",
                    help="skip the fresh-process first-apply rows (each writes and reads the whole ranking)")
    args = ap.parse_args()
    MODEL.update(source=args.model, device=args.device, dtype=args.dtype)
    repeats = 2 if args.quick else 3

    import torch

    from core.model.loading import quiet_libraries

    quiet_libraries()
    from core.attribution.runner import finish, run_scorer
    from core.evaluation.metrics import perplexity
    from core.model.layers import prunable_layers
    from core.model.loading import ensure_default_cache, load_model
    from core.pruning.masks import Pruner
    from core.pruning.ranking import Ranking
    from core.pruning.plan import SparsityPlan

    rows: list[tuple[str, str, str, bool | None]] = []

    def row(name, value, target, ok):
        rows.append((name, value, target, bool(ok)))

    if args.model == "default":
        ensure_default_cache()
    t = time.perf_counter()
    lm = load_model(args.model, args.device, args.dtype)
    load_s = time.perf_counter() - t
    if args.long_only:
        long_rows(lm, prunable_layers(lm.model), args.long_seq_len, repeats, row)
        print_table(f"LRP Workbench engine benchmark, long windows  ({where()}, model {args.model}, "
                    f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')})", rows)
        return
    load_warm = median_time(lambda: load_model(args.model, args.device, args.dtype), repeats)
    row(f"load {args.model} model (in process)", f"{load_warm:.2f} s (first in process: {load_s:.2f} s)", "< 3 s", load_warm < 3)

    cold = 0.0 if args.model != "default" else median_time(lambda: subprocess.run([sys.executable, "-c", "from core.model.loading import load_model; load_model()"],
                                              cwd=ROOT, check=True, capture_output=True), 1)
    if args.model == "default":
        row("cold process: import torch+transformers and load", f"{cold:.1f} s", "(reported)", True)

    exe = Path(sys.executable).parent / "workbench"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
    helps = median_time(lambda: subprocess.run(cmd + ["--help"], check=True, capture_output=True), 3)
    row("workbench --help", f"{helps:.2f} s", "< 0.5 s", helps < 0.5)
    sub = median_time(lambda: subprocess.run(cmd + ["score", "--help"], check=True, capture_output=True), 3)
    row("workbench score --help (typer loads pydantic)", f"{sub:.2f} s", "(reported)", True)

    layers = prunable_layers(lm.model)
    batches = batches_for(lm, args.samples, args.seq_len, args.batch_size)
    tokens = sum(int(b.mask.sum()) for b in batches)
    plain_pass(lm, layers, batches[:1])  # warm-up
    ratio, lrp, plain = paired_ratio(lambda: run_scorer("lrp", lm.model, layers, batches),
                                     lambda: plain_pass(lm, layers, batches), repeats)
    row(f"LRP scoring vs plain fwd+bwd ({args.samples}x{args.seq_len} tokens)",
        f"{ratio:.2f}x ({tokens / lrp:.0f} vs {tokens / plain:.0f} tok/s)", "<= 1.3x", ratio <= 1.3)

    def raw_forward():
        with torch.inference_mode():
            for b in batches:
                lm.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False)

    seqs = [i[m.bool()].tolist() for b in batches for i, m in zip(b.ids, b.mask)]
    ratio, fwd, ppl = paired_ratio(raw_forward, lambda: perplexity(lm.model, lm.tokenizer, seqs, batch_size=args.batch_size),
                                   repeats + 2)
    row("perplexity eval throughput vs raw forward", f"{ratio:.2f}x ({tokens / ppl:.0f} vs {tokens / fwd:.0f} tok/s)",
        ">= 0.9x", ratio >= 0.9)

    scores = finish("magnitude", lm.model, layers, run_scorer("magnitude", lm.model, layers, []))
    t = time.perf_counter()
    ranking = Ranking.from_values(scores, {})
    build = time.perf_counter() - t
    row("ranking built once when scoring ends (row sort)", f"{build * 1000:.0f} ms", "(reported)", True)
    del scores
    for g in () if args.no_first_apply else ("row", "global", "layer", "neuron"):
        first = child_first_apply(g)
        row(f"first apply at 50 %, {g} (fresh process, ranking from disk)",
            f"{first['threshold_ms'] + first['apply_ms']:.0f} ms (search {first['threshold_ms']:.0f})",
            "<= 300 ms", first["threshold_ms"] + first["apply_ms"] <= 300)
    pruner = Pruner(layers, ranking)
    pruner.apply(SparsityPlan(0.5))

    def step(values):
        def run():
            for v in values:
                pruner.apply(SparsityPlan(v))
        return run

    slider = median_time(step([0.51, 0.5]), repeats) / 2
    row(f"re-mask all {len(layers)} layers, slider step 0.50<->0.51", f"{slider * 1000:.1f} ms", "<= 50 ms", slider <= 0.05)
    slider5 = median_time(step([0.55, 0.5]), repeats) / 2
    row(f"re-mask all {len(layers)} layers, slider step 0.50<->0.55", f"{slider5 * 1000:.1f} ms", "<= 50 ms", slider5 <= 0.05)
    to_dense = median_time(step([0.0, 0.5]), repeats) / 2
    row("to dense and back (exact originals)", f"{to_dense * 1000:.2f} ms", "<= 50 ms", to_dense <= 0.05)
    jump = median_time(step([0.1, 0.6]), repeats) / 2
    row("re-mask all layers, jump 0.1<->0.6", f"{jump * 1000:.0f} ms", "(reported)", True)
    pruner.restore_dense()

    del pruner, ranking
    plain_mem = child_peak("plain", args.samples, args.seq_len, args.batch_size)
    lrp_mem = child_peak("lrp", args.samples, args.seq_len, args.batch_size)
    acc_mib = sum(p.numel for p in layers) * 4 / 2**20
    d_plain = (plain_mem["peak_kib"] - plain_mem["base_kib"]) / 1024
    d_lrp = (lrp_mem["peak_kib"] - lrp_mem["base_kib"]) / 1024
    row("scoring peak RSS above the loaded model", f"LRP +{d_lrp:.0f} MiB vs plain fwd+bwd +{d_plain:.0f} MiB",
        f"<= plain (fp32 acc = {acc_mib:.0f} MiB)", d_lrp <= d_plain * 1.05 + 32)

    long_rows(lm, layers, args.long_seq_len, repeats, row)

    print_table(f"LRP Workbench engine benchmark  ({where()}, model {args.model} {args.dtype}, "
                f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')})", rows)


if __name__ == "__main__":
    main()
