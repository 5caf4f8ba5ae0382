"""Live video in ``dymsta serve``: a stream URL (server-sent events) or the browser's camera (a WebSocket).

    GET /v1/stream?source=rtsp://cam/live&window=2&stride=1   text/event-stream: one ``data: {window}`` event
                                                             per window, then ``event: summary``
    WS  /v1/stream/camera?window=2&stride=1[&token=T]        binary messages in: a WebM (or any streamable
                                                             container) in pieces, as MediaRecorder writes it;
                                                             text messages out: ``{window}``, then ``{"summary"}``

Both run :class:`dymsta.engine.stream.WindowStream`, the pass of ``dymsta predict --stream``, on a thread of their
own; the model takes one call at a time, shared with the upload routes. A stream URL is opened only when it starts
with one of the server's ``--allow-source`` prefixes (none by default: a server that opens any URL it is sent
lets its callers reach the server's own network); any other is a 403 with a one-line JSON error. At most
``max_streams`` streams run at once (503 beyond). Each window's object is what ``predict --stream`` prints:
``start``, ``end`` (stream seconds), ``label``, ``predictions``, ``latency_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

from dymsta.data.decode import VideoDecodeError
from dymsta.data.live import open_stream, source_kind
from dymsta.engine.predict import Predictor
from dymsta.engine.stream import WindowStream
from dymsta.utils import get_logger

__all__ = ["ChunkFeed", "StreamSlots", "add_live_routes", "source_allowed"]

log = get_logger(__name__)

_END = object()


def source_allowed(source: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``source`` starts with one of the ``allowed`` prefixes (scheme and host compared without case)."""

    def norm(s: str) -> str:
        parts = urlsplit(s)
        if not parts.scheme or not parts.netloc:
            return s
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}{s[len(parts.scheme) + 3 + len(parts.netloc) :]}"

    return any(norm(source).startswith(norm(prefix)) for prefix in allowed if prefix)


