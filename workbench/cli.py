"""The `workbench` command: every engine step as a scriptable subcommand.

Every option's default and help text come from its declaration in core/settings.py, so
the CLI, the TUI and the engine cannot drift apart. Heavy imports (torch, transformers)
happen inside commands, so `workbench --help` stays fast. Errors the user can fix print
one line and exit non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from core.catalog import catalog as full_catalog
from core.errors import WorkbenchError
from core.settings import (
    EvalConfig,
    GenerationConfig,
    ModelSpec,
    PruneConfig,
    RunConfig,
    ScoreConfig,
    default_of,
    help_of,
)
from workbench.cli_applications import circuit, correct
from workbench.cli_sessions import session_app
from workbench.cli_support import (
    OneLineErrors,
    PanelledCommand,
    Settings,
    emit,
    preset_choices,
    human,
    open_workbench,
    progress_printer,
    store_of,
    fail,
    guarded,
    json_opt,
    opt,
    trust_opt,
    session_opt,
    settings_options,
    store_opt,
)

app = typer.Typer(
    help="LRP Workbench: attribution-guided pruning of causal language models. "
    "With no command it opens the terminal workbench (TUI); every step is also a subcommand.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: importing rich costs ~0.25 s of every `--help`
    cls=OneLineErrors,
)
app.add_typer(session_app, name="session")


# --------------------------------------------------------------------------- score
@app.command(cls=PanelledCommand)
@guarded
@settings_options(ModelSpec, ScoreConfig)
def score(
    session: str = session_opt(),
    preset: Optional[str] = typer.Option(None, "--preset", help="What you want to do; sets the prompt sets and scorer "
                                         "(every option below still overrides it). Choices: " + preset_choices() + ".",
                                         rich_help_panel="Start here"),
    config: Optional[Path] = typer.Option(None, "--config", help="Read the settings from a recipe (TOML) that "
                                          "--show-config wrote; options given here override it.", rich_help_panel="Start here"),
    show_config: bool = typer.Option(False, "--show-config", help="Print the complete, resolved settings as a recipe "
                                     "(TOML) and exit without scoring.", rich_help_panel="Start here"),
    sessions_dir: Optional[Path] = store_opt(panel="Model and data"),
    as_json: bool = json_opt(),
    settings: Settings = None,
):
    """Score every prunable weight on reference (and contrastive) samples; cached and resumable."""
    from core.recipes import build, read_recipe, recipe_text, resolve

    recipe = read_recipe(config) if config else None
    cfg = build(preset, recipe, settings.of(ScoreConfig, given_only=True))
    spec_values = {**(recipe or {}).get("model", {}), **settings.of(ModelSpec, given_only=True)}
    trust_remote_code = bool(spec_values.pop("trust_remote_code", False))
    if show_config:
        from core.data.prompt_sets import load_prompt_set

        typer.echo(recipe_text(resolve(cfg, lambda s: load_prompt_set(s).kind), ModelSpec(**spec_values),
                               preset or (recipe or {}).get("preset")), nl=False)
        return
    wb = open_workbench(session, sessions_dir, create=True, trust_remote_code=trust_remote_code)
    current = wb.model_spec
    spec_values.setdefault("source", current.source if current else default_of(ModelSpec, "source"))
    wb.load(ModelSpec(**spec_values, trust_remote_code=trust_remote_code))
    summary = wb.score(cfg, progress=progress_printer(not as_json),
                       stage=None if as_json or not sys.stderr.isatty() else lambda text: typer.echo(text, err=True))
    lines = [f"session {session}: {wb.score_config.scorer} scores over {len(wb.layers)} layers"]
    used, defaulted = wb.score_config, wb.score_defaults
    chosen = preset or (recipe or {}).get("preset")
    if chosen and not as_json:
        from core.presets import preset as preset_info

        lines.append("  next: " + preset_info(chosen).next_step.replace("SESSION", session))
    if used.contrastive:  # what the set-dependent defaults became, so a user sees how the contrast was taken
        lines.append("  contrast: " + ", ".join(f"--{k} {getattr(used, k)}" + (" (default)" if k in defaulted else "")
                                                for k in ("reduce", "explain", "pair")))
    for which, s in summary.items():
        state = "cached" if s.cached else f"{s.samples}/{s.of if s.of is not None else s.samples} samples, {s.tokens} tokens"
        lines.append(f"  {which}: {state}")
        if s.short:
            lines.append(f"  note: {s.short}; scored {s.samples}. Give a larger set (builtin:fortunes has thousands) "
                         "or lower --samples")
        if s.continuations:
            c = s.continuations
            worst = c.by == "most-toxic"
            lines.append(f"  continuations: the {'most' if worst else 'least'} offensive of {c.draws} sampled per prompt; "
                         f"{c.offensive} of {c.prompts} rated offensive" + (
                             " (few: the contrast has little to explain; try more --draws)"
                             if worst and c.offensive * 4 < c.prompts else ""))
        if s.explain_fallback:
            lines.append("  explained: every token, as no scoring sample shows a repeat or offensive word for the default "
                         "--explain unwanted to explain (more --samples or --draws may find some)")
        if s.explained:
            e = s.explained
            lines.append(f"  explained: {e.tokens} unwanted tokens in {e.samples} of {e.of} samples "
                         "(the others show no repeat or offensive word and were skipped)")
        if s.unscored_layers:
            lines.append(f"  warning: {s.unscored_layers} layers received no relevance (CP-LRP stops it at q/k "
                         "projections and MLP gates); they score zero and prune arbitrarily. Use --rules attnlrp to prune them.")
    emit({"session": session, "scorer": used.scorer, "layers": len(wb.layers),
          "scores": {w: s.to_json() for w, s in summary.items()}}, as_json, "\n".join(lines))


# --------------------------------------------------------------------------- prune
#: how `prune` says who chose the weights of a reconstruction
CHOSEN_BY = {"plan": "", "sparsegpt": ", SparseGPT choosing the weights",
             "wanda": ", Wanda's metric re-choosing the weights on the pruned blocks' outputs (no update)"}

@app.command()
@guarded
@settings_options(PruneConfig)
def prune(
    session: str = session_opt(),
    layer: Optional[list[str]] = typer.Option(None, "--layer", help="Per-layer override PATTERN=SPARSITY (glob on layer names), repeatable: 'model.layers.0.*=0.2'."),
    undo: bool = typer.Option(False, "--undo", help="Go back to the plan before the last change (other options ignored)."),
    redo: bool = typer.Option(False, "--redo", help="Re-apply the plan the last --undo went back from."),
    reconstruct: bool = typer.Option(False, "--reconstruct", help="Then update the kept weights so each layer's output "
                                     "on the reference's scoring windows changes as little as possible (SparseGPT's "
                                     "update); kept in the session with this plan and exported. On by default with "
                                     "the sparsegpt ranking, which chooses its weights while updating."),
    choose: Optional[str] = typer.Option(None, "--choose", help="With --reconstruct, who picks the pruned weights: "
                                         "'plan' (its ranking's mask), 'sparsegpt' (OBS saliency as the update goes, "
                                         "keeping the plan's share per row, layer or N:M group) or 'wanda' (Wanda's "
                                         "metric on the already pruned blocks' outputs, no update) [default: sparsegpt; "
                                         "plan for neuron and head plans]."),
    mask_only: bool = typer.Option(False, "--mask-only", help="No reconstruction: drop this plan's reconstruction "
                                   "(when the session has one), the kept weights go back to the originals."),
    trust_remote_code: bool = trust_opt(),
    sessions_dir: Optional[Path] = store_opt(),
    as_json: bool = json_opt(),
    settings: Settings = None,
):
    """Mask the least important weights from the session's scores (no re-scoring); 0 restores dense."""
    from core.pruning.plan import SparsityPlan, parse_override

    cfg = settings.build(PruneConfig)
    sparsity, granularity, allocate, spread, count = cfg.sparsity, cfg.granularity, cfg.allocate, cfg.spread, cfg.count
    if undo and redo:
        fail("give --undo or --redo, not both")
    overrides = [parse_override(t) for t in layer or []]
    SparsityPlan(sparsity, overrides, granularity, count)  # validates before any model work
    wb = open_workbench(session, sessions_dir, trust_remote_code=trust_remote_code)
    method = "uniform"
    if undo or redo:
        summary = wb.undo(redo=redo)
    else:
        method = "uniform" if count is not None else wb.allocation_for(allocate, granularity)
        summary = wb.prune(wb.plan_for(sparsity, granularity, allocate, spread, overrides, count), mask_only=mask_only)
    text = (f"session {session}: {summary.sparsity:.4%} of {summary.prunable_weights:,} prunable weights pruned "
            f"({summary.pruned_weights:,}, {summary.granularity}, "
            + (f"{count} removed)" if count is not None else f"allocation {method})"))
    if method != "uniform":
        text += "\n  per block: " + " ".join(f"{b}:{v:.0%}" for b, v in summary.per_block.items())
    if summary.contrastive and summary.sparsity > 0:
        text += (f"\n  note: the ranking is contrastive (minus {summary.contrastive}): this removed first what that "
                 "behaviour needs (`workbench correct` chooses how much); score without --contrastive to compress")
    if summary.reconstructed and not reconstruct:
        text += "\n  reconstructed: this plan's kept weights as `--reconstruct` left them (--mask-only drops them)"
    data = summary.to_json()
    if choose is not None and choose not in ("plan", "sparsegpt", "wanda"):
        fail(f"--choose {choose!r}: choose plan, sparsegpt or wanda")
    by_default = wb.reconstructs_by_default() and not (undo or redo or mask_only or summary.reconstructed)
    if reconstruct and mask_only:
        fail("give --reconstruct or --mask-only, not both")
    if reconstruct or (by_default and summary.sparsity > 0):
        tty = sys.stderr.isatty()
        rec = wb.reconstruct(progress=None if as_json else lambda done, total: typer.echo(
            f"{chr(13) if tty else ''}reconstructing block {done}/{total}", err=True, nl=not tty or done == total),
            choose=choose)
        data["reconstruction"] = {k: v for k, v in rec.to_json().items() if k != "per_layer" or as_json}
        text += (f"\n  reconstructed {rec.layers} layers on {rec.samples} windows ({rec.tokens:,} tokens) of the "
                 f"reference{CHOSEN_BY[rec.chosen_by]}; output error "
                 f"left {rec.error:.2%} of each layer's output (mean)")
    if not as_json:
        data.pop("per_layer")
    emit(data, as_json, text)


