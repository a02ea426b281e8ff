"""Compression against the peer: llm-compressor's SparseGPT and Wanda and the workbench's methods on the same model,
the same calibration windows and the same evaluator, in one run.

    uv run python bench/compression.py                                   # default model, 50 % and 2:4
    uv run python bench/compression.py --configs 0.5,0.6,0.7,2:4 --seeds 0,1,2

Calibration: `--samples` windows of 128 tokens of builtin:fortunes' scoring split, drawn with each seed (the
workbench's own scoring windows; the peer gets the same token ids). Perplexity on held-out text no method saw:
windows of builtin:fortunes' evaluation split and of builtin:general's. The peer runs in an environment of its
own (bench/peer/requirements.txt; made under bench/peer/.venv on first use, or `--peer-python`); the product
never imports it. Each workbench scorer runs in a process of its own, so its peak memory is its own.

Rows: the peer's SparseGPT and Wanda; then each workbench scorer, with `uniform` (every layer the same share) and
`relevance` allocation (not for N:M, which fixes the share), mask only and reconstructed (`prune --reconstruct`;
the sparsegpt scorer's weights are chosen by SparseGPT while reconstructing, and `lrp+sgpt` is LRP's allocation
with SparseGPT's choice within each row's count, `lrp+sgpt-layer` within each layer's, `lrp+sgpt-ts` with each group
of a block's layers calibrated on the groups before it as reconstructed (true-sequential); `wanda-seq` re-chooses Wanda's weights on the already pruned blocks' outputs, as
llm-compressor's Wanda calibrates, removes as many per row as it does (int(s x n), uniform only), and updates nothing; `sparsegpt-1pass` is SparseGPT's pass without the
least-squares refinement, as llm-compressor runs it). Results accumulate in `--work`/rows.jsonl, so a rerun skips what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import RESULTS, publish  # noqa: E402 - after the path insert
PEER = ROOT / "bench" / "peer"
EVAL_WINDOWS = 64
#: the workbench's methods: a ranking (its scorer) and who chooses the weights when reconstructing (`--choose`)
COMBINED = {"wanda": ("wanda", "plan"), "wanda-seq": ("wanda", "wanda"), "sparsegpt": ("sparsegpt", "sparsegpt"),
            "sparsegpt-1pass": ("sparsegpt", "sparsegpt"), "lrp": ("lrp", "plan"), "lrp+sgpt": ("lrp", "sparsegpt"),
            "lrp+sgpt-layer": ("lrp", "sparsegpt"),
            "lrp+sgpt-ts": ("lrp", "sparsegpt")}
ONE_PASS = "-1pass"  # SparseGPT's pass alone, without the least-squares refinement (as llm-compressor runs it)
TRUE_SEQUENTIAL = "-ts"  # each group of a block's layers calibrated on the groups before it as reconstructed
PER_LAYER = "-layer"  # the plan's counts per layer, not per row: SparseGPT chooses across each block of columns


def windows_for(lm, prompt_set, samples: int, seed: int) -> list[list[int]]:
    from core.attribution.samples import scoring_sequences
    from core.settings import ScoreConfig

    return scoring_sequences(lm, prompt_set, ScoreConfig(reference="builtin:fortunes", samples=samples, seq_len=128, seed=seed))


def held_out(wb) -> dict[str, list[list[int]]]:
    tok = wb.lm.tokenizer
    return {name: wb.prompt_set(spec).windows(tok, "eval", 128)[:EVAL_WINDOWS]
            for name, spec in (("fortunes", "builtin:fortunes"), ("general", "builtin:general"))}


def perplexities(model, tokenizer, evals: dict) -> dict[str, float]:
    import torch

    from core.evaluation import metrics as M

    with torch.no_grad():
        return {name: M.perplexity(model, tokenizer, w) for name, w in evals.items()}


def configs(text: str) -> list[tuple[str, float, str]]:
    """'0.5,2:4' -> [(label, sparsity, granularity)]."""
    out = []
    for c in text.split(","):
        out.append((c, 0.5, c) if ":" in c else (f"{float(c):.0%}", float(c), "row"))
    return out


# --------------------------------------------------------------------------- the workbench, one scorer per process
def worker(args) -> None:
    """Score with one scorer and measure every config, allocation and chooser of it; append the rows not yet there."""
    import tempfile

    from core.engine import Workbench
    from core.pruning.plan import SparsityPlan
    from core.session.store import Session
    from core.settings import ModelSpec, ScoreConfig

    work = Path(args.work)
    scorer = args.worker
    have = {(r["method"], r["config"], r["allocation"], r["seed"]) for r in done(work)}
    with tempfile.TemporaryDirectory() as tmp:
        wb = Workbench(Session.create(Path(tmp), "compression"))
        wb.load(ModelSpec(args.model, "cpu", "float32"))
        evals = held_out(wb)
        t0, c0 = time.perf_counter(), time.process_time()
        wb.score(ScoreConfig(reference="builtin:fortunes", scorer=scorer, samples=args.samples, seq_len=128, seed=args.seed,
                             batch_size=args.batch_size))
        score_s, score_cpu = time.perf_counter() - t0, time.process_time() - c0
        for label, sparsity, granularity, allocation in cells(args.configs):
            todo = [(m, c) for m, c in methods_of(scorer, args.scorers.split(","))
                    if (m, label, allocation, args.seed) not in have and wanted_row(m, allocation, granularity)]
            by_plan: dict[tuple[str, bool], list[tuple[str, str]]] = {}
            for method, choose in todo:
                g = granularity_of(method, granularity)
                by_plan.setdefault((g, counts_as_peer(method, allocation, g)), []).append((method, choose))
            for (g, as_peer), methods in by_plan.items():
                if as_peer:
                    plan = peer_count_plan(wb.layers, sparsity, g)
                elif allocation == "uniform":
                    plan = SparsityPlan(sparsity, [], g)
                else:
                    plan = wb.relevance_plan(sparsity, granularity=g)
                wb.prune(plan, mask_only=True)
                with wb.weights(pruned=True):
                    mask_only = perplexities(wb.lm.model, wb.lm.tokenizer, evals)
                for method, choose in methods:
                    import core.pruning.reconstruct as R

                    refine, R.REFINE = R.REFINE, (0 if method.endswith(ONE_PASS) else R.REFINE)
                    t0, c0 = time.perf_counter(), time.process_time()
                    try:
                        rec = wb.reconstruct(choose=choose, true_sequential=method.endswith(TRUE_SEQUENTIAL))
                    finally:
                        R.REFINE = refine
                    rec_s, rec_cpu = time.perf_counter() - t0, time.process_time() - c0
                    with wb.weights(pruned=True):
                        rebuilt = perplexities(wb.lm.model, wb.lm.tokenizer, evals)
                        agreement = peer_agreement(wb.lm.model, work, method, label, allocation, args.seed)
                    row = {"method": method, "config": label, "allocation": allocation, "seed": args.seed,
                           "granularity": g, "mask_only": mask_only, "reconstructed": rebuilt, "score_s": score_s,
                           "reconstruct_s": rec_s, "cpu_s": score_cpu + rec_cpu, "chosen_by": rec.chosen_by,
                           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                           "peer_agreement": agreement}
                    with (work / "rows.jsonl").open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
        wb.session.close()


#: the peer's method each workbench method reproduces
PEER_OF = {"workbench wanda": "wanda", "workbench wanda-seq": "wanda", "workbench sparsegpt": "sparsegpt",
           "workbench sparsegpt-1pass": "sparsegpt"}


def peer_dir(work: Path, method: str, label: str, seed: int) -> Path:
    return work / "peer" / f"{method}-{label.replace(':', 'of').replace(' %', '')}-{seed}"


def peer_agreement(model, work: Path, method: str, label: str, allocation: str, seed: int) -> dict | None:
    """Where a workbench method reproduces one of the peer's: the share of the peer's removed weights that the
    workbench removed too, over all layers and per block. Block 0 sees the same inputs however calibration is
    chained, so a disagreement there is in the method itself; later blocks add what each side's earlier choices
    changed in their inputs."""
    from safetensors.torch import load_file

    peer = PEER_OF.get(method)
    path = peer_dir(work, peer, label, seed) / "model.safetensors" if peer and allocation == "uniform" else None
    if path is None or not path.exists():
        return None
    params = dict(model.named_parameters())
    same: dict[int, list[int]] = {}
    for name, theirs in load_file(str(path)).items():
        if name not in params:
            continue
        block = int(name.split(".layers.")[1].split(".")[0])
        gone = theirs == 0
        both = int((gone & (params[name].detach().cpu() == 0)).sum())
        tally = same.setdefault(block, [0, 0])
        tally[0] += both
        tally[1] += int(gone.sum())
    by_block = [same[b][0] / max(same[b][1], 1) for b in sorted(same)]
    return {"peer": f"llm-compressor {peer}", "all": sum(v[0] for v in same.values()) / max(sum(v[1] for v in same.values()), 1),
            "by_block": by_block}


def methods_of(scorer: str, wanted: list[str]) -> list[tuple[str, str]]:
    """The wanted rows one scorer's ranking gives: (method label, --choose)."""
    return [(f"workbench {name}", choose) for name, (s, choose) in COMBINED.items() if s == scorer and name in wanted]


