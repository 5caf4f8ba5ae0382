"""Video decoding: probe a file, and read only the requested frames as uint8 RGB ``(T, H, W, 3)``.

Backends:

- ``"pyav"`` (default): PyAV, whose wheels bundle FFmpeg, so it works with no system FFmpeg. Frames are decoded
  sequentially from the start up to the last requested index (no seeking: TSN sampling spans the whole clip, and
  UCF101 clips are often a single GOP), and only the requested frames are colour-converted to RGB. Conversion uses
  one swscale context per call with ``threads=1``: PyAV's default ``frame.to_ndarray(format="rgb24")`` builds a new
  context with an automatic thread pool for every frame, which costs ~8x the conversion itself on 320x240 frames.
- ``"torchcodec"``: TorchCodec, when installed *and* able to load FFmpeg shared libraries (4-8). Its wheels do not
  bundle FFmpeg; where it cannot load, :class:`DecoderBackendError` says so in one line.

Frame indices are positions in presentation order (the i-th frame the decoder outputs), so variable frame rate
videos need no timestamp arithmetic. Rotation metadata (display matrix) is applied: a phone video recorded upright
comes out upright, with height and width swapped for 90/270 degrees.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from dymsta.utils import get_logger

__all__ = [
    "BACKENDS",
    "DecoderBackendError",
    "VideoDecodeError",
    "VideoInfo",
    "probe_video",
    "ClipRequest",
    "cut_clips",
    "DecodedClip",
    "FrameScan",
    "is_partial",
    "iter_frames",
    "read_clip",
    "scan_frames",
    "stream_clips",
    "read_frames",
    "torchcodec_available",
]

log = get_logger(__name__)

BACKENDS = ("pyav", "torchcodec")
# Containers whose stream frame count comes from a per-frame index (mp4/mov sample table, AVI idx1); it is still
# checked against duration x fps, and packets are counted when the two disagree or the count is missing (mkv, webm).
_INDEXED_FORMATS = ("mov", "mp4", "avi")
# Interpolation for decode-time downscaling (only ever shrinks): AREA is an anti-aliased box filter; on a 1080p frame
# converting to RGB at 455x256 with it costs about as much as the full-size conversion alone (docs/data.md).
_DOWNSCALE_INTERPOLATION = "AREA"


class VideoDecodeError(RuntimeError):
    """A video file cannot be probed or decoded. ``str(e)`` is one line: ``"<path>: <cause>"``.

    Attributes:
        path: the file, as given.
        cause: what is wrong with it (one line).
    """

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        self.path = str(path)
        self.cause = " ".join(str(cause).split())  # one line, whatever FFmpeg said
        super().__init__(f"{self.path}: {self.cause}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.cause))


class DecoderBackendError(RuntimeError):
    """A decoding backend is unknown or cannot run on this machine (not the fault of any one file)."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file.

    Attributes:
        path: the file, as given.
        num_frames: frames in the video stream (presentation order).
        fps: average frame rate (frames per second); for variable frame rate video, the container's average.
        width: displayed width in pixels, after rotation.
        height: displayed height in pixels, after rotation.
        rotation: clockwise rotation in degrees (0, 90, 180 or 270) applied to the coded frames for display.
        header_frames: the frame count the container's header states (mp4/mov sample table, AVI header; 0 when it
            states none, as in mkv/webm). More than ``num_frames`` when the file lost its end: a UCF101 AVI cut to
            its first 30 kB keeps a header of 130 frames and 2 packets.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    header_frames: int = 0

    @property
    def expected_frames(self) -> int:
        """What the file should hold: the header's count, or the stream's where the header says less."""
        return max(self.num_frames, self.header_frames)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate, displayed size and rotation of a video file.

    The frame count comes from the container when it keeps a per-frame index (mp4/mov/avi) and agrees with
    duration x fps; otherwise (mkv, webm, inconsistent headers) the stream's packets are counted. The first frame
    is decoded, so a file that opens but holds no decodable frame is reported here, not in the middle of training.

    Raises:
        VideoDecodeError: missing, unreadable, empty, not a video, no video stream, or no decodable frame.
    """
    _check_file(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        trusted = _trusted_frame_count(container, stream)
        header = _header_frame_count(stream)
        first, packets = _first_frame_and_packets(container, stream, path, count=trusted is None)
        num_frames = trusted if trusted is not None else packets
        fps = _frame_rate(container, stream, num_frames)  # reads the container's duration: while it is open
    if num_frames <= 0:
        raise VideoDecodeError(path, "video stream has no frames")
    rotation = _clockwise_rotation(first)
    width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    return VideoInfo(
        path=str(path),
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        rotation=rotation,
        header_frames=header,
    )


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    backend: str = "pyav",
    short_side: int | None = None,
) -> np.ndarray:
    """Decode the frames at ``indices`` (presentation order) as RGB.

    Args:
        path: video file.
        indices: frame positions, any order, duplicates allowed. Positions past the last decodable frame (a header
            that over-counts) get the last decodable frame.
        backend: ``"pyav"`` or ``"torchcodec"``.
        short_side: if given and the frames' short side is larger, shrink them (aspect kept) so the short side is
            ``short_side``, during colour conversion (pyav) -- cheaper than converting at full size and resizing
            afterwards. Frames are never enlarged here.

    Returns:
        uint8 array (len(indices), H, W, 3), RGB, rotation applied, in the order of ``indices``.

    Raises:
        VideoDecodeError: the file cannot be opened or decoded (one line, naming the file and the cause).
        DecoderBackendError: unknown backend, or the backend cannot run here.
        ValueError: a negative index.
    """
    idx = [int(i) for i in indices]
    if any(i < 0 for i in idx):
        raise ValueError(f"{path}: frame indices must be >= 0, got {min(idx)}")
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    if backend == "pyav":
        return _read_pyav(path, idx, short_side)
    if backend == "torchcodec":
        return _read_torchcodec(path, idx, short_side)
    raise DecoderBackendError(f"unknown decoding backend {backend!r}; choose one of {', '.join(BACKENDS)}")


# ----------------------------------------------------------------------------------------------------- helpers


def _check_file(path: str | os.PathLike) -> None:
    """Clear errors for what FFmpeg would report vaguely: missing, directory, unreadable, empty."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as e:
        raise VideoDecodeError(path, f"cannot access file ({e.strerror or e})") from None
    if p.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError(path, "unreadable (permission denied)")
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.InvalidDataError:
        raise VideoDecodeError(
            path, "not a video file, or a corrupt/truncated container (FFmpeg: invalid data)"
        ) from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodeError(path, f"cannot open ({_ffmpeg_message(e)})") from None


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def _ffmpeg_message(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return " ".join(str(msg).split())


def _trusted_frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int | None:
    """The container's frame count if it is indexed per frame and consistent with duration x fps, else None."""
    formats = set(container.format.name.split(","))
    n = int(stream.frames or 0)
    if n <= 0 or not formats & set(_INDEXED_FORMATS):
        return None
    rate = stream.average_rate or stream.guessed_rate
    seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if rate and seconds:
        expected = float(rate) * seconds
        if abs(expected - n) > max(2.0, 0.05 * n):
            return None
    return n


def _header_frame_count(stream: av.video.stream.VideoStream) -> int:
    """The frame count the container states for the stream (mp4/mov sample table, AVI header); 0 when it states
    none (mkv, webm). Duration x frame rate is no substitute: it over-counts variable frame rate video."""
    return int(stream.frames or 0)


def is_partial(decoded: int, expected: int) -> bool:
    """Whether ``decoded`` frames fall short of ``expected`` by more than header rounding: more than
    ``max(2, 5%)`` frames (the slack :func:`probe_video` allows between a header and its stream)."""
    return expected - decoded > max(2.0, 0.05 * expected)


def _first_frame_and_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str | os.PathLike, *, count: bool
) -> tuple[av.VideoFrame, int]:
    """Decode the first frame; with ``count``, also count the stream's non-empty packets (= coded frames)."""
    first, packets = None, 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            if first is None:
                frames = stream.decode(packet)
                first = frames[0] if frames else None
                if first is not None and not count:
                    break
        if first is None:
            flushed = stream.decode(None)
            first = flushed[0] if flushed else None
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"decoding failed near the start ({_ffmpeg_message(e)})") from None
    if packets == 0:
        raise VideoDecodeError(path, "video stream has no frames")
    if first is None:
        raise VideoDecodeError(path, "zero decodable frames")
    return first, packets


