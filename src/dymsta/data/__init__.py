"""Video data: decoding (uint8 ``(T, H, W, C)``), dataset split lists, the video index, sampling, transforms, and
the clip dataset that turns them into model input (float ``(C, T, H, W)``). See docs/data.md."""

from __future__ import annotations

from typing import Any

from dymsta.data.datasets import MODES, VideoClipDataset, collate_clips
from dymsta.data.decode import (
    DecoderBackendError,
    VideoDecodeError,
    VideoInfo,
    probe_video,
    read_frames,
    torchcodec_available,
)
from dymsta.data.index import VideoRecord, scan_videos
from dymsta.data.sampling import segment_indices
from dymsta.data.splits import KINDS, DatasetError, DatasetSplits, carve_validation, load_splits
from dymsta.data.transforms import IMAGENET_MEAN, IMAGENET_STD, clip_to_tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINDS",
    "MODES",
    "DatasetError",
    "DatasetSplits",
    "DecoderBackendError",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoInfo",
    "VideoRecord",
    "carve_validation",
    "clip_to_tensor",
    "collate_clips",
    "generate_synthetic",
    "load_splits",
    "probe_video",
    "read_frames",
    "scan_videos",
    "segment_indices",
    "torchcodec_available",
]


def __getattr__(name: str) -> Any:
    """Lazy re-export of the synthetic generator (its module is imported only when used)."""
    if name == "generate_synthetic":
        from dymsta.data.synth import generate_synthetic

        return generate_synthetic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
