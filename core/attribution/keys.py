"""What a scoring result depends on: equal keys mean a cached result can be reused.

A set key describes the raw sums of one prompt set (resumable while scoring runs); the
ranking key describes the finished ranking (both sets, how they were combined). Only
settings that change the result are in a key: Wanda's scores do not depend on the
target, magnitude's not even on the data.
"""

from __future__ import annotations

from core.attribution.combine import accumulator
from core.attribution.registry import scorer
from core.settings import ScoreConfig

#: how token windows are built (core/data/tokens.py); a change here invalidates cached scores
INPUTS = "bos-first"
#: how heads and neurons are scored by the gradient scorers (their output's relevance); a change invalidates
UNITS = "output-relevance"


def set_key(cfg: ScoreConfig, which: str, model: str) -> dict:
    info = scorer(cfg.scorer)
    if which == "paired":  # the contrastive prompts, continued the wanted way
        cfg, which = cfg.for_clean_pair(), "contrastive"
    key: dict = {"model": model, "scorer": cfg.scorer}
    if info.revision:  # only revised methods: the keys of the others stay as they were, so their cached scores stay valid
        key["revision"] = info.revision
    if info.needs_data:
        key.update(spec=cfg.reference if which == "reference" else cfg.contrastive, samples=cfg.samples,
                   seq_len=cfg.seq_len, seed=cfg.seed, continuation=cfg.continuation, inputs=INPUTS)
        how = cfg.continuation_for(key["spec"])
        if how != "greedy":  # greedy keys stay as they were, so older scores are reused
            key.update(continue_by=how, draws=cfg.draws)
        # likewise: keys of "all" are unchanged (None, not yet resolved, is the default without a contrast)
        if (cfg.explain or "all") != "all" and info.needs_gradients:
            key["explain"] = cfg.explain
    if info.uses_target:
        key["target"] = cfg.target
    if info.lrp_rules:
        key["rules"] = cfg.rules
    if info.reducible:
        key["aggregate"] = accumulator(cfg.reduce or "abs-sample")  # the key's name predates accumulator(); kept so cached scores stay valid
        key["units"] = UNITS
    if info.seeded:
        key["seed"] = cfg.seed
        if which != "reference":  # its own draw (stream_seed); reference keys are as they were
            key["stream"] = which
    return key


#: a seeded scorer draws each set from its own stream: with one draw for both, a contrast of random scores is
#: zero everywhere and its "ranking" only the sort's tie order. The reference keeps the seed itself. Offsets stay
#: within 32 bits: torch's CPU generator keeps only the low 32 bits of a seed.
STREAMS = {"reference": 0, "contrastive": 0x5BD1E995, "paired": 0xB7A3D32A}


def stream_seed(seed: int, which: str) -> int:
    return (seed + STREAMS[which]) % (1 << 32)


def paired(cfg: ScoreConfig) -> bool:
    """Does this score have a clean side (--pair clean with a contrastive set)?"""
    return bool(cfg.contrastive) and cfg.pair not in (None, "none")  # None: not resolved yet


def ranking_key(cfg: ScoreConfig, model: str) -> dict:
    sets = ["reference"] + (["contrastive"] if cfg.contrastive else []) + (["paired"] if paired(cfg) else [])
    reducible = scorer(cfg.scorer).reducible
    return {"sets": {w: set_key(cfg, w, model) for w in sets},
            "reduce": cfg.reduce if reducible else None,
            "damping": cfg.damping if reducible and cfg.reduce == "token-rms" else None,
            "normalize": cfg.normalize if cfg.contrastive else None}
