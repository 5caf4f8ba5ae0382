"""Motion streams from one decode: RGB differences, codec motion vectors, and an optical-flow fallback.

Frozen ImageNet features carry appearance only; these streams carry motion (DESIGN.md section 6). Each is an image
per sampled frame that goes through the same crop, flip and normalisation as the RGB frame, and then through the
same frozen backbone:

- ``rgbdiff`` (TSN's RGB difference), from frame ``t`` and the frames after it, before any crop:
  ``signed``: ``128 + scale/2 * (f[t+1] - f[t])``; ``abs``: ``scale * |f[t+1] - f[t]|``; ``gray3``: the signed grey
  differences ``t->t+1``, ``t+1->t+2``, ``t+2->t+3`` as the three channels (direction of change over 4 frames).
- ``mv``: the motion vectors the codec stored (MPEG-4 Part 2, H.264, MPEG-1/2, H.263: FFmpeg exports them with
  ``flags2=+export_mvs`` while decoding, at almost no cost), rasterised per frame into a forward-flow field of
  ``cell x cell`` pixel blocks (:func:`rasterize_vectors`), cropped, resized and flipped like the frames (a
  horizontal flip mirrors the field and negates dx: :func:`crop_flow`), then encoded either as an ``image``
  ``(128 + scale * dx, 128 + scale * dy, 2 * scale * |d|)`` in pixels per frame of a 224-pixel crop
  (:func:`flow_image`), or as a ``hist`` (magnitude-weighted orientation histogram with ``bins`` bins plus the
  moving-area share, on the backbone's feature grid: :func:`flow_histogram`). The per-frame camera motion (the
  median vector) is subtracted first.
- Streams whose codec exports no vectors (VP8/VP9, AV1, HEVC, lossless codecs) get the same field from OpenCV's DIS
  optical flow between the frame and the next one (:func:`dis_flow`), or zeros with a counted warning when
  ``mv_fallback="zeros"`` or OpenCV is missing.

Layouts: frames uint8 ``(T, H, W, 3)``; flow fields float32 ``(2, h, w)`` (dx, dy) in pixels per frame, forward in
time (where a block's content moves to in the next frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dymsta.data.sampling import CropBox

__all__ = [
    "MODALITIES",
    "MOTION_VECTOR_CODECS",
    "MotionSettings",
    "check_modalities",
    "crop_flow",
    "dis_flow",
    "flow_histogram",
    "flow_image",
    "rasterize_vectors",
    "rasterize_frames",
    "rgb_difference",
    "rotate_flow",
    "stream_settings",
]

MODALITIES = ("rgb", "rgbdiff", "mv")
IMAGE_MODALITIES = ("rgb", "rgbdiff", "mv")  # streams that are images for the backbone (mv unless encoded as hist)
RGBDIFF_MODES = ("signed", "abs", "gray3")
MV_ENCODINGS = ("image", "hist")
MV_FALLBACKS = ("flow", "zeros")
MV_SOURCES = ("codec", "flow")
MV_IMAGES = ("magnitude", "curl")
# FFmpeg decoders that export motion vectors (libavcodec's mpegvideo family and H.264).
MOTION_VECTOR_CODECS = frozenset(
    {"mpeg4", "h264", "mpeg1video", "mpeg2video", "h263", "h263p", "h261", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3"}
    | {"wmv1", "wmv2", "flv", "flv1", "mpegvideo"}
)
MOTION_VERSION = "v1"  # bump when a stream's computation changes (invalidates cached streams)
REFERENCE_CROP = 224  # motion magnitudes are pixels per frame of a 224-pixel crop, whatever the model's size
MOVING_THRESHOLD = 0.5  # pixels per frame (of the reference crop) above which a cell counts as moving


@dataclass(frozen=True)
class MotionSettings:
    """How the motion streams are made (``data.motion.*``); every field is part of the feature-cache key.

    Attributes:
        rgbdiff: ``signed`` | ``abs`` | ``gray3`` (see the module docstring).
        rgbdiff_scale: gain on the frame difference before it is clipped to 0-255.
        mv_encoding: ``image`` (through the backbone) | ``hist`` (orientation histogram on the feature grid).
        mv_scale: gain of the ``image`` encoding (pixels per frame of a 224-pixel crop).
        mv_window: frames whose vectors are averaged around each sampled frame (0 = the whole TSN segment).
        mv_bins: orientation bins of the ``hist`` encoding.
        mv_fallback: ``flow`` (OpenCV DIS optical flow) | ``zeros``, for codecs that export no vectors.
        mv_source: ``codec`` (the vectors, else the fallback) | ``flow`` (DIS optical flow for every file, from
            each sampled frame to the next; ``mv_window`` is then unused).
        mv_image: third channel of the ``image`` encoding: ``magnitude`` | ``curl`` (:func:`flow_image`).
    """

    rgbdiff: str = "signed"
    rgbdiff_scale: float = 4.0
    mv_encoding: str = "image"
    mv_scale: float = 8.0
    mv_window: int = 1
    mv_bins: int = 8
    mv_fallback: str = "flow"
    mv_source: str = "codec"
    mv_image: str = "magnitude"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``data.motion.*`` key of a bad value."""
        for key, value, choices in (
            ("rgbdiff", self.rgbdiff, RGBDIFF_MODES),
            ("mv_encoding", self.mv_encoding, MV_ENCODINGS),
            ("mv_fallback", self.mv_fallback, MV_FALLBACKS),
            ("mv_source", self.mv_source, MV_SOURCES),
            ("mv_image", self.mv_image, MV_IMAGES),
        ):
            if value not in choices:
                raise ValueError(f"data.motion.{key} must be one of {', '.join(choices)}; got {value!r}")
        for key, value in (("rgbdiff_scale", self.rgbdiff_scale), ("mv_scale", self.mv_scale)):
            if not value > 0:
                raise ValueError(f"data.motion.{key} must be > 0, got {value}")
        if self.mv_window < 0:
            raise ValueError(f"data.motion.mv_window must be >= 0 (0 = whole segment), got {self.mv_window}")
        if self.mv_bins < 2:
            raise ValueError(f"data.motion.mv_bins must be >= 2, got {self.mv_bins}")

    @property
    def next_frames(self) -> int:
        """Frames after each sampled one that ``rgbdiff`` needs (1, or 3 for ``gray3``)."""
        return 3 if self.rgbdiff == "gray3" else 1

    def image_streams(self, modalities: tuple[str, ...]) -> tuple[str, ...]:
        """The modalities that are images for the backbone, in order."""
        return tuple(m for m in modalities if m != "mv" or self.mv_encoding == "image")


