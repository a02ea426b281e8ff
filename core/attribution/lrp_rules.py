"""LRP rules for supported architectures, applied reversibly around a backward pass.

lxt 2.1 ships the rules (identity rule, uniform rule, stop-gradient) as building blocks
plus `monkey_patch`, which patches classes process-wide with no undo and breaks on
transformers >= 5.1 (it replaces the attention registry with a plain dict). We keep
lxt's rule functions and apply them ourselves inside `lrp_rules(model)`: every patched
attribute is restored on exit, so the `gradient` scorer, generation and evaluation
see the unpatched model. Forward values are identical either way; only backward changes.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator

import torch
from torch import nn

from core.attribution.registry import RULES
from core.errors import WorkbenchError

#: model_type -> family whose rules apply
LRP_FAMILIES = {
    "llama": "llama",  # also SmolLM/SmolLM2, TinyLlama
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
    "gpt2": "gpt2",
    "opt": "opt",
}


def _import_lxt() -> types.ModuleType:
    """Import lxt.efficient.patches on transformers 5.

    lxt's package init imports every model map eagerly; the BERT map needs a symbol
    removed in transformers 5.0 and the ViT map needs torchvision (not installed).
    Only when such an import fails do we register an inert stand-in for it.
    """
    stand_ins = {
        "lxt.efficient.models.bert": ("modeling_bert", ("attnLRP", "cp_LRP")),
        "lxt.efficient.models.vit_torch": ("vision_transformer", ("attnLRP", "cp_LRP")),
    }
    for name, (module_attr, maps) in stand_ins.items():
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any import failure means "use the stand-in"
            sys.modules.pop(name, None)
            stub = types.ModuleType(name)
            setattr(stub, module_attr, types.ModuleType(f"{name}.{module_attr}.unavailable"))
            for m in maps:
                setattr(stub, m, {})
            sys.modules[name] = stub
    return importlib.import_module("lxt.efficient.patches")


def family_of(model: nn.Module) -> str | None:
    return LRP_FAMILIES.get(getattr(model.config, "model_type", ""))


def supported_model_types() -> str:
    return ", ".join(sorted(set(LRP_FAMILIES)))


def _wrap_attention(registry, fn_wrap: Callable):
    """A registry of the same type as transformers' AttentionInterface, every entry wrapped."""
    wrapped = type(registry)()
    for key in list(registry.keys()):
        wrapped[key] = fn_wrap(registry[key])
    return wrapped


def _gated_mlp_module(family: str):
    mod = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    prefix = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma3": "Gemma3"}[family]
    return mod, getattr(mod, f"{prefix}MLP"), getattr(mod, f"{prefix}RMSNorm")


def _gpt2_mlp_forward(rules, self, hidden_states):
    hidden_states = self.c_fc(hidden_states)
    hidden_states = rules.identity_rule_implicit(self.act, hidden_states)
    return self.c_proj(hidden_states)


def _gemma3_norm(self, x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps).detach()


def _patch_plan(family: str, rule_set: str) -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) triples for one family and rule set (attnlrp or cplrp)."""
    patches = _import_lxt()
    rules = importlib.import_module("lxt.efficient.rules")
    cp = rule_set == "cplrp"
    wrap = patches.cp_wrap_attention_forward if cp else patches.wrap_attention_forward
    plan: list[tuple[object, str, object]] = [(nn.Dropout, "forward", patches.dropout_forward)]
    if family in ("llama", "qwen2", "qwen3", "gemma3"):
        mod, mlp, norm = _gated_mlp_module(family)
        mlp_fwd = patches.cp_gated_mlp_forward if cp else patches.gated_mlp_forward
        plan.append((mlp, "forward", mlp_fwd))
        if family == "gemma3":
            plan.append((norm, "_norm", _gemma3_norm))
        else:
            plan.append((norm, "forward", patches.rms_norm_forward))
    elif family == "gpt2":
        mod = importlib.import_module("transformers.models.gpt2.modeling_gpt2")
        plan.append((mod.GPT2MLP, "forward", partial(_gpt2_mlp_forward, rules)))
        plan.append((nn.LayerNorm, "forward", patches.layer_norm_forward))
    elif family == "opt":
        # lxt has no OPT map. OPT is LayerNorm + attention + ReLU MLP: ReLU already
        # satisfies the identity rule under Gradient x Input, so only the norms and
        # attention need rules.
        mod = importlib.import_module("transformers.models.opt.modeling_opt")
        plan.append((nn.LayerNorm, "forward", patches.layer_norm_forward))
    else:  # pragma: no cover - guarded by family_of
        raise WorkbenchError(f"no LRP rules for family {family!r}")
    plan.append((mod, "eager_attention_forward", wrap(mod.eager_attention_forward)))
    plan.append((mod, "ALL_ATTENTION_FUNCTIONS", _wrap_attention(mod.ALL_ATTENTION_FUNCTIONS, wrap)))
    return plan


def _bind(owner: object, value: object) -> object:
    # functools.partial is not a descriptor: make it behave like a method on classes.
    if isinstance(owner, type) and isinstance(value, partial):
        func = value

        def method(self, *args, **kwargs):
            return func(self, *args, **kwargs)

        return method
    return value


@contextmanager
def lrp_rules(model: nn.Module, rules: str = "attnlrp") -> Iterator[None]:
    """Apply LRP rules for `model`'s family for the duration of the block, then undo them."""
    family = family_of(model)
    if family is None:
        raise WorkbenchError(
            f"LRP has no rules for model type {model.config.model_type!r}; supported: "
            f"{supported_model_types()}. The wanda, magnitude, gradient and random scorers still work."
        )
    if rules not in RULES:
        raise WorkbenchError(f"unknown LRP rules {rules!r}; choose one of {', '.join(RULES)}")
    saved: list[tuple[object, str, object, bool]] = []
    try:
        for owner, attr, value in _patch_plan(family, rules):
            had = attr in vars(owner) if isinstance(owner, type) else hasattr(owner, attr)
            saved.append((owner, attr, getattr(owner, attr), had))
            setattr(owner, attr, _bind(owner, value))
            if isinstance(owner, type) and attr == "forward":
                # accelerate's hooks (--device-map) call the forward bound when they were attached,
                # past the class: give those modules the rule's forward too
                for m in model.modules():
                    if isinstance(m, owner) and "_old_forward" in vars(m):
                        saved.append((m, "_old_forward", m._old_forward, True))
                        m._old_forward = types.MethodType(getattr(owner, "forward"), m)
        yield
    finally:
        for owner, attr, old, had in reversed(saved):
            if had:
                setattr(owner, attr, old)
            else:
                delattr(owner, attr)