# --------------------------------------------------------------------------- eval
@app.command("eval")
@guarded
@settings_options(EvalConfig)
def evaluate(
    session: str = session_opt(),
    trust_remote_code: bool = trust_opt(),
    sessions_dir: Optional[Path] = store_opt(),
    as_json: bool = json_opt(),
    settings: Settings = None,
):
    """Compare dense and pruned: perplexity, response uniqueness, toxicity, IOI."""
    cfg = settings.build(EvalConfig)
    wb = open_workbench(session, sessions_dir, read=True, trust_remote_code=trust_remote_code)
    res = wb.evaluate(cfg)
    held = "held-out split" if res.eval_split == "eval" else "all of it"
    lines = [f"session {session}: sparsity {res.sparsity:.4%}, eval on {res.eval_data} ({held}, {res.eval_samples} samples)",
             f"  {'metric':16s} {'dense':>12s} {'pruned':>12s} {'delta':>12s}"]
    for name, m in res.metrics.items():
        lines.append(f"  {name:16s} {m.dense:12.4f} {m.pruned:12.4f} {m.delta:+12.4f}")
    gens = res.generations
    for p, d, q in zip(gens.prompts, gens.dense, gens.pruned):
        lines += [f"  prompt: {p}", f"    dense : {d.strip()[:150]}", f"    pruned: {q.strip()[:150]}"]
    emit(res.to_json(), as_json, "\n".join(lines))