def _frame_rate(container: av.container.InputContainer, stream: av.video.stream.VideoStream, num_frames: int) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate:
        return float(rate)
    if container.duration:
        return num_frames / (container.duration / av.time_base)
    return 0.0


def _clockwise_rotation(frame: av.VideoFrame) -> int:
    """Clockwise display rotation; FFmpeg's ``frame.rotation`` is counter-clockwise (video_90.mov gives -90)."""
    return int(round(-(frame.rotation or 0) / 90.0)) % 4 * 90


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int] | None:
    """(width, height) with the short side shrunk to ``short_side``, or None if no shrinking is needed."""
    if short_side is None or min(width, height) <= short_side:
        return None
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class _RGBConverter:
    """Colour-converts (and optionally shrinks) frames to RGB with one reused swscale context, applying rotation."""

    def __init__(self, short_side: int | None) -> None:
        self.short_side = short_side
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """uint8 (H, W, 3) RGB of ``frame`` as displayed."""
        size = _scaled_size(frame.width, frame.height, self.short_side)
        if size is None:
            rgb = self.reformatter.reformat(frame, format="rgb24", threads=1)
        else:
            rgb = self.reformatter.reformat(
                frame, format="rgb24", width=size[0], height=size[1], interpolation=_DOWNSCALE_INTERPOLATION, threads=1
            )
        array = rgb.to_ndarray()  # (H, W, 3)
        k = _clockwise_rotation(frame) // 90
        return np.rot90(array, k=-k) if k else array  # np.rot90 turns counter-clockwise for positive k


