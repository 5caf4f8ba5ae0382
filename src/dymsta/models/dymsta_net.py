"""DyMSTA-Net: frozen frame backbone -> reduce -> dynamic 3D conv -> spatio-temporal attention -> multi-scale
temporal block -> pool -> classifier (DESIGN.md section 1). Every module can be switched off for ablations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dymsta.models.attention import SpatioTemporalAttention
from dymsta.models.backbone import FrameBackbone, pool_grid
from dymsta.models.base import FrameModel, Streams, feature_input
from dymsta.models.config import ModelConfig
from dymsta.models.dynamic_conv import DynamicConv3d
from dymsta.models.fusion import StreamFusion
from dymsta.models.layers import TokenBatchNorm, from_tokens, to_tokens
from dymsta.models.temporal import MultiScaleTemporalBlock

__all__ = ["DyMSTANet", "annealed_temperature"]


def annealed_temperature(epoch: int, *, initial: float, anneal_epochs: int) -> float:
    """Linear annealing: ``initial`` at epoch 0 down to 1 at ``anneal_epochs`` and after (Chen et al. 2020)."""
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return 1.0
    return initial - (initial - 1.0) * max(epoch, 0) / anneal_epochs


class DyMSTANet(FrameModel):
    """DyMSTA-Net on a frame backbone.

    Shapes: ``forward``: streams ``{s: (B, 3, T, H, W)}`` (or the RGB video alone) -> logits ``(B, N)``;
    ``forward_head``: features ``{s: (B, C_s, T, h, w)}`` (or RGB features alone) -> logits ``(B, N)`` (any
    T >= T_long, any h, w shared by the streams). Each stream is reduced to width D on the token grid and the
    streams are fused (``cfg.fusion``) before the three modules.

    Args:
        cfg: the model config (``dim``, module switches, kernels, ...).
        backbone: the frame backbone whose features feed the head.
    """

    def __init__(self, *, cfg: ModelConfig, backbone: FrameBackbone) -> None:
        super().__init__(cfg=cfg, backbone=backbone)
        d = cfg.dim
        self.feature_dropout = nn.Dropout(cfg.feature_dropout)
        self.reduce = nn.ModuleDict(
            {
                s: nn.Sequential(nn.Linear(c, d, bias=False), TokenBatchNorm(d), nn.ReLU(inplace=True))
                for s, c in self.stream_channels().items()
            }
        )  # per stream: a 1x1x1 conv on channels-last tokens
        self.fusion = StreamFusion(channels=d, num_streams=len(self.streams), mode=cfg.fusion)
        self.dynamic_conv = self.dynamic_norm = None
        if cfg.dynamic:
            self.dynamic_conv = DynamicConv3d(
                in_channels=d,
                out_channels=d,
                kernel_size=cfg.dynamic_kernel,
                mode=cfg.dynamic_mode,
                num_kernels=cfg.num_kernels,
                temperature=cfg.temperature,
                reduction=cfg.reduction,
                bias=False,
            )
            self.dynamic_norm = TokenBatchNorm(d)
        self.attention = SpatioTemporalAttention(channels=d, reduction=cfg.reduction) if cfg.attention else None
        self.temporal = None
        if cfg.multiscale:
            self.temporal = MultiScaleTemporalBlock(
                in_channels=d,
                out_channels=d,
                kernels=cfg.temporal_kernels,
                branch_channels=cfg.branch_channels or d // 2,
                pool=cfg.temporal_pool,
                center=cfg.temporal_center,
            )
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d, cfg.num_classes)

    @property
    def head_grid(self) -> int:
        return self.cfg.spatial_pool

    def set_epoch(self, epoch: int) -> None:
        """Anneal the dynamic-kernel softmax temperature (``cfg.temperature`` -> 1 over ``cfg.anneal_epochs``)."""
        if self.dynamic_conv is not None:
            self.dynamic_conv.set_temperature(
                annealed_temperature(epoch, initial=self.cfg.temperature, anneal_epochs=self.cfg.anneal_epochs)
            )

    def forward_head(
        self, feats: torch.Tensor | Streams, return_maps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stream features ``{s: (B, C_s, T, h, w)}`` -> logits ``(B, N)``.

        With ``return_maps=True`` returns ``(logits, maps)``: ``maps["temporal"]`` ``(B, T)`` and
        ``maps["spatial"]`` ``(B, T, h', w')`` (h', w' after ``spatial_pool``); ``{}`` when attention is off.
        """
        streams = self.head_streams(feats)
        reduced = []
        for name, f in streams.items():
            x = feature_input(f, self.classifier.weight, channels_last=True)  # the head computes channels-last
            x = pool_grid(x, self.cfg.spatial_pool)  # (B, C_s, T, h', w'); a no-op on features pooled before
            stream_tokens = self.standardize(name, to_tokens(x), dim=-1)  # (B, T, h', w', C_s)
            reduced.append(self.reduce[name](self.feature_dropout(stream_tokens)))  # (B, T, h', w', D)
        tokens = self.fusion(reduced)  # (B, T, h', w', D)
        if self.dynamic_conv is not None:  # residual dynamic 3D conv
            tokens = tokens + F.relu(self.dynamic_norm(to_tokens(self.dynamic_conv(from_tokens(tokens)))))
        x = from_tokens(tokens)  # (B, D, T, h', w'), channels-last view
        maps: dict[str, torch.Tensor] = {}
        if self.attention is not None:
            x, maps = self.attention(x, return_maps=True)
        y = self.temporal(x) if self.temporal is not None else x.mean(dim=2)  # (B, D, h', w')
        logits = self.classifier(self.dropout(y.mean(dim=(2, 3))))  # (B, D) -> (B, N)
        return (logits, maps) if return_maps else logits
