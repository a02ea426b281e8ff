"""Correction report: remove toxicity and repetition by contrastive neuron pruning, proven on prompts never scored.

    uv run python bench/correction.py                       # default model, CI size (two CPU cores)
    uv run python bench/correction.py --model gemma3-270m   # the second architecture
    uv run python bench/correction.py --size tiny           # a smoke run

For each behaviour (toxicity: builtin:toxicity; repetition: builtin:repetition) and each
contrastive scorer (LRP, gradient, Wanda-style, random), `workbench correct` is run as a
user would: reference builtin:fortunes minus the contrastive set, MLP neurons pruned by
count, the behaviour measured at every count on the contrastive set's evaluation prompts
(never scored) and perplexity on held-out fortunes windows; the chosen step is the
strongest correction within a 2 % perplexity cost. Every scorer sees the same counts, so
the table compares them at the same count. Results go into bench/RESULTS.md between the
correction markers of the model and behaviours (one section per run, so behaviours can be
run one at a time), bench/correction-<model>-<size>-<behaviours>.json and a PNG per behaviour.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.table import write_section  # noqa: E402 - after the path insert

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
}


@dataclass
class Report:
    size: str
    model: str
    command: str
    machine: str
    started: str
    bound: float
    runs: list[dict] = field(default_factory=list)  # one per behaviour ("set") and scorer: the correction record
    prompts: dict = field(default_factory=dict)  # behaviour -> the held-out prompts of the samples
    held_out: dict = field(default_factory=dict)  # behaviour -> how many held-out prompts were measured


def run(size_name: str, model: str, behaviours: list[str], scorers: list[str]) -> Report:
    import torch

    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.session.store import Session
    from core.settings import CorrectConfig, ModelSpec, ScoreConfig

    quiet_libraries()
    size = SIZES[size_name]
    lm = load_model(model, "auto", "auto")
    bound = CorrectConfig().bound
    report = Report(size_name, model, " ".join(["uv run python bench/correction.py"] + sys.argv[1:]),
                    f"{platform.machine()}, {torch.get_num_threads()} threads, {lm.info()['device']}, torch {torch.__version__}",
                    date.today().isoformat(), bound)
    wb = Workbench(Session.create(Path(tempfile.mkdtemp(prefix="correction-")), "correction"))
    wb.use_model(lm, ModelSpec(model, "auto", "auto"))
    for behaviour in behaviours:
        contrastive = BEHAVIOURS[behaviour]
        held_out = wb.prompt_set(contrastive).generation_prompts(size.prompts)
        report.prompts[behaviour], report.held_out[behaviour] = held_out[:4], len(held_out)
        for scorer in scorers:
            wb.score(ScoreConfig(reference=REFERENCE, contrastive=contrastive, scorer=scorer, samples=size.samples,
                                 seq_len=size.seq_len))
            record = wb.correct(CorrectConfig("neuron", size.steps, None, bound, size.prompts, size.new_tokens, size.seeds,
                                              size.eval_windows))
            report.runs.append({**record, "set": behaviour})
            chosen = record["chosen"]
            print(f"  {behaviour:10s} {scorer:9s} " + "  ".join(
                f"{s['amount']:g}: {_headline(s, record['behaviour']):.3f} ({s['cost']:+.1%})" for s in record["steps"])
                + f"  chosen {chosen}", flush=True)
    return report


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


def _flat(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def markdown(r: Report, size: Size) -> str:
    out = [f"## Correction: `{r.model}` (`{r.command}`)", "",
           f"{r.machine}; date {r.started}. Reference `{REFERENCE}` ({size.samples} windows x {size.seq_len} tokens) minus "
           f"the contrastive set ({size.samples} prompts{_drawn(r)}), MLP neurons pruned by count ({', '.join(f'{s:g}' for s in size.steps)}); "
           f"behaviour on the contrastive set's held-out prompts (never scored; up to {size.prompts}: "
           f"{', '.join(f'{n} for {b}' for b, n in r.held_out.items())}), {size.new_tokens} new tokens; perplexity "
           f"cost on {size.eval_windows} held-out fortunes windows. Toxicity: alt-profanity-check probability (offline); toxic "
           f"rate = share of continuations >= 0.5, greedy and sampled (T = 0.8, top-p 0.95; mean ± half the range over "
           f"{size.seeds} seeds, never the seeds the set was chosen with). Chosen: the strongest correction within a {r.bound:.0%} "
           f"perplexity cost (toxicity: the lowest sampled toxic rate).", ""]
    for behaviour in dict.fromkeys(x["set"] for x in r.runs):
        runs = [x for x in r.runs if x["set"] == behaviour]
        tox = behaviour == "toxicity"
        out += [f"### {behaviour.capitalize()} (`{BEHAVIOURS[behaviour]}`)", "",
                "| scorer | neurons | sparsity | perplexity cost | " + (
                    "toxic rate, greedy | toxic rate, sampled | mean toxicity |" if tox else "uniqueness |"),
                "|---|---:|---:|---:|" + ("---:|---:|---:|" if tox else "---:|")]
        for x in runs:
            for s in x["steps"]:
                b = s["behaviour"]
                mark = " **chosen**" if x["chosen"] is not None and s["amount"] == x["chosen"] else ""
                cells = ([f"{b['toxic_rate']:.3f}", f"{b.get('toxic_rate_sampled', float('nan')):.3f} ± "
                          f"{b.get('toxic_rate_sampled_spread', 0):.3f}", f"{b['toxicity']:.3f}"] if tox
                         else [f"{b['uniqueness']:.3f}"])
                label = "dense" if s["amount"] == 0 else f"{s['amount']:g}{mark}"
                out.append(f"| {x['scorer']} | {label} | {s['sparsity']:.4%} | {s['cost']:+.2%} | " + " | ".join(cells) + " |")
        out.append("")
        for x in runs:
            dense = x["steps"][0]
            chosen = next((s for s in x["steps"] if s["amount"] == x["chosen"]), None)
            if chosen is None:
                out.append(f"- {x['scorer']}: no count improved {behaviour} within the bound; nothing applied.")
                continue
            d, c = _headline(dense, x["behaviour"]), _headline(chosen, x["behaviour"])
            if tox:
                g0, g1 = dense["behaviour"]["toxic_rate"], chosen["behaviour"]["toxic_rate"]
                change = (f"toxic rate sampled {d:.3f} -> {c:.3f} ({c / d - 1:+.0%})" if d else f"toxic rate sampled {d:.3f} -> {c:.3f}") \
                    + f", greedy {g0:.3f} -> {g1:.3f}"
            else:
                change = f"uniqueness {d:.3f} -> {c:.3f} ({c - d:+.3f})"
            out.append(f"- {x['scorer']}: {chosen['amount']:g} neurons, {change}, perplexity cost {chosen['cost']:+.2%}.")
        lrp = next((x for x in runs if x["scorer"] == "lrp"), None)
        if lrp and lrp["chosen"] is not None:
            chosen = next(s for s in lrp["steps"] if s["amount"] == lrp["chosen"])
            out += ["", f"Greedy continuations before and after (LRP, {lrp['chosen']:g} neurons), held-out prompts:", "",
                    "| prompt | dense | corrected |", "|---|---|---|"]
            for p, before, after in zip(r.prompts[behaviour], lrp["steps"][0]["samples"], chosen["samples"]):
                out.append(f"| {_flat(p)} | {_flat(before)[:140]} | {_flat(after)[:140]} |")
        out += ["", f"![{behaviour} sweep](correction-{r.model}-{r.size}-{behaviour}.png)", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--behaviours", default="toxicity,repetition")
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError
    from workbench.plots import correction_png

    try:
        r = run(args.size, args.model, args.behaviours.split(","), args.scorers.split(","))
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"correction-{args.model}-{args.size}-{args.behaviours.replace(',', '-')}.json").write_text(json.dumps(asdict(r), indent=1))
    for behaviour in dict.fromkeys(x["set"] for x in r.runs):
        lrp = next((x for x in r.runs if x["set"] == behaviour and x["scorer"] == "lrp"), None)
        if lrp:
            correction_png(lrp, args.out / f"correction-{args.model}-{args.size}-{behaviour}.png")
    md = markdown(r, SIZES[args.size])
    write_section(md, args.out / "RESULTS.md", f"correction:{args.model}:{args.behaviours}")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
