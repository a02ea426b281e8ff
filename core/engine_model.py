"""The engine's model service: the session, the loaded model and its prunable layers, the prompt sets, and
the lock that serialises model work. Every other engine service is made with it (`EngineService`) and names
the other services it uses in its constructor (core/engine.py wires them)."""

from __future__ import annotations

import threading
from dataclasses import asdict, replace
from typing import Callable


from core.data.prompt_sets import PromptSet, load_prompt_set
from core.errors import WorkbenchError
from core.model.layers import Prunable, block_prefix, prunable_layers
from core.model.loading import LoadedModel, load_model
from core.session.manifest import ModelInfo, ModelRecord
from core.session.store import Session
from core.settings import ModelSpec


class ModelService:
    """The session and the model it is about. Loading another model tells `before_change` (the pruner puts the
    original weights back) and, for another source, `source_changed` (cached scores are dropped)."""

    def __init__(self, session: Session, lm: LoadedModel | None = None, trust_remote_code: bool = False):
        self.session = session
        self.lm = lm
        self.trust_remote_code = trust_remote_code
        self.layers: list[Prunable] = prunable_layers(lm.model) if lm else []
        self.lock = threading.RLock()
        self.prompt_sets: dict[str, PromptSet] = {}
        self.before_change: list[Callable[[], None]] = []
        self.source_changed: list[Callable[[], None]] = []

    @property
    def model_spec(self) -> ModelSpec | None:
        m = self.session.manifest.model
        return replace(m.spec) if m else None

    def load(self, spec: ModelSpec | None = None) -> dict:
        """Load `spec` (or the session's model); a different model invalidates cached scores.

        `spec.trust_remote_code` is the caller's word; the session's own spec runs remote code only
        when this workbench was made with `trust_remote_code`."""
        with self.lock:
            explicit = spec is not None
            spec = spec or self.model_spec or ModelSpec()
            spec = replace(spec, trust_remote_code=spec.trust_remote_code if explicit else self.trust_remote_code)
            old = self.model_spec
            if spec.device_map is None and old is not None and old.source == spec.source:
                spec = replace(spec, device_map=old.device_map)  # the same model stays spread (`--device-map none` ends it)
            lm = load_model(spec.source, spec.device, spec.dtype, spec.trust_remote_code, spec.device_map)
            for hook in self.before_change:
                hook()
            self.lm, self.layers = lm, prunable_layers(lm.model)
            if not self.layers:
                raise WorkbenchError(f"{spec.source}: found no linear layers inside decoder blocks to prune")
            with self.session.edit() as mf:
                if old is not None and old.source != spec.source:
                    mf.sums, mf.ranking, mf.counts, mf.plan, mf.dense_cache, mf.reconstruction = {}, None, None, None, {}, None
                    for hook in self.source_changed:
                        hook()
                mf.model = ModelRecord(spec=replace(spec, trust_remote_code=False), info=ModelInfo(**lm.info()))
            return lm.info()

    def use_model(self, lm: LoadedModel, spec: ModelSpec) -> None:
        """Work on an already-loaded model (benchmarks, notebooks), recorded as `spec` in the session."""
        with self.lock:
            for hook in self.before_change:
                hook()
            self.lm, self.layers = lm, prunable_layers(lm.model)
            with self.session.edit() as mf:
                if mf.model is not None and mf.model.spec.source != spec.source:
                    mf.sums, mf.ranking, mf.counts, mf.plan, mf.dense_cache, mf.reconstruction = {}, None, None, None, {}, None
                    for hook in self.source_changed:
                        hook()
                mf.model = ModelRecord(spec=spec, info=ModelInfo(**lm.info()))

    def check_seq_len(self, seq_len: int, flag: str = "--seq-len") -> None:
        """Refuse windows longer than the model has positions for (they fail deep inside, or silently wrap)."""
        cfg = self.ensure_model().model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if isinstance(limit, int) and seq_len > limit:
            raise WorkbenchError(f"{flag} {seq_len} is longer than the model's {limit:,} positions; give at most {limit}")

    def model_spec_dict(self) -> dict:
        spec = self.model_spec
        return asdict(spec) if spec else {}

    def ensure_model(self) -> LoadedModel:
        if self.lm is None:
            self.load()
        return self.lm

    def use_prompt_set(self, ps: PromptSet) -> None:
        """Use `ps` wherever its spec is named (benchmarks hold out their own validation texts this way)."""
        self.prompt_sets[ps.spec] = ps

    def prompt_set(self, spec: str) -> PromptSet:
        if spec not in self.prompt_sets:
            self.prompt_sets[spec] = load_prompt_set(spec)
        return self.prompt_sets[spec]

    def layer_index(self) -> list[dict]:
        """Plain data about every prunable layer (name, block, kind, block prefix, weights)."""
        return [{"name": p.name, "block": p.block, "kind": p.kind, "prefix": block_prefix(p), "numel": p.numel}
                for p in self.layers]


class EngineService:
    """A part of the engine: it works on `model`'s session, model, layers and lock."""

    def __init__(self, model: ModelService):
        self.model = model

    @property
    def session(self) -> Session:
        return self.model.session

    @property
    def lm(self) -> LoadedModel | None:
        return self.model.lm

    @property
    def layers(self) -> list[Prunable]:
        return self.model.layers

    @property
    def lock(self) -> threading.RLock:
        return self.model.lock
