"""An exponential moving average (EMA) of the head's weights: a steadier model than any one epoch's.

On small datasets the head's validation accuracy jumps by several points from epoch to epoch, so the epoch a
run keeps (the best on one validation group) is partly luck. The average of the weights over the last few
hundred optimiser steps (Polyak averaging) is smoother; ``train.ema`` is its decay per step (0 = off).

Only what training changes is averaged: the frozen backbone (``backbone.*``) and the fitted input statistics
(``input_norm.*``, :mod:`dymsta.engine.input_norm`) are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["WeightEMA"]

FIXED_PREFIXES = ("backbone.", "input_norm.")  # state that training does not change


class WeightEMA:
    """``shadow = d * shadow + (1 - d) * weights`` after every optimiser step, in float32, from ``shadow = 0``.

    The average the model gets is ``shadow / (1 - d ** steps)`` (Adam's bias correction): an exact weighted mean
    of the weights after each step, with no pull towards the random initial weights or towards zero.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        """Args: model: the bare model (not a DDP wrapper); decay: per-step decay in (0, 1)."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1) (0 = off), got {decay}")
        self.model = model
        self.decay = decay
        self.steps = 0
        # The state_dict's tensors share storage with the model's, and the optimiser and load_state_dict update
        # them in place, so the list is taken once rather than at every step.
        self._entries = [
            (name, value)
            for name, value in model.state_dict().items()
            if value.is_floating_point() and not name.startswith(FIXED_PREFIXES)
        ]  # weights and BatchNorm statistics of the head
        self.shadow = {name: torch.zeros_like(value, dtype=torch.float32) for name, value in self._entries}

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average (call after each optimiser step)."""
        for name, value in self._entries:
            self.shadow[name].lerp_(value.float(), 1.0 - self.decay)
        self.steps += 1

    def average(self) -> dict[str, torch.Tensor]:
        """The bias-corrected average, ``{name: float32 tensor}`` (the model's own weights before any step)."""
        if self.steps == 0:
            return {name: value.detach().float() for name, value in self._entries}
        correction = 1.0 - self.decay**self.steps
        return {name: value / correction for name, value in self.shadow.items()}

    @contextmanager
    def applied(self) -> Iterator[torch.nn.Module]:
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        own = {name: value.detach().clone() for name, value in self._entries}
        self._load(self.average())
        try:
            yield self.model
        finally:
            self._load(own)

    @torch.no_grad()
    def _load(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in self._entries:
            value.copy_(values[name])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``{"ema.<name>": tensor}`` for the training state file."""
        return {f"ema.{name}": value.contiguous() for name, value in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], steps: int) -> None:
        """Restore from :meth:`state_tensors` (and the step count kept in the state's info)."""
        missing = [name for name in self.shadow if f"ema.{name}" not in tensors]
        if missing:
            raise KeyError(f"the training state has no EMA weights for {missing[:3]} (was it saved with train.ema?)")
        for name in self.shadow:
            self.shadow[name].copy_(tensors[f"ema.{name}"])
        self.steps = steps
