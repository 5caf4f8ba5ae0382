"""Channels-last building blocks of the DyMSTA head.

The head's modules take and return the model layout ``(B, C, T, H, W)``, but compute on channels-last *tokens*
``(B, T, H, W, C)``: every convolution with a ``(k, 1, 1)`` kernel is then one matmul over contiguous memory
(bf16/AMX friendly on CPU, cuBLAS on GPU) and batch norm is a plain ``(N, C)`` normalisation. A
``(B, C, T, H, W)`` tensor in channels_last_3d memory format *is* a token tensor, so :func:`to_tokens` and
:func:`from_tokens` cost nothing between modules; only the head's input may need one copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["FrameBlock", "FrameLayer", "TemporalConv", "TokenBatchNorm", "to_tokens", "from_tokens", "temporal_columns"]


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B, T, H, W, C)`` contiguous (free for a channels_last_3d input)."""
    return rearrange(x, "b c t h w -> b t h w c").contiguous()


def from_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, T, H, W, C) -> (B, C, T, H, W)``, a channels_last_3d view (no copy)."""
    return rearrange(tokens, "b t h w c -> b c t h w")


def temporal_columns(tokens: torch.Tensor, kernel: int, padding: int = 0) -> torch.Tensor:
    """im2col over time: ``(B, T, H, W, C) -> (B, T', H, W, kernel*C)``, T' = T + 2*padding - kernel + 1.

    Column block i holds frame ``t + i - padding`` (zeros outside the clip): offset-major, channel-minor.
    """
    if kernel == 1 and padding == 0:
        return tokens
    if padding:
        tokens = F.pad(tokens, (0, 0, 0, 0, 0, 0, padding, padding))  # pad T only
    t_out = tokens.shape[1] - kernel + 1
    return torch.cat([tokens[:, i : i + t_out] for i in range(kernel)], dim=-1)


class TemporalConv(nn.Module):
    """A ``(k, 1, 1)`` 3D convolution on tokens (``nn.Conv3d`` parameters, channels-last compute).

    k = 1 is one matmul; k > 1 runs as a 2D convolution over (T, H*W) on a channels-last view of the tokens
    (no copy in or out; oneDNN's channels-last kernels, no explicit im2col).
    Shapes: ``(B, T, H, W, Cin) -> (B, T', H, W, Cout)``, T' = T + 2*padding - k + 1. Equal to
    ``F.conv3d(x, self.weight, self.bias, padding=(padding, 0, 0))`` on the ``(B, C, T, H, W)`` layout.

    Args:
        in_channels: Cin.
        out_channels: Cout.
        kernel: temporal kernel size k (1 = pointwise).
        padding: zero frames added at each end of the clip.
        bias: learn a bias.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 1, *, padding: int = 0, bias: bool = False
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel, self.padding = in_channels, out_channels, kernel, padding
        conv = nn.Conv3d(in_channels, out_channels, (kernel, 1, 1), bias=bias)  # for its default init
        self.weight = conv.weight  # (Cout, Cin, k, 1, 1)
        self.bias = conv.bias

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W, Cin) -> (B, T', H, W, Cout)``."""
        if self.kernel == 1 and self.padding == 0:
            return F.linear(tokens, self.weight.flatten(1), self.bias)
        b, t, h, w, c = tokens.shape
        x2d = rearrange(tokens.reshape(b, t, h * w, c), "b t p c -> b c t p")  # channels-last (B, C, T, HW) view
        y = F.conv2d(x2d, self.weight.flatten(3), self.bias, padding=(self.padding, 0))  # (B, Cout, T', HW)
        return rearrange(y, "b o t (h w) -> b t h w o", h=h).contiguous()  # free when y is channels-last

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel=({self.kernel}, 1, 1), padding={self.padding}"


class TokenBatchNorm(nn.BatchNorm1d):
    """Batch norm over the last (channel) axis of tokens ``(..., C)``: the statistics of ``nn.BatchNorm3d``.

    A training batch with a single value per channel (batch 1 on a 1x1 grid) cannot be normalised by its own
    statistics; it uses the running statistics instead of failing.
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., C) -> (..., C)``."""
        flat = tokens.reshape(-1, tokens.shape[-1])  # (N, C)
        if self.training and _world_size() > 1:
            return self._synced(flat).view(tokens.shape)
        if self.training and flat.shape[0] == 1:
            out = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        else:
            out = super().forward(flat)
        return out.view(tokens.shape)

    def _synced(self, flat: torch.Tensor) -> torch.Tensor:
        """Training under DistributedDataParallel: statistics over the *global* batch (all ranks), like
        ``nn.SyncBatchNorm`` but on any device (gloo on CPU included), so N processes train exactly like one.

        Shapes: ``(N, C) -> (N, C)``.
        """
        from torch.distributed.nn.functional import all_reduce  # autograd-aware: gradients flow through the sums

        x = flat.float()
        c = x.shape[1]
        count = torch.full((1,), float(x.shape[0]), device=x.device)
        stats = all_reduce(torch.cat([x.sum(0), (x * x).sum(0), count]))  # (2C + 1,) summed over ranks
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0.0)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (total / (total - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return out.to(flat.dtype)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ChannelStandardize(nn.Module):
    """``(x - mean) / std`` per channel, with a training set's statistics (``model.input_norm``).

    The statistics are buffers (saved, loaded and exported with the model), the identity until
    :meth:`set_statistics` is called. ``dim`` names the channel axis of the input: 1 for ``(B, C, T)`` or
    ``(B, C, T, h, w)``, -1 for tokens ``(..., C)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("inv_std", torch.ones(channels))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor, *, eps: float = 1e-3) -> None:
        """Fix the statistics: ``mean``, ``std`` ``(C,)``; stds below ``eps`` (dead channels) count as ``eps``."""
        with torch.no_grad():
            self.mean.copy_(mean)
            self.inv_std.copy_(1.0 / std.clamp_min(eps))

    def forward(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Same shape as ``x``, computed in ``x``'s dtype."""
        shape = [1] * x.ndim
        shape[dim] = -1
        return (x - self.mean.to(x.dtype).view(shape)) * self.inv_std.to(x.dtype).view(shape)


def fold_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv followed by an eval-mode batch norm as one conv: weight (the conv's shape) and bias ``(C_out,)``.

    Differentiable in the conv's and the norm's affine weights (the running statistics stay constants).
    """
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # (C_out,)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, *[1] * (conv.weight.ndim - 1)), bias


class FrameLayer(nn.Module):
    """A per-frame 1x1 conv + batch norm (+ the norm's activation) applied to video features: the backbone's last
    layer, run after the cache (``model.head_conv``).

    The norm stays in eval mode, training or not: the ImageNet statistics are kept and only the weights learn (when
    ``trainable``), so a batch's composition never changes what a clip's features are. An eval-mode norm is an
    affine map per channel, so the layer is one matmul over the channels-last tokens with the norm folded into its
    weight and bias, then the activation: 3-4x faster than ``Conv2d`` + ``BatchNorm2d`` on the small grids a cache
    holds, forward and backward (a test holds it equal to the two modules in a row, gradients included).

    Shapes: ``(B, C_in, T, h, w) -> (B, C_out, T, h, w)``, channels-last in and out.
    """

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d, *, trainable: bool) -> None:
        super().__init__()
        if (
            conv.kernel_size != (1, 1)
            or conv.stride != (1, 1)
            or conv.groups != 1
            or conv.padding not in ((0, 0), "valid")
        ):
            raise ValueError(f"FrameLayer: expected a plain 1x1 conv, got {conv}")
        if not isinstance(norm, nn.BatchNorm2d) or not norm.affine or not norm.track_running_stats:
            raise ValueError(f"FrameLayer: expected a batch norm with running statistics, got {type(norm).__name__}")
        self.layer = nn.Sequential(conv, norm)  # keys layer.0.* / layer.1.*, as nn.Sequential(conv, norm) saves them
        self.act = getattr(norm, "act", None) or nn.Identity()  # timm's BatchNormAct2d carries its activation
        for p in self.layer.parameters():
            p.requires_grad_(trainable)
        self.train(False)

    def train(self, mode: bool = True) -> FrameLayer:
        self.training = mode
        self.layer.eval()
        return self

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv with the norm folded in: weight ``(C_out, C_in)`` and bias ``(C_out,)`` (differentiable)."""
        weight, bias = fold_norm(*self.layer)
        return weight.flatten(1), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded()
        tokens = rearrange(x, "b c t h w -> b t h w c")  # a free view of channels-last input
        out = self.act(F.linear(tokens, weight.to(tokens.dtype), bias.to(tokens.dtype)))  # (B, T, h, w, C_out)
        return rearrange(out, "b t h w c -> b c t h w")  # channels-last_3d, no copy


class FrameBlock(nn.Module):
    """A per-frame inverted-residual block (timm's ``InvertedResidual``: 1x1 expand + norm + act, depthwise conv +
    norm + act, 1x1 project + norm, plus the input when the shapes allow) applied to video features: the backbone's
    last stage, run after the cache (``model.head_conv: stage``).

    As in :class:`FrameLayer`, the norms stay in eval mode and fold into the convolutions: expand and project are
    :class:`FrameLayer` matmuls over channels-last tokens, the depthwise conv one grouped ``conv2d`` over the
    ``B*T`` frames: forward + backward 1.67x faster than the block's own modules in bf16 and 1.19x in fp32 on the
    AMX Xeon (``benchmarks/bench_head_conv.py``). A test holds it equal to the block, gradients included.

    Shapes: ``(B, C_in, T, h, w) -> (B, C_out, T, h, w)``, channels-last in and out (the depthwise conv keeps
    ``h, w`` at stride 1).
    """

    def __init__(self, block: nn.Module, *, trainable: bool) -> None:
        super().__init__()
        parts = ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3")
        if not all(hasattr(block, name) for name in parts) or not all(
            isinstance(getattr(block, name, None), nn.Identity | None) for name in ("se", "aa")
        ):
            raise ValueError(f"FrameBlock: expected an inverted residual without squeeze-excite, got {type(block)}")
        dw = block.conv_dw
        if type(dw) is not nn.Conv2d or dw.groups != dw.in_channels or dw.stride != (1, 1):
            raise ValueError(f"FrameBlock: expected a plain stride-1 depthwise Conv2d, got {dw}")
        self.expand = FrameLayer(block.conv_pw, block.bn1, trainable=trainable)
        self.depthwise = nn.Sequential(dw, block.bn2)
        self.depthwise_act = getattr(block.bn2, "act", None) or nn.Identity()
        self.project = FrameLayer(block.conv_pwl, block.bn3, trainable=trainable)
        self.skip = bool(getattr(block, "has_skip", False))
        for p in self.depthwise.parameters():
            p.requires_grad_(trainable)
        self.train(False)

    def train(self, mode: bool = True) -> FrameBlock:
        self.training = mode
        self.expand.train(mode)
        self.project.train(mode)
        self.depthwise.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        hidden = self.expand(x)  # (B, C_mid, T, h, w) channels-last
        frames = rearrange(hidden, "b c t h w -> (b t) c h w")  # a channels-last view
        conv = self.depthwise[0]
        weight, bias = fold_norm(conv, self.depthwise[1])
        frames = F.conv2d(
            frames, weight.to(frames.dtype), bias.to(frames.dtype), 1, conv.padding, conv.dilation, conv.groups
        )
        hidden = rearrange(self.depthwise_act(frames), "(b t) c h w -> b c t h w", b=b)
        out = self.project(hidden)
        return out + x if self.skip else out
