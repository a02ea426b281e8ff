"""Correction with the amount chosen on validation data, then measured once on the held-out prompts.

    uv run python bench/correction_validated.py                                 # toxicity, weights, LRP vs random
    uv run python bench/correction_validated.py --behaviour repetition --granularity neuron --steps 25,100,200,400

`correct` picks the strongest step within the perplexity bound on whatever it measures, so a
sweep measured on the held-out prompts both chooses and reports on them. Here the two are
kept apart, as a user would with two commands:

    workbench correct --measure-on validation --steps A,B,C ...   # choose: data the score did not draw
    workbench correct --steps CHOSEN ...                          # report: the held-out prompts, once

The protocol was fixed on 2026-12-05 before its first run, after the held-out weight-level
report (`bench/correction.py --granularity global`) had shown LRP at 0.1 % of the weights
lowering the sampled toxic rate from 0.154 to 0.060 at +2.3 % perplexity (over the 2 % bound)
and 0.03 % doing little: the validation sweep is finer (0.01 %, 0.02 %, 0.03 %, 0.05 %, 0.07 %,
0.1 %) so the bound can be met in between, and the held-out prompts only ever see the one step
validation chose. Random scores pruned at that step in the same run are the control. CI size
(bench/correction.py's), scoring seed 0. Results go into bench/results/correction.md between the markers
`correction-validated:<model>:<behaviour>:<granularity>` and a JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.correction import BEHAVIOURS, REFERENCE, SIZES, UNITS, _amount, _headline, before_after  # noqa: E402
from bench.report import RESULTS, publish  # noqa: E402

STEPS = {"global": (1e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3), "neuron": (25, 50, 100, 200, 400), "head": (1, 2, 4, 8)}


def run(model: str, behaviour: str, granularity: str, steps: tuple[float, ...], control: str = "random",
        size_name: str = "ci", seed: int = 0) -> dict:
    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.session.store import Session
    from core.settings import CorrectConfig, ModelSpec, ScoreConfig

    quiet_libraries()
    size = SIZES[size_name]
    lm = load_model(model, "auto", "auto")
    wb = Workbench(Session.create(Path(tempfile.mkdtemp(prefix="validated-")), "validated"))
    wb.use_model(lm, ModelSpec(model, "auto", "auto"))
    common = dict(granularity=granularity, prompts=size.prompts, new_tokens=size.new_tokens, seeds=size.seeds,
                  eval_windows=size.eval_windows)
    out = {"model": model, "size": size_name, "seed": seed, "behaviour": behaviour, "granularity": granularity, "steps": list(steps), "runs": {}}
    chosen = None
    for scorer in ("lrp", control):
        wb.score(ScoreConfig(reference=REFERENCE, contrastive=BEHAVIOURS[behaviour], scorer=scorer,
                             samples=size.samples, seq_len=size.seq_len, seed=seed))
        if scorer == "lrp":
            validation = wb.correct(CorrectConfig(steps=steps, measure_on="validation", **common)).model_dump()
            out["runs"]["validation"] = validation
            chosen = validation["chosen"]
            print(f"  validation: chosen {chosen}", flush=True)
            if chosen is None:
                break
        out["held_out_prompts"] = wb.correction_data(CorrectConfig(**common))[1][:4]
        out["runs"][scorer] = wb.correct(CorrectConfig(steps=(chosen,), **common)).model_dump()
        print(f"  {scorer}: " + "  ".join(f"{s['amount']:g}: {_headline(s, out['runs'][scorer]['behaviour']):.3f} "
                                           f"({s['cost']:+.1%})" for s in out["runs"][scorer]["steps"]), flush=True)
    out["chosen"] = chosen
    return out


def markdown(r: dict, command: str) -> str:
    g, tox = r["granularity"], r["behaviour"] == "toxicity"
    val = r["runs"]["validation"]
    name = "toxic rate, sampled" if tox else "uniqueness"
    out = [f"## Correction, chosen on validation data: `{r['model']}` (`{command}`)", "",
           f"LRP (today's default scoring), {r.get('size', 'ci')} size, scoring seed {r.get('seed', 0)}, {UNITS[g] if g != 'global' else 'shares of weights'} "
           f"{', '.join(_amount(s, g) for s in r['steps'])}. The sweep is measured on validation data ({val['prompts']} "
           f"scoring prompts and {val['windows']} reference windows the score did not draw); the step it chooses (the "
           f"strongest within {val['bound']:.0%}) is then measured once on the held-out prompts, with random scores "
           f"pruned the same amount as the control.", "",
           f"| validation | {' | '.join(_amount(s['amount'], g) if s['amount'] else 'dense' for s in val['steps'])} |",
           "|---|" + "---:|" * len(val["steps"]),
           f"| {name} | " + " | ".join(f"{_headline(s, val['behaviour']):.3f}" for s in val["steps"]) + " |",
           "| perplexity cost | " + " | ".join(f"{s['cost']:+.2%}" for s in val["steps"]) + " |", ""]
    if r["chosen"] is None:
        return "\n".join(out + ["Validation chose nothing within the bound, so nothing was measured on held-out prompts."])
    out += [f"Chosen on validation data: {_amount(r['chosen'], g)} {UNITS[g]}. Held-out prompts "
            f"({r['runs']['lrp']['prompts']}) and windows ({r['runs']['lrp']['windows']}):", "",
            "| scorer | pruned | perplexity cost | " + ("toxic rate, greedy | toxic rate, sampled | mean toxicity |" if tox
                                                        else "uniqueness |"),
            "|---|---:|---:|" + ("---:|---:|---:|" if tox else "---:|")]
    for scorer in ("lrp", *[k for k in r["runs"] if k not in ("lrp", "validation")]):
        for s in r["runs"][scorer]["steps"]:
            b = s["behaviour"]
            cells = ([f"{b['toxic_rate']:.3f}", f"{b['toxic_rate_sampled']:.3f} ± {b['toxic_rate_sampled_spread']:.3f}",
                      f"{b['toxicity']:.3f}"] if tox else [f"{b['uniqueness']:.3f}"])
            out.append(f"| {scorer} | {_amount(s['amount'], g) if s['amount'] else 'dense'} | {s['cost']:+.2%} | "
                       + " | ".join(cells) + " |")
    lrp = r["runs"]["lrp"]["steps"]
    return "\n".join(out + [""] + before_after(f"LRP, {_amount(r['chosen'], g)} {UNITS[g]}", r["held_out_prompts"],
                                               lrp[0], lrp[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--behaviour", choices=list(BEHAVIOURS), default="toxicity")
    ap.add_argument("--granularity", choices=list(UNITS), default="global")
    ap.add_argument("--steps", help="comma list [default: the protocol's steps for the granularity]")
    ap.add_argument("--size", choices=list(SIZES), default="ci", help="tiny: a smoke run")
    ap.add_argument("--seed", type=int, default=0, help="score --seed: other scoring samples, so other validation data")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from core.errors import WorkbenchError

    steps = tuple(float(x) for x in args.steps.split(",")) if args.steps else STEPS[args.granularity]
    try:
        r = run(args.model, args.behaviour, args.granularity, steps, size_name=args.size, seed=args.seed)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    given = list(sys.argv[1:] if argv is None else argv)
    if "--out" in given:
        del given[given.index("--out"):given.index("--out") + 2]
    command = " ".join(["uv run python bench/correction_validated.py"] + given)
    stem = f"correction-validated-{args.model}-{args.behaviour}-{UNITS[args.granularity]}" + (
        f"-seed{args.seed}" if args.seed else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(r, indent=1))
    md = markdown(r, command)
    publish(md, args.out, "correction", f"correction-validated:{args.model}:{args.behaviour}:{args.granularity}"
                  + (f":seed{args.seed}" if args.seed else ""))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
