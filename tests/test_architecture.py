"""Layering rules: the engine never imports Textual, imports run one way between core's groups,
only the session model touches manifest keys, and `--help` never imports torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

# core's groups, lowest first: a group may import only from groups before it (and errors, settings).
GROUPS = ["model", "data", "evaluation", "attribution", "pruning", "applications", "session"]
# the top: the engine facade and the services it is composed of, the catalog and the recipes that check
# configurations with it
TOP = ("core.engine", "core.engine_model", "core.engine_rankings", "core.engine_pruning", "core.engine_scoring",
       "core.engine_evaluation", "core.engine_applications", "core.engine_reconstruction", "core.catalog", "core.recipes")


def _imports(path: Path, every_level: bool = True) -> set[str]:
    """Absolute module names `path` imports (inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _core_modules() -> dict[str, Path]:
    """The engine's modules; the data builders beside the data they rebuild (core/data/builtin/make_*.py) are
    maintainers' scripts that drive a model, not part of the engine's layering."""
    return {_module(p): p for p in (ROOT / "core").rglob("*.py") if not p.name.startswith("make_")}


def test_core_never_imports_textual_screens_or_workbench():
    offenders = [str(p) for p in (ROOT / "core").rglob("*.py")
                 if {n.split(".")[0] for n in _imports(p)} & {"textual", "screens", "workbench"}]
    assert offenders == []


def _group(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in GROUPS else None


def test_imports_run_one_way_between_groups():
    modules = _core_modules()
    bad = []
    for name, path in modules.items():
        mine = _group(name)
        for target in _imports(path):
            if target not in modules:
                continue
            if target in ("core.errors", "core.settings"):
                if name == "core.settings" and target != "core.errors":
                    bad.append(f"{name} -> {target}")
                continue
            if name == "core.errors":
                bad.append(f"{name} -> {target}")
            theirs = _group(target)
            if target in TOP and name not in TOP:
                bad.append(f"{name} -> {target} (only the top imports the engine or the catalog)")
            elif mine and theirs and GROUPS.index(theirs) > GROUPS.index(mine):
                bad.append(f"{name} ({mine}) -> {target} ({theirs})")
            elif name == "core.catalog" and theirs and not (target.endswith(".registry") or target == "core.pruning.plan"):
                bad.append(f"{name} -> {target} (the catalog reads registries only)")
    assert bad == []


def test_no_import_cycles_in_core():
    modules = _core_modules()
    graph = {n: {t for t in _imports(p) if t in modules and t != n} for n, p in modules.items()}
    for n in graph:  # a package's own __init__ is not an edge to its submodules
        graph[n] = {t for t in graph[n] if not n.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for t in graph[n]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t] if t in stack else [n, t])
            elif t not in state:
                visit(t, stack + [t])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])
    assert cycles == []


def test_only_the_session_model_reads_manifest_keys():
    """Manifest data is typed: nobody outside core/session/manifest.py indexes it by string key."""
    pattern = re.compile(r"""(manifest|\bmf)\s*(\[\s*["']|\.get\(\s*["']|\.setdefault\()""")
    allowed = {ROOT / "core" / "session" / "manifest.py"}
    offenders = []
    for folder in ("core", "workbench", "screens", "bench"):
        for p in (ROOT / folder).rglob("*.py"):
            if p in allowed:
                continue
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []


def test_ui_code_asks_the_engine_never_the_manifest():
    offenders = [str(p.relative_to(ROOT)) for folder in ("workbench", "screens") for p in (ROOT / folder).rglob("*.py")
                 if ".manifest" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_every_setting_has_help_and_the_cli_uses_the_declared_defaults():
    from dataclasses import fields

    from typer.main import get_command

    import core.settings as S
    from workbench.cli import app

    groups = [S.ModelSpec, S.ScoreConfig, S.PruneConfig, S.EvalConfig, S.LiveEvalConfig, S.GenerationConfig, S.RunConfig,
              S.CircuitConfig]
    for g in groups:
        for f in fields(g):
            assert f.metadata.get("help"), f"{g.__name__}.{f.name} has no help text"
    cli = get_command(app)
    score = {p.name: p for p in cli.commands["score"].params}
    assert score["samples"].default == S.default_of(S.ScoreConfig, "samples")
    assert score["samples"].help == S.help_of(S.ScoreConfig, "samples")
    assert {p.name: p for p in cli.commands["eval"].params}["gen_prompts"].default == S.default_of(S.EvalConfig, "gen_prompts")


def test_help_does_not_import_torch():
    code = "import sys, workbench.cli as c\ntry:\n    c.app(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
