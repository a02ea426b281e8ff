"""What bench/quality.py measures: the sizes, scoring variants and the cells of a run, and its JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import Run

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
class Report(Run):
    defaults: dict = field(default_factory=dict)
    dense: dict = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    score_seconds: dict = field(default_factory=dict)
    plans: dict = field(default_factory=dict)  # "seed|sparsity|spread" -> LRP's relevance plan (for the hybrid)
    complete: bool = False  # False: the run was interrupted; the report says so


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


def expected_cells(size: Size) -> int:
    return sum(len(list(measures(v, seed, n, size))) for v, seed, n in jobs(size))


def load(json_path: Path) -> Report:
    data = json.loads(json_path.read_text())
    r = Report(**{k: v for k, v in data.items() if k != "cells"})
    r.cells = [Cell(**c) for c in data["cells"]]
    return r
