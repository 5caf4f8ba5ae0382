"""A copy of a video with the current label drawn on every frame (``dymsta predict --timeline --video-out``).

Takes decoded frames and a function of time giving the text; encodes with PyAV (H.264 where the FFmpeg build has
libx264, MPEG-4 Part 2 otherwise) into a temporary file renamed onto the destination at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dymsta.utils import atomic_path, get_logger

__all__ = ["write_labelled_video"]

log = get_logger(__name__)

MIN_SIDE = 240  # smaller videos are enlarged to this short side, so that the label stays legible


def _draw(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 RGB, enlarged to :data:`MIN_SIDE` if smaller, cropped to even sides, with
    ``text`` on a dark banner along the top."""
    import cv2

    if min(frame.shape[:2]) < MIN_SIDE:  # room for a legible label on tiny videos
        scale = MIN_SIDE / min(frame.shape[:2])
        size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2  # yuv420p needs even sides
    out = np.ascontiguousarray(frame[:h, :w])
    scale = max(0.4, min(h, w) / 400)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    banner = th + base + 8
    out[:banner] = (out[:banner].astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken behind the text
    cv2.putText(out, text, (6, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def write_labelled_video(
    frames: Iterable[tuple[float, np.ndarray]], path: str | Path, *, fps: float, label_at: Callable[[float], str]
) -> Path:
    """Encode ``frames`` (``(time_s, uint8 (H, W, 3) RGB)``, one at a time) with ``label_at(time_s)`` drawn on each.

    Args:
        frames: the video's frames in order; every frame must have the size of the first.
        path: destination ``.mp4`` (written atomically).
        fps: frame rate of the output.
        label_at: the text for the frame shown at a time (seconds).

    Returns:
        ``path``.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for t, image in frames:
                drawn = _draw(image, label_at(t))
                if stream is None:
                    stream = _video_stream(container, rate, drawn.shape[1], drawn.shape[0])
                frame = av.VideoFrame.from_ndarray(drawn, format="rgb24").reformat(format="yuv420p")
                container.mux(stream.encode(frame))
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            container.mux(stream.encode(None))
    log.info("wrote %s", path)
    return path


def _video_stream(container: av.container.OutputContainer, rate: Fraction, width: int, height: int):  # noqa: ANN202
    try:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "veryfast"})
    except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):  # an FFmpeg without libx264
        stream = container.add_stream("mpeg4", rate=rate, options={"qscale": "3"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream
