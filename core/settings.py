"""Every setting a user can give, declared once: its default, its help text, its choices.

The CLI's options (workbench/cli.py), the TUI's inputs (screens/) and the engine all
read these declarations; nothing else states a default. Each group is a dataclass the
engine takes as one argument and the session stores (core/session/manifest.py).

`choices` names a section of `core.catalog.catalog()` (the registries of scorers,
targets, granularities ...); this module imports nothing heavy, so `workbench --help`
and the TUI's first paint read it without torch.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Optional


#: the help panels a setting may belong to, in the order `--help` and the TUI's options dialog show them
PANELS = ("Model and data", "Scoring", "Advanced")


def setting(default: Any, help: str, *, choices: str | None = None, cli: str | None = None,
            at_least: float | None = None, at_most: float | None = None, above: float | None = None,
            below: float | None = None, panel: str | None = None) -> Any:
    """A dataclass field with its help text; `choices` is a catalog section, `cli` the flag if not --<name>;
    `at_least`/`at_most` (inclusive) and `above`/`below` (exclusive) bound a number (`core.catalog.check`);
    `panel` groups it in `--help` (and "Advanced" puts it in the TUI's scoring options dialog).

    This declaration is all an option needs: the CLI's flag (workbench/cli_support.py `settings_options`),
    the TUI's field, the session's record and the range check are all derived from it."""
    assert panel is None or panel in PANELS, panel
    bounds = {k: v for k, v in (("at_least", at_least), ("at_most", at_most), ("above", above), ("below", below))
              if v is not None}
    return field(default=default, metadata={"help": help, "choices": choices, "cli": cli, "bounds": bounds,
                                            "panel": panel})


def panel_of(cls: type, name: str) -> str | None:
    return _field(cls, name).metadata.get("panel")


def in_panel(cls: type, panel: str) -> list[str]:
    """The settings of `cls` shown in help panel `panel`, in declaration order."""
    return [f.name for f in fields(cls) if f.metadata.get("panel") == panel]


def value_type(cls: type, name: str) -> tuple[type, bool, bool]:
    """(the type of one value, whether None is allowed, whether it is a comma list) of setting `name`, read from
    its annotation (`int`, `float | None`, `tuple[str, ...] | None` ...)."""
    text = str(_field(cls, name).type).replace(" ", "")
    optional = text.endswith("|None") or text.startswith("Optional[")
    text = text.removesuffix("|None").removeprefix("Optional[").removesuffix("]" if text.startswith("Optional[") else "")
    many = text.startswith("tuple[")
    base = text.removeprefix("tuple[").split(",")[0] if many else text
    return {"int": int, "float": float, "bool": bool, "str": str}[base], optional, many


def out_of_range(cls: type, name: str, value: Any) -> str | None:
    """Why `value` is outside setting `name`'s bounds, as the end of a sentence (None: inside, or unbounded)."""
    bounds = _field(cls, name).metadata.get("bounds") or {}
    if value is None or not bounds or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value:  # NaN
        return "is not a number"
    ok = {"at_least": value >= bounds.get("at_least", 0), "at_most": value <= bounds.get("at_most", 0),
          "above": value > bounds.get("above", 0), "below": value < bounds.get("below", 0)}
    if all(ok[k] for k in bounds):
        return None
    lo = [(k, b) for k, b in bounds.items() if k in ("at_least", "above")]
    hi = [(k, b) for k, b in bounds.items() if k in ("at_most", "below")]
    if lo and hi:
        return (f"is outside {'[' if lo[0][0] == 'at_least' else '('}{lo[0][1]:g}, "
                f"{hi[0][1]:g}{']' if hi[0][0] == 'at_most' else ')'}")
    (kind, b), = lo or hi
    return "must be " + {"at_least": "at least", "at_most": "at most", "above": "above", "below": "below"}[kind] + f" {b:g}"


def _field(cls: type, name: str):
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def default_of(cls: type, name: str) -> Any:
    f = _field(cls, name)
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def help_of(cls: type, name: str) -> str:
    return _field(cls, name).metadata["help"]


def choices_of(cls: type, name: str) -> str | None:
    return _field(cls, name).metadata.get("choices")


def cli_flag(cls: type, name: str) -> str:
    return _field(cls, name).metadata.get("cli") or "--" + name.replace("_", "-")


def declared(cls: type) -> list[str]:
    """Names of the settings a group declares (fields with help text)."""
    return [f.name for f in fields(cls) if "help" in f.metadata]


@dataclass
class ModelSpec:
    """Which model to load and where."""

    source: str = setting("default", "`default` (the embedded SmolLM2-135M-Instruct), a Hugging Face id, a save_pretrained folder or a .gguf file; a session keeps its model unless another is given.", cli="--model", panel="Model and data")
    device: str = setting("auto", "auto (CUDA when present), cpu or cuda[:N].", panel="Model and data")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32 or bfloat16; float16 is refused (LRP overflows in it).", panel="Model and data")
    trust_remote_code: bool = setting(False, "Allow a hub model's own Python code to run.", panel="Model and data")
    device_map: Optional[str] = setting(None, "Spread the model over devices with accelerate: auto, balanced, balanced_low_0, sequential, a JSON object {module: 0 | \"cpu\" | \"disk\"} or a .json file (overrides --device); a session keeps its map for the same model until `none`.", panel="Model and data")


@dataclass
class ScoreConfig:
    """What `score` reads and how it turns the model's behaviour on it into one score per weight."""

    reference: str = setting("builtin:fortunes", "What the model must keep doing (default: 2 MB of fortune-file English, enough windows for the method): builtin:NAME, a .txt/.jsonl file, or hf:NAME[,config=..][,split=..][,column=..].", panel="Model and data")
    contrastive: str | None = setting(None, "A behaviour to remove (same spec forms); scores become R(reference) - R(contrastive).", panel="Model and data")
    scorer: str = setting("lrp", "How weights are scored.", choices="scorers", panel="Scoring")
    samples: int = setting(32, "Scoring samples (windows or prompts) per prompt set.", at_least=1, panel="Scoring")
    seq_len: int = setting(128, "Tokens per sample (longer samples are cut).", at_least=2, panel="Scoring")
    target: str = setting("logprob", "What LRP and gradient explain.", choices="targets", panel="Scoring")
    rules: str = setting("attnlrp", "LRP rules for the backward pass.", choices="lrp rules", panel="Scoring")
    reduce: str | None = setting(None, "How per-token relevance is combined [default: token-rms; abs with --contrastive or a task set such as builtin:ioi; signed-contrast for LRP and gradient with a contrastive prompt set].", choices="reductions", panel="Advanced")
    damping: float = setting(4.0, "With --reduce token-rms: each token counts with weight g^2 + damping * mean g^2 (g: the output's relevance gradient); 0 is pure relevance, large values approach |w| ||x||.", at_least=0, panel="Advanced")
    normalize: str = setting("rank", "How reference and contrastive scores are put on one scale.", choices="normalizations", panel="Advanced")
    explain: str | None = setting(None, "Prompt sets with --continuation: which tokens LRP, gradient and CAP explain: all, continuation (what the model wrote) or unwanted (its repeats or offensive words) [default: unwanted for LRP and gradient with a contrastive prompt set, all where no sample shows any; else all].", choices="explained", panel="Advanced")
    continuation: int = setting(32, "Prompt sets (builtin:repetition, builtin:toxicity, JSONL 'prompt' rows): score the prompt plus this many tokens of the model's own continuation.", at_least=0, panel="Advanced")
    continue_by: str | None = setting(None, "Which continuation of a prompt is scored [default: most-toxic for builtin:toxicity, else greedy].", choices="continuations", panel="Advanced")
    pair: str | None = setting(None, "With --contrastive on a prompt set: also score its prompts continued the wanted way and keep what that needs, so the contrast removes only what the unwanted continuation needs beyond the prompt [default: clean for LRP and gradient with a contrastive prompt set, else none].", choices="pairs", panel="Advanced")
    draws: int = setting(16, "With --continue-by most-toxic: sampled continuations per prompt to choose the most offensive from.", at_least=1, panel="Advanced")
    seed: int = setting(0, "Chooses the scoring samples (and the random scorer's scores).", panel="Advanced")
    recompute: str = setting("auto", "Recompute each block's activations in the backward pass instead of keeping them (LRP, gradient): less memory for long windows, one more forward pass of time; auto: on from --seq-len 1024.", choices="recompute", panel="Advanced")
    batch_size: int = setting(8, "Samples per forward/backward pass (fewer for long windows, see --batch-tokens).", at_least=1, panel="Advanced")
    batch_tokens: int = setting(1024, "At most this many tokens per forward/backward pass: long windows get smaller batches, so memory stays near that of the default 8 x 128.", at_least=1, panel="Advanced")

    def continuation_for(self, spec: str | None) -> str:
        """How prompts of set `spec` are continued for scoring (--continue-by, or the set's default)."""
        from core.evaluation.registry import SET_BEHAVIOUR, behaviour_of

        return self.continue_by or (behaviour_of(spec).continue_by if spec in SET_BEHAVIOUR else "greedy")

    def for_clean_pair(self) -> "ScoreConfig":
        """This config as it scores the clean side of --pair clean: the contrastive prompts, continued the wanted way."""
        from core.attribution.registry import CLEAN_COUNTERPART  # registry imports nothing heavy

        return replace(self, continue_by=CLEAN_COUNTERPART[self.continuation_for(self.contrastive)])

    def combined(self, contrastive_kind: str | None, reducible: bool = True) -> bool:
        """Does a contrastive score get the correction defaults (signed-contrast, unwanted tokens, clean pair)?

        They were chosen on validation data with LRP (bench/correction_ablation.py --ablation combined
        --measure-on validation, by a rule fixed before the runs) and apply where all three mean
        something: a scorer --reduce applies to, a contrastive prompt set, a continuation to explain.
        """
        return reducible and bool(self.contrastive) and contrastive_kind == "prompts" and self.continuation > 0

    def resolved(self, kind: str, contrastive_kind: str | None = None, reducible: bool = True) -> "ScoreConfig":
        """This config with the defaults that depend on the sets filled in: a reference of `kind` (text,
        prompts, task), a contrastive set of `contrastive_kind`, a scorer that --reduce applies to or not."""
        combined = self.combined(contrastive_kind, reducible)
        # per-token magnitudes for compression (chosen on validation text, bench/quality.py); |mean relevance|,
        # the paper's Eq. 1, for a contrast of two sets and for a task's single explained quantity
        reduce = "signed-contrast" if combined else "abs" if self.contrastive or kind == "task" else "token-rms"
        return replace(self, reduce=self.reduce or reduce, explain=self.explain or ("unwanted" if combined else "all"),
                       pair=self.pair or ("clean" if combined else "none"))


@dataclass
class PruneConfig:
    """How `prune` turns scores into a sparsity plan."""

    sparsity: float = setting(0.5, "Share of prunable weights to remove, in [0, 1).", at_least=0, below=1)
    granularity: str = setting("row", "What competes for the kept weights.", choices="granularities")
    allocate: str = setting("auto", "How the sparsity is spread over decoder blocks (same overall sparsity).", choices="allocations")
    spread: float | None = setting(None, "How far (0-0.5) a block's sparsity may move from --sparsity [default: 0.15 x --sparsity for relevance, 0.08 for owl].", at_least=0, at_most=0.5)
    count: int | None = setting(None, "With --granularity neuron, head or global: remove exactly this many (neurons, heads, weights), the lowest-ranked across the model; after a contrastive score, the ones the unwanted behaviour needs most. Replaces --sparsity.", at_least=0)


@dataclass
class CircuitConfig:
    """What `circuit` measures: how few components of the session's ranking keep its task working."""

    granularity: str = setting("global", "What counts as a component: global (weights ranked across the model), neuron (MLP) or head (attention).", choices="counted granularities")
    threshold: float = setting(0.8, "The circuit keeps at least this share of the dense model's task logit difference.", above=0, at_most=1)
    ablation: str = setting("zero", "What a removed head or neuron outputs while the curve is measured: zero (pruning), mean (its mean over the task's scoring items) or patch (its output on each item's corrupted counterpart).", choices="ablations")
    compare: tuple[str, ...] | None = setting(None, "Comma list of scorers to compare on the same task (e.g. lrp,gradient,cap,wanda,random) instead of the session's own.", choices="scorers")
    seeds: int = setting(1, "With --compare: scoring seeds per scorer (different task items), for mean and spread.", at_least=1)


@dataclass
class CorrectConfig:
    """What `correct` sweeps: more and more of what the contrastive set needs and the reference does not, pruned."""

    granularity: str | None = setting(None, "What is pruned: neuron (MLP neurons), head, or global (single weights ranked across the model) [default: global].", choices="counted granularities")
    steps: tuple[float, ...] | None = setting(None, "Comma list of amounts to try: counts for neuron and head, shares of weights (below 1) for global [default: 10,25,50,100,200,400,800 neurons; 1,2,4,8,16,32 heads; 1e-5 ... 3e-3 of weights].")
    behaviour: str | None = setting(None, "What to reduce: toxicity or uniqueness (raised: repetition) [default: toxicity for a toxicity set, else uniqueness].", choices="behaviours")
    bound: float = setting(0.02, "The largest perplexity cost accepted on held-out reference text (0.02: 2 %).", at_least=0)
    prompts: int = setting(48, "Held-out contrastive prompts to continue at each step.", at_least=1)
    new_tokens: int = setting(50, "Tokens generated per prompt (the paper's repetition metric uses 50).", at_least=1)
    seeds: int = setting(3, "Toxicity: sampled continuations per prompt (seeds), besides the greedy one.", at_least=0)
    eval_windows: int = setting(32, "Held-out reference windows for perplexity.", at_least=1)
    measure_on: str = setting("held-out", "Which prompts and text the sweep is measured on: held-out (the sets' evaluation splits) or validation (the scoring prompts and reference windows this score did not draw), to choose settings without looking at the held-out ones.", choices="correction splits")
    prompts_from: str | None = setting(None, "Measure the behaviour on this prompt set's prompts instead (a built-in's evaluation split; all of a file) [default: the contrastive set].")


@dataclass
class EvalConfig:
    """What `eval` measures on which data."""

    eval_data: str | None = setting(None, "Prompt set to evaluate on (its evaluation split) [default: the session's reference set].")
    metrics: tuple[str, ...] | None = setting(None, "Comma list of metrics [default: perplexity, uniqueness, toxicity, and IOI on IOI sets].", choices="metrics")
    samples: int | None = setting(None, "Evaluation windows for perplexity [default: all of the evaluation split].", at_least=1)
    seq_len: int | None = setting(None, "Tokens per evaluation window [default: the scoring --seq-len].", at_least=2)
    gen_prompts: int = setting(8, "Prompts to generate from for uniqueness and toxicity.", at_least=1)
    max_new_tokens: int = setting(50, "Tokens generated per prompt, greedy (the paper's repetition metric uses 50).", at_least=1)
    tasks: tuple[str, ...] | None = setting(None, "Comma list of lm-eval tasks for zero-shot accuracy, dense and pruned: task names (e.g. arc_easy,hellaswag; their data downloads once on a networked machine, then runs from its cache) or task YAML files (local data works offline).")
    task_limit: int | None = setting(None, "With --tasks: at most this many items per task [default: all].", at_least=1)


@dataclass
class LiveEvalConfig:
    """The TUI re-measures after every sparsity change; these sizes keep it quick."""

    samples: int = setting(8, "Evaluation windows for perplexity after each change.", at_least=1)
    gen_prompts: int = setting(4, "Prompts generated from after each change (uniqueness, toxicity).", at_least=1)
    max_new_tokens: int = setting(32, "Tokens generated per prompt after each change.", at_least=1)


@dataclass
class GenerationConfig:
    """How `generate` (and the TUI's Generate pane) continue a prompt."""

    prompt: str = setting("The most important thing to remember about cooking rice is", "Text to continue.")
    max_new_tokens: int = setting(40, "Tokens to generate.", at_least=1)
    greedy: bool = setting(True, "Greedy decoding (off: sample with --temperature and --top-p).", cli="--greedy/--sample")
    temperature: float = setting(0.8, "Sampling temperature.", above=0)
    top_p: float = setting(0.95, "Nucleus sampling mass.", above=0, at_most=1)
    seed: int = setting(0, "Sampling seed.")


@dataclass
class RunConfig:
    """The one-shot job (`workbench run`): score, prune, evaluate, export."""

    sparsity: float = setting(0.3, "Target sparsity of the job (lower than `prune`'s, so the demo's generations stay readable).", at_least=0, below=1)