# --------------------------------------------------------------------------- circuit, correct
app.command()(circuit)
app.command()(correct)


# --------------------------------------------------------------------------- generate
@app.command()
@guarded
@settings_options(GenerationConfig)
def generate(
    session: str = session_opt(),
    which: str = typer.Option("both", "--which", help="dense, pruned or both."),
    trust_remote_code: bool = trust_opt(),
    sessions_dir: Optional[Path] = store_opt(),
    settings: Settings = None,
):
    """Stream a continuation from the dense and/or pruned model, token by token."""
    if which not in ("dense", "pruned", "both"):
        fail(f"--which {which!r}: choose dense, pruned or both")
    cfg = settings.build(GenerationConfig)
    prompt = cfg.prompt
    wb = open_workbench(session, sessions_dir, read=True, trust_remote_code=trust_remote_code)
    for variant in (["dense", "pruned"] if which == "both" else [which]):
        typer.echo(f"[{variant}] {prompt}", nl=False)
        for piece in wb.stream(prompt, cfg, pruned=variant == "pruned"):
            typer.echo(piece, nl=False)
            sys.stdout.flush()
        typer.echo("")


# --------------------------------------------------------------------------- export
@app.command()
@guarded
def export(
    session: str = session_opt(),
    out: Path = typer.Option(..., "--out", help="Folder to write (must not exist unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in that folder (atomically)."),
    trust_remote_code: bool = trust_opt(),
    sessions_dir: Optional[Path] = store_opt(),
    as_json: bool = json_opt(),
):
    """Write the pruned model as safetensors that `AutoModelForCausalLM.from_pretrained` loads."""
    from core.session.export import check_export_target

    check_export_target(str(out), overwrite)  # before the session or the model
    wb = open_workbench(session, sessions_dir, read=True, trust_remote_code=trust_remote_code)
    res = wb.export(str(out), overwrite)
    text = (f"exported {res.out} (sparsity {res.sparsity:.4%})\n"
            f"  safetensors on disk: {human(res.safetensors_file_bytes)}; dense tensors: {human(res.dense_bytes)}; "
            f"a sparse format would take ~{human(res.sparse_bytes_estimate)}\n"
            f"  note: zeros in dense tensors do not shrink the file; see pruning.json")
    emit(res.to_json(), as_json, text)


