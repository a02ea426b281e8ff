"""The `workbench` command: every engine step as a scriptable subcommand.

Heavy imports (torch, transformers) happen inside commands, so `workbench --help`
stays fast. Errors the user can fix print one line and exit non-zero.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import WorkbenchError

app = typer.Typer(
    help="LRP Workbench: attribution-guided pruning of causal language models. "
    "With no command it opens the terminal workbench (TUI); every step is also a subcommand.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: importing rich costs ~0.25 s of every `--help`
)
session_app = typer.Typer(help="List, show and delete saved sessions.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(session_app, name="session")

SessionOpt = Annotated[str, typer.Option("--session", "-s", help="Session name (a folder in the session store).")]
StoreOpt = Annotated[
    Optional[Path],
    typer.Option("--sessions-dir", envvar="WORKBENCH_SESSIONS_DIR", help="Session store folder [default: ./sessions]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn):
    """One-line errors instead of tracebacks (WORKBENCH_DEBUG=1 re-raises)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except WorkbenchError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; completed work was saved in the session (run the same command to resume)", 130)
        except MemoryError:
            fail("out of memory; lower --samples, --seq-len or --batch-size, or use a machine with more memory")
        except Exception as exc:  # noqa: BLE001 - last line of defence for the user
            if os.environ.get("WORKBENCH_DEBUG"):
                raise
            if type(exc).__name__ == "OutOfMemoryError":
                fail("GPU out of memory; lower --samples, --seq-len or --batch-size, or use --device cpu")
            fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                 "(re-run with WORKBENCH_DEBUG=1 for the traceback and report it)")

    return wrapper


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _store(path: Optional[Path]) -> Path:
    from core.session_paths import default_store

    return path or default_store()


def _open(name: str, store: Optional[Path], create: bool = False):
    _quiet_libraries()
    from core.engine import Workbench
    from core.session import Session

    s = Session.open_or_create(_store(store), name) if create else Session.open(_store(store), name)
    return Workbench(s)


