"""The workbench engine: one object the CLI and the TUI both drive.

It ties a session on disk to a loaded model. The way from a setting to the weights is
one line through it: settings (core/settings.py) -> `score` (the runner accumulates, the
scorer finishes, the ranking is stored compactly) -> `prune` (a plan becomes per-row
counts, the pruner moves the weights) -> `evaluate` / `stream` / `export`.

`Workbench` is composed of services, each in a module of its own and each given, when it is
made, the services it uses (nothing else is shared):

    model           ModelService            core/engine_model.py        session, model, layers, lock, prompt sets
    rankings        RankingStore            core/engine_rankings.py     the last score's settings and its ranking
    pruning         PruningService          core/engine_pruning.py      plans, the pruner, masks, undo, export
    scoring         ScoringService          core/engine_scoring.py      prompt sets -> the session's ranking
    evaluation      EvaluationService       core/engine_evaluation.py   metrics and generation, dense vs pruned
    reconstruction  ReconstructionService   core/engine_reconstruction.py  the kept weights' update
    applications    ApplicationService      core/engine_applications.py circuits and correction

The methods below forward to them, so callers keep one object. Model work is serialised by
the model's lock, so a UI can call in from worker threads one job at a time. The session's
manifest is only changed inside `session.edit()`. Long jobs take a cancel event and raise
`Cancelled` (core/model/interrupt.py); scoring saves its completed batches first.
"""

from __future__ import annotations

import functools

from core.engine_applications import ApplicationService
from core.engine_evaluation import EvaluationService
from core.engine_model import EngineService, ModelService
from core.engine_pruning import PruningService
from core.engine_rankings import RankingStore
from core.engine_reconstruction import ReconstructionService
from core.results import CircuitResult
from core.engine_scoring import ScoringService
from core.model.loading import LoadedModel
from core.session.ui_state import UiState
from core.session.store import Session

#: what `Workbench` forwards, by service: the engine's whole public surface
FORWARDED = {
    "model": ("load", "use_model", "check_seq_len", "model_spec_dict", "ensure_model", "use_prompt_set", "prompt_set",
              "layer_index"),
    "rankings": ("score_config_dict", "scores_ready", "ranking", "scores_summary", "relevance_by_block"),
    "pruning": ("ensure_pruner", "prepare_slider", "drop_pruner", "allocation_for", "allocation_of", "plan_for",
                "relevance_plan", "prune", "save_session", "undo", "undo_depth", "prune_summary", "restore_plan",
                "weights", "pruned_active", "size_report", "export"),
    "scoring": ("score", "resolved_score_config"),
    "evaluation": ("evaluate", "stream", "history"),
    "reconstruction": ("reconstruct", "default_choice", "reconstructs_by_default"),
    "applications": ("task_items", "circuit", "circuit_compare", "correct", "correction_data"),
}
FORWARDED_PROPERTIES = {"model": ("model_spec",), "rankings": ("score_config", "score_defaults"), "pruning": ("plan",)}


class Workbench(EngineService):
    def __init__(self, session: Session, lm: LoadedModel | None = None, trust_remote_code: bool = False):
        super().__init__(ModelService(session, lm, trust_remote_code))  # session, lm, layers, lock: the model's
        self.rankings = RankingStore(self.model)
        self.pruning = PruningService(self.model, self.rankings)
        self.scoring = ScoringService(self.model, self.rankings, self.pruning)
        self.evaluation = EvaluationService(self.model, self.rankings, self.pruning)
        self.reconstruction = ReconstructionService(self.model, self.rankings, self.pruning)
        self.applications = ApplicationService(self.model, self.rankings, self.pruning, self.scoring, Workbench)
        # another model: the pruner first puts the original weights back; another source's scores are not these
        self.model.before_change.append(self.pruning.drop_pruner)
        self.model.source_changed.append(self.rankings.forget)

    # ---- state the callers read ------------------------------------------------------
    @property
    def trust_remote_code(self) -> bool:
        return self.model.trust_remote_code

    @property
    def pruner(self):
        return self.pruning.pruner

    # ---- what the session holds for a UI ---------------------------------------------
    def saved_results(self) -> dict:
        """What the session holds of the applications, typed: the last circuit (CircuitResult)
        per granularity and the last correction sweep (a resumed TUI shows them)."""
        mf = self.session.manifest
        return {"circuits": [CircuitResult.of(c.model_dump(exclude={"plan"})) for c in mf.circuits.values()],
                "correction": mf.correction.model_dump() if mf.correction else None}

    @property
    def ui_state(self) -> dict:
        return self.session.manifest.ui.model_dump()

    def save_ui(self, state: dict) -> None:
        """A UI's own settings (prompt text, evaluation size, open pane), saved with the session."""
        with self.session.edit() as m:
            m.ui = UiState.model_validate(state)


def _forward(service: str, name: str, cls: type):
    target = getattr(cls, name)

    @functools.wraps(target)
    def method(self, *args, **kwargs):
        return getattr(getattr(self, service), name)(*args, **kwargs)

    return method


def _forward_property(service: str, name: str, cls: type) -> property:
    return property(lambda self: getattr(getattr(self, service), name), doc=getattr(cls, name).__doc__)


_CLASSES = {"model": ModelService, "rankings": RankingStore, "pruning": PruningService, "scoring": ScoringService,
            "evaluation": EvaluationService, "reconstruction": ReconstructionService, "applications": ApplicationService}
for _service, _names in FORWARDED.items():
    for _name in _names:
        setattr(Workbench, _name, _forward(_service, _name, _CLASSES[_service]))
for _service, _names in FORWARDED_PROPERTIES.items():
    for _name in _names:
        setattr(Workbench, _name, _forward_property(_service, _name, _CLASSES[_service]))
