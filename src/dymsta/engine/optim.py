"""Optimiser and learning-rate schedule (the paper's "dynamic learning rate" = reduce-on-plateau)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from dymsta.config import OptimConfig

__all__ = ["build_optimizer", "LRSchedule"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimConfig, *, pretrained: Iterable[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with Nesterov momentum; biases and norm weights get no weight decay.

    ``pretrained`` (those of ``params`` that start from ImageNet weights: trainable backbone stages, the trained
    copies of ``model.head_conv``) learn at ``lr * optim.backbone_lr_scale`` with ``optim.backbone_weight_decay``
    on their weights: a head's strong decay (the linear recipe's 50) would wipe a pretrained layer in a few steps.
    """
    params = [p for p in params if p.requires_grad]
    ids = {id(p) for p in pretrained}
    groups = []
    for scale, wd, chosen in (
        (1.0, cfg.weight_decay, [p for p in params if id(p) not in ids]),
        (cfg.backbone_lr_scale, cfg.backbone_weight_decay, [p for p in params if id(p) in ids]),
    ):
        decay, no_decay = [p for p in chosen if p.ndim > 1], [p for p in chosen if p.ndim <= 1]
        for group, decay_value in ((decay, wd), (no_decay, 0.0)):
            if group or scale == 1.0:  # the head's two groups always exist (param_groups[0] is the head's lr)
                groups.append({"params": group, "weight_decay": decay_value, "lr": cfg.lr * scale, "lr_scale": scale})
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class LRSchedule:
    """Per-epoch learning-rate control with a JSON-friendly state (saved in checkpoints without pickle).

    * ``plateau``: :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` on the validation loss.
    * ``cosine``: linear warm-up for ``warmup_epochs`` then cosine decay to ``min_lr`` at the last epoch.
    * ``none``: constant.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.epochs = epochs
        self.plateau = None
        if cfg.scheduler == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
            )

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def start_epoch(self, epoch: int) -> None:
        """Set the LR for ``epoch`` (0-based) before it trains (cosine/warm-up only)."""
        if self.cfg.scheduler != "cosine":
            return
        base, floor, warm = self.cfg.lr, self.cfg.min_lr, self.cfg.warmup_epochs
        if epoch < warm:
            lr = base * (epoch + 1) / warm
        else:
            progress = (epoch - warm) / max(1, self.epochs - warm - 1)
            lr = floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def end_epoch(self, val_loss: float | None) -> None:
        """Feed the validation loss to reduce-on-plateau after an epoch."""
        if self.plateau is not None and val_loss is not None and math.isfinite(val_loss):
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
