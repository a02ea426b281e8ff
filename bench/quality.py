"""Quality report: held-out perplexity and uniqueness of every scorer at several sparsities.

    uv run python bench/quality.py              # CI size: fits two CPU cores in ~10 minutes
    uv run python bench/quality.py --size full  # GPU size: more reference data, 64k evaluation tokens

Reference samples come from the scoring split of builtin:fortunes, perplexity from its
evaluation split (disjoint fortune entries no scorer saw). Scorers that sample reference
data run with several seeds (different reference windows); the table shows mean ± spread
(half the range). The report goes into bench/RESULTS.md between the quality markers, the
raw numbers into bench/quality-<size>.json and the plot into bench/quality-<size>.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

START, END = "<!-- quality:start -->", "<!-- quality:end -->"


@dataclass
class Size:
    samples: int  # reference windows per scoring run
    seq_len: int
    eval_windows: int
    gen_prompts: int
    new_tokens: int
    seeds: int
    sweep: tuple[int, ...]
    sparsities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.6)
    spreads: tuple[float, ...] = (0.05, 0.1, 0.2)
    batch_size: int = 8


SIZES = {
    "tiny": Size(4, 32, 4, 2, 8, 2, (2, 4), (0.3, 0.5), (0.1,)),
    "ci": Size(32, 128, 48, 6, 32, 2, (8, 32, 128)),
    "full": Size(128, 512, 128, 16, 50, 3, (8, 32, 128, 512), batch_size=4),
}
SCORERS = ("lrp", "wanda", "gradient", "magnitude", "random")
DATA = "builtin:fortunes"


@dataclass
class Cell:
    scorer: str
    allocation: str
    seed: int
    samples: int
    sparsity: float
    perplexity: float
    uniqueness: float
    sample: str
    spread: float | None = None


@dataclass
class Report:
    size: str
    model: str
    command: str
    machine: str
    started: str
    dense: dict = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    score_seconds: dict = field(default_factory=dict)


def run(size_name: str, model: str, out_dir: Path, device: str, dtype: str) -> Report:
    import torch

    from core.engine import Workbench
    from core.model.loading import load_model
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import EvalConfig, ModelSpec, ScoreConfig

    size = SIZES[size_name]
    lm = load_model(model, device, dtype)
    report = Report(size_name, model, " ".join(["uv run python bench/quality.py"] + sys.argv[1:]),
                    f"{platform.machine()}, {torch.get_num_threads()} threads, {lm.info().get('device')}, "
                    f"torch {torch.__version__}", date.today().isoformat())
    store = Path(tempfile.mkdtemp(prefix="quality-"))
    ev = EvalConfig(eval_data=DATA, metrics=("perplexity", "uniqueness"), samples=size.eval_windows,
                    seq_len=size.seq_len, gen_prompts=size.gen_prompts, max_new_tokens=size.new_tokens)
    # One session for the whole run: each `score` replaces the ranking, and the dense model's
    # numbers are measured once (the session caches them by evaluation settings).
    wb = Workbench(Session.create(store, "quality"))
    wb.use_model(lm, ModelSpec(model, device, dtype))

    def measure(scorer: str, allocation: str, seed: int, samples: int, plan: SparsityPlan,
                spread: float | None = None) -> None:
        wb.prune(plan)
        res = wb.evaluate(ev)
        m = res["metrics"]
        if not report.dense:
            report.dense = {"perplexity": m["perplexity"]["dense"], "uniqueness": m["uniqueness"]["dense"],
                            "sample": res["generations"]["dense"][0].strip()[:100], "prompt": res["generations"]["prompts"][0]}
        cell = Cell(scorer, allocation, seed, samples, plan.default, m["perplexity"]["pruned"], m["uniqueness"]["pruned"],
                    res["generations"]["pruned"][0].strip()[:100], spread)
        report.cells.append(cell)
        print(f"  {scorer:9s} {allocation:9s} seed {seed} n={samples:4d} {plan.default:.0%}"
              f"{'' if spread is None else f' spread {spread}'}: ppl {cell.perplexity:9.2f}  uniq {cell.uniqueness:.3f}", flush=True)

    def score(scorer: str, seed: int, samples: int) -> None:
        t0 = time.perf_counter()
        wb.score(ScoreConfig(reference=DATA, scorer=scorer, samples=samples, seq_len=size.seq_len,
                             batch_size=size.batch_size, seed=seed))
        report.score_seconds[f"{scorer} n={samples}"] = round(time.perf_counter() - t0, 1)

    for scorer in SCORERS:
        for seed in range(1 if scorer == "magnitude" else size.seeds):
            score(scorer, seed, size.samples)
            for s in size.sparsities:
                measure(scorer, "uniform", seed, size.samples, SparsityPlan(s))
            if scorer in ("lrp", "wanda"):
                for s in size.sparsities:
                    measure(scorer, "relevance", seed, size.samples, wb.relevance_plan(s, 0.1))
                for spread in size.spreads:
                    if spread != 0.1:
                        measure(scorer, "relevance", seed, size.samples, wb.relevance_plan(0.5, spread), spread)
                measure(scorer, "relevance-raw", seed, size.samples, wb.relevance_plan(0.5, 0.1, method="relevance-raw"))
    for n in size.sweep:
        if n == size.samples:
            continue
        for scorer in ("lrp", "wanda"):
            score(scorer, 0, n)
            measure(scorer, "uniform", 0, n, SparsityPlan(0.5))
            measure(scorer, "relevance", 0, n, wb.relevance_plan(0.5, 0.1))
    shutil.rmtree(store, ignore_errors=True)
    return report


# ---- formatting -----------------------------------------------------------------------
def _agg(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"


def _flat(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def _pick(cells: list[Cell], **kw) -> list[Cell]:
    return [c for c in cells if all(getattr(c, k) == v for k, v in kw.items())]


def markdown(r: Report, size: Size, plot_name: str) -> str:
    main = [c for c in r.cells if c.samples == size.samples and c.spread is None]
    rows = [("lrp", "uniform"), ("lrp", "relevance"), ("lrp", "relevance-raw"), ("wanda", "uniform"),
            ("wanda", "relevance"), ("wanda", "relevance-raw"), ("gradient", "uniform"), ("magnitude", "uniform"),
            ("random", "uniform")]
    out = [
        f"## Quality (`{r.command}`)",
        "",
        f"Model `{r.model}`; {r.machine}; date {r.started}. Reference: {size.samples} windows x {size.seq_len} tokens "
        f"from the scoring split of `{DATA}` (seeds pick different windows; {size.seeds} seeds, magnitude has none). "
        f"Perplexity: {size.eval_windows} windows x {size.seq_len} tokens of its evaluation split, fortune entries no "
        f"scorer saw. Uniqueness: greedy, {size.new_tokens} new tokens from {size.gen_prompts} held-out prompts. "
        f"Row-wise unstructured; `relevance` = sparsity allocated from the scorer's own scores (blocks against "
        f"the depth trend, then attention vs MLP inside each block; spread 0.1, same overall sparsity); "
        f"`relevance-raw` = blocks by raw relevance per weight (the literal rule). Mean ± half the range over seeds.",
        "",
        f"Dense: perplexity {r.dense['perplexity']:.2f}, uniqueness {r.dense['uniqueness']:.3f}.",
        "",
        "Held-out perplexity (lower is better):",
        "",
        "| scorer | plan | " + " | ".join(f"{s:.0%}" for s in size.sparsities) + " |",
        "|---|---|" + "---:|" * len(size.sparsities),
    ]
    for scorer, alloc in rows:
        vals = [[c.perplexity for c in _pick(main, scorer=scorer, allocation=alloc, sparsity=s)] for s in size.sparsities]
        if any(vals):
            out.append(f"| {scorer} | {alloc} | " + " | ".join(_agg(v) if v else "-" for v in vals) + " |")
    out += ["", "Response uniqueness (higher is better; dense "
            f"{r.dense['uniqueness']:.3f}):", "",
            "| scorer | plan | " + " | ".join(f"{s:.0%}" for s in size.sparsities) + " |",
            "|---|---|" + "---:|" * len(size.sparsities)]
    for scorer, alloc in rows:
        vals = [[c.uniqueness for c in _pick(main, scorer=scorer, allocation=alloc, sparsity=s)] for s in size.sparsities]
        if any(vals):
            out.append(f"| {scorer} | {alloc} | " + " | ".join(_agg(v) if v else "-" for v in vals) + " |")
    spread_cells = [c for c in r.cells if c.samples == size.samples and c.sparsity == 0.5 and c.allocation == "relevance"]
    if spread_cells:
        out += ["", "Allocation spread at 50 % (perplexity; default 0.1, chosen on builtin:general's held-out text):", "",
                "| scorer | " + " | ".join(f"spread {s}" for s in sorted({c.spread or 0.1 for c in spread_cells})) + " |",
                "|---|" + "---:|" * len({c.spread or 0.1 for c in spread_cells})]
        for scorer in ("lrp", "wanda"):
            vals = [[c.perplexity for c in spread_cells if c.scorer == scorer and (c.spread or 0.1) == s]
                    for s in sorted({c.spread or 0.1 for c in spread_cells})]
            if all(vals):
                out.append(f"| {scorer} | " + " | ".join(_agg(v) for v in vals) + " |")
    sweep = sorted({c.samples for c in r.cells})
    if len(sweep) > 1:
        out += ["", "Reference-set size at 50 % (perplexity, seed 0):", "",
                "| scorer | plan | " + " | ".join(f"{n} samples" for n in sweep) + " |",
                "|---|---|" + "---:|" * len(sweep)]
        for scorer in ("lrp", "wanda"):
            for alloc in ("uniform", "relevance"):
                vals = [_pick(r.cells, scorer=scorer, allocation=alloc, samples=n, sparsity=0.5, seed=0, spread=None) for n in sweep]
                out.append(f"| {scorer} | {alloc} | " + " | ".join(f"{v[0].perplexity:.2f}" if v else "-" for v in vals) + " |")
    out += ["", "Scoring time (s): " + ", ".join(f"{k} {v}" for k, v in r.score_seconds.items()), "",
            f"Generated samples, seed 0 (prompt: \"{_flat(r.dense['prompt'])}\"; dense: \"{_flat(r.dense['sample'])}\"):", ""]
    for scorer, alloc in rows:
        for s in size.sparsities:
            c = _pick(main, scorer=scorer, allocation=alloc, sparsity=s, seed=0)
            if c:
                out.append(f"- {scorer} {alloc} {s:.0%}: \"{_flat(c[0].sample)}\"")
    out += ["", f"![perplexity against sparsity]({plot_name})", ""]
    return "\n".join(out)


def plot(r: Report, size: Size, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [c for c in r.cells if c.samples == size.samples and c.spread is None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scorer, alloc in [("lrp", "uniform"), ("lrp", "relevance"), ("wanda", "uniform"), ("wanda", "relevance"),
                          ("gradient", "uniform"), ("magnitude", "uniform"), ("random", "uniform")]:
        xs, ys, lo, hi = [0.0], [r.dense["perplexity"]], [r.dense["perplexity"]], [r.dense["perplexity"]]
        for s in size.sparsities:
            v = [c.perplexity for c in _pick(main, scorer=scorer, allocation=alloc, sparsity=s)]
            if v:
                xs.append(s); ys.append(statistics.mean(v)); lo.append(min(v)); hi.append(max(v))
        if len(xs) > 1:
            line, = ax.plot(xs, ys, marker="o", linestyle="--" if alloc == "relevance" else "-", label=f"{scorer} {alloc}")
            ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
    ax.set_yscale("log")
    ax.set_ylim(r.dense["perplexity"] * 0.9, r.dense["perplexity"] * 12)  # random and magnitude run off the top
    ax.set_xlabel("sparsity (row-wise)")
    ax.set_ylabel("held-out perplexity (log)")
    ax.set_title(f"{r.model}: held-out perplexity vs sparsity ({r.size} size; clipped at 12x dense)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(md: str, results: Path) -> None:
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + START + "\n" + md + "\n" + END + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + START + "\n" + md + "\n" + END + "\n"
    tmp = results.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(results)


def replot(json_path: Path) -> None:
    """Redraw the PNG from a run's JSON (no model work)."""
    data = json.loads(json_path.read_text())
    r = Report(**{k: v for k, v in data.items() if k != "cells"})
    r.cells = [Cell(**c) for c in data["cells"]]
    plot(r, SIZES[r.size], json_path.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md, the JSON and the PNG")
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError

    try:
        r = run(args.size, args.model, args.out, args.device, args.dtype)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = SIZES[args.size]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"quality-{args.size}.json").write_text(json.dumps(asdict(r), indent=1))
    png = f"quality-{args.size}.png"
    plot(r, size, args.out / png)
    md = markdown(r, size, png)
    write_results(md, args.out / "RESULTS.md")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