class StreamSlots:
    """At most ``limit`` streams at once (a non-blocking counter)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held, self._lock = limit, 0, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.held -= 1


class ChunkFeed:
    """A read-only, unseekable file for PyAV, fed with byte chunks from another thread (a WebSocket's messages).

    ``read`` blocks until data comes; after :meth:`end` it returns what is left, then ``b""`` (end of stream).
    """

    def __init__(self, max_chunks: int = 256) -> None:
        self._chunks: queue.Queue[bytes | object] = queue.Queue(maxsize=max_chunks)
        self._rest = b""
        self._ended = self._closed = False

    def feed(self, data: bytes) -> None:
        """Add a chunk, waiting while ``max_chunks`` are unread; dropped once the reader has closed the feed."""
        while not self._closed:
            try:
                self._chunks.put(data, timeout=0.25)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """The reader is done: later chunks are dropped."""
        self._closed = True

    def end(self) -> None:
        """No more chunks: ``read`` gives the end of the stream once the queued ones are read."""
        with contextlib.suppress(queue.Full):
            self._chunks.put(_END, timeout=1.0)

    def read(self, size: int = -1) -> bytes:
        while not self._rest and not self._ended:
            item = self._chunks.get()
            if item is _END:
                self._ended = True
            else:
                self._rest = item  # type: ignore[assignment]
        size = len(self._rest) if size is None or size < 0 else size
        out, self._rest = self._rest[:size], self._rest[size:]
        return out

    def seekable(self) -> bool:
        return False


def add_live_routes(
    app: FastAPI,
    predictor: Predictor,
    *,
    allowed: tuple[str, ...],
    max_streams: int,
    token_ok: Callable[[str | None], bool],
    require_token: Callable[[Request], None],
) -> None:
    """Add ``GET /v1/stream`` and ``WS /v1/stream/camera`` (module docstring) to ``app``.

    Args:
        predictor: the served model (its runner already takes one call at a time).
        allowed: stream URL prefixes that may be opened (empty: none).
        max_streams: streams at once.
        token_ok: whether a token (a WebSocket's ``token`` query value or bearer header) is accepted.
        require_token: the HTTP routes' token dependency.
    """
    slots = StreamSlots(max_streams)

    @app.get(
        "/v1/stream",
        dependencies=[Depends(require_token)],
        summary="classify a stream URL as it arrives (server-sent events)",
        responses={403: {"description": "the URL is not on the server's --allow-source list"}},
    )
    def stream_url(
        request: Request,
        source: str = Query(..., description="a URL FFmpeg opens (rtsp, http, udp, srt, ...), on the allow-list"),
        window: float = Query(2.0, gt=0, le=600, description="window, seconds"),
        stride: float = Query(1.0, gt=0, le=600, description="stride, seconds"),
        top_k: int = Query(3, ge=1, le=100, description="predictions per window"),
        timeout: float = Query(10.0, gt=0, le=300, description="seconds to open, or without a frame"),
    ) -> Any:
        if not allowed:
            return _error(403, "stream URLs are off: start dymsta serve with --allow-source PREFIX to allow them")
        if source_kind(source) == "stdin" or not source_allowed(source, allowed):
            return _error(403, f"{source}: not on this server's --allow-source list")
        if not slots.take():
            return _error(503, f"{max_streams} streams are running; retry later", retry=True)
        try:
            run = WindowStream(predictor, source, window=window, stride=stride, top_k=top_k, timeout=timeout)
        except VideoDecodeError as e:
            slots.give()
            return _error(400, str(e))
        except BaseException:
            slots.give()
            raise
        request.state.log = f"stream {source}"

        def events() -> Iterator[str]:
            try:
                for item in run.follow():
                    name = "summary" if "summary" in item else "window"
                    yield f"event: {name}\ndata: {json.dumps(item)}\n\n"
            finally:
                slots.give()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.websocket("/v1/stream/camera")
    async def stream_camera(websocket: WebSocket) -> None:
        params = websocket.query_params
        given = params.get("token") or websocket.headers.get("authorization", "").partition(" ")[2] or None
        if not token_ok(given):
            await websocket.close(code=1008, reason="token missing or wrong")
            return
        try:
            window, stride = float(params.get("window", 2.0)), float(params.get("stride", 1.0))
            top_k = int(params.get("top_k", 3))
            if not (0 < window <= 600 and 0 < stride <= 600 and 1 <= top_k <= 100):
                raise ValueError
        except ValueError:
            await websocket.close(code=1003, reason="window, stride: seconds in (0, 600]; top_k: 1-100")
            return
        if not slots.take():
            await websocket.close(code=1013, reason=f"{max_streams} streams are running; retry later")
            return
        await websocket.accept()
        try:
            await _camera_session(websocket, predictor, window=window, stride=stride, top_k=top_k)
        finally:
            slots.give()


async def _camera_session(websocket: WebSocket, predictor: Predictor, **options: Any) -> None:
    """Pipe the socket's binary messages into a :class:`ChunkFeed`, classify it on a thread, send each result."""
    loop = asyncio.get_running_loop()
    feed, results = ChunkFeed(), asyncio.Queue()
    stop = threading.Event()

    def classify() -> None:
        def put(item: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(results.put_nowait, item)

        try:
            source = open_stream(feed, "camera")
            run = WindowStream(predictor, source, **options)
            for item in run.follow():
                put(item)
                if stop.is_set():
                    run.reader.close()
        except VideoDecodeError as e:
            put({"error": str(e)})
        except Exception as e:  # noqa: BLE001 - the client gets one line, the log the traceback
            log.exception("camera stream failed")
            put({"error": f"{type(e).__name__}: {e}".splitlines()[0]})
        finally:
            feed.close()
            loop.call_soon_threadsafe(results.put_nowait, None)

    worker = threading.Thread(target=classify, daemon=True, name="dymsta-camera")
    worker.start()

    async def receive() -> None:
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes"):
                    await asyncio.to_thread(feed.feed, message["bytes"])
                elif message.get("text") == "end":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            stop.set()
            feed.end()

    receiver = asyncio.create_task(receive())
    try:
        while (item := await results.get()) is not None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await websocket.send_text(json.dumps(item))
    finally:
        receiver.cancel()
        stop.set()
        feed.end()
        with contextlib.suppress(RuntimeError):
            await websocket.close()


def _error(status: int, message: str, *, retry: bool = False) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Retry-After": "1"} if retry else None)
