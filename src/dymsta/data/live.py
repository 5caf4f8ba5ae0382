"""Live video: a camera, a network stream or standard input, cut into clips while its frames arrive.

    source = open_source("rtsp://camera.local/stream", timeout=10)   # or "/dev/video0", "-" (stdin), a file
    reader = ClipReader(source, requests, short_side=128)           # requests: ClipRequest, endless if need be
    while (ready := reader.get()) is not None:                        # ReadyClip: request index, clip, ready time
        ...

A :class:`ClipReader` decodes in a thread of its own through :func:`dymsta.data.decode.cut_clips`: one pass, each
frame converted once and only when a pending clip needs it, memory bounded by the clips in flight (a window's
frames, not the stream's). A live source sets the pace: the reader never waits for its consumer, and when
``max_pending`` finished clips are already waiting the oldest is dropped and counted (:attr:`ClipReader.dropped`);
the clips the stream's end finishes at once (cut short by it) wait instead, since no frame is left to keep up with.
A file (``live=False``) is read as fast as the consumer takes clips, and nothing is dropped.

Sources (:func:`source_kind`): ``-`` is standard input (a streamable container: Matroska, MPEG-TS, NUT, fragmented
MP4), ``/dev/video*`` a V4L2 camera, ``scheme://...`` whatever FFmpeg opens (rtsp, rtmp, http(s), udp, tcp, srt,
rtp), anything else a file. A source that does not open within ``timeout`` seconds, or whose frames stop coming for
that long, gives a one-line :class:`VideoDecodeError` naming it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from dymsta.data.decode import ClipRequest, DecodedClip, VideoDecodeError, _ffmpeg_message, _video_stream, cut_clips
from dymsta.utils import get_logger

__all__ = ["NETWORK_SCHEMES", "ClipReader", "ReadyClip", "Source", "open_source", "open_stream", "source_kind"]

log = get_logger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "hls")
DEFAULT_FPS = 25.0  # a source that states no frame rate: the windows' seconds are counted at this rate
MAX_FPS = 240.0  # a stated rate above this is taken for none
# FFmpeg reads up to 5 s of a stream before it opens; on a live source those frames then arrive in one burst,
# which the reader took for a model falling behind (the first windows dropped). One second is enough where the
# container's header states the codec (Matroska/WebM, NUT, MP4); an MPEG-TS stream is tested in test_stream.py.
LIVE_PROBE = {"analyzeduration": "1000000", "probesize": "1000000"}


def source_kind(source: str) -> str:
    """``stdin``, ``camera``, ``network`` or ``file`` (see the module docstring)."""
    if source == "-":
        return "stdin"
    if source.startswith("/dev/video"):
        return "camera"
    scheme, sep, _ = source.partition("://")
    if sep and scheme.lower() in NETWORK_SCHEMES:
        return "network"
    return "file"


@dataclass
class Source:
    """An open video source.

    Attributes:
        container: the PyAV container.
        name: the source as given (for messages and results).
        kind: :func:`source_kind`, or ``stream`` (:func:`open_stream`).
        fps: its nominal frame rate (:data:`DEFAULT_FPS` when it states none).
        live: frames come at the source's pace (camera, network, stdin): the reader drops rather than waits.
    """

    container: Any
    name: str
    kind: str
    fps: float
    live: bool

    def close(self) -> None:
        self.container.close()


def open_source(source: str | os.PathLike, *, timeout: float = 10.0, live: bool | None = None) -> Source:
    """Open ``source`` for reading.

    Args:
        source: ``-``, ``/dev/videoN``, a URL FFmpeg opens, or a file.
        timeout: seconds to wait for the source to open, and for each read from a network source.
        live: override whether frames come at the source's pace (default: every kind but a file).

    Raises:
        VideoDecodeError: the source does not open or has no video stream (one line, naming it).
    """
    name = str(source)
    kind = source_kind(name)
    if kind == "stdin" and sys.stdin is not None and sys.stdin.isatty():
        raise VideoDecodeError("-", "standard input is a terminal; pipe a video into it (e.g. ffmpeg ... -f nut -)")
    if kind == "file" and not Path(name).exists():
        raise VideoDecodeError(name, "file not found (a stream needs a URL such as rtsp://..., /dev/video0 or -)")
    kwargs: dict[str, Any] = {"mode": "r", "timeout": (timeout, timeout)}
    if kind != "file":
        kwargs["options"] = dict(LIVE_PROBE)
    if kind == "stdin":
        target = "pipe:0"
    elif kind == "camera":
        target, kwargs["format"] = name, "v4l2"
    else:
        target = name
    return _source_of(_open_container(target, name, **kwargs), name, kind, kind != "file" if live is None else live)


def open_stream(fileobj: Any, name: str) -> Source:
    """A live source read from a file object (``read`` only, e.g. a WebSocket's messages, a socket's file) that
    holds a streamable container (WebM/Matroska, MPEG-TS, NUT, fragmented MP4); ``name`` names it in messages.

    Raises:
        VideoDecodeError: the bytes are not such a container, or hold no video stream.
    """
    return _source_of(_open_container(fileobj, name, mode="r", options=dict(LIVE_PROBE)), name, "stream", True)


def _open_container(target: Any, name: str, **kwargs: Any) -> Any:
    try:
        return av.open(target, **kwargs)
    except av.error.InvalidDataError:
        raise VideoDecodeError(name, "not a video stream, or a corrupt container (FFmpeg: invalid data)") from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodeError(name, f"cannot open the source ({_ffmpeg_message(e)})") from None


def _source_of(container: Any, name: str, kind: str, live: bool) -> Source:
    try:
        stream = _video_stream(container, name)
    except VideoDecodeError:
        container.close()
        raise
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    # a time base passed off as a rate (WebM's 1000 from a browser's MediaRecorder) is no frame rate
    fps = float(rate) if rate and 1 <= float(rate) <= MAX_FPS else DEFAULT_FPS
    return Source(container, name, kind, fps, live)


@dataclass
class ReadyClip:
    """A clip the reader has finished.

    Attributes:
        index: the position of its request in ``requests``.
        clip: the decoded clip (:class:`dymsta.data.decode.DecodedClip`).
        ready_at: ``time.monotonic()`` when its last frame was decoded.
    """

    index: int
    clip: DecodedClip
    ready_at: float


class _Stop(Exception):
    """Raised inside the decoding pass to end it (:meth:`ClipReader.close`)."""


class ClipReader:
    """Clips of ``requests`` cut from ``source`` by a background thread, handed over as they are finished.

    Args:
        source: an open source (:func:`open_source`); the reader closes it when the pass ends.
        requests: clips in non-decreasing order of their first frame (may be endless).
        short_side, motion_fallback, motion_source: as for :func:`dymsta.data.decode.read_clip`.
        max_pending: finished clips that may wait for the consumer; on a live source one more drops the oldest.

    Attributes:
        dropped: indices of the clips dropped because the consumer was behind (live sources only).
        frames_decoded: frames decoded so far.
    """

    def __init__(
        self,
        source: Source,
        requests: Iterable[ClipRequest],
        *,
        short_side: int | None = None,
        motion_fallback: str = "flow",
        motion_source: str = "codec",
        max_pending: int = 2,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.source, self.max_pending = source, max_pending
        self.dropped: list[int] = []
        self.frames_decoded = 0
        self.last_frame_at = time.monotonic()
        self._queue: deque[ReadyClip] = deque()
        self._cond = threading.Condition()
        self._ended, self._stop, self._error = False, False, None
        kwargs = {"short_side": short_side, "motion_fallback": motion_fallback, "motion_source": motion_source}
        self._thread = threading.Thread(target=self._run, args=(requests, kwargs), daemon=True, name="dymsta-reader")
        self._thread.start()

    def _on_frame(self, index: int) -> None:
        if self._stop:
            raise _Stop
        self.frames_decoded, self.last_frame_at = index + 1, time.monotonic()

    def _run(self, requests: Iterable[ClipRequest], kwargs: dict[str, Any]) -> None:
        try:
            clips = cut_clips(
                self.source.container, self.source.name, requests, strict=False, on_frame=self._on_frame, **kwargs
            )
            for index, clip in enumerate(clips):
                self._put(ReadyClip(index, clip, time.monotonic()))
                if self._stop:
                    break
        except _Stop:
            pass
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it in its own thread
            self._error = e if isinstance(e, VideoDecodeError) else VideoDecodeError(self.source.name, _one_line(e))
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            self.source.close()

    def _put(self, ready: ReadyClip) -> None:
        with self._cond:
            if self.source.live and not ready.clip.ended_early:
                if len(self._queue) >= self.max_pending:
                    self.dropped.append(self._queue.popleft().index)
            else:  # a file, or the windows the end of a live stream finishes at once: no pace left to keep
                while len(self._queue) >= self.max_pending and not self._stop:
                    self._cond.wait()
            self._queue.append(ready)
            self._cond.notify_all()

    def get(self, timeout: float = 10.0) -> ReadyClip | None:
        """The next finished clip, waiting for it; None once the source has ended and every clip is taken.

        Raises:
            VideoDecodeError: the source failed, or no frame came for ``timeout`` seconds (stalled).
        """
        with self._cond:
            while not self._queue:
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return None
                self._cond.wait(min(0.25, timeout))
                stalled = time.monotonic() - self.last_frame_at
                if not self._queue and not self._ended and stalled > timeout:
                    raise VideoDecodeError(self.source.name, f"no frame for {stalled:.0f} s (the source stalled)")
            ready = self._queue.popleft()
            self._cond.notify_all()
            return ready

    def pending(self) -> int:
        """Finished clips waiting now."""
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        """Stop reading (at the next frame); the source is closed by the reading thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the reading thread to end (after :meth:`close`); True if it has.

        A process must not exit while the thread is inside the decoder: Python ends such a daemon thread at
        exit by unwinding it, and the C++ frames beneath it abort the process ("terminate called ...")."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def ended(self) -> bool:
        return self._ended


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".split("\n")[0][:400]
