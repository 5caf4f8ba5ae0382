"""Baselines on the same interface as DyMSTA-Net: TSN frame averaging, a linear probe, R(2+1)D-18 and R3D-18."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from dymsta.models.backbone import BackboneWeightsError, load_weights_file
from dymsta.models.base import FrameModel, Streams, as_streams, feature_input
from dymsta.models.config import ModelConfig

__all__ = ["TSN", "LinearProbe", "VideoResNet", "KINETICS_MEAN", "KINETICS_STD"]

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models were trained with these
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def spatial_means(model: FrameModel, feats: torch.Tensor | Streams, like: torch.Tensor) -> torch.Tensor:
    """Every stream's features averaged over space, concatenated over channels: ``{s: (B, C_s, T, h, w)} ->
    (B, sum C_s, T)`` (the same streams as DyMSTA-Net, so comparisons are fair), each standardised when
    ``model.input_norm`` is set (an affine map per channel: the same before or after the mean)."""
    streams = model.head_streams(feats)
    means = [model.standardize(s, feature_input(f, like).mean(dim=(3, 4))) for s, f in streams.items()]
    return torch.cat(means, dim=1)


class TSN(FrameModel):
    """Temporal Segment Network consensus: a classifier on every frame, logits averaged over frames.

    Shapes: features ``{s: (B, C_s, T, h, w)}`` -> spatial means, concatenated ``(B, C, T)`` -> dropout -> Linear
    per frame ``(B, T, N)`` -> mean over T -> ``(B, N)``.
    """

    def __init__(self, *, cfg: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(cfg=cfg, backbone=backbone)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(sum(self.stream_channels().values()), cfg.num_classes)

    @property
    def head_grid(self) -> int:
        return 1  # the frame mean

    def forward_head(self, feats: torch.Tensor | Streams, return_maps: bool = False):  # noqa: ANN201
        """``{s: (B, C_s, T, h, w)} -> (B, N)`` (``(logits, {})`` with ``return_maps``)."""
        x = spatial_means(self, feats, self.classifier.weight)  # (B, C, T)
        frame_logits = self.classifier(self.dropout(rearrange(x, "b c t -> b t c")))  # (B, T, N)
        logits = frame_logits.mean(dim=1)
        return (logits, {}) if return_maps else logits


class LinearProbe(FrameModel):
    """A linear classifier on time- and space-averaged frozen features, streams concatenated:
    ``{s: (B, C_s, T, h, w)} -> (B, N)``."""

    def __init__(self, *, cfg: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(cfg=cfg, backbone=backbone)
        self.classifier = nn.Linear(sum(self.stream_channels().values()), cfg.num_classes)

    @property
    def head_grid(self) -> int:
        return 1  # the frame mean

    def forward_head(self, feats: torch.Tensor | Streams, return_maps: bool = False):  # noqa: ANN201
        """``{s: (B, C_s, T, h, w)} -> (B, N)`` (``(logits, {})`` with ``return_maps``)."""
        x = spatial_means(self, feats, self.classifier.weight)  # (B, C, T)
        logits = self.classifier(x.mean(dim=2))  # (B, C) -> (B, N)
        return (logits, {}) if return_maps else logits


class VideoResNet(nn.Module):
    """torchvision's R(2+1)D-18 / R3D-18 on raw clips: ``(B, 3, T, H, W) -> (B, N)`` (native 16x112x112).

    ``cfg.pretrained`` loads the Kinetics-400 weights (a download: offline it raises :class:`BackboneWeightsError`;
    use ``pretrained=false`` for random init, or ``backbone_weights=PATH`` for a local copy of the weights).
    """

    uses_frame_backbone = False
    backbone = None
    mean = KINETICS_MEAN
    std = KINETICS_STD
    input_size = 112

    def __init__(self, *, cfg: ModelConfig) -> None:
        super().__init__()
        from torchvision.models import video

        self.cfg = cfg
        builder = getattr(video, cfg.arch)
        self.net = builder(weights=None)
        if cfg.pretrained:
            self._load_pretrained(video)
        self.net.fc = nn.Linear(self.net.fc.in_features, cfg.num_classes)

    def _load_pretrained(self, video: object) -> None:
        cfg = self.cfg
        if cfg.backbone_weights:
            sd = {k.removeprefix("net."): v for k, v in load_weights_file(cfg.backbone_weights).items()}
            sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
            missing, unexpected = self.net.load_state_dict(sd, strict=False)
            if unexpected or [k for k in missing if not k.startswith("fc.")]:
                raise BackboneWeightsError(f"backbone weights {cfg.backbone_weights} do not fit {cfg.arch}")
            return
        weights = {"r2plus1d_18": video.R2Plus1D_18_Weights, "r3d_18": video.R3D_18_Weights}[cfg.arch].KINETICS400_V1
        try:
            self.net.load_state_dict(weights.get_state_dict(progress=False))
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            reason = f"{type(e).__name__}: {e}".split("\n")[0][:200]
            raise BackboneWeightsError(
                f"Kinetics-400 weights {weights} for {cfg.arch} could not be fetched ({reason}); pass "
                "model.backbone_weights=PATH (a safetensors or torch weights_only file), or set model.pretrained=false "
                "for random init"
            ) from None

    def forward(self, video: torch.Tensor | Streams) -> torch.Tensor:
        """``(B, 3, T, H, W)`` normalised with Kinetics mean/std (or the pipeline's ``{"rgb": clip}``) -> ``(B, N)``
        logits."""
        return self.net(as_streams(video)["rgb"])

    def forward_head(self, feats: torch.Tensor, return_maps: bool = False):  # noqa: ANN201
        raise NotImplementedError(f"{self.cfg.arch} has no frame backbone: call the model on the video instead")

    def set_epoch(self, epoch: int) -> None:
        """No schedule: no-op."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """All parameters (trained end to end)."""
        return [p for p in self.parameters() if p.requires_grad]

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """None: the whole network trains end to end at the base rate (``optim.backbone_lr_scale`` is for the frame
        backbones' layers)."""
        return []
