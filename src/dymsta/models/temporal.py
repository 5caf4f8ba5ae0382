"""Module 2 of DyMSTA-Net: the multi-scale temporal block.

Parallel temporal convolutions with kernel sizes T_short < T_medium < T_long see short, medium and long temporal
ranges; each branch is pooled (max by default, mean as an option) over the whole time axis ("a single temporal
feature"), and a pooled identity branch keeps the strongest response of every input channel. The branches are concatenated and fused by
a 1x1 convolution. The time axis is consumed here: ``(B, C, T, H, W) -> (B, C_out, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from dymsta.models.config import ModelInputError
from dymsta.models.layers import TemporalConv, TokenBatchNorm, to_tokens

__all__ = ["MultiScaleTemporalBlock", "check_temporal_kernels"]


def check_temporal_kernels(kernels: Sequence[int], num_frames: int | None = None) -> tuple[int, ...]:
    """Validate T_short < T_medium < ... (positive ints, each <= ``num_frames``); raises ``ValueError``."""
    kernels = tuple(kernels)
    if not kernels or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in kernels):
        raise ValueError(f"temporal kernels must be positive integers, got {list(kernels)}")
    if any(a >= b for a, b in zip(kernels, kernels[1:], strict=False)):
        raise ValueError(
            f"temporal kernels must be strictly increasing (T_short < T_medium < T_long), got {list(kernels)}"
        )
    if num_frames is not None and kernels[-1] > num_frames:
        raise ValueError(f"longest temporal kernel {kernels[-1]} exceeds the {num_frames} frames")
    return kernels


class MultiScaleTemporalBlock(nn.Module):
    """Temporal branches of several ranges, each max-pooled over time, plus a max-pooled identity; fused.

    Shapes: ``(B, Cin, T, H, W) -> (B, Cout, H, W)`` (a channels-last view); needs ``T >= max(kernels)``: the
    branches are 'valid' temporal convolutions, so every output position sees exactly k real frames.

    Args:
        in_channels: Cin.
        out_channels: Cout after the 1x1 fusion.
        kernels: temporal kernel sizes, strictly increasing (default short/medium/long = 3/5/7).
        branch_channels: channels of each temporal branch.
        pool: "max" (the paper: the strongest response over time) or "mean" over time.
        center: feed the temporal branches ``x - mean_t(x)`` (what changes over the clip, without the static
            scene); the identity branch keeps ``x``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernels: Sequence[int] = (3, 5, 7),
        branch_channels: int = 128,
        pool: str = "max",
        center: bool = False,
    ) -> None:
        super().__init__()
        self.center = center
        if pool not in ("max", "mean"):
            raise ValueError(f"temporal pool must be 'max' or 'mean', got {pool!r}")
        self.pool = pool
        self.kernels = check_temporal_kernels(kernels)
        self.branches = nn.ModuleList(
            nn.Sequential(
                TemporalConv(in_channels, branch_channels, k), TokenBatchNorm(branch_channels), nn.ReLU(inplace=True)
            )
            for k in self.kernels
        )
        fused_in = in_channels + branch_channels * len(self.kernels)
        self.fuse = nn.Sequential(
            nn.Linear(fused_in, out_channels, bias=False), TokenBatchNorm(out_channels), nn.ReLU(inplace=True)
        )  # 1x1 conv over the concatenated branches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, T, H, W) -> (B, Cout, H, W)``."""
        t = x.shape[2]
        if t < self.kernels[-1]:
            raise ModelInputError(
                f"MultiScaleTemporalBlock: {t} frames is fewer than the longest temporal kernel {self.kernels[-1]}"
            )
        tokens = to_tokens(x)  # (B, T, H, W, Cin)
        pooled = [self._pool_time(tokens)]  # identity branch, (B, H, W, Cin)
        moving = tokens - tokens.mean(dim=1, keepdim=True) if self.center else tokens
        pooled += [self._pool_time(branch(moving)) for branch in self.branches]  # each (B, H, W, Cb)
        fused = self.fuse(torch.cat(pooled, dim=-1))  # (B, H, W, Cin + n*Cb) -> (B, H, W, Cout)
        return rearrange(fused, "b h w c -> b c h w")

    def _pool_time(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W, C) -> (B, H, W, C)``."""
        return tokens.max(dim=1).values if self.pool == "max" else tokens.mean(dim=1)