def _read_pyav(path: str | os.PathLike, indices: list[int], short_side: int | None) -> np.ndarray:
    return read_clip(path, indices, short_side=short_side).frames


@dataclass
class DecodedClip:
    """What one pass of :func:`read_clip` (or one request of :func:`stream_clips`) over a file gives.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB at the requested indices (rotation applied, maybe shrunk).
        following: uint8 ``(T, K, H, W, 3)``: the K frames after each requested one (the last decodable frame
            past the end), or None when ``following=0``.
        flows: per requested position, float32 ``(F_i, 2, h, w)`` forward-flow fields (pixels of ``frames`` per
            frame; ``F_i`` may be 0), or None when no motion was asked for.
        flow_cell: pixels of ``frames`` per flow-field cell.
        motion_source: ``"codec"`` (motion vectors), ``"flow"`` (optical-flow fallback), ``"none"`` (no motion
            available: zeros) or ``""`` (not asked for).
        num_decoded: frames decoded before the pass stopped: it stops at the last frame it needs (with
            ``to_end``, at the end of the stream), or earlier where the stream ends or fails.
        ended_early: the stream ended, or failed, before the last frame the pass needed: requested positions past
            ``num_decoded - 1`` hold the last decodable frame.
        error: FFmpeg's message when decoding failed mid-stream (``strict=False``); ``""`` otherwise.
    """

    frames: np.ndarray
    following: np.ndarray | None = None
    flows: list[np.ndarray] | None = None
    flow_cell: float = 1.0
    motion_source: str = ""
    num_decoded: int = 0
    ended_early: bool = False
    error: str = ""


@dataclass(frozen=True)
class ClipRequest:
    """One clip for :func:`stream_clips`: the arguments of :func:`read_clip` that differ between clips.

    Attributes:
        indices: frame positions (presentation order, >= 0), any order, duplicates allowed.
        following: frames after each requested one to convert too (RGB differences).
        motion_windows: per requested position, the ``[start, stop)`` frames whose motion vectors make its flow.
    """

    indices: tuple[int, ...]
    following: int = 0
    motion_windows: tuple[tuple[int, int], ...] | None = None