def stream_settings(name: str, motion: MotionSettings) -> str:
    """What a stream's values depend on beyond the shared clip settings (frames, crops, flips): its cache id."""
    m = motion
    if name == "rgbdiff":
        return f"{MOTION_VERSION},{m.rgbdiff},{m.rgbdiff_scale}"
    if name == "mv":
        encoding = f",bins={m.mv_bins}" if m.mv_encoding == "hist" else ""
        if m.mv_encoding == "image" and m.mv_image != "magnitude":  # (magnitude ids predate mv_image)
            encoding = f",third={m.mv_image}"
        if m.mv_source == "flow":  # (codec-source ids are those of the caches built before mv_source existed)
            return f"{MOTION_VERSION},{m.mv_encoding},{m.mv_scale}{encoding},source=flow"
        window = f"window={m.mv_window}"
        return f"{MOTION_VERSION},{m.mv_encoding},{m.mv_scale},{window}{encoding},fallback={m.mv_fallback}"
    return MOTION_VERSION


def check_modalities(modalities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate ``data.modalities``: known names, no repeats, ``rgb`` first when present; returns a tuple."""
    mods = tuple(modalities)
    if not mods:
        raise ValueError(f"data.modalities must name at least one of {', '.join(MODALITIES)}")
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown:
        raise ValueError(f"data.modalities: unknown {unknown[0]!r}; choose from {', '.join(MODALITIES)}")
    if len(set(mods)) != len(mods):
        raise ValueError(f"data.modalities: {list(mods)} names a stream twice")
    return tuple(m for m in MODALITIES if m in mods)  # canonical order: rgb, rgbdiff, mv


# ------------------------------------------------------------------------------------------------ RGB difference


def rgb_difference(frames: np.ndarray, following: np.ndarray, *, mode: str, scale: float) -> np.ndarray:
    """TSN's RGB difference as a uint8 image per sampled frame.

    Args:
        frames: uint8 ``(T, H, W, 3)``, the sampled frames.
        following: uint8 ``(T, K, H, W, 3)``, the K frames after each (K >= 1; 3 for ``gray3``).
        mode: ``signed`` | ``abs`` | ``gray3``.
        scale: gain before clipping to 0-255.

    Returns:
        uint8 ``(T, H, W, 3)``.
    """
    a = frames.astype(np.float32)
    if mode == "gray3":
        if following.shape[1] < 3:
            raise ValueError(f"rgbdiff=gray3 needs 3 following frames, got {following.shape[1]}")
        seq = np.concatenate([a[:, None], following[:, :3].astype(np.float32)], axis=1).mean(-1)  # (T, 4, H, W) grey
        img = 128.0 + 0.5 * scale * np.moveaxis(np.diff(seq, axis=1), 1, -1)  # (T, H, W, 3) signed changes
    else:
        d = following[:, 0].astype(np.float32) - a
        img = 128.0 + 0.5 * scale * d if mode == "signed" else scale * np.abs(d)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ motion vectors


def rasterize_vectors(vectors: np.ndarray, height: int, width: int, *, cell: int = 16) -> np.ndarray:
    """Codec motion vectors of one frame -> a forward-flow field of ``cell``-pixel blocks.

    A vector (FFmpeg's ``AVMotionVector``) says the ``w x h`` block centred at ``(dst_x, dst_y)`` of this frame is
    predicted from ``src = dst + motion / motion_scale`` in a past (``source < 0``) or future (``source > 0``)
    frame. Forward motion is ``dst - src`` for a past reference and ``src - dst`` for a future one. Each vector
    lands in the cell of its block's centre, and the vectors of a cell are averaged: with 16-pixel cells (a
    macroblock, the largest block of MPEG-4 Part 2 and H.264) a 16x16 block fills its cell and smaller partitions
    share it. Cells no vector covers (intra-coded blocks) are 0.

    Args:
        vectors: structured array from ``frame.side_data["MOTION_VECTORS"].to_ndarray()``.
        height, width: the coded frame size in pixels.
        cell: field resolution in pixels.

    Returns:
        float32 ``(2, ceil(height / cell), ceil(width / cell))``, (dx, dy) in coded pixels per frame.
    """
    return rasterize_frames([vectors], height, width, cell=cell)[0]


def rasterize_frames(frames: Sequence[np.ndarray], height: int, width: int, *, cell: int = 16) -> np.ndarray:
    """:func:`rasterize_vectors` of several frames (same coded size) in one pass: ``(F, 2, h_cells, w_cells)``.

    One set of NumPy calls for the whole clip: per frame they cost ~80 us for a few hundred vectors, half of
    decoding the frame, while the work itself is a few microseconds.
    """
    hr, wr = -(-height // cell), -(-width // cell)
    cells = hr * wr
    if not frames:
        return np.zeros((0, 2, hr, wr), np.float32)
    v = np.frombuffer(b"".join(f.tobytes() for f in frames), frames[0].dtype)  # np.concatenate of records: ~20x slower
    frame_of = np.repeat(np.arange(len(frames)), [len(f) for f in frames])  # (N,) each vector's frame
    gain = np.where(v["source"] < 0, -1.0, 1.0) / np.maximum(v["motion_scale"], 1)
    cx = np.clip(v["dst_x"] // cell, 0, wr - 1).astype(np.int64)
    cy = np.clip(v["dst_y"] // cell, 0, hr - 1).astype(np.int64)
    index = frame_of * cells + cy * wr + cx
    size = len(frames) * cells
    count = np.maximum(np.bincount(index, minlength=size), 1)
    dx = np.bincount(index, gain * v["motion_x"], size) / count
    dy = np.bincount(index, gain * v["motion_y"], size) / count
    return np.stack([dx.reshape(-1, hr, wr), dy.reshape(-1, hr, wr)], axis=1).astype(np.float32)


def rotate_flow(field: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a ``(2, h, w)`` field clockwise by ``rotation`` degrees (0/90/180/270), as the frames are for display."""
    k = (rotation // 90) % 4
    if k == 0:
        return field
    dx, dy = field[0], field[1]
    turns = {1: (-dy, dx), 2: (-dx, -dy), 3: (dy, -dx)}  # a clockwise quarter turn maps (dx, dy) to (-dy, dx)
    ndx, ndy = turns[k]
    return np.ascontiguousarray(np.stack([np.rot90(ndx, -k), np.rot90(ndy, -k)]))


def crop_flow(
    fields: torch.Tensor, box: CropBox, *, cell: float, out_size: int, flip: bool, ref_size: int = REFERENCE_CROP
) -> torch.Tensor:
    """Crop, resize and flip flow fields exactly as the frames they belong to, and rescale the vectors.

    Args:
        fields: float32 ``(F, 2, h, w)`` in pixels of the (decoded, possibly shrunk) frame per frame.
        box: ``(top, left, height, width)`` crop in frame pixels (the frames' crop).
        cell: frame pixels per field cell.
        out_size: side of the square output (the crop is resized to it).
        flip: mirror left-right (and negate dx), as the frames are.
        ref_size: vectors come out in pixels per frame of a crop of this side (so gains do not depend on the
            model's input size).

    Returns:
        float32 ``(F, 2, out_size, out_size)``.
    """
    from torchvision.ops import roi_align

    top, left, bh, bw = box
    rois = torch.tensor([[0.0, left / cell, top / cell, (left + bw) / cell, (top + bh) / cell]])
    rois = rois.repeat(len(fields), 1)
    rois[:, 0] = torch.arange(len(fields), dtype=torch.float32)
    out = roi_align(fields.float(), rois, output_size=(out_size, out_size), spatial_scale=1.0, aligned=True)
    gain = torch.tensor([ref_size / bw, ref_size / bh]).view(1, 2, 1, 1)  # frame px -> px of the reference crop
    out = out * gain
    if flip:
        out = out.flip(-1)
        out[:, 0] = -out[:, 0]
    return out


def remove_camera_motion(flows: torch.Tensor) -> torch.Tensor:
    """Subtract each frame's median vector (pan/tilt of the camera). ``(F, 2, h, w) -> (F, 2, h, w)``."""
    median = flows.flatten(2).median(dim=2).values  # (F, 2)
    return flows - median[:, :, None, None]


def flow_image(flows: torch.Tensor, *, scale: float, third: str = "magnitude") -> torch.Tensor:
    """Encode flow as an image for the frozen backbone; the mean over the ``F`` frames of a window.

    Channels: ``128 + scale * dx``, ``128 + scale * dy``, and ``third``: ``magnitude`` ``2 * scale * |d|`` (does not
    cancel when the motion of a window goes back and forth) or ``curl`` ``128 + scale * curl`` (the vorticity
    ``d(dy)/dx - d(dx)/dy`` per cell of the field: turning motion as a bright (clockwise on screen) or dark blob,
    which a frozen backbone reads far more easily than the arrangement of dx and dy around an object; the
    divergence-curl descriptors of Jain et al., CVPR 2013).

    Shapes: ``(F, 2, S, S) -> uint8 (S, S, 3)``.
    """
    dx, dy = flows[:, 0], flows[:, 1]
    if third == "curl":
        extra = 128.0 + scale * flow_curl(flows)
    elif third == "magnitude":
        extra = 2.0 * scale * torch.sqrt(dx * dx + dy * dy)
    else:
        raise ValueError(f"data.motion.mv_image must be one of {', '.join(MV_IMAGES)}; got {third!r}")
    img = torch.stack([128.0 + scale * dx, 128.0 + scale * dy, extra], dim=-1).mean(0)  # (S, S, 3)
    return img.round_().clamp_(0, 255).to(torch.uint8)


def flow_curl(flows: torch.Tensor) -> torch.Tensor:
    """Vorticity ``d(dy)/dx - d(dx)/dy`` of flow fields, central differences in field cells (one-sided at the
    border). With y pointing down, clockwise turning on screen is positive. ``(F, 2, S, S) -> (F, S, S)``."""
    if min(flows.shape[-2:]) < 2:
        return torch.zeros_like(flows[:, 0])
    d_dy_dx = torch.gradient(flows[:, 1], dim=-1)[0]
    d_dx_dy = torch.gradient(flows[:, 0], dim=-2)[0]
    return d_dy_dx - d_dx_dy


def flow_histogram(flows: torch.Tensor, *, bins: int, grid: tuple[int, int]) -> torch.Tensor:
    """Magnitude-weighted orientation histogram (``bins``) + moving-area share per cell, mean over frames.

    Shapes: ``(F, 2, S, S) -> float32 (bins + 1, gh, gw)``, pooled onto the ``grid`` cells by averaging.
    """
    dx, dy = flows[:, 0], flows[:, 1]
    mag = torch.sqrt(dx * dx + dy * dy)  # (F, S, S)
    angle = torch.atan2(dy, dx)  # (-pi, pi]
    index = ((angle + math.pi) / (2 * math.pi) * bins).long() % bins
    hist = torch.zeros(flows.shape[0], bins + 1, *mag.shape[1:])
    hist.scatter_(1, index[:, None], mag[:, None])
    hist[:, bins] = (mag > MOVING_THRESHOLD).float()
    pooled = torch.nn.functional.adaptive_avg_pool2d(hist.mean(0, keepdim=True), grid)
    return pooled[0]


def zero_flow(size: int) -> torch.Tensor:
    """A still window: ``(1, 2, size, size)`` zeros."""
    return torch.zeros(1, 2, size, size)


# ------------------------------------------------------------------------------------------------ fallback


def dis_flow(frame: np.ndarray, following: np.ndarray, *, cell: int = 4) -> np.ndarray | None:
    """Dense optical flow (OpenCV DIS, "fast" preset) from ``frame`` to ``following``, averaged into cells.

    For streams whose codec exports no motion vectors. Returns float32 ``(2, ceil(H/cell), ceil(W/cell))`` in
    pixels per frame, or None when OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError:
        return None
    a = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(following), cv2.COLOR_RGB2GRAY)
    flow = _DIS.get(cv2).calc(a, b, None)  # (H, W, 2)
    h, w = a.shape
    hr, wr = -(-h // cell), -(-w // cell)
    padded = np.zeros((hr * cell, wr * cell, 2), np.float32)
    padded[:h, :w] = flow
    cells = padded.reshape(hr, cell, wr, cell, 2).mean(axis=(1, 3))  # (hr, wr, 2)
    return np.ascontiguousarray(np.moveaxis(cells, -1, 0))


class _DISCache:
    """One DIS object per process (creating it costs more than a small frame's flow)."""

    def __init__(self) -> None:
        self.dis = None

    def get(self, cv2):  # noqa: ANN001, ANN201
        if self.dis is None:
            self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return self.dis


_DIS = _DISCache()
