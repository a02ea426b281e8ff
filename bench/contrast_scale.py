"""Why the contrast needs normalising: where each normalisation's first neurons sit in the reference's own ranking.

    uv run python bench/contrast_scale.py                          # LRP, repetition, default model, CI size
    uv run python bench/contrast_scale.py --behaviour toxicity --scorer gradient

A diagnostic, not a measurement of correction: the reference set and the contrastive set are
scored apart (the settings of bench/correction.py at CI size, `--reduce abs`), each MLP
neuron's relevance is that of its output (as `workbench correct` ranks them), and for each
normalisation the neurons R_diff = N(R_reference) - N(R_contrastive) removes first are
looked up in the reference's ranking (1 = the neuron general text needs most). Results go
into bench/RESULTS.md between the markers `contrast-scale:<model>:<scorer>:<behaviour>`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.correction import BEHAVIOURS, REFERENCE, SIZES  # noqa: E402 - after the path insert
from bench.table import write_section  # noqa: E402

NORMALIZATIONS = ("none", "l1", "max", "rank")


def positions(first, ref_order) -> list[int]:
    """1-based places of `first` (neuron indices) in the reference's ranking, most relevant first."""
    import torch

    place = torch.empty_like(ref_order)
    place[ref_order] = torch.arange(1, len(ref_order) + 1)
    return sorted(place[first].tolist())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scorer", default="lrp")
    ap.add_argument("--behaviour", choices=list(BEHAVIOURS), default="repetition")
    ap.add_argument("--first", type=int, default=25, help="how many neurons each normalisation removes first")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)

    import torch

    from core.attribution.ranking import normalized
    from core.engine import Workbench
    from core.model.loading import load_model, quiet_libraries
    from core.session.store import Session
    from core.settings import ModelSpec, ScoreConfig

    quiet_libraries()
    size = SIZES["ci"]
    lm = load_model(args.model)
    wb = Workbench(Session.create(Path(tempfile.mkdtemp(prefix="contrast-scale-")), "scale"))
    wb.use_model(lm, ModelSpec(args.model))
    base = ScoreConfig(scorer=args.scorer, samples=size.samples, seq_len=size.seq_len, reduce="abs")
    per_set = {}
    for which, spec in (("reference", REFERENCE), ("contrastive", BEHAVIOURS[args.behaviour])):
        wb.score(replace(base, reference=spec))
        units = wb.ranking().units
        if "neuron" not in units:
            print(f"error: {args.scorer} gives no neuron scores of its own; use lrp or gradient", file=sys.stderr)
            return 1
        per_set[which] = units["neuron"].float().abs()
    ref, con = per_set["reference"], per_set["contrastive"]
    n, k = len(ref), args.first
    ref_order = ref.argsort(descending=True, stable=True)
    top = ref[ref_order]
    command = " ".join(["uv run python bench/contrast_scale.py"] + (sys.argv[1:] if argv is None else argv))
    out = [f"## Where the contrast's first neurons sit (`{command}`)", "",
           f"{platform.machine()}, {torch.get_num_threads()} threads; date {date.today().isoformat()}. Model `{args.model}`, "
           f"{args.scorer}, `{REFERENCE}` and `{BEHAVIOURS[args.behaviour]}` scored apart ({size.samples} samples x "
           f"{size.seq_len} tokens, `--reduce abs`), {n} MLP neurons ranked by the relevance of their output. The "
           f"reference's {k} most relevant neurons hold {float(top[:k].sum() / top.sum()):.1%} of its neuron relevance; "
           f"its largest is {float(top[0] / top.median()):.0f}x its median (contrastive set: "
           f"{float(con.max() / con.median()):.0f}x).", "",
           f"| normalisation | of the first {k} removed: among the reference's top {k} | top 5 % | median place in the reference's ranking (of {n}) |",
           "|---|---:|---:|---:|"]
    for how in NORMALIZATIONS:
        diff = normalized({"n": ref}, how)["n"] - normalized({"n": con}, how)["n"]
        place = positions(diff.argsort(stable=True)[:k], ref_order)
        out.append(f"| `{how}`{' (default)' if how == 'rank' else ''} | {sum(p <= k for p in place)} | "
                   f"{sum(p <= n * 0.05 for p in place)} | {statistics.median(place):,.0f} |")
    md = "\n".join(out) + "\n"
    write_section(md, args.out / "RESULTS.md", f"contrast-scale:{args.model}:{args.scorer}:{args.behaviour}")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
