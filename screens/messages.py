"""Typed messages between the screens and the app glue (workbench/app.py).

Requests go up from panes to the app, which runs the engine in workers; results come
back as messages the app turns into screen updates. All fields are plain data, so
screens never hold tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from core.pruning.levels import PlanLevels
from core.results import Evaluation, Export, PruneSummary, ScoreResult


@dataclass(eq=False)
class Data(Message):
    """Textual's Message initialises dataclass messages through __post_init__."""


# ---- requests (pane -> app) -------------------------------------------------------------
@dataclass(eq=False)
class LoadRequested(Data):
    source: str
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclass(eq=False)
class PreviewRequested(Data):
    spec: str


@dataclass(eq=False)
class ScoreRequested(Data):
    pass


@dataclass(eq=False)
class PresetChosen(Data):
    """A preset picked in the Attribution pane: the app sets the Prompts pane's sets from it."""

    name: str
    reference: str
    contrastive: str | None


@dataclass(eq=False)
class PlanRequested(Data):
    levels: PlanLevels
    source: str = ""  # the control that changed: moves of one control in quick succession are one undo step


@dataclass(eq=False)
class GenerateRequested(Data):
    pass


@dataclass(eq=False)
class CircuitRequested(Data):
    config: object  # core.settings.CircuitConfig


@dataclass(eq=False)
class CorrectRequested(Data):
    config: object  # core.settings.CorrectConfig


@dataclass(eq=False)
class EvaluateRequested(Data):
    pass


@dataclass(eq=False)
class SaveRequested(Data):
    pass


@dataclass(eq=False)
class ExportRequested(Data):
    pass


# ---- results (worker -> app) ------------------------------------------------------------
@dataclass(eq=False)
class SessionOpened(Data):
    name: str
    path: str
    model: dict  # the session's model spec (source, device, dtype, trust_remote_code); empty if none yet
    score_config: dict  # the last scoring settings; empty if none yet
    ui: dict  # the TUI's own settings saved with the session


@dataclass(eq=False)
class ModelLoaded(Data):
    info: dict
    index: list[dict]
    size: dict  # dense bytes and sparse estimate, as for Pruned
    spec: dict  # what was loaded (source, device, dtype, trust_remote_code)


@dataclass(eq=False)
class ModelReady(Data):
    """The load finished and the session's scores, plan and metrics are back."""


@dataclass(eq=False)
class JobFailed(Data):
    job: str
    error: str
    run: int = 0  # which start of the job (see JobStatus.run)


@dataclass(eq=False)
class JobCancelled(Data):
    """A job stopped because it was asked to (escape, a newer slider move): not a failure."""

    job: str
    text: str
    run: int = 0  # which start of the job (see JobStatus.run)


@dataclass(eq=False)
class JobStatus(Data):
    job: str  # "load", "score", "prune", "generate", "evaluate", "export", "save"
    text: str
    busy: bool
    run: int = 0
    """Which start of the job said it, counted per job (0: not counted). A restarted job's old worker may still
    be stopping: what it says after the new one started is about a run that is over."""


@dataclass(eq=False)
class PreviewReady(Data):
    spec: str
    summary: dict
    score_samples: list[str]
    eval_samples: list[str]


@dataclass(eq=False)
class ScoreProgress(Data):
    which: str
    done: int
    total: int
    tokens_per_s: float
    eta_s: float


@dataclass(eq=False)
class ScoresReady(Data):
    summary: ScoreResult  # per prompt set, as `score` reports it; empty when restored from the session
    scores: dict  # the engine's scores_summary(): settings and samples per set
    relevance: dict  # block -> {"all", "attn", "mlp"} mean |R| per weight


@dataclass(eq=False)
class Pruned(Data):
    summary: PruneSummary
    levels: PlanLevels
    size: dict
    undo: int
    redo: int
    apply_ms: float
    move_sliders: bool = True  # False for slider requests: the sliders already show them, maybe newer
    settle: bool = True  # regenerate and re-evaluate once no further change follows
    allocated: bool = False  # the block levels came from an allocation of the global level


@dataclass(eq=False)
class GenerationPiece(Data):
    run: int
    which: str  # "dense" or "pruned"
    text: str
    reset: bool = False
    done: bool = False


@dataclass(eq=False)
class MetricsReady(Data):
    result: Evaluation
    history: list[dict] = field(default_factory=list)


@dataclass(eq=False)
class Exported(Data):
    info: Export


@dataclass(eq=False)
class Saved(Data):
    session: str


@dataclass(eq=False)
class NoScores(Data):
    """The model is loaded and the session holds no scores yet."""


@dataclass(eq=False)
class CorrectionReady(Data):
    record: dict  # as `workbench correct --json` prints it
    restored: bool = False  # brought back with the session, not just swept


@dataclass(eq=False)
class CorrectionStepMeasured(Data):
    step: dict  # one row of the sweep, as `workbench correct --json` prints its steps
    done: int  # rows measured so far (the dense model is the first)
    total: int


@dataclass(eq=False)
class CircuitReady(Data):
    results: list  # CircuitResult (core/results.py), one per scorer and seed
    threshold: float
    restored: bool = False  # brought back with the session, not just found
