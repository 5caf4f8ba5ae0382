"""Module 3 of DyMSTA-Net: spatio-temporal attention, temporal and spatial weights computed in parallel.

* temporal weights ``a_t`` (B, T): from spatially pooled features, a channel MLP and a temporal convolution
  (neighbouring frames inform each other) -> sigmoid: "which frames".
* spatial weights ``a_s`` (B, T, H, W): from the channel-pooled (mean, max) maps of every frame, a small 2D
  convolution -> sigmoid: "where" (CBAM-style).

Both branches read the same input; they are applied together as ``x * (1 + a_t * a_s)``, so attention can only
emphasise (never erase) features and the block starts close to the identity.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from dymsta.models.layers import from_tokens, to_tokens

__all__ = ["SpatioTemporalAttention"]


class SpatioTemporalAttention(nn.Module):
    """Parallel temporal and spatial attention.

    Shapes: ``(B, C, T, H, W) -> (B, C, T, H, W)`` (a channels-last view); with ``return_maps=True`` also
    ``{"temporal": (B, T), "spatial": (B, T, H, W)}``, weights in (0, 1).

    Args:
        channels: C.
        reduction: hidden width of the temporal MLP is ``max(C // reduction, 4)``.
        temporal_kernel: odd kernel size of the temporal convolution over frames.
        spatial_kernel: odd kernel size of the spatial convolution over the (mean, max) maps.
    """

    def __init__(self, *, channels: int, reduction: int = 4, temporal_kernel: int = 3, spatial_kernel: int = 3) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.temporal_mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True))
        self.temporal_conv = nn.Conv1d(hidden, 1, temporal_kernel, padding=temporal_kernel // 2)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def maps_from_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal ``(B, T)`` and spatial ``(B, T, H, W)`` weights in (0, 1) from tokens ``(B, T, H, W, C)``."""
        b = tokens.shape[0]
        hidden = self.temporal_mlp(tokens.mean(dim=(2, 3)))  # (B, T, C) -> (B, T, hidden)
        a_t = torch.sigmoid(self.temporal_conv(rearrange(hidden, "b t c -> b c t")))[:, 0]  # (B, T)
        stats = torch.stack([tokens.mean(dim=-1), tokens.max(dim=-1).values], dim=2)  # (B, T, 2, H, W)
        a_s = torch.sigmoid(self.spatial(stats.flatten(0, 1)))  # (B*T, 1, H, W)
        return a_t, rearrange(a_s, "(b t) 1 h w -> b t h w", b=b)

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal ``(B, T)`` and spatial ``(B, T, H, W)`` weights of ``x`` ``(B, C, T, H, W)``."""
        return self.maps_from_tokens(to_tokens(x))

    def forward(
        self, x: torch.Tensor, return_maps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Re-weight ``x`` ``(B, C, T, H, W)`` by ``1 + a_t * a_s``."""
        tokens = to_tokens(x)  # (B, T, H, W, C)
        a_t, a_s = self.maps_from_tokens(tokens)
        weight = 1.0 + a_t[:, :, None, None] * a_s  # (B, T, H, W)
        out = from_tokens(tokens * weight[..., None].to(tokens.dtype))  # broadcast over C
        if return_maps:
            return out, {"temporal": a_t, "spatial": a_s}
        return out