def read_clip(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    short_side: int | None = None,
    following: int = 0,
    motion_windows: Sequence[tuple[int, int]] | None = None,
    motion_fallback: str = "flow",
    motion_source: str = "codec",
    strict: bool = True,
    to_end: bool = False,
) -> DecodedClip:
    """Decode, in one pass over the file (PyAV), the frames at ``indices`` and what motion streams need.

    Args:
        path: video file.
        indices: frame positions (presentation order, >= 0), any order, duplicates allowed.
        short_side: shrink frames (aspect kept) whose short side is larger, during colour conversion.
        following: also convert the ``following`` frames after each requested one (RGB differences).
        motion_windows: per requested position, a ``[start, stop)`` range of frames whose codec motion vectors
            make its flow fields (see :mod:`dymsta.data.motion`). A window holding no frame with vectors (a key
            frame) takes the next frame that has them, up to 8 frames on. Codecs that export no vectors get
            ``motion_fallback``: ``"flow"`` (OpenCV DIS optical flow from each frame to the next) or ``"zeros"``.
        motion_source: ``"codec"`` (the vectors, where the codec has them) or ``"flow"`` (DIS optical flow for every
            file: finer than 16-pixel blocks on small or noisy footage, ~0.75 ms per 112-pixel frame here).
        strict: raise when decoding fails mid-stream; with ``strict=False`` the frames decoded before the failure
            are kept (``ended_early`` and ``error`` say so), and only a file with no decodable frame raises.
        to_end: keep decoding (without colour conversion) to the end of the stream, so that ``num_decoded`` is
            the stream's real frame count.

    Raises:
        VideoDecodeError: the file cannot be opened or decoded (one line, naming the file and the cause).
        ValueError: a negative index.
    """
    idx = [int(i) for i in indices]
    if any(i < 0 for i in idx):
        raise ValueError(f"{path}: frame indices must be >= 0, got {min(idx)}")
    if not idx:
        _check_file(path)
        with _open(path) as container:
            return DecodedClip(frames=_empty_like_stream(_video_stream(container, path), short_side))
    request = ClipRequest(tuple(idx), following, None if motion_windows is None else tuple(motion_windows))
    clips = _stream(
        path, [request], short_side, motion_fallback, motion_source, strict=strict, to_end=to_end, from_start=True
    )
    return next(clips)


def stream_clips(
    path: str | os.PathLike,
    requests: Iterable[ClipRequest],
    *,
    short_side: int | None = None,
    motion_fallback: str = "flow",
    motion_source: str = "codec",
    strict: bool = True,
) -> Iterator[DecodedClip]:
    """Decode many clips of one file in a single pass, holding only the frames of the clips not yet complete.

    Yields, in request order, what :func:`read_clip` gives for each request with the same settings. Requests must
    come in non-decreasing order of their first frame (sliding windows do), and either all ask for motion
    windows or none does. ``requests`` is consumed lazily, so a generator of windows over a long video keeps
    memory flat: a frame is converted once, shared by every pending clip that wants it, and dropped with them.
    Where the stream ends (or, with ``strict=False``, fails) early, the clips it reached are finished with the
    last decodable frame (``ended_early``) and the clips wholly past the end are not yielded.

    Raises:
        VideoDecodeError: the file cannot be opened, holds no decodable frame, or (``strict``) fails mid-stream.
        ValueError: a negative index, or requests out of order.
    """
    return _stream(
        path, requests, short_side, motion_fallback, motion_source, strict=strict, to_end=False, from_start=False
    )


def _stream(
    path: str | os.PathLike,
    requests: Iterable[ClipRequest],
    short_side: int | None,
    motion_fallback: str,
    motion_source: str,
    *,
    strict: bool,
    to_end: bool,
    from_start: bool,
) -> Iterator[DecodedClip]:
    """:func:`stream_clips`; ``from_start``: clips start at frame 0, so even one wholly past the end is yielded
    (with the last decodable frame), as :func:`read_clip` promises; ``to_end``: decode to the end of the stream
    and hold every clip until then, so that each reports the stream's real frame count (one clip, read_clip)."""
    pending_requests = iter(requests)
    first = next(pending_requests, None)
    if first is None:
        return
    _check_file(path)
    with _open(path) as container:
        yield from cut_clips(
            container,
            path,
            itertools.chain([first], pending_requests),
            short_side=short_side,
            motion_fallback=motion_fallback,
            motion_source=motion_source,
            strict=strict,
            to_end=to_end,
            from_start=from_start,
        )


