"""Quality report: how well each scorer and allocation keeps the model working, on text no scorer saw.

    uv run python bench/quality.py              # CI size: two CPU cores, about an hour
    uv run python bench/quality.py --size full  # GPU size: longer windows, more evaluation text, 3 seeds

Three disjoint texts, all from builtin:fortunes (FreeBSD's fortune file, ~10k entries):
  reference   the scoring split minus its last eighth: what the scorers read
  validation  the last eighth of the scoring split: never scored; the defaults (reduction,
              target, damping, allocation spread) were chosen on it, and it is reported
  test        the evaluation split: never scored and never used to choose anything; every
              headline number is measured here
Scorers that read data run with several seeds (different reference windows); tables show
mean ± half the range. Everything goes through the engine, as a user's session would: the
report lands in bench/RESULTS.md between the quality markers, the raw numbers in
bench/quality-<size>.json and the plot in bench/quality-<size>.png.
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
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.table import write_section  # noqa: E402 - after the path insert

DATA = "builtin:fortunes"
VALIDATION = "bench:validation"


@dataclass
class Size:
    samples: int  # reference windows per scoring run
    seq_len: int
    test_windows: int
    val_windows: int
    gen_prompts: int
    new_tokens: int
    seeds: int
    sweep: tuple[int, ...]
    sparsities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.6)
    spreads: tuple[float | None, ...] = (None, 0.05, 0.1)  # None: the default, 0.15 x sparsity
    batch_size: int = 8


SIZES = {
    "tiny": Size(4, 32, 4, 4, 2, 8, 2, (2, 4), (0.3, 0.5), (None, 0.1)),
    "ci": Size(128, 128, 48, 48, 6, 32, 2, (8, 32, 128, 256)),
    "full": Size(128, 512, 128, 64, 16, 50, 3, (8, 32, 128, 512), batch_size=4),
}

# Scoring configurations: a name and what differs from the defaults of core/settings.py.
VARIANTS = {
    "lrp": {},  # the shipped defaults
    "lrp pure relevance (damping 0)": {"damping": 0.0},
    "lrp activation norm in rows (damping inf)": {"damping": float("inf")},
    "lrp per-sample (previous default)": {"reduce": "abs-sample", "target": "logit"},
    "lrp target logit": {"target": "logit"},
    "gradient": {"scorer": "gradient"},
    "wanda": {"scorer": "wanda"},
    "magnitude": {"scorer": "magnitude"},
    "random": {"scorer": "random"},
}
HEADLINE = ("lrp", "gradient", "wanda", "magnitude", "random")  # the full sparsity sweep
ALLOCATED = ("lrp", "wanda")  # relevance and OWL allocation, and 2:4
EXTRA = ("lrp pure relevance (damping 0)", "lrp activation norm in rows (damping inf)",
         "lrp per-sample (previous default)", "lrp target logit")
AUTO = "auto"  # how a cell records the default spread (0.15 x sparsity)


@dataclass
class Cell:
    variant: str
    plan: str  # "uniform", "relevance", "owl", "hybrid" (LRP's allocation on Wanda's ranking), "2:4"
    seed: int
    samples: int
    sparsity: float
    perplexity: float  # test text
    validation: float  # validation text
    uniqueness: float
    sample: str
    spread: float | str | None = None  # the allocation's spread; AUTO for the default


@dataclass
class Report:
    size: str
    model: str
    command: str
    machine: str
    started: str
    defaults: dict = field(default_factory=dict)
    dense: dict = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    score_seconds: dict = field(default_factory=dict)
    plans: dict = field(default_factory=dict)  # "seed|sparsity|spread" -> LRP's relevance plan (for the hybrid)
    complete: bool = False  # False: the run was interrupted; the report says so


def split_validation(ps, val_share: float = 1 / 8):
    """The reference set without the last `val_share` of its scoring entries, and those entries as a set of their own."""
    from core.data.prompt_sets import PromptSet

    cut = int(len(ps.score) * (1 - val_share))
    reference = PromptSet(ps.spec, ps.score[:cut], ps.eval, ps.kind)
    validation = PromptSet(VALIDATION, [], ps.score[cut:], ps.kind)
    return reference, validation


def cell_key(c: Cell) -> tuple:
    return (c.variant, c.plan, c.seed, c.samples, c.sparsity, c.spread)


def jobs(size: Size) -> list[tuple[str, int, int]]:
    """(variant, seed, reference windows) in the order that matters most, so an interrupted run still answers
    the headline: seed 0 of the headline scorers, the reference-size sweep, further seeds, then LRP variants."""
    first = ("lrp", "wanda") + tuple(v for v in HEADLINE if v not in ("lrp", "wanda"))
    out = [(v, 0, size.samples) for v in first]
    out += [(v, 0, n) for n in size.sweep if n != size.samples for v in ("lrp", "wanda")]
    out += [(v, seed, size.samples) for seed in range(1, size.seeds) for v in first if v != "magnitude"]
    return out + [(v, 0, size.samples) for v in EXTRA]


def measures(variant: str, seed: int, samples: int, size: Size):
    """(plan name, sparsity, spread, plan maker) for one scoring run."""
    from core.pruning.plan import SparsityPlan

    def uniform(s):
        return lambda wb, report, seed: SparsityPlan(s)

    def relevance(s, spread):
        return lambda wb, report, seed: wb.relevance_plan(s, spread)

    def owl(s):
        return lambda wb, report, seed: wb.relevance_plan(s, method="owl")

    def hybrid(s, spread):
        def make(wb, report, seed):
            d = report.plans.get(f"{seed}|{s}|{spread}")
            return None if d is None else SparsityPlan(d["default"], [tuple(o) for o in d["overrides"]],
                                                         d["granularity"], d["count"])
        return make

    if samples != size.samples:  # the reference-size sweep
        yield "uniform", 0.5, None, uniform(0.5)
        yield "relevance", 0.5, AUTO, relevance(0.5, None)
        return
    for s in (size.sparsities if variant in HEADLINE else (0.5, 0.6)):
        yield "uniform", s, None, uniform(s)
    if variant in ALLOCATED:
        for s in (0.5, 0.6):
            for spread in size.spreads:
                yield "relevance", s, AUTO if spread is None else spread, relevance(s, spread)
            yield "owl", s, 0.08, owl(s)
        yield "2:4", 0.5, None, lambda wb, report, seed: SparsityPlan(0.5, granularity="2:4")
    elif variant in EXTRA:
        for s in (0.5, 0.6):
            yield "relevance", s, AUTO, relevance(s, None)
    if variant == "wanda":  # hybrid: LRP decides each block's share, Wanda the weights inside rows
        for s in (0.5, 0.6):
            for spread in size.spreads:
                yield "hybrid", s, AUTO if spread is None else spread, hybrid(s, AUTO if spread is None else spread)


CHECKPOINT: Path | None = None  # where the run's JSON is written after every cell


def expected_cells(size: Size) -> int:
    return sum(len(list(measures(v, seed, n, size))) for v, seed, n in jobs(size))


def checkpoint(report: Report) -> None:
    if CHECKPOINT is None:
        return
    tmp = CHECKPOINT.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(report), indent=1))
    tmp.replace(CHECKPOINT)


def run(size_name: str, model: str, device: str, dtype: str, resume: Report | None = None) -> Report:
    import torch

    from core.data.prompt_sets import load_prompt_set
    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import EvalConfig, ModelSpec, PruneConfig, ScoreConfig, default_of  # noqa: F401

    quiet_libraries()
    size = SIZES[size_name]
    lm = load_model(model, device, dtype)
    defaults = ScoreConfig().resolved("text")
    report = resume or Report(size_name, model, " ".join(["uv run python bench/quality.py"] + sys.argv[1:]),
                    f"{platform.machine()}, {torch.get_num_threads()} threads, {lm.info().get('device')}, "
                    f"torch {torch.__version__}", date.today().isoformat(),
                    {"reduce": defaults.reduce, "target": defaults.target, "damping": defaults.damping,
                     "allocate": default_of(PruneConfig, "allocate")})
    store = Path(tempfile.mkdtemp(prefix="quality-"))
    reference, validation = split_validation(load_prompt_set(DATA))
    test = EvalConfig(eval_data=DATA, metrics=("perplexity", "uniqueness"), samples=size.test_windows,
                      seq_len=size.seq_len, gen_prompts=size.gen_prompts, max_new_tokens=size.new_tokens)
    val = EvalConfig(eval_data=VALIDATION, metrics=("perplexity",), samples=size.val_windows, seq_len=size.seq_len)
    # One session for the whole run: each `score` replaces the ranking, and the dense model's
    # numbers are measured once (the session caches them by evaluation settings).
    wb = Workbench(Session.create(store, "quality"))
    wb.use_model(lm, ModelSpec(model, device, dtype))
    wb.use_prompt_set(reference)
    wb.use_prompt_set(validation)

    def measure(variant: str, plan_name: str, seed: int, samples: int, plan: SparsityPlan,
                spread: float | str | None = None) -> None:
        wb.prune(plan)
        res = wb.evaluate(test)
        v = wb.evaluate(val)["metrics"]["perplexity"]
        m = res["metrics"]
        if not report.dense:
            report.dense = {"perplexity": m["perplexity"]["dense"], "validation": v["dense"],
                            "uniqueness": m["uniqueness"]["dense"],
                            "sample": res["generations"]["dense"][0].strip()[:100], "prompt": res["generations"]["prompts"][0]}
        cell = Cell(variant, plan_name, seed, samples, plan.default, m["perplexity"]["pruned"], v["pruned"],
                    m["uniqueness"]["pruned"], res["generations"]["pruned"][0].strip()[:100], spread)
        report.cells.append(cell)
        print(f"  {variant:34s} {plan_name:9s} seed {seed} n={samples:4d} {plan.default:.0%}"
              f"{'' if spread is None else f' spread {spread}'}: test {cell.perplexity:9.2f}  val {cell.validation:9.2f}"
              f"  uniq {cell.uniqueness:.3f}", flush=True)

    def score(variant: str, seed: int, samples: int) -> None:
        cfg = replace(ScoreConfig(reference=DATA, samples=samples, seq_len=size.seq_len, batch_size=size.batch_size,
                                  seed=seed), **VARIANTS[variant])
        t0 = time.perf_counter()
        wb.score(cfg)
        report.score_seconds[f"{variant} n={samples} seed {seed}"] = round(time.perf_counter() - t0, 1)

    done = {cell_key(c) for c in report.cells}
    for variant, seed, samples in jobs(size):
        wanted = list(measures(variant, seed, samples, size))
        if all((variant, plan_name, seed, samples, s, spread) in done for plan_name, s, spread, _ in wanted):
            continue  # finished in an earlier, interrupted run (--resume)
        score(variant, seed, samples)
        for plan_name, s, spread, make in wanted:
            if (variant, plan_name, seed, samples, s, spread) in done:
                continue
            plan = make(wb, report, seed)
            if plan is None:
                continue  # a hybrid whose LRP allocation was not computed
            if variant == "lrp" and plan_name == "relevance" and samples == size.samples:
                report.plans[f"{seed}|{s}|{spread}"] = asdict(plan)  # for the hybrid
            measure(variant, plan_name, seed, samples, plan, spread)
            checkpoint(report)
    report.complete = True
    shutil.rmtree(store, ignore_errors=True)
    return report


# ---- formatting -----------------------------------------------------------------------
def _agg(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _flat(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def _pick(cells: list[Cell], **kw) -> list[Cell]:
    return [c for c in cells if all(getattr(c, k) == v for k, v in kw.items())]


def markdown(r: Report, size: Size, plot_name: str) -> str:
    main = [c for c in r.cells if c.samples == size.samples]
    d = r.defaults

    def ppl(field_name: str = "perplexity", **kw) -> list[float]:
        return [getattr(c, field_name) for c in _pick(main, **kw)]

    out = [
        f"## Quality (`{r.command}`)",
        "",
        f"Model `{r.model}`; {r.machine}; date {r.started}. Reference: {size.samples} windows x {size.seq_len} tokens "
        f"from `{DATA}`'s scoring split (its last eighth held out; seeds pick different windows, {size.seeds} seeds; "
        f"magnitude and the single-seed rows have one run). **Test** perplexity: {size.test_windows} windows of its "
        f"evaluation split, fortune entries no scorer saw and nothing was chosen on. **Validation** perplexity: "
        f"{size.val_windows} windows of the held-out eighth, where the defaults were chosen. Uniqueness: greedy, "
        f"{size.new_tokens} new tokens from {size.gen_prompts} test prompts. Row-wise unstructured unless a plan says "
        f"otherwise. Mean ± half the range over seeds.",
        "",
        f"Defaults under test (core/settings.py): `score --reduce {d['reduce']} --target {d['target']} --damping "
        f"{d['damping']}`, `prune --allocate {d['allocate']}` (relevance for compression; spread 0.15 x sparsity: 0.075 at "
        f"50%, 0.09 at 60%). `relevance` allocates by each layer's pure LRP relevance (damping 0) whatever the damping "
        f"inside rows; `owl` is OWL on the same scores (M = 5, lambda 0.08); `hybrid` is LRP's allocation applied to "
        f"Wanda's ranking.",
        "",
        f"Dense: test perplexity {r.dense['perplexity']:.2f}, validation {r.dense['validation']:.2f}, "
        f"uniqueness {r.dense['uniqueness']:.3f}.",
        "",
    ] + ([] if r.complete else [
        f"**Partial run**: it stopped after {len(r.cells)} of {expected_cells(size)} cells (cells run in order of "
        "importance: seed 0 of the headline scorers first); `-` marks what was not measured, and single values have "
        "one seed. Continue it with `--resume`.", ""]) + [
        "### Headline: test perplexity (lower is better)",
        "",
        "| configuration | 50% | vs uniform Wanda | 60% | vs uniform Wanda |",
        "|---|---:|---:|---:|---:|",
    ]
    wanda = {s: _mean(ppl(variant="wanda", plan="uniform", sparsity=s)) for s in (0.5, 0.6)}
    head = [("Wanda, uniform", dict(variant="wanda", plan="uniform")),
            ("LRP (defaults), uniform", dict(variant="lrp", plan="uniform")),
            ("LRP (defaults), relevance allocation: `workbench prune`'s default", dict(variant="lrp", plan="relevance", spread=AUTO)),
            ("LRP, OWL allocation", dict(variant="lrp", plan="owl")),
            ("Wanda, OWL allocation (OWL as published)", dict(variant="wanda", plan="owl")),
            ("Wanda, relevance allocation of its own scores", dict(variant="wanda", plan="relevance", spread=AUTO)),
            ("Hybrid: LRP's allocation, Wanda within rows", dict(variant="wanda", plan="hybrid", spread=AUTO)),
            ("gradient (same defaults), uniform", dict(variant="gradient", plan="uniform"))]
    for label, kw in head:
        row = [label]
        for s in (0.5, 0.6):
            v = ppl(sparsity=s, **kw)
            m = _mean(v)
            row += [_agg(v), f"{m / wanda[s]:.3f}" if m and wanda[s] else "-"]
        out.append("| " + " | ".join(row) + " |")
    out += ["", "### Uniform, row-wise: test perplexity", "",
            "| scorer | " + " | ".join(f"{s:.0%}" for s in size.sparsities) + " |",
            "|---|" + "---:|" * len(size.sparsities)]
    for v in HEADLINE:
        out.append(f"| {v} | " + " | ".join(_agg(ppl(variant=v, plan="uniform", sparsity=s)) for s in size.sparsities) + " |")
    out += ["", "### Allocation at the same overall sparsity: test perplexity (validation in brackets)", "",
            "| scorer | plan | 50% | 60% |", "|---|---|---:|---:|"]
    for v in ALLOCATED:
        rows = [("uniform", None)] + [("relevance", sp) for sp in size.spreads] + [("owl", 0.08)]
        if v == "wanda":
            rows += [("hybrid", sp) for sp in size.spreads]
        for plan, sp in rows:
            sp = AUTO if plan in ("relevance", "hybrid") and sp is None else sp
            kw = dict(variant=v, plan=plan) if sp is None else dict(variant=v, plan=plan, spread=sp)
            label = plan if sp is None else f"{plan} {sp}"
            cells = [f"{_agg(ppl(sparsity=s, **kw))} ({_agg(ppl('validation', sparsity=s, **kw), 1)})" for s in (0.5, 0.6)]
            out.append(f"| {v} | {label} | " + " | ".join(cells) + " |")
    out += ["", "### 2:4 semi-structured (50%): test perplexity", "", "| scorer | 2:4 | row-wise 50% |", "|---|---:|---:|"]
    for v in ALLOCATED:
        out.append(f"| {v} | {_agg(ppl(variant=v, plan='2:4'))} | {_agg(ppl(variant=v, plan='uniform', sparsity=0.5))} |")
    out += ["", "### LRP variants (seed 0): test perplexity (validation in brackets)", "",
            "| variant | uniform 50% | uniform 60% | relevance 50% | relevance 60% |", "|---|---:|---:|---:|---:|"]
    for v in ("lrp",) + EXTRA:
        cells = [f"{_agg(ppl(variant=v, plan=plan, sparsity=s, seed=0, **({'spread': AUTO} if plan == 'relevance' else {})))} "
                 f"({_agg(ppl('validation', variant=v, plan=plan, sparsity=s, seed=0, **({'spread': AUTO} if plan == 'relevance' else {})), 1)})"
                 for plan in ("uniform", "relevance") for s in (0.5, 0.6)]
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    sweep = sorted({c.samples for c in r.cells})
    if len(sweep) > 1:
        out += ["", "### Reference-set size at 50% (seed 0): test perplexity", "",
                "| scorer | plan | " + " | ".join(f"{n} windows" for n in sweep) + " |",
                "|---|---|" + "---:|" * len(sweep)]
        for v in ("lrp", "wanda"):
            for plan in ("uniform", "relevance"):
                vals = []
                for n in sweep:
                    c = [x for x in _pick(r.cells, variant=v, plan=plan, samples=n, sparsity=0.5, seed=0)
                         if plan == "uniform" or x.spread == AUTO]
                    vals.append(f"{c[0].perplexity:.2f}" if c else "-")
                out.append(f"| {v} | {plan} | " + " | ".join(vals) + " |")
    out += ["", f"### Response uniqueness (higher is better; dense {r.dense['uniqueness']:.3f})", "",
            "| scorer | " + " | ".join(f"{s:.0%}" for s in size.sparsities) + " |", "|---|" + "---:|" * len(size.sparsities)]
    for v in HEADLINE:
        out.append(f"| {v} | " + " | ".join(_agg(ppl("uniqueness", variant=v, plan="uniform", sparsity=s)) for s in size.sparsities) + " |")
    out += ["", "Scoring time (s): " + ", ".join(f"{k} {v}" for k, v in r.score_seconds.items()), "",
            f"Generated samples, seed 0 (prompt: \"{_flat(r.dense['prompt'])}\"; dense: \"{_flat(r.dense['sample'])}\"):", ""]
    for v in HEADLINE:
        for s in (0.5, 0.6):
            c = _pick(main, variant=v, plan="uniform", sparsity=s, seed=0)
            if c:
                out.append(f"- {v} uniform {s:.0%}: \"{_flat(c[0].sample)}\"")
    for s in (0.5, 0.6):
        c = [x for x in _pick(main, variant="lrp", plan="relevance", sparsity=s, seed=0) if x.spread == AUTO]
        if c:
            out.append(f"- lrp relevance {s:.0%}: \"{_flat(c[0].sample)}\"")
    out += ["", f"![perplexity against sparsity]({plot_name})", ""]
    return "\n".join(out)


def plot(r: Report, size: Size, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [c for c in r.cells if c.samples == size.samples]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    lines = [(v, "uniform", None) for v in HEADLINE] + [("lrp", "relevance", AUTO), ("wanda", "owl", 0.08)]
    for variant, plan, spread in lines:
        xs, ys, lo, hi = [0.0], [r.dense["perplexity"]], [r.dense["perplexity"]], [r.dense["perplexity"]]
        for s in sorted({c.sparsity for c in main}):
            v = [c.perplexity for c in _pick(main, variant=variant, plan=plan, sparsity=s) if spread is None or c.spread == spread]
            if v:
                xs.append(s); ys.append(statistics.mean(v)); lo.append(min(v)); hi.append(max(v))
        if len(xs) > 1:
            line, = ax.plot(xs, ys, marker="o", linestyle="-" if plan == "uniform" else "--", label=f"{variant} {plan}")
            ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
    ax.set_yscale("log")
    ax.set_ylim(r.dense["perplexity"] * 0.9, r.dense["perplexity"] * 12)  # random and magnitude run off the top
    ax.set_xlabel("sparsity")
    ax.set_ylabel("test perplexity (log)")
    ax.set_title(f"{r.model}: held-out perplexity vs sparsity ({r.size} size; clipped at 12x dense)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(md: str, results: Path) -> None:
    write_section(md, results, "quality")


def load(json_path: Path) -> Report:
    data = json.loads(json_path.read_text())
    r = Report(**{k: v for k, v in data.items() if k != "cells"})
    r.cells = [Cell(**c) for c in data["cells"]]
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md, the JSON and the PNG")
    ap.add_argument("--replot", type=Path, help="redraw the report and plot from a run's JSON (no model work)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run from its JSON (cells done are kept)")
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError

    global CHECKPOINT
    if args.replot:
        r = load(args.replot)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        CHECKPOINT = args.out / f"quality-{args.size}.json"
        previous = load(CHECKPOINT) if args.resume and CHECKPOINT.is_file() else None
        try:
            r = run(args.size, args.model, args.device, args.dtype, previous)
        except WorkbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        checkpoint(r)
    size = SIZES[r.size]
    png = f"quality-{r.size}.png"
    plot(r, size, args.out / png)
    md = markdown(r, size, png)
    write_results(md, args.out / "RESULTS.md")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
