"""Correction ablation: does the way contrastive relevance is combined and scaled change what correction achieves?

    uv run python bench/correction_ablation.py                      # default model, LRP, CI size
    uv run python bench/correction_ablation.py --scorers lrp,gradient --behaviours repetition
    uv run python bench/correction_ablation.py --ablation pair --scorers lrp,gradient,wanda   # score --pair none vs clean
    uv run python bench/correction_ablation.py --ablation explain        # score --explain all, continuation, unwanted
    uv run python bench/correction_ablation.py --ablation sign           # score --reduce abs vs signed
    uv run python bench/correction_ablation.py --ablation contrast-sign  # --reduce abs vs signed-contrast
    uv run python bench/correction_ablation.py --ablation combined --seed 1   # signed-contrast, unwanted, pair clean
    uv run python bench/correction_ablation.py --ablation default --granularity global   # the default scoring, weights

`workbench correct` runs as in bench/correction.py (same sizes, prompts and windows: every
held-out prompt and window is one the scorer never saw) once per scoring variant:
`--reduce` (how each sample's relevance is combined: `abs` is the paper's |mean relevance|,
the default for a contrastive score until 2026-12-05) and `--normalize` (how the reference and contrastive
neuron scores are put on one scale before R_diff = N(R_reference) - N(R_contrastive): `rank`
is the default, `none` the paper's plain difference of means); or, with `--ablation pair`, what
the contrast is taken against (`--pair clean` also protects what the contrastive prompts
continued the wanted way need: the least offensive draw, a greedy text without repeats); or, with
`--ablation explain`, which tokens of a contrastive sample LRP and gradient explain (all, the
model's continuation, or only its unwanted tokens: repeats, offensive words); or, with
`--ablation sign`, whether the relevance keeps its sign (`--reduce signed`: the paper's mean
relevance, so a neuron that lowers the unwanted tokens' probability is not removed as one
that raises it; `--ablation contrast-sign`: the sign of the contrastive set only,
`--reduce signed-contrast`; `--ablation combined`: that with `--explain unwanted` and `--pair
clean`). Each ablation's variants were fixed before its first run (contrast-sign and combined
were added after earlier ablations' results, as their comments say), and no table of held-out
prompts changes a default: the held-out prompts are the evaluation, so picking a default by them
would tune to it. Every variant is the former default (`FORMER_DEFAULT`: abs, rank, every token
explained, no pair) with its own fields, so reports made before the default changed still mean
what they say.
With `--measure-on validation` the sweeps are measured on validation data instead of held-out
data: perplexity on fortunes scoring-split windows the score did not draw, repetition on
bench/validation/repetition.jsonl (prompts written for this, `core/data/builtin/make_repetition.py
--validation`), toxicity on the builtin:toxicity scoring prompts the score did not draw. This is
how a correction default may change without tuning to the evaluation. The rule, fixed on
2026-12-05 before the first validation run: `--ablation combined` becomes the default scoring of
a contrastive score if, over scoring seeds 0, 1 and 2 on validation data, (a) its mean
repetition correction (the chosen step's uniqueness gain; 0 where none is chosen) is larger
than the default's and (b) its mean toxicity correction (the chosen step's drop in the sampled
toxic rate; 0 where none) is not smaller. It did (bench/results/correction.md, "choosing the scoring on
validation data"), so since 2026-12-05 LRP and gradient on a contrastive prompt set score with
`--reduce signed-contrast --explain unwanted --pair clean` unless told otherwise.
The second rule, fixed on 2026-12-05 before its first validation run (and after the held-out
weight-level report of bench/correction.py --granularity global, which it must not rely on):
`correct`'s default granularity for repetition (the uniqueness behaviour) becomes `global`
(single weights ranked across the model, the paper's repetition granularity) if, over scoring
seeds 0, 1 and 2 on validation data, LRP with the default scoring at weight level
(`--ablation default --granularity global`: 0.01 %, 0.03 %, 0.1 % of the weights) has a larger
mean repetition correction than the neuron-level default had on the same data (+0.096, +0.056,
+0.075: mean +0.076, the combination's row of the first rule's runs). Toxicity keeps neurons,
the paper's granularity for it, unless (a third rule, fixed on 2026-12-05 after the held-out
weight-level toxicity run's LRP row was seen and before any toxicity validation run) LRP at weight level
measured the same way has a larger mean toxicity correction (the chosen step's drop in the
sampled toxic rate; 0 where none) than the neuron-level default had there (0, -0.058, -0.029:
mean -0.029). Both rules held (bench/results/correction.md, "single weights, as the paper removes repetition";
the toxicity one read from bench/correction_validated.py's validation sweeps, which include
these steps): since 2026-12-05 `correct` prunes single weights by default.
Results go into bench/results/correction.md between the markers `correction-ablation:<model>:<size>:<scorers>:<behaviours>`
(one section per run) and bench/correction-ablation-<model>-<size>-<scorers>-<behaviours>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.correction import SIZES, UNITS, _amount, _headline, before_after, run  # noqa: E402 - after the path insert
from bench.report import RESULTS, publish  # noqa: E402

#: what `workbench score --contrastive` did by default until 2026-12-05 (and still does with a contrastive text set
#: or a scorer --reduce does not apply to); every variant is this with its own fields, so each row measures what
#: it measured when the variants were fixed
FORMER_DEFAULT = {"reduce": "abs", "normalize": "rank", "explain": "all", "pair": "none"}
#: label -> ScoreConfig fields; the first is the former default
SCALING = {
    "abs, rank (former default)": {"reduce": "abs", "normalize": "rank"},
    "abs, none (paper Eq. 7)": {"reduce": "abs", "normalize": "none"},
    "abs, l1": {"reduce": "abs", "normalize": "l1"},
    "abs-sample, rank": {"reduce": "abs-sample", "normalize": "rank"},
    "token-rms, rank": {"reduce": "token-rms", "normalize": "rank"},
}
#: what the contrast is taken against: the reference alone, or also the same prompts continued the wanted way
PAIR = {
    "reference (former default)": {"pair": "none"},
    "pair clean": {"pair": "clean"},
}
#: which tokens of a contrastive sample are explained: all, the model's continuation, or only its unwanted tokens
EXPLAIN = {
    "all (former default)": {"explain": "all"},
    "continuation": {"explain": "continuation"},
    "unwanted": {"explain": "unwanted"},
}
#: the relevance's sign: kept, the paper's mean relevance (a neuron that raises the unwanted tokens' probability
#: is what the contrast removes; one that lowers it is kept), or dropped as by the default |mean relevance|
SIGN = {
    "abs, rank (former default)": {"reduce": "abs", "normalize": "rank"},
    "signed, rank": {"reduce": "signed", "normalize": "rank"},
    "signed, none (paper Eq. 7)": {"reduce": "signed", "normalize": "none"},
}
#: the sign kept on the contrastive side only (the reference by magnitude, as by default), alone and with only the
#: unwanted tokens explained; added after `sign` showed that the reference's sign removes neurons general text needs
CONTRAST_SIGN = {
    "abs (former default)": {"reduce": "abs", "normalize": "rank"},
    "signed-contrast": {"reduce": "signed-contrast", "normalize": "rank"},
    "signed-contrast, explain unwanted": {"reduce": "signed-contrast", "normalize": "rank", "explain": "unwanted"},
}
#: the contrastive sign and the unwanted tokens with the clean pair, which lowered the perplexity cost on every
#: scoring seed (`pair`); added after contrast-sign's costs went past the bound on scoring seed 1. The default of
#: LRP and gradient on a contrastive prompt set since 2026-12-05, by the rule below
COMBINED = {
    "abs (former default)": {"reduce": "abs", "normalize": "rank"},
    "signed-contrast, explain unwanted, pair clean (default)": {"reduce": "signed-contrast", "normalize": "rank",
                                                                "explain": "unwanted", "pair": "clean"},
}
#: the default scoring alone, for other granularities (`--granularity`)
DEFAULT = {"signed-contrast, explain unwanted, pair clean (default)": COMBINED["signed-contrast, explain unwanted, pair clean (default)"]}
#: behaviour -> CorrectConfig fields of `--measure-on validation` (prompts_from relative to the repository root)
VALIDATION = {"repetition": {"measure_on": "validation", "prompts_from": "bench/validation/repetition.jsonl"},
              "toxicity": {"measure_on": "validation"}}
ABLATIONS = {"scaling": SCALING, "pair": PAIR, "explain": EXPLAIN, "sign": SIGN, "contrast-sign": CONTRAST_SIGN,
             "combined": COMBINED, "default": DEFAULT}
VARIED = {"scaling": "reduce, normalize", "pair": "contrast against", "explain": "tokens explained",
          "sign": "reduce, normalize", "contrast-sign": "reduce (normalize rank)", "combined": "scoring",
          "default": "scoring"}
VARIANTS = SCALING  # what older reports were made with


def markdown(report, command: str, varied: str = "reduce, normalize") -> str:
    """`varied`: the variant column's heading (what the ablation changes)."""
    size, g = report.settings, getattr(report, "granularity", "neuron")
    out = [f"## Correction ablation: `{report.model}` (`{command}`)", "",
           f"{report.machine}; date {report.started}. As the correction report of this model and size ({size['samples']} "
           f"scoring samples per set, {UNITS[g] if g != 'global' else 'shares of weights'} "
           f"{', '.join(_amount(s, g) for s in size['steps'])}, {size['new_tokens']} new tokens, "
           f"{_data(report)}), once per scoring variant. Each cell: the behaviour (uniqueness, higher is "
           f"better; toxicity: sampled toxic rate, lower is better) and the perplexity cost. Chosen: the strongest "
           f"correction within {report.bound:.0%}; `-` where none improved.", ""]
    for behaviour in dict.fromkeys(x["set"] for x in report.runs):
        runs = [x for x in report.runs if x["set"] == behaviour]
        steps = [s["amount"] for s in runs[0]["steps"][1:]]
        out += [f"### {behaviour.capitalize()}", "",
                f"| scorer | {varied} | dense | " + " | ".join(f"{_amount(a, g)} {UNITS[g]}" for a in steps) + " | chosen: change |",
                "|---|---|---:|" + "---:|" * len(steps) + "---|"]
        for x in runs:
            dense = _headline(x["steps"][0], x["behaviour"])
            cells = [f"{_headline(s, x['behaviour']):.3f} ({s['cost']:+.1%})" for s in x["steps"][1:]]
            chosen = next((s for s in x["steps"] if s["amount"] == x["chosen"]), None)
            verdict = "-" if chosen is None else (
                f"{_amount(chosen['amount'], g)}: {_headline(chosen, x['behaviour']) - dense:+.3f}")
            out.append(f"| {x['scorer']} | {x['variant']} | {dense:.3f} | " + " | ".join(cells) + f" | {verdict} |")
        out.append("")
        out += _generations(report, behaviour, runs, g)
    return "\n".join(out)