def _emit(data: dict, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _progress_printer(enabled: bool):
    if not enabled:
        return None
    tty = sys.stderr.isatty()

    def show(which: str, p) -> None:
        line = (f"scoring {which}: {p.samples_done}/{p.samples_total} samples, "
                f"{p.tokens_per_s:.0f} tokens/s, {p.eta_s:.0f}s left")
        typer.echo(("\r" + line) if tty else line, err=True, nl=not tty or p.samples_done == p.samples_total)

    return show


# --------------------------------------------------------------------------- score
@app.command()
@guarded
def score(
    session: SessionOpt,
    model: Annotated[Optional[str], typer.Option(help="`default` (embedded SmolLM2-135M), a hub id, a folder or a .gguf [default: the session's, else default].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), float32 or bfloat16.")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow a hub model's own Python code to run.")] = False,
    reference: Annotated[str, typer.Option(help="What the model must keep doing: builtin:NAME, a .txt/.jsonl file, or hf:NAME[,config=..][,split=..][,column=..].")] = "builtin:general",
    contrastive: Annotated[Optional[str], typer.Option(help="A behaviour to remove (same spec forms); scores become R(reference) - R(contrastive).")] = None,
    scorer: Annotated[str, typer.Option(help="lrp, gradient, wanda, magnitude or random.")] = "lrp",
    samples: Annotated[int, typer.Option(help="Scoring samples per prompt set.")] = 32,
    seq_len: Annotated[int, typer.Option(help="Tokens per sample (longer samples are cut).")] = 128,
    batch_size: Annotated[int, typer.Option(help="Samples per forward/backward pass.")] = 8,
    target: Annotated[str, typer.Option(help="What LRP/gradient explain: logit, logprob or predicted (see `workbench catalog`).")] = "logit",
    variant: Annotated[str, typer.Option(help="LRP rules: attnlrp or cplrp.")] = "attnlrp",
    seed: Annotated[int, typer.Option(help="Chooses the scoring samples (and random scores).")] = 0,
    reduce: Annotated[Optional[str], typer.Option(help="abs-sample: mean of per-sample |relevance|; abs: |mean| (paper Eq. 1); signed [default: abs-sample, or abs with --contrastive].")] = None,
    normalize: Annotated[str, typer.Option(help="How reference and contrastive are put on one scale: rank, max, layer-max, l1, none.")] = "rank",
    continuation: Annotated[int, typer.Option(help="Prompt sets (builtin:repetition, JSONL 'prompt' rows): score the prompt plus this many tokens of the model's own greedy continuation.")] = 32,
    sessions_dir: StoreOpt = None,
    as_json: JsonOpt = False,
):
    """Score every prunable weight on reference (and contrastive) samples; cached and resumable."""
    from core.engine import ModelSpec, ScoreConfig

    wb = _open(session, sessions_dir, create=True)
    current = wb.model_spec
    if wb.lm is None:
        spec = ModelSpec(model or (current.source if current else "default"), device, dtype, trust_remote_code)
        wb.load(spec)
    cfg = ScoreConfig(reference=reference, contrastive=contrastive, scorer=scorer, samples=samples, seq_len=seq_len,
                      batch_size=batch_size, target=target, variant=variant, seed=seed, reduce=reduce, normalize=normalize, continuation=continuation)
    summary = wb.score(cfg, progress=_progress_printer(not as_json))
    lines = [f"session {session}: {scorer} scores over {len(wb.layers)} layers"]
    for which, s in summary.items():
        state = "cached" if s.get("cached") else f"{s['samples']}/{s.get('of', s['samples'])} samples, {s.get('tokens', 0)} tokens"
        lines.append(f"  {which}: {state}")
        if s.get("unscored_layers"):
            lines.append(f"  warning: {s['unscored_layers']} layers received no relevance (CP-LRP stops it at q/k "
                         "projections and MLP gates); they score zero and prune arbitrarily. Use --variant attnlrp to prune them.")
    _emit({"session": session, "scorer": scorer, "layers": len(wb.layers), "scores": summary}, as_json, "\n".join(lines))


# --------------------------------------------------------------------------- prune
@app.command()
@guarded
def prune(
    session: SessionOpt,
    sparsity: Annotated[float, typer.Option(help="Share of prunable weights to remove, in [0, 1).")] = 0.5,
    layer: Annotated[Optional[list[str]], typer.Option(help="Per-layer override PATTERN=SPARSITY (glob on layer names), repeatable: 'model.layers.0.*=0.2'.")] = None,
    granularity: Annotated[str, typer.Option(help="row (paper/Wanda), layer, global or neuron.")] = "row",
    allocate: Annotated[str, typer.Option(help="uniform; relevance: less relevant blocks (vs the depth trend) and, in each block, the less relevant of attention/MLP give up more weights (same overall sparsity); relevance-raw: the literal per-block rule.")] = "uniform",
    spread: Annotated[float, typer.Option(help="With --allocate relevance: how far (0-0.5) a block's sparsity may move from --sparsity.")] = 0.1,
    undo: Annotated[bool, typer.Option("--undo", help="Go back to the plan before the last change (other options ignored).")] = False,
    redo: Annotated[bool, typer.Option("--redo", help="Re-apply the plan the last --undo went back from.")] = False,
    sessions_dir: StoreOpt = None,
    as_json: JsonOpt = False,
):
    """Mask the least important weights from cached scores (no re-scoring); 0 restores dense."""
    from core.allocation import ALLOCATIONS
    from core.plan import SparsityPlan, parse_override

    if allocate not in ALLOCATIONS:
        fail(f"unknown --allocate {allocate!r}; choose one of {', '.join(ALLOCATIONS)}")
    if undo and redo:
        fail("give --undo or --redo, not both")
    wb = _open(session, sessions_dir)
    if undo or redo:
        summary = wb.undo(redo=redo)
    else:
        overrides = [parse_override(t) for t in layer or []]
        plan = SparsityPlan(sparsity, overrides, granularity)  # validates before any model work
        if allocate != "uniform":
            plan = wb.relevance_plan(sparsity, spread, granularity, allocate)
            plan.overrides += overrides
        summary = wb.prune(plan)
    text = (f"session {session}: {summary['sparsity']:.4%} of {summary['prunable_weights']:,} prunable weights pruned "
            f"({summary['pruned_weights']:,}, {summary['granularity']})")
    if allocate != "uniform" and not (undo or redo):
        text += "\n  per block: " + " ".join(f"{b}:{v:.0%}" for b, v in summary["per_block"].items())
    if not as_json:
        summary = {k: v for k, v in summary.items() if k != "per_layer"}
    _emit(summary, as_json, text)


# --------------------------------------------------------------------------- eval
@app.command("eval")
@guarded
def evaluate(
    session: SessionOpt,
    eval_data: Annotated[Optional[str], typer.Option(help="Prompt set to evaluate on (its evaluation split) [default: the reference set].")] = None,
    metrics: Annotated[Optional[str], typer.Option(help="Comma list: perplexity, uniqueness, toxicity, ioi_accuracy, ioi_logit_diff.")] = None,
    samples: Annotated[Optional[int], typer.Option(help="Evaluation samples for perplexity [default: all].")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per evaluation sample [default: the scoring seq-len].")] = None,
    gen_prompts: Annotated[int, typer.Option(help="Prompts to generate from for uniqueness and toxicity.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt (greedy).")] = 50,
    sessions_dir: StoreOpt = None,
    as_json: JsonOpt = False,
):
    """Compare dense and pruned: perplexity, response uniqueness, toxicity, IOI."""
    from core.engine import EvalConfig

    wb = _open(session, sessions_dir)
    names = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None
    res = wb.evaluate(EvalConfig(eval_data, names, samples, seq_len, gen_prompts, max_new_tokens))
    lines = [f"session {session}: sparsity {res['sparsity']:.4%}, eval on {res['eval_data']} ({res['eval_samples']} samples)",
             f"  {'metric':16s} {'dense':>12s} {'pruned':>12s} {'delta':>12s}"]
    for name, m in res["metrics"].items():
        lines.append(f"  {name:16s} {m['dense']:12.4f} {m['pruned']:12.4f} {m['delta']:+12.4f}")
    gens = res["generations"]
    for p, d, q in zip(gens["prompts"], gens["dense"], gens["pruned"]):
        lines += [f"  prompt: {p}", f"    dense : {d.strip()[:150]}", f"    pruned: {q.strip()[:150]}"]
    _emit(res, as_json, "\n".join(lines))


# --------------------------------------------------------------------------- generate
@app.command()
@guarded
def generate(
    session: SessionOpt,
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 50,
    which: Annotated[str, typer.Option(help="dense, pruned or both.")] = "both",
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.8,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    sessions_dir: StoreOpt = None,
):
    """Stream a continuation from the dense and/or pruned model, token by token."""
    from core.generation import GenerationConfig

    if which not in ("dense", "pruned", "both"):
        fail(f"--which {which!r}: choose dense, pruned or both")
    wb = _open(session, sessions_dir)
    cfg = GenerationConfig(max_new_tokens, not sample, temperature, top_p, seed)
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
    session: SessionOpt,
    out: Annotated[Path, typer.Option(help="Folder to write (must not exist unless --overwrite).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder (atomically).")] = False,
    sessions_dir: StoreOpt = None,
    as_json: JsonOpt = False,
):
    """Write the pruned model as safetensors that `AutoModelForCausalLM.from_pretrained` loads."""
    wb = _open(session, sessions_dir)
    res = wb.export(str(out), overwrite)
    mb = 1024 * 1024
    text = (f"exported {res['out']} (sparsity {res['sparsity']:.4%})\n"
            f"  safetensors on disk: {res['safetensors_file_bytes'] / mb:.1f} MiB; dense tensors: {res['dense_bytes'] / mb:.1f} MiB; "
            f"a sparse format would take ~{res['sparse_bytes_estimate'] / mb:.1f} MiB\n"
            f"  note: zeros in dense tensors do not shrink the file; see pruning.json")
    _emit(res, as_json, text)


# --------------------------------------------------------------------------- run
@app.command()
@guarded
def run(
    session: SessionOpt = "demo",
    model: Annotated[str, typer.Option(help="Model to prune.")] = "default",
    reference: Annotated[str, typer.Option(help="Reference prompt set.")] = "builtin:general",
    scorer: Annotated[str, typer.Option(help="Scorer.")] = "lrp",
    samples: Annotated[int, typer.Option(help="Scoring samples.")] = 16,
    seq_len: Annotated[int, typer.Option(help="Tokens per sample.")] = 128,
    sparsity: Annotated[float, typer.Option(help="Target sparsity.")] = 0.3,
    out: Annotated[Optional[Path], typer.Option(help="Export folder [default: exports/SESSION].")] = None,
    sessions_dir: StoreOpt = None,
):
    """The whole job in one go: score, prune, evaluate and export (replaces an earlier export of the same run)."""
    from core.engine import EvalConfig, ModelSpec, ScoreConfig
    from core.plan import SparsityPlan

    wb = _open(session, sessions_dir, create=True)
    typer.echo(f"[1/4] loading {model} ...", err=True)
    wb.load(ModelSpec(model))
    typer.echo(f"[2/4] scoring with {scorer} on {reference} ({samples} samples x {seq_len} tokens)", err=True)
    wb.score(ScoreConfig(reference=reference, scorer=scorer, samples=samples, seq_len=seq_len), progress=_progress_printer(True))
    s = wb.prune(SparsityPlan(sparsity))
    typer.echo(f"[3/4] pruned {s['sparsity']:.2%} of {s['prunable_weights']:,} weights; evaluating ...", err=True)
    res = wb.evaluate(EvalConfig(gen_prompts=4, max_new_tokens=40))
    for name, m in res["metrics"].items():
        typer.echo(f"  {name:12s} dense {m['dense']:10.3f}  pruned {m['pruned']:10.3f}  delta {m['delta']:+10.3f}")
    for p, d, q in zip(res["generations"]["prompts"], res["generations"]["dense"], res["generations"]["pruned"]):
        typer.echo(f"  prompt: {p}\n    dense : {d.strip()[:120]}\n    pruned: {q.strip()[:120]}")
    target = out or Path("exports") / session
    e = wb.export(str(target), overwrite=True)
    typer.echo(f"[4/4] exported {e['out']}: {e['safetensors_file_bytes'] / 2**20:.0f} MiB on disk "
               f"(sparse format ~{e['sparse_bytes_estimate'] / 2**20:.0f} MiB). Resume with --session {session}.")


# --------------------------------------------------------------------------- catalog
@app.command()
def catalog(as_json: JsonOpt = False):
    """List scorers, LRP targets, granularities, metrics and built-in prompt sets."""
    from core.catalog import CATALOG

    if as_json:
        typer.echo(json.dumps(CATALOG, indent=2))
        return
    for section, entries in CATALOG.items():
        typer.echo(f"{section}:")
        for name, text in entries.items():
            typer.echo(f"  {name:12s} {text}")


# --------------------------------------------------------------------------- sessions
@session_app.command("list")
@guarded
def session_list(sessions_dir: StoreOpt = None, as_json: JsonOpt = False):
    """Sessions in the store, with model, scorer and sparsity."""
    from core.session_index import describe_sessions

    rows = describe_sessions(_store(sessions_dir))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no sessions in {_store(sessions_dir)}")
    for r in rows:
        sp = "-" if r["sparsity"] is None else f"{r['sparsity']:.2%}"
        typer.echo(f"{r['name']:20s} model={r['model'] or '-':12s} scorer={r['scorer'] or '-':9s} sparsity={sp:8s} updated={r['updated']}")


@session_app.command("show")
@guarded
def session_show(name: str, sessions_dir: StoreOpt = None):
    """Print a session's manifest."""
    from core.session import Session

    typer.echo(json.dumps(Session.open(_store(sessions_dir), name).manifest, indent=2))


@session_app.command("delete")
@guarded
def session_delete(name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False, sessions_dir: StoreOpt = None):
    """Delete a session folder."""
    from core.session import Session

    s = Session.open(_store(sessions_dir), name)
    if not yes and not typer.confirm(f"delete session {name} ({s.path})?"):
        raise typer.Abort()
    s.delete()
    typer.echo(f"deleted {name}")


@app.callback()
def tui(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model to load: default (embedded SmolLM2-135M), a hub id, a folder or a .gguf [default: the session's, else default].")] = None,
    session: Annotated[Optional[str], typer.Option("--session", "-s", help="Session to resume or create [default: a new one named by the time].")] = None,
    sessions_dir: StoreOpt = None,
    colors: Annotated[Optional[str], typer.Option("--colors", help="Force a colour system: 256, truecolor, standard [default: detect from the terminal].")] = None,
):
    """Open the workbench TUI (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    if colors:
        if colors not in ("256", "truecolor", "standard", "auto"):
            fail(f"--colors {colors!r}: choose 256, truecolor, standard or auto")
        os.environ["TEXTUAL_COLOR_SYSTEM"] = colors  # read when textual is imported
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("the workbench TUI needs a terminal; use the subcommands (workbench --help) in scripts")
    from core.session_paths import check_name
    from workbench.app import WorkbenchApp

    if session is not None:
        try:
            check_name(session)
        except WorkbenchError as exc:
            fail(str(exc))
    WorkbenchApp(session=session, model=model, store=_store(sessions_dir)).run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
