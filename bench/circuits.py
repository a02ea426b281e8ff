"""Circuits report: how few components each scorer needs to keep a task, CAP vs LRP vs Wanda, CAP's cost.

    uv run python bench/circuits.py              # CI size: two CPU cores, about 20 minutes
    uv run python bench/circuits.py --size units # heads and neurons, IOI and agreement, zero/mean/patch, EAP-IG
    uv run python bench/circuits.py --size heads # IOI heads only, zero/mean/patch, every head scorer
    uv run python bench/circuits.py --size heads-agreement  # agreement heads over 3 seeds, every head scorer
    uv run python bench/circuits.py --size heads-agreement-subject  # the same over 3 seeds, counterparts that flip the subject
    uv run python bench/circuits.py --size heads-seeds  # IOI heads, every head scorer over 3 seeds, zero and mean
    uv run python bench/circuits.py --size weights  # IOI single weights, every weight scorer over 3 seeds
    uv run python bench/circuits.py --size neurons  # IOI MLP neurons, 3 seeds, every neuron ranking; zero and mean
    uv run python bench/circuits.py --size neurons-agreement  # the same on agreement (and weights-agreement)
    uv run python bench/circuits.py --size heads --model gemma3-270m  # the same on Gemma 3 270M
    uv run python bench/circuits.py --size tiny  # a smoke run (tests)

1. Circuit size: on builtin:ioi (evaluation items never scored), the fraction of weights,
   MLP neurons and attention heads each scorer's ranking must keep for 80 % of the dense
   logit difference; seeds pick different scoring items (mean ± half the range).
2. Compression at 10, 20 and 50 % (row-wise, uniform): CAP vs LRP vs Wanda scored on the
   same fortunes windows, measured on held-out fortunes text and on the IOI task.
3. Speed: CAP's time against one LRP pass over the same samples and its linear
   approximation's, and CAP's cost in forward-pass equivalents per head.
Results go into bench/results/circuits.md between the circuits markers, bench/results/circuits-<size>.json
and bench/results/circuits-<size>.png.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import RESULTS, Run, load, publish, run_head, save  # noqa: E402 - after the path insert

TASK = "builtin:ioi"
TEXT = "builtin:fortunes"
TOP_HEADS = 10
LABEL = {"global": "weight"}  # single weights are ranked across the model (granularity global)


@dataclass
class Size:
    task_samples: int  # scoring items per seed
    seeds: int
    text_samples: int  # fortunes windows for the compression comparison
    text_eval: int
    seq_len: int
    # "name:reduce" scores with that --reduce; plain names use the default (abs for a task set)
    scorers: tuple[str, ...] = ("lrp", "lrp:token-rms", "gradient", "gradient:token-rms", "cap", "cap-linear", "wanda",
                                "random")
    granularities: tuple[str, ...] = ("global", "neuron", "head")
    sparsities: tuple[float, ...] = (0.1, 0.2, 0.5)  # () skips the compression comparison (and the speed step)
    ablations: tuple[str, ...] = ("zero",)  # for heads and neurons; weights are always zeroed
    tasks: tuple[str, ...] = (TASK,)


SIZES = {"tiny": Size(8, 1, 2, 2, 32, scorers=("lrp", "cap", "eap-ig"), sparsities=(0.1,), ablations=("zero", "patch")),
         "ci": Size(32, 3, 12, 32, 128),
         "units": Size(32, 1, 12, 32, 128, scorers=("lrp", "eap-ig", "eap-ig-mean", "gradient", "cap", "cap-linear",
                                                    "wanda", "random"),
                       granularities=("neuron", "head"), sparsities=(), ablations=("zero", "mean", "patch"),
                       tasks=(TASK, "builtin:agreement")),
         "heads": Size(32, 1, 12, 32, 128, scorers=("lrp", "eap-ig", "learned-mask", "eap-ig-mean", "gradient",
                                                    "cap-linear", "wanda", "random", "cap"),
                       granularities=("head",),
                       sparsities=(), ablations=("zero", "mean", "patch")),
         "heads-agreement": Size(32, 3, 12, 32, 128, scorers=("lrp", "eap-ig", "learned-mask", "eap-ig-mean", "random",
                                                              "gradient", "cap-linear", "wanda", "cap"),
                                 granularities=("head",), sparsities=(), ablations=("zero", "mean", "patch"),
                                 tasks=("builtin:agreement",)),
         # MLP neurons on IOI with the fine search, every neuron ranking
         "neurons": Size(32, 3, 12, 32, 128, scorers=("learned-mask", "lrp", "eap-ig", "eap-ig-mean", "gradient",
                                                      "cap-linear", "wanda", "random", "cap"), granularities=("neuron",),
                         sparsities=(), ablations=("zero", "mean")),
         # every head ranking over three draws of the scoring items
         "heads-seeds": Size(32, 3, 12, 32, 128, scorers=("learned-mask", "lrp", "eap-ig", "eap-ig-mean", "gradient",
                                                          "cap-linear", "wanda", "random", "cap"),
                             granularities=("head",), sparsities=(), ablations=("zero", "mean")),
         # single weights ranked across the model, with the fine search, over three draws (node-level methods,
         # EAP-IG and CAP, rank weights through their units' scores: see `workbench scorers`)
         "weights": Size(32, 3, 12, 32, 128, scorers=("lrp", "gradient", "eap-ig", "cap-linear", "wanda", "random", "cap"),
                         granularities=("global",), sparsities=(), ablations=("zero",))}
# the same with counterparts that change the answer (the subject's number flipped), so patching means something
SIZES["heads-agreement-subject"] = replace(SIZES["heads-agreement"], tasks=("builtin:agreement-subject",))
SIZES["neurons-agreement"] = replace(SIZES["neurons"], tasks=("builtin:agreement",))
SIZES["weights-agreement"] = replace(SIZES["weights"], tasks=("builtin:agreement",))


@dataclass
class Report(Run):
    circuits: list[dict] = field(default_factory=list)  # one per scorer, seed and granularity
    compression: list[dict] = field(default_factory=list)
    speed: dict = field(default_factory=dict)
    heads: dict = field(default_factory=dict)  # scorer -> the IOI head circuit's kept heads (seed 0)
    top_heads: dict = field(default_factory=dict)  # scorer -> its highest-scored IOI heads (seed 0), best first
    complete: bool = False


CHECKPOINT: Path | None = None  # the run's JSON, rewritten after every step (--resume continues from it)


def checkpoint(report: Report) -> None:
    save(report, CHECKPOINT)


def run(size_name: str, model: str, resume: Report | None = None) -> Report:
    import torch

    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import CircuitConfig, EvalConfig, ModelSpec, ScoreConfig

    quiet_libraries()
    size = SIZES[size_name]
    lm = load_model(model, "auto", "auto")
    report = resume or Report(**run_head("circuits.py", size_name, model, lm))
    report.complete = False  # until this run's last step: a resumed run stopped again is partial again
    store = Path(tempfile.mkdtemp(prefix="circuits-"))
    atexit.register(shutil.rmtree, store, True)  # its rankings take hundreds of MB per run
    wb = Workbench(Session.create(store, "bench"))
    wb.use_model(lm, ModelSpec(model))

    # 1. speed on fortunes windows: CAP, its linear approximation, one LRP pass, one forward pass
    if not report.speed and size.sparsities:
        from core.attribution.runner import run_scorer
        from core.attribution.samples import scoring_batches
        from core.model.units import heads

        ps = wb.prompt_set(TEXT)
        batches = scoring_batches(lm, ps, ScoreConfig(reference=TEXT, samples=size.text_samples, seq_len=size.seq_len), 8)
        timings = {}
        for name in ("lrp", "cap-linear", "cap"):
            t0 = time.perf_counter()
            run_scorer(name, lm.model, wb.layers, batches)
            timings[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                lm.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False)
        forward = time.perf_counter() - t0
        n_heads = len(heads(lm.model, wb.layers))
        report.speed = {"samples": size.text_samples, "seq_len": size.seq_len, "heads": n_heads, "forward_s": forward,
                        **{f"{k}_s": v for k, v in timings.items()},
                        "cap_forwards_per_head": timings["cap"] / forward / n_heads}
        print(f"  speed: {report.speed}", flush=True)
        checkpoint(report)

    # 2. circuit size per task, scorer, seed, granularity and ablation (one scoring per task, scorer and seed)
    done = {(c.get("task", TASK), c["scorer"], c["seed"]) for c in report.circuits}
    for task in size.tasks:
        for scorer in size.scorers:
            for seed in range(size.seeds):
                if (task, scorer, seed) in done:
                    continue
                t0 = time.perf_counter()
                name, _, reduce = scorer.partition(":")
                wb.score(ScoreConfig(reference=task, scorer=name, samples=size.task_samples, seed=seed, seq_len=64,
                                     reduce=reduce or None))
                scored = time.perf_counter() - t0
                if seed == 0 and task == TASK:  # the heads each scorer ranks highest for IOI
                    units, scores = wb.ensure_pruner().units("head")
                    order = scores.argsort(descending=True).tolist()[:TOP_HEADS]
                    report.top_heads[scorer] = [f"{units[i].block}.{units[i].index}" for i in order]
                for g in size.granularities:
                    for ablation in size.ablations if g != "global" else ("zero",):
                        t0 = time.perf_counter()
                        r = wb.circuit(CircuitConfig(granularity=g, ablation=ablation), save=False).to_json()
                        if g == "neuron" and r["map"]:  # 46k flags per circuit: keep the kept count per block
                            r["map"] = {**r["map"], "blocks": {b: sum(f) for b, f in r["map"]["blocks"].items()},
                                        "kept_per_block": True}
                        report.circuits.append({**r, "scorer": scorer, "seed": seed, "score_s": round(scored, 1),
                                                "circuit_s": round(time.perf_counter() - t0, 1)})
                        print(f"  {task} {scorer:10s} seed {seed} {g:6s} {ablation:5s}: circuit {r['circuit_kept']} "
                              f"area {r['area']:.3f}", flush=True)
                        if g == "head" and seed == 0:
                            blocks = r["map"].get("blocks", {})
                            report.heads[f"{task} {scorer} {ablation}"] = [
                                f"{b}.{h}" for b, flags in blocks.items() for h, on in enumerate(flags) if on]
                checkpoint(report)

    # 3. compression: CAP vs LRP vs Wanda on the same fortunes windows, held-out text and the IOI task
    text_eval = EvalConfig(eval_data=TEXT, metrics=("perplexity",), samples=size.text_eval, seq_len=size.seq_len)
    task_eval = EvalConfig(eval_data=TASK, metrics=("task_accuracy", "task_logit_diff"))
    done = {(c["scorer"], c["reference"]) for c in report.compression}
    for scorer in ("cap", "lrp", "wanda") if size.sparsities else ():
        for reference in (TEXT, TASK):
            if (scorer, reference) in done:
                continue
            n = size.text_samples if reference == TEXT else size.task_samples
            wb.score(ScoreConfig(reference=reference, scorer=scorer, samples=n, seq_len=size.seq_len if reference == TEXT else 64))
            for s in size.sparsities:
                wb.prune(SparsityPlan(s))
                ppl = wb.evaluate(text_eval).metrics["perplexity"]
                t = wb.evaluate(task_eval).metrics
                report.compression.append({"scorer": scorer, "reference": reference, "sparsity": s,
                                           "perplexity": ppl.pruned, "dense_perplexity": ppl.dense,
                                           "task_accuracy": t["task_accuracy"].pruned,
                                           "task_logit_diff": t["task_logit_diff"].pruned,
                                           "dense_logit_diff": t["task_logit_diff"].dense})
                print(f"  {scorer:6s} on {reference:16s} {s:.0%}: ppl {ppl.pruned:.2f} task {t['task_logit_diff'].pruned:.3f}", flush=True)
            checkpoint(report)
    report.complete = True
    return report


def _agg(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {(max(values) - min(values)) / 2:.2g}"


def markdown(r: Report, size: Size, plot_name: str) -> str:
    out = [f"## Circuits (`{r.command}`)", "",
           f"Model `{r.model}`; {r.machine}; date {r.started}. Tasks {', '.join(size.tasks)}: {size.task_samples} scoring items per seed "
           f"({size.seeds} seeds pick different items), 64 evaluation items never scored. A circuit keeps the top "
           f"fraction of components by the scorer's ranking (weights ranked across the model; MLP neurons; attention "
           f"heads) and prunes the rest; the circuit is the smallest kept fraction from which the task's logit "
           f"difference stays at or above 80 % of the dense model's (normalised so that the dense model is 1 and the "
           f"model with every component of that kind pruned is 0). Smaller is better. Heads and neurons are ranked by "
           f"their own scores: for lrp and gradient the relevance of the unit's output (the slice of the output or "
           f"down projection's input that it writes), for cap its masking effect and for cap-linear that effect's "
           f"first-order estimate; wanda and random sum their weights' scores. `lrp` and `gradient` explain the task "
           f"with the default for task sets, `--reduce abs` (the paper's |mean relevance|); `lrp:token-rms` and "
           f"`gradient:token-rms` use the text default (per-token rms, damping 4) instead.", "",
           *([] if r.complete else ["**Partial run**: it stopped before every step finished; missing cells are `-`. "
                                     "Continue it with `--resume`.", ""]),
           "`eap-ig` is EAP-IG at node level (integrated gradients from each unit's corrupted to its clean output, "
           "times their difference, 5 steps); `eap-ig-mean` integrates from each unit's mean output instead, the "
           "counterpart a mean ablation uses; `learned-mask` is not an attribution but a search: a gate on each "
           "unit's output (closed: the unit's mean), trained by gradient descent on the scoring items to keep the "
           "logit difference with as few units open as possible. Ablations, for heads and neurons: `zero` prunes; `mean` puts each "
           "removed unit at its mean output over the task's scoring items; `patch` at its output on the item's "
           "corrupted counterpart (IOI: three other names; agreement: the attractor's number flipped; agreement-subject: the subject's). The area is "
           "under the normalised curve over kept fractions (threshold-free; larger is better, 1 loses nothing).", ""]
    for task in size.tasks:
        for ablation in size.ablations:
            grans = [g for g in size.granularities if ablation == "zero" or g != "global"]
            rows = [c for c in r.circuits if c.get("task", TASK) == task and c.get("ablation", "zero") == ablation]
            if not rows:
                continue
            out += [f"### {task}, {ablation} ablation: fraction kept for 80 % of the dense logit difference "
                    "(area under the curve)", "",
                    "| scorer | " + " | ".join(LABEL.get(g, g) for g in grans) + " | scoring time |", "|---|" + "---:|" * (len(grans) + 1)]
            for scorer in [sc for sc in size.scorers if any(c["scorer"] == sc for c in rows)]:
                cells = []
                for g in grans:
                    runs = [c for c in rows if c["scorer"] == scorer and c["granularity"] == g]
                    cells.append(f"{_agg([c['circuit_kept'] for c in runs])} ({_agg([c.get('area') for c in runs])})"
                                 if runs else "-")
                times = [c["score_s"] for c in rows if c["scorer"] == scorer]
                out.append(f"| {scorer} | " + " | ".join(cells) + f" | {statistics.mean(times):.0f} s |" if times else
                           f"| {scorer} | " + " | ".join(cells) + " | - |")
            heads = [c for c in rows if c["granularity"] == "head" and c["seed"] == 0 and c["circuit_kept"] is not None]
            if heads:
                best = min(heads, key=lambda c: c["circuit_kept"])
                named = r.heads.get(f"{task} {best['scorer']} {ablation}") or []
                out += ["", f"Smallest head circuit: {best['scorer']}, {len(named)} heads (block.head): {' '.join(named)}."]
            out.append("")
    for task in size.tasks:
        dense = next((c["dense"] for c in r.circuits if c.get("task", TASK) == task), None)
        out += ["", f"Dense {task} logit difference on the evaluation items: {dense:.3f}." if dense is not None else ""]
    for scorer in size.scorers:
        if r.top_heads.get(scorer) and "head" in size.granularities:  # a run without head circuits names no heads
            kept = r.heads.get(f"{TASK} {scorer} zero") or r.heads.get(scorer) or []
            out.append(f"- {scorer}: its {len(r.top_heads[scorer])} highest-scored heads (seed 0; block.head, best first): "
                       f"{' '.join(r.top_heads[scorer])}; its head circuit (zero ablation) keeps {len(kept)} heads.")
    if not size.sparsities:
        out += ["", f"![circuit curves]({plot_name})", ""]
        return "\n".join(out)
    out += ["", "### Compression: CAP vs LRP vs Wanda (row-wise, uniform)", "",
            f"Scored on {size.text_samples} fortunes windows of {size.seq_len} tokens (or {size.task_samples} IOI "
            f"items); perplexity on {size.text_eval} held-out fortunes windows, the task on the 64 IOI evaluation items.", "",
            "| scorer | scored on | " + " | ".join(f"ppl {s:.0%}" for s in size.sparsities) + " | "
            + " | ".join(f"IOI logit diff {s:.0%}" for s in size.sparsities) + " |",
            "|---|---|" + "---:|" * (2 * len(size.sparsities))]
    for scorer in ("cap", "lrp", "wanda"):
        for reference in (TEXT, TASK):
            cells = [c for c in r.compression if c["scorer"] == scorer and c["reference"] == reference]
            by = {c["sparsity"]: c for c in cells}
            out.append(f"| {scorer} | {reference} | "
                       + " | ".join(f"{by[s]['perplexity']:.2f}" if s in by else "-" for s in size.sparsities) + " | "
                       + " | ".join(f"{by[s]['task_logit_diff']:.3f}" if s in by else "-" for s in size.sparsities) + " |")
    if r.compression:
        c = r.compression[0]
        out.append(f"\nDense: perplexity {c['dense_perplexity']:.2f}, IOI logit difference {c['dense_logit_diff']:.3f}.")
    sp = r.speed
    if sp:
        out += ["", "### Speed", "",
                f"{sp['samples']} windows of {sp['seq_len']} tokens, {sp['heads']} heads; one forward pass over them "
                f"{sp['forward_s']:.1f} s.", "",
                "| scorer | time | vs one LRP pass |", "|---|---:|---:|"]
        for name in ("lrp", "cap-linear", "cap"):
            out.append(f"| {name} | {sp[name + '_s']:.1f} s | {sp[name + '_s'] / sp['lrp_s']:.2f}x |")
        out.append(f"\nCAP costs {sp['cap_forwards_per_head']:.2f} forward passes per head (the blocks before a head's "
                   f"own come from one cached clean pass).")
    out += ["", f"![circuit curves]({plot_name})", ""]
    return "\n".join(out)


def plot(r: Report, size: Size, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ablation = "mean" if "mean" in size.ablations else "zero"  # the in-distribution one where it was measured
    fig, axes = plt.subplots(len(size.tasks), len(size.granularities), figsize=(5 * len(size.granularities), 4 * len(size.tasks)),
                             squeeze=False)
    for row, task in zip(axes, size.tasks):
        for ax, g in zip(row, size.granularities):
            for scorer in size.scorers:
                runs = [c for c in r.circuits if c["scorer"] == scorer and c["granularity"] == g
                        and c.get("task", TASK) == task and c.get("ablation", "zero") == (ablation if g != "global" else "zero")]
                if not runs:
                    continue
                common = sorted(set.intersection(*({p["kept"] for p in run["curve"]} for run in runs)))  # seeds bisect apart
                ys = [statistics.mean(next(p["logit_diff"] for p in run["curve"] if p["kept"] == k) for run in runs)
                      for k in common]
                ax.plot(common, ys, marker="o", markersize=3, label=scorer)
            ax.axhline(0.8, color="grey", linestyle=":")
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_xlim(0, 1)
            ax.set_title(f"{LABEL.get(g, g)} circuits on {task.removeprefix('builtin:')}"
                         + (f" ({ablation} ablation)" if g != "global" else ""))
            ax.set_xlabel("fraction kept")
            ax.set_ylabel("logit difference (dense 1)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_name(size: str, model: str) -> str:
    """A run's name in bench/results: its size, and its model where that is not the default."""
    return size if model == "default" else f"{size}-{Path(model).name}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run from its JSON (steps done are kept)")
    ap.add_argument("--replot", type=Path, help="redraw the report and plot from a run's JSON (no model work)")
    args = ap.parse_args(argv)
    global CHECKPOINT
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        r = load(Report, args.replot)
    else:
        CHECKPOINT = args.out / f"circuits-{run_name(args.size, args.model)}.json"
        r = run(args.size, args.model, load(Report, CHECKPOINT) if args.resume and CHECKPOINT.is_file() else None)
        checkpoint(r)
    size = SIZES[r.size]
    name = run_name(r.size, r.model)
    png = f"circuits-{name}.png"
    plot(r, size, args.out / png)
    md = markdown(r, size, png)
    publish(md, args.out, "circuits", "circuits" if name == "ci" else f"circuits-{name}")  # each size and model its section
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