def granularity_of(method: str, granularity: str) -> str:
    """Where a method's counts are kept at an unstructured sparsity: per layer for SparseGPT (its reference chooses
    across each block of columns of a layer) and `-layer` methods, per row otherwise (as Wanda's reference)."""
    per_layer = method.removeprefix("workbench ") in ("sparsegpt", "sparsegpt-1pass") or method.endswith(PER_LAYER)
    return "layer" if per_layer and granularity == "row" else granularity


def counts_as_peer(method: str, allocation: str, granularity: str) -> bool:
    """`wanda-seq` reproduces llm-compressor's Wanda, which removes int(s x n) weights of each row of n; the
    workbench's plans remove round(s x n). They differ where s x n is not whole (60 %: 345 against 346 of 576)."""
    return method == "workbench wanda-seq" and allocation == "uniform" and granularity == "row"


def peer_count_plan(layers, sparsity: float, granularity: str):
    """A uniform plan whose per-row counts are the peer's: each layer's share set to int(s x n) / n."""
    from core.pruning.plan import SparsityPlan

    return SparsityPlan(sparsity, [(p.name, int(sparsity * p.shape[1]) / p.shape[1]) for p in layers], granularity)


def wanted_row(method: str, allocation: str, granularity: str) -> bool:
    """SparseGPT's pass alone is there to compare with the peer's, which allocates uniformly; a per-layer variant
    is its own only with relevance allocation (uniform per layer, SparseGPT's choice is the sparsegpt row) and
    without an N:M pattern (which fixes the counts per group)."""
    return not ((method.endswith(ONE_PASS) and allocation != "uniform")
                or (method.endswith(PER_LAYER) and (":" in granularity or allocation == "uniform")))


