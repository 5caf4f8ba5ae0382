"""What every model from :func:`dymsta.models.build_model` shares: config, preprocessing, streams, training hooks.

Input streams (``cfg.streams``, DESIGN.md section 6): a model takes a dict ``{stream: tensor}`` (or, for an
RGB-only model, the RGB tensor alone). Image streams -- ``rgb``, ``rgbdiff`` and ``mv`` encoded as an image --
are ``(B, 3, T, H, W)`` normalised frames and go through the frozen backbone together, in one batch; an ``mv``
stream encoded as a histogram is already ``(B, hist_channels, T, h, w)`` on the backbone's feature grid.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dymsta.models.backbone import FrameBackbone, pool_grid
from dymsta.models.config import ModelConfig, ModelInputError
from dymsta.models.layers import ChannelStandardize, FrameBlock, FrameLayer

__all__ = ["FrameModel", "Streams", "as_streams", "feature_input"]

Streams = dict[str, torch.Tensor]


def as_streams(inputs: torch.Tensor | Streams) -> Streams:
    """A bare tensor is the RGB stream: ``x -> {"rgb": x}``; a dict is returned as it is."""
    return inputs if isinstance(inputs, dict) else {"rgb": inputs}


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
    """Base of the models built on a per-frame 2D backbone: ``forward(inputs) = forward_head(extract(inputs))``.

    Subclasses implement :meth:`forward_head`. Shapes: ``{stream: (B, C, T, H, W)}`` (see the module docstring) ->
    logits ``(B, num_classes)``.
    """

    uses_frame_backbone = True

    def __init__(self, *, cfg: ModelConfig, backbone: FrameBackbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.streams = tuple(cfg.streams)
        self.image_streams = tuple(s for s in self.streams if not (s == "mv" and cfg.hist_channels))
        self.input_norm = (
            nn.ModuleDict({s: ChannelStandardize(c) for s, c in self.stream_channels().items()})
            if cfg.input_norm
            else None
        )
        self.head_layers = self.head_stages = None
        if cfg.head_conv != "backbone":  # the backbone's last layer runs after pooling, one copy per image stream
            layer = backbone.detach_head_layer()
            trainable = cfg.head_conv != "frozen"
            self.head_layers = nn.ModuleDict(
                {s: FrameLayer(*copy.deepcopy(layer), trainable=trainable) for s in self.image_streams}
            )
        if cfg.head_conv == "stage":  # and the last stage before it, on the whole grid
            stage = backbone.detach_last_stage()
            self.head_stages = nn.ModuleDict(
                {
                    s: nn.Sequential(*(FrameBlock(b, trainable=True) for b in copy.deepcopy(stage)))
                    for s in self.image_streams
                }
            )

    @property
    def head_grid(self) -> int:
        """The grid the head reads its features at (:func:`pool_grid` size; 0 = as computed)."""
        return 0

    @property
    def read_grid(self) -> int:
        """How far :meth:`extract`'s features may be pooled before they reach :meth:`forward_head` without changing
        it, so a cache may store them so (``cache.grid: auto``): :attr:`head_grid`, or with ``model.head_conv``
        set the grid the backbone's last layer runs on (``model.head_conv_grid``); the whole grid with
        ``model.head_conv: stage`` (the stage's depthwise conv reads neighbouring cells)."""
        if self.head_stages is not None:
            return 0
        return self.head_grid if self.head_layers is None else self.cfg.head_conv_grid

    def lift(self, feats: Streams) -> Streams:
        """Features as :meth:`extract` (or a cache) gives them -> what the head reads: with ``model.head_conv`` set,
        each image stream pooled to ``model.head_conv_grid`` and through its copy of the backbone's last layer
        (with ``model.head_conv: stage``, through its copy of the last stage first, on the whole grid); else as is.

        Shapes: ``{s: (B, trunk_channels, T, h, w)} -> {s: (B, C_s, T, h', w')}``; other streams unchanged.
        """
        if self.head_layers is None:
            return feats
        out = dict(feats)
        for name, layer in self.head_layers.items():
            if name in feats:
                x = feature_input(pool_grid(feats[name], self.read_grid), next(layer.parameters()), channels_last=True)
                if self.head_stages is not None:
                    x = pool_grid(self.head_stages[name](x), self.cfg.head_conv_grid)
                out[name] = layer(x)
        return out

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that start from ImageNet weights (``optim.backbone_lr_scale`` applies)."""
        layers = [
            *(self.head_layers or nn.ModuleDict()).parameters(),
            *(self.head_stages or nn.ModuleDict()).parameters(),
        ]
        return [p for p in [*self.backbone.parameters(), *layers] if p.requires_grad]

    def standardize(self, stream: str, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """``x`` with the stream's channels standardised (``model.input_norm``), else ``x`` unchanged."""
        return x if self.input_norm is None else self.input_norm[stream](x, dim)

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

    def stream_channels(self) -> dict[str, int]:
        """Channels of each stream's features: the backbone's for image streams, ``hist_channels`` otherwise."""
        return {
            s: self.backbone.out_channels if s in self.image_streams else self.cfg.hist_channels for s in self.streams
        }

    def check_streams(self, streams: Streams) -> Streams:
        """The model's streams from ``streams``, in order; a one-line :class:`ModelInputError` when one is missing."""
        missing = [s for s in self.streams if s not in streams]
        if missing:
            raise ModelInputError(
                f"{type(self).__name__}: expected streams {list(self.streams)}, got {sorted(streams)} "
                f"(missing {missing[0]!r})"
            )
        return {s: streams[s] for s in self.streams}

    def extract(self, inputs: torch.Tensor | Streams, *, partial: bool = False) -> Streams:
        """Per-stream features: the image streams through the backbone in one batch, histograms unchanged (with
        ``model.head_conv`` set, the backbone's activations before its last layer: :meth:`lift` applies it).

        ``partial=True`` accepts any subset of the model's streams (the feature cache adds streams one at a time).
        Shapes: ``{stream: (B, 3, T, H, W) | (B, hist_channels, T, h, w)} -> {stream: (B, C_s, T, h, w)}``.
        """
        streams = as_streams(inputs)
        streams = {s: streams[s] for s in self.streams if s in streams} if partial else self.check_streams(streams)
        out = dict(streams)
        names = [s for s in self.image_streams if s in streams]
        if names:
            images = [streams[s] for s in names]
            feats = self.backbone(torch.cat(images) if len(images) > 1 else images[0])  # (n*B, Cb, T, h, w)
            b = images[0].shape[0]
            out.update({s: feats[i * b : (i + 1) * b] if len(names) > 1 else feats for i, s in enumerate(names)})
        return out

    def forward(self, inputs: torch.Tensor | Streams) -> torch.Tensor:
        """Streams (or the RGB tensor) -> ``(B, num_classes)`` logits."""
        return self.forward_head(self.extract(inputs))

    def head_streams(self, feats: torch.Tensor | Streams) -> Streams:
        """What every ``forward_head`` starts with: the model's streams of ``feats``, in order, lifted."""
        return self.lift(self.check_streams(as_streams(feats)))

    def forward_head(self, feats: torch.Tensor | Streams, return_maps: bool = False):  # noqa: ANN201 - see subclasses
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Per-epoch schedule hook (temperature annealing in DyMSTA-Net); no-op here."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (the frozen part of the backbone excluded)."""
        return [p for p in self.parameters() if p.requires_grad]
