"""SparseGPT (Frantar & Alistarh 2023) as a ranking: the OBS saliency w^2 / [H^-1]_jj^2 needs the whole Hessian
H = X X^T of each layer's inputs, which only reconstruction holds (one block at a time). Its diagonal form,
w^2 * H_jj, ranks as Wanda's |w| * ||x_j|| does; that ranking sets how many weights each layer and row lose
(and the slider's mask-only preview), and `prune` then lets SparseGPT choose which, as it updates the kept
weights (core/pruning/reconstruct.py, `reselect`)."""

from __future__ import annotations

from core.attribution.scorers.wanda import accumulate, finish

__all__ = ["accumulate", "finish"]
