"""Recipes: a preset expanded into a complete, checked ScoreConfig, and the same as a TOML file.

`build` takes, lowest first: the settings' defaults, the preset (core/presets.py), a recipe's values,
the options given on the command line; the result has every field set and its ranges, choices and
dependent options checked at construction. `resolve` fills in the defaults that depend on the prompt
sets. A recipe file (`score --show-config` writes one, `score --config FILE` reads it) keeps a run so
it can be repeated, on a bigger machine too.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Callable

from core.catalog import check
from core.errors import WorkbenchError
from core.presets import preset
from core.settings import ModelSpec, ScoreConfig


def resolve(cfg: ScoreConfig, kind_of: Callable[[str], str]) -> ScoreConfig:
    """`cfg` with the defaults that depend on the prompt sets filled in; `kind_of(spec)` is a set's kind
    (text, prompts, task). The engine's scoring and `--show-config` both resolve through here."""
    from core.attribution.registry import scorer as scorer_info

    if not scorer_info(cfg.scorer).reducible:  # the set-dependent defaults are those of --reduce's scorers
        return cfg.resolved("text", None, reducible=False)
    return cfg.resolved(kind_of(cfg.reference), kind_of(cfg.contrastive) if cfg.contrastive else None)


def check_dependencies(cfg: ScoreConfig) -> None:
    """Options that only mean something together with others, refused in one line at construction."""
    if cfg.pair not in (None, "none") and not cfg.contrastive:
        raise WorkbenchError("--pair clean needs --contrastive (a prompt set whose prompts it continues the wanted "
                             "way); drop --pair or give --contrastive")
    if cfg.explain not in (None, "all") and cfg.continuation == 0:
        raise WorkbenchError(f"--explain {cfg.explain} explains the model's continuation, and --continuation 0 "
                             "asks for none; give --continuation N or drop --explain")


# ---- recipes (TOML) -----------------------------------------------------------------------
RECIPE_SECTIONS = {"model": ModelSpec, "score": ScoreConfig}


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file as {"preset": name | None, "model": {...}, "score": {...}}, its keys checked."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"cannot read --config {path} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"--config {path} is not valid TOML ({str(exc).splitlines()[0]})") from None
    out: dict[str, Any] = {"preset": data.pop("preset", None)}
    if out["preset"] is not None:
        preset(str(out["preset"]))
    for section, cls in RECIPE_SECTIONS.items():
        values = data.pop(section, {})
        if not isinstance(values, dict):
            raise WorkbenchError(f"--config {path}: [{section}] must be a table of settings")
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise WorkbenchError(f"--config {path}: [{section}] has no setting {key!r}; known: {', '.join(known)}")
            if value == "":  # TOML has no null: an empty string stands for "none"
                values[key] = None
        if values.pop("trust_remote_code", False):
            raise WorkbenchError(f"--config {path}: trust_remote_code is never read from a file; pass "
                                 "--trust-remote-code on the command line if you trust the model")
        out[section] = values
    if data:
        raise WorkbenchError(f"--config {path}: unknown section or key {next(iter(data))!r}; "
                             f"a recipe holds preset, [model] and [score]")
    return out


def build(preset_name: str | None, recipe: dict[str, Any] | None, given: dict[str, Any]) -> ScoreConfig:
    """The ScoreConfig of a preset, then a recipe's [score] values, then the options given, checked."""
    values: dict[str, Any] = {}
    name = preset_name or (recipe or {}).get("preset")
    if name:
        values.update(preset(name).score)
    values.update((recipe or {}).get("score", {}))
    values.update(given)
    try:
        cfg = ScoreConfig(**values)
    except TypeError as exc:
        raise WorkbenchError(f"bad scoring settings ({exc})") from None
    check(cfg)
    check_dependencies(cfg)
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if v is None:
        return '""'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def recipe_text(cfg: ScoreConfig, model: ModelSpec | None = None, preset_name: str | None = None) -> str:
    """A recipe file that `read_recipe` reads back into the same configuration."""
    lines = ["# a workbench scoring recipe: `workbench score --session NAME --config THIS_FILE`",
             '# "" means none; options given on the command line override these', ""]
    if preset_name:
        lines += [f'preset = "{preset_name}"', ""]
    model = model or ModelSpec()
    lines.append("[model]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in asdict(replace(model, trust_remote_code=False)).items()
              if k != "trust_remote_code"]  # remote code is a command-line decision, never a file's
    lines += ["", "[score]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in asdict(cfg).items()]
    return "\n".join(lines) + "\n"
