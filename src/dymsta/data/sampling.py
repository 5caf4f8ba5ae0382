"""Where to look in a video: which frames (TSN segments) and which crop box. Pure functions on numbers.

Temporal sampling (Wang et al., TSN): the video's ``N`` frames are cut into ``T`` equal segments and one frame is
taken from each -- a uniformly random one for training, the one at ``offset`` (0.5 = the centre) for evaluation.
Frame ``i`` of the clip is ``floor((i + u_i) * N / T)`` with ``u_i`` in [0, 1), so the clip always spans the whole
video and every frame can be drawn in training. A video shorter than ``T`` frames (``N < T``) is stretched: its
frames repeat in order (each about ``T / N`` times), never padded with black or looped.

Multi-clip testing uses ``C`` temporal clips with offsets ``(c + 0.5) / C``; multi-crop testing uses the crop
positions of :func:`eval_crop_box`. Randomness comes from a ``numpy.random.Generator`` when one is given, else from
torch's global RNG, so training draws follow ``torch.manual_seed`` and DataLoader worker seeding.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

__all__ = [
    "CropBox",
    "clip_offset",
    "eval_crop_box",
    "random_resized_crop_box",
    "segment_indices",
    "stable_seed",
]

# (top, left, height, width) of a crop in pixel coordinates of the frame it applies to.
CropBox = tuple[int, int, int, int]
EVAL_CROPS = (1, 3, 5)


def _uniform(rng: np.random.Generator | None, n: int) -> np.ndarray:
    """``n`` floats in [0, 1) from ``rng``, or from torch's global RNG when ``rng`` is None."""
    if rng is None:
        return torch.rand(n, dtype=torch.float64).numpy()
    return rng.random(n)


def segment_indices(
    num_frames: int,
    num_segments: int,
    *,
    mode: str = "eval",
    rng: np.random.Generator | None = None,
    offset: float = 0.5,
) -> np.ndarray:
    """TSN frame indices: one frame from each of ``num_segments`` equal segments of the video.

    Args:
        num_frames: frames in the video (N >= 1).
        num_segments: frames in the clip (T >= 1).
        mode: ``"train"`` (a random frame per segment) or ``"eval"`` (the frame at ``offset`` in each segment).
        rng: source of the training draws; None = torch's global RNG.
        offset: position inside each segment in eval mode, in [0, 1]; 0.5 = segment centres.

    Returns:
        int64 array (T,), non-decreasing, values in [0, N).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if mode == "train":
        u = _uniform(rng, num_segments)
    elif mode == "eval":
        if not 0.0 <= offset <= 1.0:
            raise ValueError(f"offset must be in [0, 1], got {offset}")
        u = np.full(num_segments, float(offset))
    else:
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    positions = (np.arange(num_segments) + u) * (num_frames / num_segments)
    return np.minimum(np.floor(positions).astype(np.int64), num_frames - 1)


def clip_offset(clip: int, num_clips: int) -> float:
    """Offset inside each segment of temporal clip ``clip`` of ``num_clips`` (evenly spread, centred)."""
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
    return (clip + 0.5) / num_clips


def eval_crop_box(height: int, width: int, size: int, *, index: int = 0, crops: int = 1) -> CropBox:
    """Crop ``index`` of ``crops`` square ``size`` crops of a (height, width) frame.

    ``crops`` = 1: centre. 3: centre, then the two ends of the long side (left/right or top/bottom).
    5: centre, top-left, top-right, bottom-left, bottom-right. A frame smaller than ``size`` gives the largest
    square that fits (the caller resizes it).
    """
    if crops not in EVAL_CROPS:
        raise ValueError(f"crops must be one of {EVAL_CROPS}, got {crops}")
    if not 0 <= index < crops:
        raise ValueError(f"crop index must be in [0, {crops}), got {index}")
    s = min(size, height, width)
    cy, cx = (height - s) // 2, (width - s) // 2
    if index == 0:
        return cy, cx, s, s
    if crops == 3:
        if height > width:  # portrait: top and bottom
            return (0, cx, s, s) if index == 1 else (height - s, cx, s, s)
        return (cy, 0, s, s) if index == 1 else (cy, width - s, s, s)
    top, left = [(0, 0), (0, width - s), (height - s, 0), (height - s, width - s)][index - 1]
    return top, left, s, s


def random_resized_crop_box(
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator | None = None,
    attempts: int = 10,
) -> CropBox:
    """A random crop box covering ``scale`` of the frame's area with aspect ratio (w/h) in ``ratio``.

    torchvision's ``RandomResizedCrop`` rule (log-uniform ratio, ``attempts`` tries, then a centre crop with the
    ratio clamped), with draws from ``rng`` or torch's global RNG.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        u = _uniform(rng, 4)
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from ``parts`` that is the same on every machine and Python run (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")
