"""Clip transforms: the same crop, resize and flip for every frame of a clip.

Geometric transforms work on *frames*: uint8 (or float) tensors in the decoder layout ``(T, H, W, C)``, resized as
uint8 (torch's anti-aliased bilinear has a fast uint8 channels-last path, ~10x cheaper than float). The one change
of layout, ``(T, H, W, C)`` uint8 -> ``(C, T, H, W)`` float, is :func:`clip_to_tensor`, which can normalise in the
same pass. A training pipeline is ``random_resized_crop -> hflip -> clip_to_tensor(mean, std)``; evaluation is
``resize_short_side -> center_crop -> clip_to_tensor(mean, std)``, done in one resize by :func:`resized_crop`
with the centre box mapped back onto the source frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from dymsta.data.sampling import CropBox, eval_crop_box, random_resized_crop_box

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "ResizeShortSide",
    "center_crop",
    "clip_to_tensor",
    "crop",
    "eval_source_box",
    "frames_to_input",
    "hflip",
    "normalize",
    "resize",
    "resize_short_side",
    "resized_crop",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Frames = torch.Tensor  # (T, H, W, C), uint8 or float


def _as_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4:
        raise ValueError(f"frames must be (T, H, W, C), got shape {tuple(x.shape)}")
    return x


def resize(frames: torch.Tensor | np.ndarray, height: int, width: int, *, antialias: bool = True) -> Frames:
    """Bilinear resize of every frame to (height, width).

    Args:
        frames: (T, H, W, C) uint8 or float.

    Returns:
        (T, height, width, C), same dtype.
    """
    x = _as_frames(frames)
    if x.shape[1:3] == (height, width):
        return x
    x = rearrange(x, "t h w c -> t c h w")  # a channels-last view: no copy, the fast uint8 path
    y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=antialias, align_corners=False)
    return rearrange(y, "t c h w -> t h w c")


def resize_short_side(frames: torch.Tensor | np.ndarray, size: int, *, antialias: bool = True) -> Frames:
    """Resize so the short side is ``size``, keeping the aspect ratio. (T, H, W, C) -> (T, H', W', C)."""
    x = _as_frames(frames)
    h, w = x.shape[1:3]
    scale = size / min(h, w)
    return resize(x, max(1, round(h * scale)), max(1, round(w * scale)), antialias=antialias)


def crop(frames: torch.Tensor | np.ndarray, box: CropBox) -> Frames:
    """The (top, left, height, width) region of every frame. (T, H, W, C) -> (T, h, w, C), a view."""
    x = _as_frames(frames)
    top, left, h, w = box
    if top < 0 or left < 0 or top + h > x.shape[1] or left + w > x.shape[2]:
        raise ValueError(f"crop box {box} outside frames of size {tuple(x.shape[1:3])}")
    return x[:, top : top + h, left : left + w]


def center_crop(frames: torch.Tensor | np.ndarray, size: int) -> Frames:
    """Centre ``size`` x ``size`` crop (the largest centred square if a side is shorter). A view."""
    x = _as_frames(frames)
    return crop(x, eval_crop_box(x.shape[1], x.shape[2], size))


def resized_crop(frames: torch.Tensor | np.ndarray, box: CropBox, size: int, *, antialias: bool = True) -> Frames:
    """Crop ``box`` then resize it to ``size`` x ``size``. (T, H, W, C) -> (T, size, size, C)."""
    return resize(crop(frames, box), size, size, antialias=antialias)


def hflip(frames: torch.Tensor | np.ndarray) -> Frames:
    """Mirror every frame left-right. (T, H, W, C) -> (T, H, W, C)."""
    return _as_frames(frames).flip(2)


def eval_source_box(height: int, width: int, *, size: int, resize: int, index: int = 0, crops: int = 1) -> CropBox:
    """Crop ``index`` of ``crops`` of the frame resized to short side ``resize``, mapped onto the source frame.

    ``resized_crop(frames, eval_source_box(...), size)`` equals ``resize_short_side(frames, resize)`` followed by
    the ``size`` crop, up to interpolation rounding, with one resize of the cropped region only.
    """
    scale = resize / min(height, width)
    rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left, h, w = eval_crop_box(rh, rw, size, index=index, crops=crops)
    top, left = round(top / scale), round(left / scale)
    h, w = min(max(1, round(h / scale)), height - top), min(max(1, round(w / scale)), width - left)
    return top, left, h, w


def clip_to_tensor(
    frames: torch.Tensor | np.ndarray,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """The one place where decoder frames become model input: uint8 (T, H, W, C) -> float32 (C, T, H, W).

    Args:
        frames: uint8 (T, H, W, C) RGB.
        mean, std: per-channel statistics (of [0, 1] images); when given, the output is normalised
            ``(x / 255 - mean) / std`` in the same pass.

    Returns:
        float32 (C, T, H, W), contiguous: in [0, 1], or normalised.
    """
    x = _as_frames(frames)
    if x.dtype != torch.uint8:
        raise TypeError(f"clip_to_tensor expects uint8 frames, got {x.dtype}")
    clip = rearrange(x, "t h w c -> c t h w").to(torch.float32, memory_format=torch.contiguous_format)
    if mean is None and std is None:
        return clip.mul_(1.0 / 255.0)
    if mean is None or std is None:
        raise ValueError("give both mean and std, or neither")
    m, s = _channel_stats(mean, std, clip.shape[0])
    return clip.mul_(1.0 / (255.0 * s)).sub_(m / s)


def frames_to_input(
    streams: dict[str, torch.Tensor], *, mean: Sequence[float], std: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Batched uint8 image streams ``(B, T, H, W, 3)`` -> normalised float ``(B, 3, T, H, W)``; others unchanged.

    What :func:`clip_to_tensor` does per clip, done on a whole batch after it crossed from the DataLoader workers
    as uint8 (a quarter of the bytes of float32). The result is a view of a channels-last ``(B, T, H, W, 3)``
    buffer: the frame backbone's channels-last layout, with no further copy.
    """
    out = {}
    for name, x in streams.items():
        if x.dtype != torch.uint8:
            out[name] = x
            continue
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"stream {name!r}: uint8 frames must be (B, T, H, W, 3), got shape {tuple(x.shape)}")
        m, s = _channel_stats(mean, std, 3)
        y = x.to(torch.float32).mul_(1.0 / (255.0 * s.view(3))).sub_(m.view(3) / s.view(3))  # (B, T, H, W, 3)
        out[name] = rearrange(y, "b t h w c -> b c t h w")
    return out


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(clip - mean) / std`` per channel. float (C, T, H, W) in [0, 1] -> float (C, T, H, W)."""
    m, s = _channel_stats(mean, std, clip.shape[0])
    return (clip - m) / s


def _channel_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1, 1)  # (C, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1, 1)
    if m.shape[0] != channels or s.shape[0] != channels:
        raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be > 0, got {list(std)}")
    return m, s


# ---------------------------------------------------------------------------------------- composable classes


class ResizeShortSide:
    """Resize frames (T, H, W, C) so the short side is ``size``."""

    def __init__(self, *, size: int) -> None:
        self.size = size

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return resize_short_side(frames, self.size)


class CenterCrop:
    """Centre ``size`` x ``size`` crop of frames (T, H, W, C)."""

    def __init__(self, *, size: int) -> None:
        self.size = size

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return center_crop(frames, self.size)


class RandomResizedCrop:
    """One random box (area share ``scale``, aspect ``ratio``) for the whole clip, resized to ``size``.

    Draws come from torch's global RNG (reproducible under ``torch.manual_seed`` and DataLoader worker seeding).
    """

    def __init__(
        self, *, size: int, scale: tuple[float, float] = (0.4, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
    ) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = _as_frames(frames)
        box = random_resized_crop_box(x.shape[1], x.shape[2], scale=self.scale, ratio=self.ratio)
        return resized_crop(x, box, self.size)


class RandomHorizontalFlip:
    """Mirror the whole clip with probability ``p`` (torch's global RNG)."""

    def __init__(self, *, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return hflip(frames) if float(torch.rand(())) < self.p else _as_frames(frames)


class Normalize:
    """uint8 frames (T, H, W, C) -> normalised float clip (C, T, H, W) (via :func:`clip_to_tensor`)."""

    def __init__(self, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return clip_to_tensor(frames, mean=self.mean, std=self.std)


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, *, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x