# --------------------------------------------------------------------------- run
@app.command()
@guarded
def run(
    session: str = typer.Option("demo", "--session", "-s", help="Session name (a folder in the session store)."),
    model: str = opt(ModelSpec, "source"),
    device_map: Optional[str] = opt(ModelSpec, "device_map"),
    reference: str = opt(ScoreConfig, "reference"),
    scorer: str = opt(ScoreConfig, "scorer"),
    samples: int = opt(ScoreConfig, "samples"),
    seq_len: int = opt(ScoreConfig, "seq_len"),
    sparsity: float = opt(RunConfig, "sparsity"),
    reconstruct: bool = typer.Option(False, "--reconstruct", help="Update the kept weights after pruning (see `prune --reconstruct`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Export folder [default: exports/SESSION]."),
    sessions_dir: Optional[Path] = store_opt(),
):
    """The whole job in one go: score, prune, evaluate and export (replaces an earlier export of the same run)."""
    from core.catalog import check
    from core.session.export import check_export_target

    check(ScoreConfig(reference=reference, scorer=scorer, samples=samples, seq_len=seq_len))
    check(RunConfig(sparsity))
    check_export_target(str(out or Path("exports") / session), overwrite=True)
    wb = open_workbench(session, sessions_dir, create=True)
    typer.echo(f"[1/4] loading {model} ...", err=True)
    wb.load(ModelSpec(model, device_map=device_map))
    typer.echo(f"[2/4] scoring with {scorer} on {reference} ({samples} samples x {seq_len} tokens)", err=True)
    wb.score(ScoreConfig(reference=reference, scorer=scorer, samples=samples, seq_len=seq_len), progress=progress_printer(True))
    s = wb.prune(wb.plan_for(sparsity))
    reconstruct = reconstruct or wb.reconstructs_by_default()
    if reconstruct:
        typer.echo("      reconstructing the kept weights ...", err=True)
        wb.reconstruct()
    typer.echo(f"[3/4] pruned {s.sparsity:.2%} of {s.prunable_weights:,} weights "
               f"(allocation {wb.allocation_for('auto', 'row')}{', reconstructed' if reconstruct else ''}); evaluating ...",
               err=True)
    res = wb.evaluate(EvalConfig())
    for name, m in res.metrics.items():
        typer.echo(f"  {name:12s} dense {m.dense:10.3f}  pruned {m.pruned:10.3f}  delta {m.delta:+10.3f}")
    for p, d, q in zip(res.generations.prompts, res.generations.dense, res.generations.pruned):
        typer.echo(f"  prompt: {p}\n    dense : {d.strip()[:120]}\n    pruned: {q.strip()[:120]}")
    target = out or Path("exports") / session
    e = wb.export(str(target), overwrite=True)
    typer.echo(f"[4/4] exported {e.out}: {human(e.safetensors_file_bytes)} on disk "
               f"(sparse format ~{human(e.sparse_bytes_estimate)}). Resume with --session {session}.")


# --------------------------------------------------------------------------- catalog
@app.command()
def catalog(as_json: bool = json_opt()):
    """List scorers, LRP targets and rules, granularities, metrics and built-in prompt sets."""
    data = full_catalog()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for section, entries in data.items():
        typer.echo(f"{section}:")
        for name, text in entries.items():
            typer.echo(f"  {name:16s} {text}")


# --------------------------------------------------------------------------- the TUI
@app.callback()
def tui(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help=help_of(ModelSpec, "source") + " [default: the session's, else default]"),
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Session to resume or create [default: a new one named by the time]."),
    sessions_dir: Optional[Path] = store_opt(),
    colors: Optional[str] = typer.Option(None, "--colors", help="Force a colour system: 256, truecolor, standard [default: detect from the terminal]."),
    device_map: Optional[str] = opt(ModelSpec, "device_map"),
    trust_remote_code: bool = trust_opt(),
):
    """Open the workbench TUI (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    if colors:
        if colors not in ("256", "truecolor", "standard", "auto"):
            fail(f"--colors {colors!r}: choose 256, truecolor, standard or auto")
        os.environ["TEXTUAL_COLOR_SYSTEM"] = colors  # read when textual is imported
    if device_map is not None:
        from core.model.placement import parse_device_map

        try:
            parse_device_map(device_map)  # a bad map fails here in one line, before the screen opens
        except WorkbenchError as exc:
            fail(str(exc))
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("the workbench TUI needs a terminal; use the subcommands (workbench --help) in scripts")
    from core.session.paths import check_name
    from workbench.app import WorkbenchApp

    if session is not None:
        try:
            check_name(session)
        except WorkbenchError as exc:
            fail(str(exc))
    WorkbenchApp(session=session, model=model, store=store_of(sessions_dir), device_map=device_map,
                 trust_remote_code=trust_remote_code).run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