def _data(report) -> str:
    """What the sweeps were measured on."""
    if not any(x.get("measure_on") == "validation" for x in report.runs):
        return "held-out prompts and windows only"
    where = {"repetition": "the prompts of bench/validation/repetition.jsonl",
             "toxicity": "builtin:toxicity's scoring prompts the score did not draw"}
    return ("**validation data**: fortunes scoring windows the score did not draw; "
            + "; ".join(f"{n} {b} prompts, {where.get(b, 'validation prompts')}" for b, n in report.held_out.items()))


def _generations(report, behaviour: str, runs: list[dict], g: str = "neuron") -> list[str]:
    """Greedy continuations before and after, for LRP's chosen step in each variant other than the default."""
    out = []
    for x in runs:
        if x["scorer"] == "lrp" and x["chosen"] is not None and (x["variant"] != runs[0]["variant"] or len(runs) == 1):
            chosen = next(s for s in x["steps"] if s["amount"] == x["chosen"])
            out += before_after(f"LRP, {x['variant']}, {_amount(x['chosen'], g)} {UNITS[g]}", report.prompts.get(behaviour, []),
                                x["steps"][0], chosen, x.get("measure_on") or "held-out") + [""]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="ci")
    ap.add_argument("--model", default="default")
    ap.add_argument("--behaviours", default="repetition,toxicity")
    ap.add_argument("--scorers", default="lrp")
    ap.add_argument("--ablation", choices=list(ABLATIONS), default="scaling",
                    help="scaling: --reduce and --normalize; pair: --pair none vs clean; explain: --explain all, "
                         "continuation, unwanted; sign: --reduce abs vs signed; contrast-sign: --reduce abs vs "
                         "signed-contrast (and with --explain unwanted); combined: both with --pair clean")
    ap.add_argument("--seed", type=int, default=0,
                    help="score --seed for every variant: other scoring samples, the same held-out prompts and windows")
    ap.add_argument("--measure-on", choices=("held-out", "validation"), default="held-out",
                    help="validation: measure on data neither scored nor held out (see the module docstring)")
    ap.add_argument("--granularity", choices=list(UNITS), default="neuron",
                    help="what correct prunes: MLP neurons or heads by count, or single weights by share (global)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError

    try:
        report = run(args.size, args.model, args.behaviours.split(","), args.scorers.split(","),
                     variants={k: {**FORMER_DEFAULT, **v, "seed": args.seed} for k, v in ABLATIONS[args.ablation].items()},
                     measure=VALIDATION if args.measure_on == "validation" else None, granularity=args.granularity)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = " ".join(["uv run python bench/correction_ablation.py"] + (sys.argv[1:] if argv is None else argv))
    report.command = command  # run() wrote bench/correction.py's
    scorers, behaviours = args.scorers.replace(",", "-"), args.behaviours.replace(",", "-")
    # scaling reports of seed 0 keep their older names
    tag = (("" if args.ablation == "scaling" else f"-{args.ablation}") + (f"-seed{args.seed}" if args.seed else "")
           + ("-validation" if args.measure_on == "validation" else "")
           + ("" if args.granularity == "neuron" else f"-{UNITS[args.granularity]}"))
    stem = f"correction-ablation{tag}-{report.model}-{report.size}-{scorers}-{behaviours}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(asdict(report), indent=1))
    md = markdown(report, command, VARIED[args.ablation])
    publish(md, args.out, "correction", f"correction-ablation{tag.replace('-', ':')}:{report.model}:{args.size}:{scorers}:{behaviours}")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
