"""Live video in ``dymsta serve``: a stream URL on the allow-list classified as server-sent events (refused with a
403 and a one-line JSON error otherwise), and a container sent in pieces over the camera WebSocket, against a real
uvicorn server on a free loopback port; and the offline /docs page's assets."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="dymsta serve needs the serve extra: pip install 'dymsta[serve]'")
websockets_sync = pytest.importorskip("websockets.sync.client", reason="the WebSocket test needs websockets")

from conftest import colour_frames, write_video  # noqa: E402
from dymsta.engine.predict import Predictor  # noqa: E402
from dymsta.serve import ServeConfig, create_app  # noqa: E402
from dymsta.serve.live import ChunkFeed, source_allowed  # noqa: E402
from test_serve import LOOPBACK, ServerThread, check_error, request  # noqa: E402

FPS = 8
WINDOW_FIELDS = {"start", "end", "label", "predictions", "latency_s"}
ORDER = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("live-video")
    frames = np.concatenate([colour_frames(c, 3 * FPS, seed=90 + i) for i, c in enumerate(ORDER)])
    return write_video(folder / "long.nut", frames, fps=FPS)


@pytest.fixture(scope="module")
def file_server(long_video: Path) -> Any:
    """A plain HTTP server on a free loopback port serving the video's folder (the 'camera' of the URL test)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(long_video.parent))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def live_server(colour_run: dict, file_server: str) -> Any:
    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    config = ServeConfig(allowed_sources=(f"{file_server}/",), max_streams=2)
    with ServerThread(create_app(predictor, config)) as server:
        yield server


def _events(url: str) -> list[tuple[str, dict]]:
    with LOOPBACK.open(urllib.request.Request(url), timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        text = r.read().decode()
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_allow_list_matches_prefixes_only() -> None:
    allowed = ("rtsp://cam.local/", "http://127.0.0.1:8554/live")
    assert source_allowed("RTSP://CAM.local/front", allowed)
    assert source_allowed("http://127.0.0.1:8554/live/a", allowed)
    assert not source_allowed("rtsp://cam.local.evil.com/x", allowed)
    assert not source_allowed("http://127.0.0.1:8555/live", allowed)
    assert not source_allowed("http://169.254.169.254/latest/meta-data", allowed)
    assert not source_allowed("/etc/passwd", allowed) and not source_allowed("x", ())


def test_chunk_feed_reads_what_was_fed_in_order() -> None:
    feed = ChunkFeed()
    for chunk in (b"abc", b"", b"defg"):
        feed.feed(chunk)
    feed.end()
    assert feed.read(2) + feed.read(100) + feed.read(-1) + feed.read(5) == b"abcdefg"
    assert feed.read(5) == b""


def test_stream_url_on_the_allow_list_gives_windows_then_the_summary(live_server: ServerThread, file_server: str):
    source = urllib.parse.quote(f"{file_server}/long.nut", safe="")
    events = _events(f"{live_server.url}/v1/stream?source={source}&window=1&stride=0.5")
    windows = [data for name, data in events if name == "window"]
    (summary,) = [data["summary"] for name, data in events if name == "summary"]
    assert events[-1][0] == "summary" and windows and all(set(w) == WINDOW_FIELDS for w in windows)
    assert summary["error"] is None and summary["windows"] == len(windows) and summary["frames_decoded"] == 9 * FPS
    # the file comes faster than real time: a live source drops the windows the model cannot keep up with
    assert summary["windows"] + summary["windows_dropped"] == 9 * FPS // 4
    _in_order(windows)


def _in_order(windows: list[dict]) -> None:
    """The windows' labels follow the video's colours (some may be missing where windows were dropped)."""
    ranks = [ORDER.index(w["label"]) for w in windows]
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == len(ORDER) - 1, [w["label"] for w in windows]


@pytest.mark.parametrize(
    "source",
    ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "/etc/passwd", "-", "rtsp://127.0.0.1/x"],
)
def test_stream_urls_off_the_allow_list_are_refused_with_403(live_server: ServerThread, source: str) -> None:
    status, payload, _ = request(f"{live_server.url}/v1/stream?source={urllib.parse.quote(source, safe='')}")
    check_error(status, payload, 403, "--allow-source")
    status, payload, _ = request(f"{live_server.url}/healthz")
    assert status == 200  # and it keeps serving


def test_stream_urls_are_off_by_default(colour_run: dict, file_server: str) -> None:
    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    with ServerThread(create_app(predictor, ServeConfig())) as server:
        source = urllib.parse.quote(f"{file_server}/long.nut", safe="")
        status, payload, _ = request(f"{server.url}/v1/stream?source={source}")
        check_error(status, payload, 403, "stream URLs are off")
        status, payload, _ = request(f"{server.url}/v1/stream?source={source}&window=0")
        check_error(status, payload, 422, "window")


def test_a_stream_url_that_does_not_open_is_a_400(live_server: ServerThread, file_server: str) -> None:
    source = urllib.parse.quote(f"{file_server}/missing.nut", safe="")
    status, payload, _ = request(f"{live_server.url}/v1/stream?source={source}&timeout=5")
    check_error(status, payload, 400, "missing.nut", "cannot open")


def test_camera_websocket_classifies_a_container_sent_in_pieces(live_server: ServerThread, long_video: Path):
    data = long_video.read_bytes()
    url = f"ws://127.0.0.1:{live_server.port}/v1/stream/camera?window=1&stride=0.5"
    received = []
    with websockets_sync.connect(url, open_timeout=30) as ws:
        for piece in np.array_split(np.frombuffer(data, dtype=np.uint8), 12):
            ws.send(piece.tobytes())
        ws.send("end")
        for message in ws:
            received.append(json.loads(message))
    windows, summary = received[:-1], received[-1]["summary"]
    assert windows and all(set(w) == WINDOW_FIELDS for w in windows)
    assert summary["error"] is None and summary["windows"] + summary["windows_dropped"] >= len(windows)
    assert summary["frames_decoded"] == 9 * FPS
    _in_order(windows)


def test_camera_websocket_reports_bytes_that_are_no_video(live_server: ServerThread) -> None:
    url = f"ws://127.0.0.1:{live_server.port}/v1/stream/camera"
    with websockets_sync.connect(url, open_timeout=30) as ws:
        ws.send(b"\x00" * 4096)
        ws.send("end")
        messages = [json.loads(m) for m in ws]
    assert len(messages) == 1 and "camera" in messages[0]["error"] and "\n" not in messages[0]["error"]


def test_camera_websocket_needs_the_token(colour_run: dict) -> None:
    from websockets.exceptions import InvalidStatus

    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    with ServerThread(create_app(predictor, ServeConfig(token="s3cret"))) as server:
        base = f"ws://127.0.0.1:{server.port}/v1/stream/camera"
        for wrong in ("", "?token=guess"):
            with pytest.raises(InvalidStatus) as refused:
                websockets_sync.connect(base + wrong, open_timeout=10)
            assert refused.value.response.status_code == 403  # closed before the handshake completes
        with websockets_sync.connect(f"{base}?token=s3cret", open_timeout=10) as ws:
            ws.send("end")  # accepted: an empty stream ends with an error line, not a refusal
            assert "error" in json.loads(ws.recv(timeout=30))


def test_docs_assets_are_served_from_the_package(live_server: ServerThread) -> None:
    with LOOPBACK.open(f"{live_server.url}/docs", timeout=30) as r:
        page = r.read().decode()
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    with LOOPBACK.open(f"{live_server.url}/docs-assets/swagger-ui-bundle.js", timeout=30) as r:
        assert len(r.read()) > 100_000
