"""Module 1 of DyMSTA-Net: dynamic 3D convolution, a kernel per sample computed from the sample itself.

Two modes (DESIGN.md section 1):

* ``mixture`` (Chen et al., CVPR 2020, the paper's ref [1]): K kernels W_k and biases b_k; attention
  ``pi(x) = softmax(FC(ReLU(FC(mean_{T,H,W} x))) / tau)``; the sample's kernel is ``sum_k pi_k W_k`` (bias likewise).
  ``tau`` starts high (near-uniform pi, every kernel trains) and is annealed to 1 by :meth:`set_temperature`.
* ``modulate`` (the paper's literal text): one base kernel K; ``W_dynamic = 2 * sigmoid(FC(ReLU(FC(mean x))))``
  per output channel multiplies K: ``K_dynamic[b, o] = W_dynamic[b, o] * K[o]``. Since a per-output-channel
  scale of the kernel is a scale of the convolution's output, the fast path is ``conv(x, K) * W_dynamic + bias``.

Fast paths (``impl``), all equal to :meth:`DynamicConv3d.forward_reference`, the naive per-sample loop:

* ``"bmm"`` (default): im2col in channels-last layout, ``(B, T*H*W, k*Cin)``, times each sample's kernel in one
  batched matmul. FLOPs of a single conv, matmul kernels that are fast in bf16 (AMX), any batch size in ONNX.
  The columns hold ``kt*kh*kw`` copies of the input: cheap for temporal kernels ``(k, 1, 1)``.
* ``"grouped"``: the per-sample kernels as one grouped convolution over ``(1, B*Cin, T, H, W)`` with groups = B.
  Not exportable with a dynamic batch (ONNX needs a static group count).
* ``"expand"``: one dense convolution with all K kernels, ``(B, K*Cout, ...)``, then the pi-weighted sum: K times
  the FLOPs of one conv.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["DynamicConv3d"]

MODES = ("mixture", "modulate")
IMPLS = ("bmm", "grouped", "expand")


def _triple(k: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (k, k, k) if isinstance(k, int) else tuple(k)


class DynamicConv3d(nn.Module):
    """A 3D convolution whose kernel depends on the input sample; stride 1, 'same' padding.

    Shapes: ``(B, Cin, T, H, W) -> (B, Cout, T, H, W)``.

    Args:
        in_channels: Cin.
        out_channels: Cout.
        kernel_size: odd ``(kt, kh, kw)`` or one int.
        mode: ``"mixture"`` or ``"modulate"`` (see module docstring).
        num_kernels: K (mixture mode only).
        temperature: initial softmax temperature tau (mixture mode only); change with :meth:`set_temperature`.
        reduction: hidden width of the attention MLP is ``max(Cin // reduction, 4)``.
        bias: add a (dynamic, in mixture mode) bias.
        impl: ``"bmm"``, ``"grouped"`` or ``"expand"`` fast path (mixture mode; modulate mode has one path).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        mode: str = "mixture",
        num_kernels: int = 4,
        temperature: float = 30.0,
        reduction: int = 4,
        bias: bool = True,
        impl: str = "bmm",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"DynamicConv3d: mode must be one of {MODES}, got {mode!r}")
        if impl not in IMPLS:
            raise ValueError(f"DynamicConv3d: impl must be one of {IMPLS}, got {impl!r}")
        self.kernel_size = _triple(kernel_size)
        if any(k % 2 == 0 or k < 1 for k in self.kernel_size):
            raise ValueError(f"DynamicConv3d: kernel sizes must be odd and positive, got {self.kernel_size}")
        self.in_channels, self.out_channels, self.mode, self.impl = in_channels, out_channels, mode, impl
        self.num_kernels = num_kernels if mode == "mixture" else 1
        self.padding = tuple(k // 2 for k in self.kernel_size)
        k = self.num_kernels
        shape = (out_channels, in_channels, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(k, *shape) if mode == "mixture" else torch.empty(shape))
        self.bias = (
            nn.Parameter(torch.zeros(k, out_channels) if mode == "mixture" else torch.zeros(out_channels))
            if bias
            else None
        )
        hidden = max(in_channels // reduction, 4)
        routing_out = k if mode == "mixture" else out_channels
        self.router = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, routing_out)
        )
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each kernel like ``nn.Conv3d`` (Kaiming uniform); the modulate gate starts at ~1."""
        kernels = self.weight if self.mode == "mixture" else self.weight[None]
        fan_in = self.in_channels * math.prod(self.kernel_size)
        for w in kernels:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.mode == "modulate":  # near-zero logits -> 2 * sigmoid(~0) ~ 1: starts as the plain conv
            nn.init.normal_(self.router[-1].weight, std=1e-3)  # not exactly 0, so the first layer gets gradients
            nn.init.zeros_(self.router[-1].bias)

    def set_temperature(self, tau: float) -> None:
        """Set the mixture softmax temperature (stored in the state dict, so a saved model keeps its value)."""
        self.temperature.fill_(float(tau))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={self.mode}, "
            f"num_kernels={self.num_kernels}, impl={self.impl}"
        )

    # -------------------------------------------------------------- dynamic weights

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample dynamic weights from the global mean of ``x`` (B, Cin, T, H, W).

        Returns:
            mixture: pi, ``(B, K)``, rows sum to 1. modulate: W_dynamic, ``(B, Cout)`` in (0, 2).
        """
        pooled = rearrange(x, "b c t h w -> b (t h w) c").mean(dim=1)  # (B, Cin); a view for channels-last x
        logits = self.router(pooled)  # (B, K) or (B, Cout)
        if self.mode == "mixture":
            wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # softmax in >= fp32 under autocast
            return torch.softmax(wide / self.temperature, dim=1).to(logits.dtype)
        return 2.0 * torch.sigmoid(logits)

    def sample_kernels(self, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Explicit per-sample kernels ``(B, Cout, Cin, kt, kh, kw)`` and biases ``(B, Cout)`` from :meth:`routing`."""
        if self.mode == "mixture":
            weight = torch.einsum("bk,koitsr->boitsr", attn, self.weight.to(attn.dtype))
            bias = attn @ self.bias.to(attn.dtype) if self.bias is not None else None
            return weight, bias
        weight = attn[:, :, None, None, None, None] * self.weight.to(attn.dtype)  # scale output channel o of K
        bias = self.bias[None].expand(attn.shape[0], -1) if self.bias is not None else None
        return weight, bias

    # -------------------------------------------------------------- forward paths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, T, H, W) -> (B, Cout, T, H, W)`` with a kernel per sample (output in channels_last_3d)."""
        attn = self.routing(x)
        if self.mode == "modulate":
            y = self._dense_conv(x)  # (B, T, H, W, Cout) = conv(x, K), channels-last
            y = y * attn[:, None, None, None, :].to(y.dtype)  # per-sample, per-output-channel kernel scale
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
            return rearrange(y, "b t h w o -> b o t h w")
        if self.impl == "grouped":
            return self._grouped(x, attn)
        if self.impl == "expand":
            return self._expand(x, attn)
        return self._bmm(x, attn)

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """im2col in channels-last layout: ``(B, C, T, H, W) -> (B, T, H, W, kt*kh*kw*C)`` ('same' padding)."""
        tokens = rearrange(x, "b c t h w -> b t h w c")
        if self.kernel_size == (1, 1, 1):
            return tokens
        pt, ph, pw = self.padding
        padded = F.pad(tokens, (0, 0, pw, pw, ph, ph, pt, pt))  # pads W, H, T; not C
        t, h, w = x.shape[2:]
        kt, kh, kw = self.kernel_size
        shifted = [padded[:, i : i + t, j : j + h, k : k + w] for i in range(kt) for j in range(kh) for k in range(kw)]
        return torch.cat(shifted, dim=-1)  # offset-major, channel-minor

    def _dense_conv(self, x: torch.Tensor) -> torch.Tensor:
        """``conv(x, K)`` of the single base kernel, as tokens ``(B, T, H, W, Cout)``."""
        kt, kh, kw = self.kernel_size
        if kh == 1 and kw == 1:  # temporal kernel: channels-last 2D conv over (T, H*W), no im2col
            b, _, t, h, w = x.shape
            x2d = rearrange(x, "b c t h w -> b t (h w) c").contiguous()
            y = F.conv2d(rearrange(x2d, "b t p c -> b c t p"), self.weight.flatten(3), padding=(self.padding[0], 0))
            return rearrange(y, "b o t (h w) -> b t h w o", h=h).contiguous()
        return rearrange(F.conv3d(x, self.weight, padding=self.padding), "b o t h w -> b t h w o")

    @staticmethod
    def _flat(weight: torch.Tensor) -> torch.Tensor:
        """``(..., Cout, Cin, kt, kh, kw) -> (..., Cout, kt*kh*kw*Cin)``, the column order of :meth:`_columns`."""
        return rearrange(weight, "... o i t s r -> ... o (t s r i)")

    def _bmm(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        cols = self._columns(x).reshape(b, t * h * w, -1)  # (B, THW, k*Cin)
        weight = torch.einsum("bk,kof->bfo", attn, self._flat(self.weight).to(attn.dtype))  # (B, k*Cin, Cout)
        if self.bias is not None:
            y = torch.baddbmm((attn @ self.bias.to(attn.dtype))[:, None, :], cols, weight)  # (B, THW, Cout)
        else:
            y = torch.bmm(cols, weight)
        return rearrange(y, "b (t h w) o -> b o t h w", t=t, h=h, w=w)

    def _grouped(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight, bias = self.sample_kernels(attn)
        weight = rearrange(weight, "b o i t s r -> (b o) i t s r")
        xg = rearrange(x, "b c t h w -> 1 (b c) t h w")
        y = F.conv3d(xg, weight, None if bias is None else bias.reshape(-1), padding=self.padding, groups=b)
        return rearrange(y, "1 (b o) t h w -> b o t h w", b=b)

    def _expand(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        k = self.num_kernels
        y = F.conv3d(x, self.weight.flatten(0, 1), None, padding=self.padding)  # (B, K*Cout, T, H, W)
        y = rearrange(y, "b (k o) t h w -> b k o t h w", k=k)
        out = torch.einsum("bk,bkothw->bothw", attn.to(y.dtype), y)
        if self.bias is not None:
            out = out + (attn @ self.bias.to(attn.dtype)).to(out.dtype)[:, :, None, None, None]
        return out

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Naive reference: build each sample's kernel explicitly and convolve the samples one by one."""
        weight, bias = self.sample_kernels(self.routing(x))
        outs = [
            F.conv3d(x[i : i + 1], weight[i], None if bias is None else bias[i], padding=self.padding)
            for i in range(x.shape[0])
        ]
        return torch.cat(outs, dim=0)
