"""What every model from :func:`dymsta.models.build_model` shares: config, preprocessing, training hooks."""

from __future__ import annotations

import torch
from torch import nn

from dymsta.models.backbone import FrameBackbone
from dymsta.models.config import ModelConfig, ModelInputError

__all__ = ["FrameModel", "feature_input"]


def feature_input(feats: torch.Tensor, like: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """Cast features (cached ones are often fp16) to what the head computes in, in one copy at most.

    Args:
        feats: ``(B, Cb, T, h, w)`` backbone features, any dtype and memory format.
        like: a parameter of the head: its dtype is the target unless autocast is on (then the autocast dtype).
        channels_last: also lay the result out as channels_last_3d (what the DyMSTA head computes in).
    """
    if feats.ndim != 5:
        raise ModelInputError(
            f"forward_head: expected backbone features (B, C, T, h, w), got shape {tuple(feats.shape)}"
        )
    device_type = feats.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else like.dtype
    fmt = torch.channels_last_3d if channels_last else torch.preserve_format
    if feats.dtype == dtype and (not channels_last or feats.is_contiguous(memory_format=fmt)):
        return feats
    return feats.to(dtype=dtype, memory_format=fmt)


class FrameModel(nn.Module):
    """Base of the models built on a per-frame 2D backbone: ``forward(video) = forward_head(backbone(video))``.

    Subclasses implement :meth:`forward_head`. Shapes: video ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``.
    """

    uses_frame_backbone = True

    def __init__(self, *, cfg: ModelConfig, backbone: FrameBackbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone

    @property
    def mean(self) -> tuple[float, float, float]:
        """RGB mean the input must be normalised with."""
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, float, float]:
        """RGB std the input must be normalised with."""
        return self.backbone.std

    @property
    def input_size(self) -> int:
        """The backbone's native square frame size."""
        return self.backbone.input_size

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` normalised video -> ``(B, num_classes)`` logits."""
        return self.forward_head(self.backbone(video))

    def forward_head(self, feats: torch.Tensor, return_maps: bool = False):  # noqa: ANN201 - see subclasses
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Per-epoch schedule hook (temperature annealing in DyMSTA-Net); no-op here."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (the frozen part of the backbone excluded)."""
        return [p for p in self.parameters() if p.requires_grad]