def cut_clips(
    container: av.container.InputContainer,
    path: str | os.PathLike,
    requests: Iterable[ClipRequest],
    *,
    short_side: int | None = None,
    motion_fallback: str = "flow",
    motion_source: str = "codec",
    strict: bool = True,
    to_end: bool = False,
    from_start: bool = False,
    on_frame: Callable[[int], None] | None = None,
) -> Iterator[DecodedClip]:
    """:func:`stream_clips` over an open container (a file, or a live source: :mod:`dymsta.data.live`), named
    ``path`` in messages. Each clip is yielded as soon as its last frame is decoded; ``requests`` is read lazily,
    so it may be endless. ``on_frame(index)`` is called for every decoded frame, before it is used (an exception
    it raises ends the pass)."""
    from dymsta.data.motion import MOTION_VECTOR_CODECS, MV_SOURCES

    pending_requests = iter(requests)
    first = next(pending_requests, None)
    if first is None:
        return
    stream = _video_stream(container, path)
    if motion_source not in MV_SOURCES:
        raise ValueError(f"motion_source must be one of {', '.join(MV_SOURCES)}, got {motion_source!r}")
    if motion_source == "flow":
        motion_fallback = "flow"
    has_vectors = stream.codec_context.name in MOTION_VECTOR_CODECS
    use_vectors = first.motion_windows is not None and motion_source == "codec" and has_vectors
    if use_vectors:
        stream.codec_context.options = {"flags2": "+export_mvs"}
    convert = _RGBConverter(short_side)

    def plan_of(r: ClipRequest) -> _DecodePlan:
        idx = [int(i) for i in r.indices]
        if not idx or min(idx) < 0:
            raise ValueError(f"{path}: every clip needs frame indices >= 0, got {list(r.indices)[:8]}")
        if (r.motion_windows is not None) != (first.motion_windows is not None):
            raise ValueError(f"{path}: either every clip asks for motion windows or none does")
        following = r.following
        if r.motion_windows is not None and not use_vectors and motion_fallback == "flow":
            following = max(following, 1)  # the optical-flow fallback needs each frame's successor
        plan = _DecodePlan(idx, following, r.motion_windows if use_vectors else None, r.motion_windows)
        if from_start:
            plan.first = 0
        return plan

    failure: list[str] = []  # FFmpeg's message where decoding failed mid-stream (strict=False)

    def decoded_frames() -> Iterator[tuple[int, av.VideoFrame]]:
        i = -1
        try:
            for frame in container.decode(stream):
                i += 1
                yield i, frame
        except av.error.FFmpegError as e:
            if strict or i < 0:
                raise VideoDecodeError(path, f"decoding failed after frame {i} ({_ffmpeg_message(e)})") from None
            failure.append(_ffmpeg_message(e))

    upcoming: _DecodePlan | None = plan_of(first)
    active: deque[_DecodePlan] = deque()  # started and not yet yielded, in request order
    started_at, decoded = 0, 0
    for index, frame in decoded_frames():
        decoded = index + 1
        if on_frame is not None:
            on_frame(index)
        while upcoming is not None and upcoming.first <= index:
            if upcoming.first < started_at:
                raise ValueError(f"{path}: clips must come in order of their first frame")
            started_at = upcoming.first
            active.append(upcoming)
            nxt = next(pending_requests, None)
            upcoming = plan_of(nxt) if nxt is not None else None
        if active:
            shared = _Frame(frame, convert)
            for plan in active:
                if not plan.done:
                    plan.feed(index, shared)
            while active and active[0].done and not to_end:
                yield _finish(active.popleft(), convert, decoded, use_vectors, motion_fallback)
        if not active and upcoming is None and not to_end:
            break
    if decoded == 0:
        raise VideoDecodeError(path, "zero decodable frames")
    for plan in active:  # every clip the stream reached; those it ended before hold its last frame
        clip = _finish(plan, convert, decoded, use_vectors, motion_fallback)
        clip.error = failure[0] if failure and clip.ended_early else ""
        yield clip


