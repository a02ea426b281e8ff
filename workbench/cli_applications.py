"""The `workbench circuit` and `workbench correct` commands: the paper's circuit discovery and targeted correction.

They are registered on the main app in workbench/cli.py, between `eval` and `generate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.evaluation.registry import BEHAVIOURS
from core.pruning.registry import granularity as granularity_of
from core.settings import CircuitConfig, CorrectConfig
from screens.heat import MAP_CELLS
from workbench.cli_support import (Settings, emit, open_workbench, guarded, json_opt, session_opt, settings_options,
                                   store_opt, trust_opt)


# --------------------------------------------------------------------------- circuit
@guarded
@settings_options(CircuitConfig)
def circuit(
    session: str = session_opt(),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the curves and the circuit's map as a PNG here [default: circuit-SESSION-GRANULARITY.png]."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Write no PNG."),
    trust_remote_code: bool = trust_opt(),
    sessions_dir: Optional[Path] = store_opt(),
    as_json: bool = json_opt(),
    settings: Settings = None,
):
    """Find the circuit behind the session's task: the fewest components that keep it working, kept as the session's plan."""
    from workbench.plots import circuit_png

    cfg = settings.build(CircuitConfig)
    names, granularity, threshold = cfg.compare, cfg.granularity, cfg.threshold
    wb = open_workbench(session, sessions_dir, trust_remote_code=trust_remote_code)
    if names:
        results = wb.circuit_compare(cfg, progress=None if as_json else lambda what: typer.echo(f"scoring {what} ...", err=True))
    else:
        results = [wb.circuit(cfg)]
    if not no_plot:
        path = plot or Path(f"circuit-{session}-{granularity}.png")
        circuit_png(results, path, threshold)
    if as_json:
        emit([r.to_json() for r in results] if names else results[0].to_json(), True, "")
        return
    lines = []
    for r in results:
        seed = f", seed {r.seed}" if r.seed is not None else ""
        lines.append(f"{r.scorer}{seed}: {r.granularity} circuit on {r.task} ({r.items} held-out items, "
                     f"{r.ablation} ablation; "
                     f"dense logit difference {r.dense:.3f}, all pruned {r.empty:.3f})")
        lines.append(f"  {'kept':>8s} {'logit diff':>11s} {'accuracy':>9s}")
        for p in r.curve:
            lines.append(f"  {p.kept:8.3f} {p.logit_diff:11.3f} {p.accuracy:9.3f}")
        kept = r.circuit_kept
        noun = f"{granularity_of(r.granularity).component}s"
        lines.append(f"  circuit: {'-' if kept is None else f'{kept:.3g}'} of the {noun} keep "
                     f"{threshold:.0%} of the dense logit difference; area under the curve {r.area or 0:.3f} "
                     "(threshold-free; dense 1)")
        blocks = r.map.get("blocks", {})
        units = blocks and all(isinstance(flags, list) for flags in blocks.values())
        if units and all(len(flags) <= MAP_CELLS for flags in blocks.values()):
            kept_ones = [f"{b}.{i}" for b, flags in blocks.items() for i, on in enumerate(flags) if on]
            lines.append(f"  kept {noun} (block.{noun[:-1]}): {' '.join(kept_ones)}")
        elif units:
            lines.append(f"  kept {noun} per block: " + " ".join(f"{b}:{sum(f)}" for b, f in blocks.items()))
    if not names:
        lines.append(f"the circuit is {results[0].as_plan()}: `workbench export --session {session}` writes it")
    if not no_plot:
        lines.append(f"plot: {path}")
    typer.echo("\n".join(lines))


# --------------------------------------------------------------------------- correct
@guarded
@settings_options(CorrectConfig)
def correct(
    session: str = session_opt(),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the sweep as a PNG here [default: correct-SESSION.png]."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Write no PNG."),
    trust_remote_code: bool = trust_opt(),
    sessions_dir: Optional[Path] = store_opt(),
    as_json: bool = json_opt(),
    settings: Settings = None,
):
    """Remove a behaviour: sweep how much of what the contrastive set needs is pruned; keep the best within the cost bound."""
    from core.applications.correction import describe, measured_on, sweep_line
    from workbench.plots import correction_png

    cfg = settings.build(CorrectConfig)
    wb = open_workbench(session, sessions_dir, trust_remote_code=trust_remote_code)
    record = wb.correct(cfg, progress=None if as_json else lambda p: p.row is None and typer.echo(
        sweep_line(p, cfg.granularity), err=True))
    data = record.model_dump()  # plots and the bench reports read the record as JSON
    if not no_plot:
        path = plot or Path(f"correct-{session}.png")
        correction_png(data, path)
    if as_json:
        emit(data, True, "")
        return
    b = record.behaviour
    keys = list(BEHAVIOURS[b].measures)
    prompts_on, text_on = measured_on(data)
    lines = [f"session {session}: {record.reference} minus {record.contrastive} ({record.scorer}), "
             f"{record.granularity} sweep; {b} on {record.prompts} {prompts_on}, perplexity on "
             f"{record.windows} windows of {text_on}",
             f"  {'amount':>10s} {'sparsity':>9s} {'ppl':>8s} {'cost':>7s} " + " ".join(f"{k:>18s}" for k in keys)]
    for st in record.steps:
        mark = " <- chosen" if record.chosen is not None and st.amount == record.chosen else ""
        lines.append(f"  {st.amount:10g} {st.sparsity:9.4%} {st.perplexity:8.2f} {st.cost:+7.2%} "
                     + " ".join(f"{st.behaviour.get(k, float('nan')):18.3f}" for k in keys) + mark)
    if record.chosen is None:
        lines.append(f"  no step improved {b} within a {cfg.bound:.0%} perplexity cost; the session is dense")
    else:
        lines.append(f"  applied: {describe(record.chosen, record.granularity)} (the session's plan; "
                     "`workbench export` writes it)")
        dense, chosen = record.steps[0], next(s for s in record.steps if s.amount == record.chosen)
        for before, after in list(zip(dense.samples, chosen.samples))[:2]:
            lines += [f"    before: {before.strip()[:110]}", f"    after : {after.strip()[:110]}"]
    if not no_plot:
        lines.append(f"plot: {path}")
    typer.echo("\n".join(lines))
