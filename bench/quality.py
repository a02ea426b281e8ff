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
report lands in bench/results/quality.md between the quality markers, the raw numbers in
bench/results/quality-<size>.json and the plot in bench/results/quality-<size>.png.
What is measured is in bench/quality_cells.py, the tables and the plot in bench/quality_report.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.quality_cells import (  # noqa: E402 - after the path insert
    DATA, SIZES, VALIDATION, VARIANTS, Cell, Report, cell_key, jobs, load, measures)
from bench.quality_report import markdown, plot  # noqa: E402
from bench.report import RESULTS, publish, run_head, save  # noqa: E402


def split_validation(ps, val_share: float = 1 / 8):
    """The reference set without the last `val_share` of its scoring entries, and those entries as a set of their own."""
    from core.data.prompt_sets import PromptSet

    cut = int(len(ps.score) * (1 - val_share))
    reference = PromptSet(ps.spec, ps.score[:cut], ps.eval, ps.kind)
    validation = PromptSet(VALIDATION, [], ps.score[cut:], ps.kind)
    return reference, validation


CHECKPOINT: Path | None = None  # where the run's JSON is written after every cell


def checkpoint(report: Report) -> None:
    save(report, CHECKPOINT)


def run(size_name: str, model: str, device: str, dtype: str, resume: Report | None = None) -> Report:
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
    report = resume or Report(**run_head("quality.py", size_name, model, lm),
                              defaults={"reduce": defaults.reduce, "target": defaults.target, "damping": defaults.damping,
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
        v = wb.evaluate(val).metrics["perplexity"]
        m = res.metrics
        if not report.dense:
            report.dense = {"perplexity": m["perplexity"].dense, "validation": v.dense,
                            "uniqueness": m["uniqueness"].dense,
                            "sample": res.generations.dense[0].strip()[:100], "prompt": res.generations.prompts[0]}
        cell = Cell(variant, plan_name, seed, samples, plan.default, m["perplexity"].pruned, v.pruned,
                    m["uniqueness"].pruned, res.generations.pruned[0].strip()[:100], spread)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for quality.md, the JSON and the PNG")
    ap.add_argument("--replot", type=Path, help="redraw the report and plot from a run's JSON (no model work)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run from its JSON (cells done are kept)")
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError

    global CHECKPOINT
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        r = load(args.replot)
    else:
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
    publish(md, args.out, "quality", "quality")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
