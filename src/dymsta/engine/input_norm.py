"""Fitting ``model.input_norm``: each stream's per-channel mean and std over the training set's features.

Logistic regression on frozen features is usually run on standardised features (scikit-learn's
``StandardScaler``); on ucf101-mini that alone moved a linear classifier's group-CV accuracy from 0.78 to 0.82
(docs/RESULTS.md, section 8.9). The heads do the same with statistics fitted once, before the first epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from dymsta.engine import distributed as D

__all__ = ["fit_input_norm"]

log = logging.getLogger(__name__)


@torch.no_grad()
def fit_input_norm(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> int:
    """Set ``model.input_norm`` from feature batches ``{stream: (B, C, T, h, w)}``; returns the clips counted.

    Sums are taken in float64 over batch, time and space, and added over ranks under DDP, so every rank gets
    the statistics of all the batches the ranks saw together. The batches are what the cache holds: each goes
    through ``model.lift`` first (the backbone's last layer, with ``model.head_conv`` set), as the head reads it.
    """
    norms = model.input_norm
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, float] = {}
    clips = 0
    for batch in batches:
        batch = model.lift(batch)
        for name in norms:
            x = batch[name].double().transpose(0, 1).reshape(batch[name].shape[1], -1)  # (C, B*T*h*w)
            sums[name] = sums.get(name, 0) + x.sum(dim=1)
            squares[name] = squares.get(name, 0) + (x * x).sum(dim=1)
            counts[name] = counts.get(name, 0.0) + x.shape[1]
        clips += next(iter(batch.values())).shape[0]
    if not counts:
        raise ValueError("model.input_norm: no training features to fit the statistics on")
    for name, norm in norms.items():
        device = norm.mean.device
        total = torch.cat([sums[name], squares[name], torch.tensor([counts[name]], dtype=torch.float64)]).to(device)
        if D.is_distributed():
            torch.distributed.all_reduce(total)
        c = norm.mean.numel()
        mean = total[:c] / total[-1]
        var = (total[c : 2 * c] / total[-1] - mean * mean).clamp_min(0.0)
        norm.set_statistics(mean.float(), var.sqrt().float())
    log.info("input_norm: statistics of %d training clips (%s)", clips, ", ".join(norms))
    return clips
