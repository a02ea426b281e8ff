"""From the accumulated sums of a scoring run to the compact ranking (ranking.py beside this file).

Layer-local scorers with a layer-local normalisation finish one layer at a time: its
scores, its ranking values, its compact ranking, then the next layer. Peak RAM is then
the compact ranking (4 B per weight) plus one layer's scores, instead of fp32 scores of
every layer per prompt set on top of it. With `compact_layers` the caller writes each
layer's compact ranking to the session as it comes, so not even that stays in RAM. The others (CAP scales by head importance over
all heads, random draws one stream, `max` and `l1` divide by a total over all layers)
finish every layer at once. Both give the same ranking where both apply (tests/test_engine.py).
"""

from __future__ import annotations

from typing import Iterator

import torch

from core.attribution.combine import LAYER_LOCAL_NORMALIZE, ranking_values
from core.attribution.keys import stream_seed
from core.attribution.registry import LAYER_LOCAL
from core.attribution.runner import finish
from core.attribution.state import ScorerOptions, ScoreState
from core.model.layers import Prunable
from core.pruning.ranking import LayerRanking, Ranking, layer_ranking


def compact_layers(scorer: str, model: torch.nn.Module, layers: list[Prunable], states: dict[str, ScoreState],
                   options: ScorerOptions, reduce: str, normalize: str, unscored: list[str],
                   layer_by_layer: bool | None = None) -> Iterator[tuple[str, LayerRanking]]:
    """Each layer's compact ranking of `states` ("reference", maybe "contrastive" and "paired"), in model order;
    the layers no relevance reached are added to `unscored`."""
    if layer_by_layer is None:
        layer_by_layer = scorer in LAYER_LOCAL and normalize in LAYER_LOCAL_NORMALIZE
    groups = [[p] for p in layers] if layer_by_layer else [layers]
    pure_options = options.but(damping=0.0)
    for group in groups:
        per = {w: finish(scorer, model, group, st, options.but(seed=stream_seed(options.seed, w)))
               for w, st in states.items()}
        # Allocation follows the pure relevance of each layer, whatever the damping inside rows
        # (chosen on validation text: bench/quality.py).
        pure = per["reference"] if not options.damping else finish(scorer, model, group, states["reference"], pure_options)
        # CP-LRP sends no relevance to q/k projections and MLP gates: those layers score all zero
        unscored += [p.name for p in group if not bool(per["reference"][p.name].any())]
        values = ranking_values(per["reference"], per.get("contrastive"), reduce, normalize, per.get("paired"))
        mass = {p.name: float(pure[p.name].detach().double().abs().sum()) for p in group}
        del per, pure
        for p in group:
            yield p.name, layer_ranking(values.pop(p.name), mass[p.name])


def compact_ranking(scorer: str, model: torch.nn.Module, layers: list[Prunable], states: dict[str, ScoreState],
                    options: ScorerOptions, reduce: str, normalize: str, units: dict[str, torch.Tensor],
                    layer_by_layer: bool | None = None) -> tuple[Ranking, list[str]]:
    """The whole ranking in RAM (tests, benches) and the layers no relevance reached."""
    unscored: list[str] = []
    compact = dict(compact_layers(scorer, model, layers, states, options, reduce, normalize, unscored, layer_by_layer))
    return Ranking(compact, units), unscored
