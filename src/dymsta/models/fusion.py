"""Fusion of input streams for DyMSTA-Net: each stream reduced to the head width, then one token tensor.

Every stream ``s`` arrives as tokens ``(B, T, h, w, D)`` on the same grid (reduced by its own 1x1x1 conv + BN +
ReLU). Modes (``model.fusion``):

- ``concat``: concatenate the streams' channels and mix them by a 1x1x1 conv + BN + ReLU back to ``D`` (the
  default; learns cross-stream combinations at every position);
- ``sum``: add the streams (no parameters);
- ``gated``: per sample, a softmax over streams of a score computed from each stream's mean token; the weighted sum
  (lets a clip lean on motion or on appearance).
"""

from __future__ import annotations

import torch
from torch import nn

from dymsta.models.layers import TokenBatchNorm

__all__ = ["StreamFusion"]


class StreamFusion(nn.Module):
    """Streams' tokens ``[(B, T, h, w, D)] * n -> (B, T, h, w, D)``; one stream passes through unchanged.

    Args:
        channels: D.
        num_streams: n.
        mode: ``concat`` | ``sum`` | ``gated``.
    """

    def __init__(self, *, channels: int, num_streams: int, mode: str = "concat") -> None:
        super().__init__()
        if mode not in ("concat", "sum", "gated"):
            raise ValueError(f"fusion mode must be concat, sum or gated, got {mode!r}")
        self.mode, self.num_streams = mode, num_streams
        self.mix = self.score = None
        if num_streams > 1 and mode == "concat":
            self.mix = nn.Sequential(
                nn.Linear(num_streams * channels, channels, bias=False), TokenBatchNorm(channels), nn.ReLU(inplace=True)
            )
        elif num_streams > 1 and mode == "gated":
            self.score = nn.Linear(channels, 1)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """``[(B, T, h, w, D)] * n -> (B, T, h, w, D)``."""
        if len(tokens) != self.num_streams:
            raise ValueError(f"StreamFusion: expected {self.num_streams} streams, got {len(tokens)}")
        if self.num_streams == 1:
            return tokens[0]
        if self.mode == "concat":
            return self.mix(torch.cat(tokens, dim=-1))
        stacked = torch.stack(tokens)  # (n, B, T, h, w, D)
        if self.mode == "sum":
            return stacked.sum(0)
        weights = torch.softmax(self.score(stacked.mean(dim=(2, 3, 4))), dim=0)  # (n, B, 1): per sample
        return (stacked * weights[:, :, None, None, None].to(stacked.dtype)).sum(0)

    def weights(self, tokens: list[torch.Tensor]) -> torch.Tensor | None:
        """The gated mode's stream weights ``(B, n)``, or None for the other modes."""
        if self.score is None:
            return None
        scores = self.score(torch.stack(tokens).mean(dim=(2, 3, 4)))  # (n, B, 1)
        return torch.softmax(scores, dim=0)[..., 0].T