def _finish(plan: _DecodePlan, convert: _RGBConverter, decoded: int, use_vectors: bool, fallback: str) -> DecodedClip:
    clip = plan.result(convert)
    clip.num_decoded = decoded
    if plan.motion_requested is not None:
        _attach_motion(clip, plan, use_vectors=use_vectors, fallback=fallback)
    return clip


class _Frame:
    """One decoded frame, converted to RGB and read for motion vectors at most once however many clips want it."""

    def __init__(self, frame: av.VideoFrame, convert: _RGBConverter) -> None:
        self.frame, self.convert = frame, convert
        self._rgb: np.ndarray | None = None
        self._vectors: tuple[np.ndarray | None] | None = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self.convert(self.frame)
        return self._rgb

    def vectors(self) -> np.ndarray | None:
        """The frame's motion vectors (FFmpeg's ``AVMotionVector`` records), or None (a frame without any: a key
        frame). Rasterised later, a whole clip at once (:func:`dymsta.data.motion.rasterize_frames`)."""
        if self._vectors is None:
            side = self.frame.side_data.get("MOTION_VECTORS")
            self._vectors = (None if side is None else side.to_ndarray(),)
        return self._vectors[0]


class _DecodePlan:
    """Which decoded frames one clip converts to RGB or reads vectors from, and where they go; fed by
    :func:`stream_clips` one frame at a time."""

    LOOKAHEAD = 8  # frames past a vector-less window searched for the next frame with vectors

    def __init__(
        self,
        indices: list[int],
        following: int,
        windows: Sequence[tuple[int, int]] | None,
        motion_requested: Sequence[tuple[int, int]] | None,
    ) -> None:
        self.indices, self.following, self.windows = indices, following, windows
        self.motion_requested = motion_requested
        self.rgb_wanted = {i + k for i in indices for k in range(following + 1)}
        self.vector_frames: set[int] = set()
        if windows is not None:
            self.vector_frames = {f for a, b in windows for f in range(a, max(b, a + 1))}
        self.first = min(min(self.rgb_wanted), min(self.vector_frames, default=1 << 62))
        self.stop = max(max(self.rgb_wanted), max(self.vector_frames, default=-1))
        self.rgb: dict[int, np.ndarray] = {}
        self.vectors: dict[int, np.ndarray] = {}  # frame -> its AVMotionVector records
        self.coded_size: tuple[int, int] = (0, 0)
        self.rotation = 0
        self.current, self.last_frame = -1, None
        self._last_rgb: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.current >= self.stop

    def _extend_for_key_frames(self) -> None:
        """Windows that ended without vectors look further ahead (a key frame has none)."""
        for a, b in self.windows or ():
            b = max(b, a + 1)
            if b - 1 <= self.current and not any(f in self.vectors for f in range(a, self.current + 1)):
                if self.current < b - 1 + self.LOOKAHEAD:
                    self.vector_frames.add(self.current + 1)
                    self.stop = max(self.stop, self.current + 1)

    def feed(self, index: int, decoded: _Frame) -> None:
        """Take frame ``index`` of the stream (frames come in order, from the plan's first on)."""
        self.current = index
        self.last_frame = decoded.frame
        if index in self.rgb_wanted:
            self.rgb[index] = decoded.rgb()
        if index in self.vector_frames:
            vectors = decoded.vectors()
            if vectors is not None:
                self.coded_size, self.rotation = (
                    (decoded.frame.height, decoded.frame.width),
                    _clockwise_rotation(decoded.frame),
                )
                self.vectors[index] = vectors
            elif self.windows is not None:
                self._extend_for_key_frames()

    def frame_at(self, i: int, convert: _RGBConverter) -> np.ndarray:
        """RGB of frame ``i``, or of the last decodable frame when the stream ends before ``i``."""
        if i in self.rgb:
            return self.rgb[i]
        if self._last_rgb is None:  # the header promised more frames than the stream holds
            self._last_rgb = self.rgb.get(self.current) if self.current in self.rgb else convert(self.last_frame)
        return self._last_rgb

    def result(self, convert: _RGBConverter) -> DecodedClip:
        frames = np.stack([self.frame_at(i, convert) for i in self.indices])  # (T, H, W, 3)
        following = None
        if self.following:
            following = np.stack(
                [np.stack([self.frame_at(i + k, convert) for k in range(1, self.following + 1)]) for i in self.indices]
            )  # (T, K, H, W, 3)
        ended_early = self.stop > self.current
        if ended_early:
            log.debug("frames up to %d requested, the stream ends at %d", self.stop, self.current)
        return DecodedClip(frames=frames, following=following, num_decoded=self.current + 1, ended_early=ended_early)


