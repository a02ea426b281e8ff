"""RAM for scores and masks: a ranking written layer by layer and read lazily, against one held in RAM.

    uv run python bench/ranking_ram.py                 # default model's layer shapes, random scores
    uv run python bench/ranking_ram.py --cache-mb 32

The ranking (4 B per prunable weight) is written the way scoring writes it, one layer at a
time, then each mode runs in its own process on the embedded model:

  in RAM         the whole file read into RAM (what sessions did before the ranking was lazy)
  lazy           read on use, every layer kept (the default cache, a quarter of RAM, holds it)
  lazy, small    read on use, at most --cache-mb of it kept: a ranking larger than RAM
  disk + small   the same with every decoder block offloaded to disk (`--device-map`): weights,
                 working copies and ranking all file-backed

Memory is anonymous RAM (RssAnon, sampled every 2 ms) above the process's level once the model
is loaded: file-backed pages (memory maps of the session's ranking file, which safetensors reads
through, and of the offloaded weights and working copies) are the kernel's page cache,
reclaimable, and not counted. What stays is the pruned working copies of weights held in RAM
(4 B per fp32 weight) and each row's order for slider moves (2 B per weight), kept for every
layer unless the cache is small. Times are one run each, so a few ms apart is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.table import print_table  # noqa: E402

#: glibc otherwise keeps freed multi-MB blocks in its heap (a dynamic mmap threshold), which would count
#: memory no tensor holds any more; with a fixed threshold large blocks go back to the OS when freed
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
MODES = ["in RAM", "lazy", "lazy, small", "disk + small"]
STEPS = [("first plan: 50 % per row", 0.5, "row"), ("slider step: 52 % per row", 0.52, "row"),
         ("global 50 %", 0.5, "global"), ("slider step: global 52 %", 0.52, "global"),
         ("layer-wise 50 %", 0.5, "layer")]


def anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class Peak:
    """The highest RssAnon seen while running."""

    def __init__(self):
        self.value, self._stop = anon_kb(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            self.value = max(self.value, anon_kb())
            time.sleep(0.002)

    def stop(self) -> int:
        self._stop = True
        self._thread.join()
        return max(self.value, anon_kb())


def write_ranking(path: Path) -> dict:
    """Random scores in the default model's layer shapes, streamed layer by layer like `score` does."""
    import torch

    from core.model.layers import prunable_layers
    from core.model.loading import load_model
    from core.pruning.ranking import Ranking, layer_ranking
    from core.session.atomic import StreamedSafetensors

    layers = prunable_layers(load_model("default", "cpu", "float32").model)
    shapes = {p.name: p.shape for p in layers}
    base = anon_kb()
    peak = Peak()
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    with StreamedSafetensors(path, Ranking.layout(shapes)) as stream:
        for name, shape in shapes.items():
            for k, t in Ranking.layer_tensors(name, layer_ranking(torch.rand(shape, generator=gen), 1.0)).items():
                stream.put(k, t)
    seconds = time.perf_counter() - start
    return {"weights": sum(p.numel for p in layers), "bytes": path.stat().st_size, "seconds": seconds,
            "peak_mb": (peak.stop() - base) / 1024, "largest_mb": max(a * b for a, b in shapes.values()) * 4 / 2**20}


def child(mode: str, path: str, cache_mb: float) -> dict:
    import torch
    from safetensors.torch import load_file

    from core.model.layers import prunable_layers
    from core.model.loading import load_model
    from core.pruning.masks import Pruner
    from core.pruning.ranking import Ranking
    from core.pruning.plan import SparsityPlan

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    device_map = None
    if mode == "disk + small":
        from transformers import AutoConfig

        from core.model.loading import ensure_default_cache

        n = AutoConfig.from_pretrained(ensure_default_cache()).num_hidden_layers
        device_map = json.dumps({"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
                                 "lm_head": "cpu", **{f"model.layers.{i}": "disk" for i in range(n)}})
    lm = load_model("default", "cpu", "float32", device_map=device_map)
    layers = prunable_layers(lm.model)
    base = anon_kb()
    peak = Peak()
    if mode == "in RAM":
        ranking = Ranking.from_tensors(load_file(path))
    else:
        ranking = Ranking.open(Path(path), None if mode == "lazy" else int(cache_mb * 2**20))
    pruner = Pruner(layers, ranking)
    times, steps = {}, {}
    for label, sparsity, granularity in STEPS:
        start = time.perf_counter()
        pruner.apply(SparsityPlan(sparsity, granularity=granularity))
        times[label] = time.perf_counter() - start
        steps[label] = (peak.value - base) / 1024
    ids = lm.tokenizer("The quick brown fox jumps over the lazy dog. " * 12, return_tensors="pt").input_ids[:, :128]
    start = time.perf_counter()
    with torch.no_grad():
        lm.model(ids)
    times["forward, 128 tokens"] = time.perf_counter() - start
    return {"times": times, "peak_mb": (peak.stop() - base) / 1024, "steps": steps,
            "reads": ranking.parts.reads if ranking.parts is not None else 0, "sparsity": pruner.achieved_sparsity()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-mb", type=float, default=32.0, help="the small cache (MB)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path, args.cache_mb)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ranking.safetensors"
        written = write_ranking(path)
        results = {}
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--path", str(path), "--cache-mb",
                                  str(args.cache_mb)], capture_output=True, text=True, check=True, env=CHILD_ENV)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    size_mb = written["bytes"] / 2**20
    rows = [("ranking on disk", f"{size_mb:.0f} MB for {written['weights'] / 1e6:.0f} M weights", "", None),
            ("streamed write: RAM above baseline", f"{written['peak_mb']:.0f} MB ({written['seconds']:.1f} s)",
             f"~ one layer's scores ({written['largest_mb']:.0f} MB), not the ranking", written["peak_mb"] < size_mb / 2)]
    for mode, r in results.items():
        rows.append((f"{mode}: RAM for ranking + masks", f"{r['peak_mb']:.0f} MB, {r['reads']} layer parts read", "", None))
    # what each mode holds, in principle: the working copies of the pruned weights (fp32, 4 B per weight) and
    # each row's order for slider moves (2 B per weight) are in RAM unless the blocks are on disk / the cache is small
    copies_mb = written["weights"] * 4 / 2**20
    ram = results["in RAM"]["peak_mb"]
    small = results["lazy, small"]["peak_mb"]
    rows.append(("lazy, small: bounded by the cache", f"{small:.0f} MB",
                 f"< in RAM ({ram:.0f} MB): orders beyond the cache not kept", small < ram))
    on_disk = copies_mb + size_mb + written["weights"] * 4 / 2**20
    disk = results["disk + small"]["peak_mb"]
    rows.append(("disk + small: bounded by disk", f"{disk:.0f} MB",
                 f"< 10 % of weights + ranking + copies ({on_disk:.0f} MB), all on disk", disk < 0.1 * on_disk))
    for label in [s[0] for s in STEPS] + ["forward, 128 tokens"]:
        ram = results["in RAM"]["times"][label]
        cells = ", ".join(f"{m} {results[m]['times'][label] * 1000:.0f} ms" for m in MODES)
        rows.append((label, cells, f"lazy within 1.5x of in RAM ({ram * 1000:.0f} ms)",
                     results["lazy"]["times"][label] <= 1.5 * ram + 0.005))
    print_table("Ranking RAM: written layer by layer, read lazily (embedded model's shapes, random scores)", rows)


if __name__ == "__main__":
    main()
