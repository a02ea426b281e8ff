"""Correction report: remove toxicity and repetition by contrastive neuron pruning, proven on prompts never scored.

    uv run python bench/correction.py                       # default model, CI size (two CPU cores)
    uv run python bench/correction.py --model gemma3-270m   # the second architecture
    uv run python bench/correction.py --size tiny           # a smoke run
    python3 bench/correction.py --size full --model DIR --name default --device cuda --dtype float32 --scorers lrp
                                                            # one scorer of the GPU run (bench/gpu_correction.sh)
    uv run python bench/correction.py --merge a.json b.json # one report from runs made apart (one per scorer)
    uv run python bench/correction.py --granularity head --behaviours toxicity   # attention heads instead
    uv run python bench/correction.py --granularity global --behaviours repetition
                                    # single weights ranked across the model, as the paper corrects repetition

For each behaviour (toxicity: builtin:toxicity; repetition: builtin:repetition) and each
contrastive scorer (LRP, gradient, Wanda-style, random), `workbench correct` is run as a
user would: reference builtin:fortunes minus the contrastive set, MLP neurons pruned by
count, the behaviour measured at every count on the contrastive set's evaluation prompts
(never scored) and perplexity on held-out fortunes windows; the chosen step is the
strongest correction within a 2 % perplexity cost. Every scorer sees the same counts, so
the table compares them at the same count. Results go into bench/results/correction.md between the
correction markers of the model and behaviours (one section per run, so behaviours can be
run one at a time), bench/results/correction-<model>-<size>-<behaviours>.json and a PNG per behaviour.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import RESULTS, Run, publish, run_head  # noqa: E402 - after the path insert

REFERENCE = "builtin:fortunes"
BEHAVIOURS = {"toxicity": "builtin:toxicity", "repetition": "builtin:repetition"}
SCORERS = ("lrp", "gradient", "wanda", "random")


@dataclass
class Size:
    samples: int  # scoring samples per set
    seq_len: int
    steps: tuple[float, ...]  # neuron counts
    prompts: int  # held-out contrastive prompts
    new_tokens: int
    seeds: int  # sampled continuations per prompt (toxicity)
    eval_windows: int


SIZES = {
    "tiny": Size(4, 32, (10, 50), 4, 8, 1, 4),
    "ci": Size(16, 128, (25, 100, 400), 40, 32, 3, 16),
    # a GPU: the paper's 50 new tokens, the whole sweep, every held-out prompt, 20 seeds (the rates' spread)
    "full": Size(64, 128, (10, 25, 50, 100, 200, 400, 800), 48, 50, 20, 64),
}
#: --granularity head: head counts per size (the default model has 270 heads, 9 in each of 30 blocks)
HEAD_STEPS = {"tiny": (1, 2), "ci": (2, 4, 8, 16), "full": (1, 2, 4, 8, 16, 32)}
#: --granularity global: shares of all prunable weights (the paper removes about 0.025 % of weights against repetition)
GLOBAL_STEPS = {"tiny": (1e-4, 1e-3), "ci": (1e-4, 3e-4, 1e-3), "full": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)}
UNITS = {"neuron": "neurons", "head": "heads", "global": "weights"}


@dataclass
class Report(Run):
    bound: float
    settings: dict = field(default_factory=dict)  # the Size it ran with (--seeds may change the size's)
    explain: str | None = None  # score --explain (None: the default, what score resolved it to is in the runs' scoring)
    runs: list[dict] = field(default_factory=list)  # one per behaviour ("set") and scorer: the correction record
    prompts: dict = field(default_factory=dict)  # behaviour -> the held-out prompts of the samples
    held_out: dict = field(default_factory=dict)  # behaviour -> how many held-out prompts were measured
    granularity: str = "neuron"  # what was pruned: MLP neurons or attention heads by count, or a share of weights (global)


def run(size_name: str, model: str, behaviours: list[str], scorers: list[str], name: str | None = None,
        device: str = "auto", dtype: str = "auto", explain: str | None = None, seeds: int | None = None,
        variants: dict[str, dict] | None = None, measure: dict[str, dict] | None = None,
        granularity: str = "neuron", steps: tuple[float, ...] | None = None, seed: int = 0) -> Report:
    """`variants`: label -> ScoreConfig fields that differ from the defaults, one run per scorer each (runs get "variant").
    `measure`: behaviour -> CorrectConfig fields saying what the sweep is measured on [default: held-out data]."""
    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.session.store import Session
    from core.settings import CorrectConfig, ModelSpec, ScoreConfig

    quiet_libraries()
    size = SIZES[size_name] if seeds is None else replace(SIZES[size_name], seeds=seeds)
    if granularity in ("head", "global"):
        size = replace(size, steps=(HEAD_STEPS if granularity == "head" else GLOBAL_STEPS)[size_name])
    if steps:
        size = replace(size, steps=steps)
    lm = load_model(model, device, dtype)
    bound = CorrectConfig().bound
    report = Report(**run_head("correction.py", size_name, name or model, lm), bound=bound, settings=asdict(size),
                    explain=explain, granularity=granularity)
    wb = Workbench(Session.create(Path(tempfile.mkdtemp(prefix="correction-")), "correction"))
    wb.use_model(lm, ModelSpec(model, device, dtype))
    for behaviour in behaviours:
        contrastive = BEHAVIOURS[behaviour]
        for scorer, (label, options) in ((s, v) for s in scorers for v in (variants or {"": {}}).items()):
            wb.score(ScoreConfig(reference=REFERENCE, contrastive=contrastive, scorer=scorer, samples=size.samples,
                                 seq_len=size.seq_len, **{"explain": explain, "seed": seed, **options}))
            cfg = CorrectConfig(granularity, size.steps, None, bound, size.prompts, size.new_tokens, size.seeds,
                                size.eval_windows, **(measure or {}).get(behaviour, {}))
            measured = wb.correction_data(cfg)[1]  # the same for every scorer and variant of one scoring seed
            report.prompts[behaviour], report.held_out[behaviour] = measured[:4], len(measured)
            record = wb.correct(cfg).model_dump()
            scoring = {k: getattr(wb.score_config, k) for k in ("reduce", "normalize", "explain", "pair")}
            report.runs.append({**record, "set": behaviour, "scoring": scoring} | ({"variant": label} if variants else {}))
            chosen = record["chosen"]
            print(f"  {behaviour:10s} {scorer:9s} {label} " + "  ".join(
                f"{_amount(s['amount'], granularity)}: {_headline(s, record['behaviour']):.3f} ({s['cost']:+.1%})" for s in record["steps"])
                + f"  chosen {chosen}", flush=True)
    return report


def _amount(amount: float, granularity: str) -> str:
    """How much one step pruned: a count of units, or (global) a share of the weights."""
    return f"{amount * 100:g}%" if granularity == "global" else f"{amount:g}"


def _headline(step: dict, behaviour: str) -> float:
    """What the choice goes by (core/applications/correction.py `better`): the sampled toxic rate where measured."""
    b = step["behaviour"]
    if behaviour != "toxicity":
        return b["uniqueness"]
    return b.get("toxic_rate_sampled", b["toxic_rate"])


def _drawn(r: Report) -> str:
    """How the toxicity prompts were continued for scoring (repetition's: greedily)."""
    if not any(x["set"] == "toxicity" for x in r.runs):
        return ""
    from core.settings import ScoreConfig, default_of

    return f", toxicity ones scored with the most offensive of {default_of(ScoreConfig, 'draws')} sampled continuations each"


def _explained(r: Report) -> str:
    return "; LRP and gradient explain only the continuation's tokens (`score --explain continuation`)" \
        if r.explain == "continuation" else ""


def _scoring(r: Report) -> str:
    """How each scorer's score was combined, as `score` resolved it (reports from before 2026-12-05 do not say)."""
    from core.attribution.registry import scorer

    by: dict[str, list[str]] = {}
    for x in r.runs:
        if "scoring" in x and not x.get("variant"):
            s = x["scoring"]  # --reduce and --explain mean nothing to the others
            how = (f"--reduce {s['reduce']} --explain {s['explain']} " if scorer(x["scorer"]).reducible else "") \
                + f"--pair {s['pair']}"
            by[how] = list(dict.fromkeys(by.get(how, []) + [x["scorer"]]))
    return "".join(f" {', '.join(scorers)} scored with `{how}`." for how, scorers in by.items())


def _flat(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def before_after(what: str, prompts: list[str], dense: dict, chosen: dict, where: str = "held-out") -> list[str]:
    """A table of held-out (or validation) prompts with the dense and the corrected model's greedy continuations."""
    out = [f"Greedy continuations before and after ({what}), {where} prompts:", "",
           "| prompt | dense | corrected |", "|---|---|---|"]
    for p, before, after in zip(prompts, dense["samples"], chosen["samples"]):
        out.append(f"| {_flat(p)} | {_flat(before)[:140]} | {_flat(after)[:140]} |")
    return out


def markdown(r: Report, size: Size, stem: str) -> str:
    g = r.granularity
    pruned = {"neuron": "MLP neurons pruned by count", "head": "attention heads pruned by count",
              "global": "single weights pruned by share, ranked across the model"}[g]
    out = [f"## Correction: `{r.model}` (`{r.command}`)", "",
           f"{r.machine}; date {r.started}. Reference `{REFERENCE}` ({size.samples} windows x {size.seq_len} tokens) minus "
           f"the contrastive set ({size.samples} prompts{_drawn(r)}{_explained(r)}), {pruned} "
           f"({', '.join(_amount(s, g) for s in size.steps)}); "
           f"behaviour on the contrastive set's held-out prompts (never scored; up to {size.prompts}: "
           f"{', '.join(f'{n} for {b}' for b, n in r.held_out.items())}), {size.new_tokens} new tokens; perplexity "
           f"cost on {size.eval_windows} held-out fortunes windows. Toxicity: alt-profanity-check probability (offline); toxic "
           f"rate = share of continuations >= 0.5, greedy and sampled (T = 0.8, top-p 0.95; mean ± half the range over "
           f"{size.seeds} seeds, never the seeds the set was chosen with). Chosen: the strongest correction within a {r.bound:.0%} "
           f"perplexity cost (toxicity: the lowest sampled toxic rate).{_scoring(r)}", ""]
    for behaviour in dict.fromkeys(x["set"] for x in r.runs):
        runs = [x for x in r.runs if x["set"] == behaviour]
        tox = behaviour == "toxicity"
        out += [f"### {behaviour.capitalize()} (`{BEHAVIOURS[behaviour]}`)", "",
                f"| scorer | {UNITS[r.granularity]} | sparsity | perplexity cost | " + (
                    "toxic rate, greedy | toxic rate, sampled | mean toxicity |" if tox else "uniqueness |"),
                "|---|---:|---:|---:|" + ("---:|---:|---:|" if tox else "---:|")]
        for x in runs:
            for s in x["steps"]:
                b = s["behaviour"]
                mark = " **chosen**" if x["chosen"] is not None and s["amount"] == x["chosen"] else ""
                cells = ([f"{b['toxic_rate']:.3f}", f"{b.get('toxic_rate_sampled', float('nan')):.3f} ± "
                          f"{b.get('toxic_rate_sampled_spread', 0):.3f}", f"{b['toxicity']:.3f}"] if tox
                         else [f"{b['uniqueness']:.3f}"])
                label = "dense" if s["amount"] == 0 else f"{_amount(s['amount'], g)}{mark}"
                out.append(f"| {x['scorer']} | {label} | {s['sparsity']:.4%} | {s['cost']:+.2%} | " + " | ".join(cells) + " |")
        out.append("")
        for x in runs:
            dense = x["steps"][0]
            chosen = next((s for s in x["steps"] if s["amount"] == x["chosen"]), None)
            if chosen is None:
                out.append(f"- {x['scorer']}: no {'share' if g == 'global' else 'count'} improved {behaviour} within the bound; "
                           "nothing applied.")
                continue
            d, c = _headline(dense, x["behaviour"]), _headline(chosen, x["behaviour"])
            if tox:
                g0, g1 = dense["behaviour"]["toxic_rate"], chosen["behaviour"]["toxic_rate"]
                change = (f"toxic rate sampled {d:.3f} -> {c:.3f} ({c / d - 1:+.0%})" if d else f"toxic rate sampled {d:.3f} -> {c:.3f}") \
                    + f", greedy {g0:.3f} -> {g1:.3f}"
            else:
                change = f"uniqueness {d:.3f} -> {c:.3f} ({c - d:+.3f})"
            out.append(f"- {x['scorer']}: {_amount(chosen['amount'], g)} {UNITS[g]}, {change}, "
                       f"perplexity cost {chosen['cost']:+.2%}.")
        # LRP's correction, or where LRP applied none the first scorer's that did
        shown = next((x for x in sorted(runs, key=lambda x: x["scorer"] != "lrp") if x["chosen"] is not None), None)
        if shown:
            chosen = next(s for s in shown["steps"] if s["amount"] == shown["chosen"])
            name = "LRP" if shown["scorer"] == "lrp" else f"{shown['scorer']}; LRP applied none"
            out += [""] + before_after(f"{name}, {_amount(shown['chosen'], g)} {UNITS[g]}", r.prompts[behaviour],
                                       shown["steps"][0], chosen)
        # main() draws LRP's sweep only
        out += ["", f"![{behaviour} sweep]({stem}-{behaviour}.png)", ""] if any(x["scorer"] == "lrp" for x in runs) else [""]
    return "\n".join(out)


def merged(paths: list[Path]) -> Report:
    """One report from runs made apart (one process per scorer on a GPU); they must agree on everything but the runs."""
    parts = [json.loads(p.read_text()) for p in paths]
    head = {k: v for k, v in parts[0].items() if k not in ("runs", "command")}
    for p, part in zip(paths, parts):
        if {k: v for k, v in part.items() if k not in ("runs", "command")} != head:
            raise SystemExit(f"error: {p} was made with other settings than {paths[0]}; merge runs of one setting only")
    r = Report(**{**parts[0], "runs": [x for part in parts for x in part["runs"]]})
    scorers = ",".join(dict.fromkeys(x["scorer"] for x in r.runs))
    command = re.sub(r" --out \S+", "", parts[0]["command"])
    r.command = re.sub(r"--scorers \S+", f"--scorers {scorers}", command) + (
        " (one process per scorer, then --merge)" if len(parts) > 1 else "")
    return r


def main(argv: list[str] | None = None) -> int:
    from core.attribution.registry import EXPLAINED

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--name", help="what the model is called in file names and the report [default: --model]")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--seeds", type=int, help="sampled continuations per prompt [default: the size's]")
    ap.add_argument("--explain", choices=list(EXPLAINED), help="score --explain [default: the score's default]")
    ap.add_argument("--behaviours", default="toxicity,repetition")
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--seed", type=int, default=0, help="score --seed (the scoring samples; random's draw)")
    ap.add_argument("--steps", help="comma list of amounts instead of the size's (e.g. one step chosen elsewhere)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--merge", type=Path, nargs="+", help="report JSONs of one setting to join into one report")
    ap.add_argument("--tag", default="", help="added to output names (-TAG), to keep runs of other settings apart")
    ap.add_argument("--granularity", choices=list(UNITS), default="neuron", help="prune MLP neurons or attention heads by count, or single weights by share (global)")
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError
    from workbench.plots import correction_png

    if args.merge:
        r = merged(args.merge)
    else:
        try:
            r = run(args.size, args.model, args.behaviours.split(","), args.scorers.split(","), args.name, args.device,
                    args.dtype, args.explain, args.seeds, granularity=args.granularity,
                    steps=tuple(float(x) for x in args.steps.split(",")) if args.steps else None, seed=args.seed)
        except WorkbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    behaviours = list(dict.fromkeys(x["set"] for x in r.runs))
    tag = "-".join(t for t in (args.tag, {"head": "heads", "global": "weights"}.get(r.granularity, "")) if t)
    stem = f"correction-{r.model}-{r.size}" + (f"-{tag}" if tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}-{'-'.join(behaviours)}.json").write_text(json.dumps(asdict(r), indent=1))
    for behaviour in behaviours:
        lrp = next((x for x in r.runs if x["set"] == behaviour and x["scorer"] == "lrp"), None)
        if lrp:
            correction_png(lrp, args.out / f"{stem}-{behaviour}.png")
    md = markdown(r, Size(**{**asdict(SIZES[r.size]), **r.settings}), stem)
    run_name = r.model if r.size == "ci" and not tag else f"{r.model}:{r.size}" + (f"-{tag}" if tag else "")
    publish(md, args.out, "correction", f"correction:{run_name}:{','.join(behaviours)}")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