@dataclass(frozen=True)
class FrameScan:
    """What decoding a whole file gives (:func:`scan_frames`).

    Attributes:
        num_decoded: frames the decoder output before the stream ended or failed.
        timestamps: float64 ``(num_decoded,)`` presentation times in seconds (NaN where a frame has none).
        error: FFmpeg's message where decoding failed mid-stream; ``""`` when the stream ended normally.
    """

    num_decoded: int
    timestamps: np.ndarray
    error: str = ""


def scan_frames(path: str | os.PathLike) -> FrameScan:
    """Decode every frame of the video stream, without colour conversion: how many decode, and when they show.

    Raises:
        VideoDecodeError: the file cannot be opened, has no video stream, or fails before its first frame.
    """
    _check_file(path)
    times: list[float] = []
    error = ""
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            for frame in container.decode(stream):
                times.append(float(frame.time) if frame.time is not None else math.nan)
        except av.error.FFmpegError as e:
            if not times:
                raise VideoDecodeError(path, f"decoding failed near the start ({_ffmpeg_message(e)})") from None
            error = _ffmpeg_message(e)
    return FrameScan(num_decoded=len(times), timestamps=np.asarray(times, dtype=np.float64), error=error)


def iter_frames(path: str | os.PathLike, *, short_side: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of the video as ``(time in seconds, uint8 (H, W, 3) RGB)``, rotation applied, maybe shrunk
    (``short_side``), one at a time; stops quietly where decoding fails after the first frame."""
    _check_file(path)
    convert = _RGBConverter(short_side)
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                yield (float(frame.time) if frame.time is not None else index / fps), convert(frame)
        except av.error.FFmpegError as e:
            if index < 0:
                raise VideoDecodeError(path, f"decoding failed near the start ({_ffmpeg_message(e)})") from None


def _attach_motion(clip: DecodedClip, plan: _DecodePlan, *, use_vectors: bool, fallback: str) -> None:
    """Per-position flow fields from the codec's vectors, or the optical-flow fallback, or none."""
    from dymsta.data.motion import dis_flow, rasterize_frames, rotate_flow

    h, w = clip.frames.shape[1:3]
    if use_vectors:
        clip.motion_source = "codec" if plan.vectors else "none"
        coded_h, coded_w = plan.coded_size
        displayed_w = coded_h if plan.rotation in (90, 270) else coded_w
        shrink = w / displayed_w if displayed_w else 1.0  # frames may be shrunk at conversion
        clip.flow_cell = 16 * shrink
        chosen = []  # per window, the frames whose vectors make its fields
        for a, b in plan.windows:
            found = [f for f in range(a, max(b, a + 1) + plan.LOOKAHEAD) if f in plan.vectors]
            inside = [f for f in found if f < max(b, a + 1)]
            chosen.append(inside or found[:1])
        used = sorted({f for frames in chosen for f in frames})
        fields = rasterize_frames([plan.vectors[f] for f in used], coded_h, coded_w) * np.float32(shrink)
        row = {f: rotate_flow(field, plan.rotation) for f, field in zip(used, fields, strict=True)}
        clip.flows = [_stack_fields([row[f] for f in frames]) for frames in chosen]
        return
    flows = None
    if fallback == "flow":
        flows = [dis_flow(a, b[0]) for a, b in zip(clip.frames, clip.following, strict=True)]
    if flows is None or any(f is None for f in flows):  # zeros asked for, or OpenCV missing
        clip.motion_source = "none"
        clip.flows = [np.zeros((0, 2, 1, 1), np.float32) for _ in plan.indices]
        return
    clip.motion_source, clip.flow_cell = "flow", 4.0
    clip.flows = [f[None] for f in flows]


def _stack_fields(fields: list[np.ndarray]) -> np.ndarray:
    """``[(2, h, w)] * n -> (n, 2, h, w)``; one field as a view (the common window of one frame), none as (0, 2, 1, 1)."""
    if not fields:
        return np.zeros((0, 2, 1, 1), np.float32)
    return fields[0][None] if len(fields) == 1 else np.stack(fields)


def _empty_like_stream(stream: av.video.stream.VideoStream, short_side: int | None) -> np.ndarray:
    w, h = stream.codec_context.width, stream.codec_context.height
    w, h = _scaled_size(w, h, short_side) or (w, h)
    return np.empty((0, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------- TorchCodec

_TORCHCODEC_STATUS: tuple[bool, str] | None = None
_TORCHCODEC_NO_FFMPEG = (
    "TorchCodec cannot load FFmpeg shared libraries: it needs a system FFmpeg 4-8 (PyAV bundles its own, TorchCodec "
    "does not); install FFmpeg (apt/conda) or use backend='pyav'"
)


def torchcodec_available() -> tuple[bool, str]:
    """Whether TorchCodec can decode here, and why not (one line) when it cannot. Checked once per process."""
    global _TORCHCODEC_STATUS
    if _TORCHCODEC_STATUS is None:
        try:
            import torchcodec  # binds its FFmpeg ops at import; ffmpeg_major_version is None when that failed

            loaded = getattr(torchcodec, "ffmpeg_major_version", 0) is not None
            _TORCHCODEC_STATUS = (True, "") if loaded else (False, _TORCHCODEC_NO_FFMPEG)
        except ImportError:
            _TORCHCODEC_STATUS = (False, "TorchCodec is not installed (pip install torchcodec)")
        except Exception:  # noqa: BLE001  (RuntimeError/OSError from dlopen in older versions)
            _TORCHCODEC_STATUS = (False, _TORCHCODEC_NO_FFMPEG)
    return _TORCHCODEC_STATUS


def _read_torchcodec(path: str | os.PathLike, indices: list[int], short_side: int | None) -> np.ndarray:
    ok, why = torchcodec_available()
    if not ok:
        raise DecoderBackendError(why)
    from torchcodec.decoders import VideoDecoder

    _check_file(path)
    try:
        decoder = VideoDecoder(str(path), dimension_order="NHWC", seek_mode="exact")
        num_frames = decoder.metadata.num_frames or 0
        if num_frames <= 0:
            raise VideoDecodeError(path, "zero decodable frames")
        clamped = [min(i, num_frames - 1) for i in indices]
        frames = decoder.get_frames_at(clamped).data.numpy()  # (T, H, W, 3) uint8, rotation applied
    except VideoDecodeError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        if "libtorchcodec" in str(e):
            raise DecoderBackendError(_TORCHCODEC_NO_FFMPEG) from None
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        cause = re.sub(r"^.*\.cpp:\d+,\s*", "", lines[-1]) if lines else type(e).__name__  # drop "func, file.cpp:N, "
        raise VideoDecodeError(path, f"TorchCodec: {cause}") from None
    if short_side is not None and frames.shape[0] and min(frames.shape[1:3]) > short_side:
        frames = _shrink_numpy(frames, short_side)
    return np.ascontiguousarray(frames)


def _shrink_numpy(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Anti-aliased bilinear shrink of uint8 (T, H, W, 3) so the short side is ``short_side``."""
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    h, w = frames.shape[1:3]
    w2, h2 = _scaled_size(w, h, short_side)
    x = rearrange(torch.from_numpy(frames), "t h w c -> t c h w")  # channels-last view, no copy
    y = F.interpolate(x, size=(h2, w2), mode="bilinear", antialias=True, align_corners=False)
    return rearrange(y, "t c h w -> t h w c").numpy()
