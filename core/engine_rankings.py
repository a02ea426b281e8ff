"""The engine's view of the session's scores: the settings of the last `score` and its ranking, read
lazily and kept."""

from __future__ import annotations

from dataclasses import asdict, replace


from core.errors import WorkbenchError
from core.pruning.ranking import Ranking
from core.settings import ScoreConfig
from core.engine_model import EngineService, ModelService


class RankingStore(EngineService):
    """The session's ranking and the settings that made it."""

    def __init__(self, model: ModelService):
        super().__init__(model)
        self._ranking: Ranking | None = None

    def forget(self) -> None:
        """Drop the ranking read from the session (a new score or model replaces it)."""
        self._ranking = None

    def remember(self, ranking: Ranking) -> None:
        self._ranking = ranking

    @property
    def score_config(self) -> ScoreConfig | None:
        cfg = self.session.manifest.score_config
        return replace(cfg) if cfg else None

    @property
    def score_defaults(self) -> list[str]:
        """Which of reduce, explain and pair the last score filled in by default (empty for older sessions)."""
        return list(self.session.manifest.score_defaults or [])

    def score_config_dict(self) -> dict:
        """The last score's settings as chosen: what `score` filled in by default is None again (the TUI
        restores this, so those fields follow the prompt sets)."""
        cfg, defaults = self.score_config, self.session.manifest.score_defaults
        if cfg is None:
            return {}
        out = asdict(cfg)
        if defaults is None:  # scored before the manifest said which: the values those defaults had then
            defaults = [k for k, then in (("explain", "all"), ("pair", "none")) if out[k] == then]
            defaults += ["reduce"] if out["reduce"] in (("abs",) if cfg.contrastive else ("token-rms", "abs")) else []
        return {**out, **{k: None for k in defaults}}

    def scores_ready(self) -> bool:
        return self.session.manifest.ranking is not None

    def ranking(self) -> Ranking:
        """The session's compact ranking (read once, then kept)."""
        rec = self.session.manifest.ranking
        if rec is None:
            name = self.session.name
            if self.session.manifest.sums:
                raise WorkbenchError(f"scoring in session {name!r} was interrupted; run the same `workbench score` again to finish it")
            raise WorkbenchError(f"session {name!r} has no scores yet; run `workbench score --session {name}` first")
        if self._ranking is None:
            self._ranking = self.open_ranking(rec.file)
        if self.layers and self._ranking.names() != {p.name for p in self.layers}:
            raise WorkbenchError("the session's scores do not match this model's layers; re-run `workbench score`")
        return self._ranking

    def open_ranking(self, file: str) -> Ranking:
        """The ranking file, read lazily: each layer's large parts when used, as many kept as fit the cache."""
        path = self.session.tensor_file(file)
        if path is None:  # a read-only session keeps what it wrote in memory
            return Ranking.from_tensors(self.session.read_tensors(file))
        try:
            return Ranking.open(path, check=self.session.checker(file))
        except WorkbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise WorkbenchError(f"{path} is unreadable ({exc}); re-run `workbench score --session {self.session.name}`") from None

    def scores_summary(self) -> dict:
        """The last complete scoring: its settings and how many samples each set had (plain data)."""
        cfg, rec = self.session.manifest.score_config, self.session.manifest.ranking
        if cfg is None or rec is None:
            return {}
        return {"config": asdict(cfg), "samples": dict(rec.samples), "unscored_layers": len(rec.unscored_layers)}

    def relevance_by_block(self) -> dict[int, dict[str, float]]:
        """Mean |reference score| per weight: per block ("all") and per kind ("attn", "mlp")."""
        from core.pruning.allocation import block_relevance

        if not self.scores_ready() or not self.layers:
            return {}
        ranking = self.ranking()
        mass = {n: ranking[n].mass for n in ranking.names()}
        out: dict[int, dict[str, float]] = {b: {"all": v} for b, v in block_relevance(self.layers, mass).items()}
        for kind in ("attn", "mlp"):
            for b, v in block_relevance([p for p in self.layers if p.kind == kind], mass).items():
                out[b][kind] = v
        return out