def cells(text: str) -> list[tuple[str, float, str, str]]:
    """Each config with the allocations that apply to it (an N:M pattern fixes every layer's share)."""
    return [(label, sparsity, g, allocation) for label, sparsity, g in configs(text)
            for allocation in (["uniform"] if ":" in g else ["uniform", "relevance"])]


# --------------------------------------------------------------------------- the orchestration
def peer_python(args) -> str:
    if args.peer_python:
        return args.peer_python
    venv = PEER / ".venv"
    if not (venv / "bin" / "python").exists():
        print("making the peer's environment (bench/peer/.venv, llmcompressor) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(PEER / "requirements.txt")], check=True)
    return str(venv / "bin" / "python")


def prepare(args, work: Path) -> None:
    """The dense model as a folder the peer loads, and each seed's calibration windows as token ids."""
    import tempfile

    from core.engine import Workbench
    from core.session.store import Session
    from core.settings import ModelSpec

    if (work / "dense" / "config.json").exists() and all((work / f"calibration-{s}.json").exists() for s in args.seed_list):
        return
    with tempfile.TemporaryDirectory() as tmp:
        wb = Workbench(Session.create(Path(tmp), "prepare"))
        wb.load(ModelSpec(args.model, "cpu", "float32"))
        wb.lm.model.save_pretrained(work / "dense")
        wb.lm.tokenizer.save_pretrained(work / "dense")
        ps = wb.prompt_set("builtin:fortunes")
        for s in args.seed_list:
            (work / f"calibration-{s}.json").write_text(json.dumps(windows_for(wb.lm, ps, args.samples, s)))
        wb.session.close()


def done(work: Path) -> list[dict]:
    """The rows measured so far; a row measured again replaces the earlier one."""
    path = work / "rows.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return list({(r["method"], r["config"], r["allocation"], r["seed"]): r for r in rows}.values())


def run_peer(args, work: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    measured = {(r["method"], r["config"], r["seed"]) for r in done(work)}
    tokenizer = AutoTokenizer.from_pretrained(work / "dense")
    evals = None
    for seed in args.seed_list:
        for method in args.peer.split(","):
            for label, sparsity, granularity in configs(args.configs):
                if not method or (f"llm-compressor {method}", label, seed) in measured:
                    continue
                out = peer_dir(work, method, label, seed)
                if not (out / "run.json").exists():
                    print(f"llm-compressor {method} {label} seed {seed} ...", file=sys.stderr, flush=True)
                    subprocess.run([peer_python(args), str(PEER / "prune.py"), "--model", str(work / "dense"),
                                    "--calibration", str(work / f"calibration-{seed}.json"), "--method", method,
                                    "--sparsity", str(sparsity), "--structure", granularity if ":" in granularity else "0:0",
                                    "--out", str(out)], check=True)
                run = json.loads((out / "run.json").read_text())
                model = AutoModelForCausalLM.from_pretrained(work / "dense", dtype=torch.float32)
                missing = set(load_file(str(out / "model.safetensors"))) - set(model.state_dict())
                if missing:
                    raise SystemExit(f"the peer's weights do not fit the model: {sorted(missing)[:3]}")
                model.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
                if evals is None:
                    evals = peer_evals(args, work)
                ppl = perplexities(model.eval(), tokenizer, evals)
                row = {"method": f"llm-compressor {method}", "config": label, "allocation": "uniform", "seed": seed,
                       "mask_only": None, "reconstructed": ppl, "score_s": 0.0, "reconstruct_s": run["wall_s"],
                       "peak_rss_bytes": run["peak_rss_bytes"], "zeros": run["zeros"], "cpu_s": run.get("cpu_s")}
                with (work / "rows.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")


def peer_evals(args, work: Path) -> dict:
    """The same held-out windows the workbench's rows use (saved once, so both sides read the same ids)."""
    path = work / "eval-windows.json"
    if not path.exists():
        import tempfile

        from core.engine import Workbench
        from core.session.store import Session
        from core.settings import ModelSpec

        with tempfile.TemporaryDirectory() as tmp:
            wb = Workbench(Session.create(Path(tmp), "evals"))
            wb.load(ModelSpec(args.model, "cpu", "float32"))
            path.write_text(json.dumps(held_out(wb)))
            wb.session.close()
    return json.loads(path.read_text())


def dense_row(args, work: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if any(r["method"] == "dense" for r in done(work)):
        return
    model = AutoModelForCausalLM.from_pretrained(work / "dense", dtype=torch.float32)
    ppl = perplexities(model.eval(), AutoTokenizer.from_pretrained(work / "dense"), peer_evals(args, work))
    with (work / "rows.jsonl").open("a") as f:
        f.write(json.dumps({"method": "dense", "config": "", "allocation": "", "seed": 0, "mask_only": None,
                            "reconstructed": ppl, "score_s": 0.0, "reconstruct_s": 0.0, "peak_rss_bytes": 0}) + "\n")


def report(work: Path) -> str:
    from statistics import mean, pstdev

    rows = done(work)
    dense = next((r["reconstructed"] for r in rows if r["method"] == "dense"), None)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] != "dense":
            groups.setdefault((r["config"], r["method"], r["allocation"]), []).append(r)

    def cell(values: list[float]) -> str:
        return f"{mean(values):.1f}" + (f" ± {pstdev(values):.1f}" if len(values) > 1 else "")

    lines = ["| config | method | allocation | fortunes, mask only | fortunes | general, mask only | general | "
             "time (score + prune) | CPU time | peak memory | seeds |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if dense:
        lines.append(f"| dense | | | | {dense['fortunes']:.1f} | | {dense['general']:.1f} | | | | |")
    for (config, method, allocation), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "llm-compressor sparsegpt", kv[0][1], kv[0][2])):
        def ppl(kind, text):
            vals = [r[kind][text] for r in rs if r[kind] is not None]
            return cell(vals) if vals else ""
        secs = mean(r["score_s"] + r["reconstruct_s"] for r in rs)
        cpus = [r["cpu_s"] for r in rs if r.get("cpu_s") is not None]
        cpu = f"{mean(cpus):.0f} s" if cpus else "-"
        lines.append(f"| {config} | {method} | {allocation} | {ppl('mask_only', 'fortunes')} | {ppl('reconstructed', 'fortunes')} | "
                     f"{ppl('mask_only', 'general')} | {ppl('reconstructed', 'general')} | {secs:.0f} s | {cpu} | "
                     f"{max(r['peak_rss_bytes'] for r in rs) / 2**30:.2f} GiB | {len(rs)} |")
    agreeing = [r for r in rows if r.get("peer_agreement")]
    if agreeing:
        lines += ["", "Where a workbench method reproduces one of the peer's: the share of the peer's removed weights "
                  "that the workbench removed too. Block 0 sees the same inputs on both sides, so a difference there "
                  "is in the method; later blocks add what each side's earlier choices did to their inputs.", "",
                  "| config | method | peer | seed | all blocks | block 0 | block 1 | last block |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in sorted(agreeing, key=lambda r: (r["config"], r["method"], r["seed"])):
            a = r["peer_agreement"]
            lines.append(f"| {r['config']} | {r['method']} | {a['peer']} | {r['seed']} | {a['all']:.2%} | {a['by_block'][0]:.2%} | "
                         f"{a['by_block'][1]:.2%} | {a['by_block'][-1]:.2%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--configs", default="0.5,2:4", help="sparsities and N:M patterns, comma-separated")
    ap.add_argument("--scorers", default="wanda,wanda-seq,sparsegpt,lrp,lrp+sgpt", help="workbench methods (lrp+sgpt: "
                    "LRP's allocation, SparseGPT's choice; wanda-seq: Wanda calibrated on the pruned blocks' outputs)")
    ap.add_argument("--peer", default="sparsegpt,wanda", help="llm-compressor methods ('' for none)")
    ap.add_argument("--samples", type=int, default=64, help="calibration windows of 128 tokens")
    ap.add_argument("--seeds", default="0", help="calibration draws, comma-separated")
    ap.add_argument("--batch-size", type=int, default=8, help="the workbench's calibration windows per forward pass "
                    "(the same windows batched otherwise: shows how much float rounding moves a result)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "results" / "compression-work"))
    ap.add_argument("--peer-python", default=None, help="a Python with llmcompressor (default: bench/peer/.venv)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where compression.md and compression.json go")
    ap.add_argument("--report-only", action="store_true", help="publish the rows measured so far (no model work)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    if not args.report_only:
        prepare(args, work)
        dense_row(args, work)
    measured = {(r["method"], r["config"], r["allocation"], r["seed"]) for r in done(work)}
    wanted = [m for m in args.scorers.split(",") if m]
    unknown = set(wanted) - set(COMBINED)
    if unknown:
        raise SystemExit(f"unknown workbench method {sorted(unknown)}; choose from {', '.join(COMBINED)}")
    for seed in args.seed_list if not args.report_only else ():
        for scorer in dict.fromkeys(COMBINED[m][0] for m in wanted):
            rows = [(m, label, allocation, seed) for m, _ in methods_of(scorer, wanted)
                    for label, _, g, allocation in cells(args.configs) if wanted_row(m, allocation, g)]
            if all(r in measured for r in rows):
                continue
            subprocess.run([sys.executable, __file__, "--worker", scorer, "--seed", str(seed), "--model", args.model,
                            "--configs", args.configs, "--scorers", args.scorers, "--samples", str(args.samples), "--work", str(work),
                            "--batch-size", str(args.batch_size)], check=True)
    if args.peer and not args.report_only:
        run_peer(args, work)
    command = " ".join(a for a in sys.argv[1:] if a != "--report-only")
    head = (f"## Compression against llm-compressor (`uv run python bench/compression.py {command}`)\n\n"
            f"Model `{args.model}`; {platform.machine()}, {os.cpu_count()} CPU cores; {date.today().isoformat()}. "
            f"Calibration {args.samples} x 128 tokens of builtin:fortunes (seeds {args.seeds}); perplexity on "
            f"{EVAL_WINDOWS} held-out windows each of builtin:fortunes and builtin:general (their evaluation splits). "
            "Time: scoring plus reconstruction for the workbench, `oneshot` for llm-compressor, on a shared machine "
            "(the runs overlapped). Peak memory: each process's resident peak.\n")
    md = head + "\n" + report(work)
    args.out.mkdir(parents=True, exist_ok=True)
    publish(md, args.out, "compression", "compression")
    (args.out / "compression.json").write_text(json.dumps(done(work), indent=1))
    print(md)


if __name__ == "__main__":
    main()
