"""bench/quality.py's report: the tables in bench/results/quality.md and the plot, from a run's cells."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.quality_cells import ALLOCATED, AUTO, DATA, EXTRA, HEADLINE, Cell, Report, Size, expected_cells


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
