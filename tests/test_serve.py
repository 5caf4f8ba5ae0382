"""``dymsta serve`` over real HTTP: a uvicorn server on a free loopback port, started and stopped here.

Predictions equal ``dymsta predict --json``; every bad upload gets its status and a one-line error and the server
keeps answering; 413 comes before the body is read; 8 concurrent requests are all answered correctly; a full
queue gives 503 and a slow job 504 while keeping its place; tokens; no temporary file is left behind; and the
``dymsta serve`` command itself answers.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="dymsta serve needs the serve extra: pip install 'dymsta[serve]'")
pytest.importorskip("uvicorn", reason="dymsta serve needs the serve extra: pip install 'dymsta[serve]'")

import uvicorn  # noqa: E402

from conftest import colour_frames, write_video  # noqa: E402
from dymsta.cli import main  # noqa: E402
from dymsta.engine.predict import Predictor  # noqa: E402
from dymsta.serve import ServeConfig, create_app  # noqa: E402
from dymsta.serve.upload import safe_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
# No proxies: ``urllib.request.urlopen`` keeps the opener of its first call, with the proxy variables of that
# moment (another test points them at an unreachable proxy to simulate being offline).
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerThread:
    """A real uvicorn server for ``app`` on a free loopback port, run in a thread: ``with ServerThread(app) as s:``.

    The socket is bound here (port 0: the kernel picks a free one) and handed to uvicorn, so no other process can
    take the port between choosing and listening.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


# ----------------------------------------------------------------------------------------------- helpers


def multipart(data: bytes, filename: str, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file part: ``(body, content type)``."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, dict, Any]:
    """``(status, JSON body, headers)`` of one HTTP call (errors included)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with LOOPBACK.open(req, timeout=120) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def post_video(
    base: str, data: bytes, filename: str, query: str = "", token: str | None = None, field: str = "file"
) -> tuple[int, dict]:
    body, content_type = multipart(data, filename, field)
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, payload, _ = request(f"{base}/v1/predict?{query}", data=body, headers=headers)
    return status, payload


def check_error(status: int, payload: dict, expected: int, *needles: str) -> None:
    """``{"error": "one line"}`` with the expected status, naming no server-side path."""
    assert status == expected, (status, payload)
    assert set(payload) == {"error"} and isinstance(payload["error"], str), payload
    message = payload["error"]
    assert message and "\n" not in message and "dymsta-serve-" not in message and "/tmp" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def cli_json(run: Path, clip: Path, capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    main(["predict", str(run), str(clip), "--json"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def same_prediction(served: dict, cli: dict, name: str) -> None:
    """The server's object is ``dymsta predict --json``'s, but for the video's name (the client's, not a path)."""
    assert served["video"] == name
    assert set(served) == set(cli)
    for key in ("label", "frames_decoded", "frames_expected", "warnings", "error"):
        assert served[key] == cli[key], key
    assert [p["label"] for p in served["predictions"]] == [p["label"] for p in cli["predictions"]]
    for a, b in zip(served["predictions"], cli["predictions"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def predictor(colour_run: dict) -> Predictor:
    return Predictor.from_checkpoint(colour_run["run"], device="cpu")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parent of the server's private per-request folders: empty whenever no request is in flight."""
    return tmp_path_factory.mktemp("serve-uploads")


@pytest.fixture(scope="module")
def server(predictor: Predictor, uploads: Path) -> Any:
    config = ServeConfig(max_upload_mb=1.0, workers=2, queue=8, timeout_s=60, tmp_dir=str(uploads))
    with ServerThread(create_app(predictor, config)) as s:
        yield s


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s at 8 fps: red, then green, then blue (a timeline of several windows and segments)."""
    import numpy as np

    frames = np.concatenate([colour_frames(c, 16, seed=40 + i) for i, c in enumerate(("red", "green", "blue"))])
    return write_video(tmp_path_factory.mktemp("long") / "long.mkv", frames, fps=8)


# ------------------------------------------------------------------------------------------------- tests


def test_health_model_and_page(server: ServerThread, colour_run: dict) -> None:
    status, health, _ = request(f"{server.url}/healthz")
    assert status == 200 and health["status"] == "ok" and health["model"] == colour_run["run"].name
    assert health["token_required"] is False and health["max_upload_bytes"] == 2**20
    status, model, _ = request(f"{server.url}/v1/model")
    assert status == 200 and model["classes"] == colour_run["classes"] and model["num_classes"] == 3
    assert model["arch"] == "dymsta" and model["backbone"] == "efficientnet_lite0" and model["num_frames"] == 8
    summary = json.loads((colour_run["run"] / "summary.json").read_text())
    assert model["calibration_temperature"] == pytest.approx(summary["calibration_temperature"])
    assert model["test_metrics"] == summary["test"] and model["attention_maps"] is True
    assert model["limits"]["max_upload_bytes"] == 2**20 and "token" not in model["limits"]
    with LOOPBACK.open(f"{server.url}/", timeout=30) as r:
        page = r.read().decode()
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert 'id="drop"' in page and "/static/app.js" in page and "http" not in page.split("<body>")[0].lower()
    for asset in ("app.js", "style.css"):
        with LOOPBACK.open(f"{server.url}/static/{asset}", timeout=30) as r:
            assert r.status == 200 and len(r.read()) > 500
    with LOOPBACK.open(f"{server.url}/openapi.json", timeout=30) as r:
        spec = json.loads(r.read())
    assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]


def test_predictions_equal_dymsta_predict(
    server: ServerThread, colour_run: dict, capsys: pytest.CaptureFixture
) -> None:
    for clip in colour_run["test_videos"][:3]:
        status, served = post_video(server.url, clip.read_bytes(), clip.name)
        assert status == 200, served
        same_prediction(served, cli_json(colour_run["run"], clip, capsys), clip.name)
        assert served["label"] == clip.parent.name and len(served["predictions"]) == 3  # top_k 5, 3 classes
    _, served = post_video(server.url, clip.read_bytes(), clip.name, "top_k=1")
    assert served["label"] == clip.parent.name and len(served["predictions"]) == 1


def test_real_clips_equal_dymsta_predict(
    server: ServerThread, colour_run: dict, shared_data: Path, capsys: pytest.CaptureFixture, uploads: Path
) -> None:
    clips = shared_data / "clips"
    for clip in (clips / "ucf101" / "v_Shotput_g05_c02.avi", clips / "kinetics" / "flipping_a_pancake.mkv"):
        status, served = post_video(server.url, clip.read_bytes(), clip.name)
        assert status == 200, served
        same_prediction(served, cli_json(colour_run["run"], clip, capsys), clip.name)
    assert leftovers(uploads) == []


def test_timeline_and_attention_come_from_the_predictor(
    server: ServerThread, predictor: Predictor, long_clip: Path, uploads: Path
) -> None:
    query = "timeline=true&window=1&stride=0.5&explain=true&top_k=2"
    status, served = post_video(server.url, long_clip.read_bytes(), long_clip.name, query)
    assert status == 200, served
    expected = predictor.timeline(long_clip, window=1.0, stride=0.5, top_k=2)
    t = served["timeline"]
    assert t["segments"] == expected["segments"] and t["windows"] == expected["windows"]
    assert [s["label"] for s in t["segments"]] == ["red", "green", "blue"]
    assert t["duration_s"] == expected["duration_s"] == 6.0 and (t["window_s"], t["stride_s"]) == (1.0, 0.5)
    for image in (t["plot_png"], served["attention"]["image_png"]):
        assert base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n"
    status, plain = post_video(server.url, long_clip.read_bytes(), long_clip.name)
    assert "timeline" not in plain and "attention" not in plain  # only when asked
    assert leftovers(uploads) == []


def test_bad_uploads_get_their_status_and_one_line_error(
    server: ServerThread, colour_run: dict, tmp_path: Path, uploads: Path
) -> None:
    base = server.url
    check_error(*post_video(base, b"hello, not a video\n" * 40, "notes.mp4"), 400, "notes.mp4", "not a video")
    check_error(*post_video(base, b"", "empty.mp4"), 400, "empty.mp4", "empty file")
    whole = write_video(tmp_path / "whole.avi", colour_frames("red", 60, seed=5), fps=8).read_bytes()
    check_error(*post_video(base, whole[: len(whole) // 3], "cut.avi"), 400, "cut.avi", "of 60 frames")
    # a server-side path as the file's content is just bytes that do not decode: no endpoint opens a path
    check_error(*post_video(base, str(colour_run["test_videos"][0]).encode(), "path.mp4"), 400, "not a video")
    # bad parameters (422), one line instead of FastAPI's list
    good = colour_run["test_videos"][0].read_bytes()
    check_error(*post_video(base, good, "a.mkv", "top_k=0"), 422, "top_k", "greater than or equal to 1")
    check_error(*post_video(base, good, "a.mkv", "window=-1&stride=abc"), 422, "window", "stride")
    check_error(*post_video(base, good, "a.mkv", field="video"), 422, "no field 'file'")
    status, payload, _ = request(
        f"{base}/v1/predict", data=b'{"file": "/etc/passwd"}', headers={"Content-Type": "application/json"}
    )
    check_error(status, payload, 422, "multipart/form-data")
    status, payload, _ = request(f"{base}/v1/nothing")
    check_error(status, payload, 404)
    # the server keeps answering, with the client's base name (no folders) for the video
    status, served = post_video(base, good, "../../etc/a clip.mkv")
    assert status == 200 and served["video"] == "a clip.mkv"
    assert served["label"] == colour_run["test_videos"][0].parent.name
    assert request(f"{base}/healthz")[0] == 200
    assert leftovers(uploads) == []


def test_real_bad_clips_get_400(server: ServerThread, colour_run: dict, shared_data: Path, uploads: Path) -> None:
    clips = shared_data / "clips"
    corrupted = (clips / "edge" / "corrupted.mp4").read_bytes()  # broken on purpose: FFmpeg fails at frame 28
    # 28 of 50 frames decode: above data.min_decoded_fraction (0.5), answered with the warning, as datasets use it
    status, served = post_video(server.url, corrupted, "corrupted.mp4")
    assert status == 200 and "decoded 28 of 50 frames" in served["warnings"][0]
    assert served["warnings"][0].startswith("corrupted.mp4:")  # the client's name, not the upload's path
    ucf = (clips / "ucf101" / "v_Shotput_g05_c02.avi").read_bytes()
    check_error(*post_video(server.url, ucf[:30_000], "cut.avi"), 400, "cut.avi", "decoded 2 of 130 frames")
    check_error(*post_video(server.url, ucf[:30_000], "cut.avi"), 400, "min_decoded_fraction=0.5")
    check_error(*post_video(server.url, ucf[:3_000], "head.avi"), 400, "head.avi")
    rotated = clips / "edge" / "video_90.mov"  # odd but healthy: answered
    status, served = post_video(server.url, rotated.read_bytes(), rotated.name)
    assert status == 200 and served["warnings"] == [] and served["label"] in colour_run["classes"]
    assert leftovers(uploads) == []


def test_over_the_cap_is_refused_before_the_body_is_read(server: ServerThread, uploads: Path) -> None:
    # Content-Length over the cap: the answer comes before a single byte of the body is sent
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/v1/predict")
    conn.putheader("Content-Type", "multipart/form-data; boundary=xyz")
    conn.putheader("Content-Length", str(5 * 2**20))
    conn.endheaders()
    response = conn.getresponse()
    check_error(response.status, json.loads(response.read()), 413, "too large", "5 MiB", "limit is 1 MiB")
    conn.close()
    # no Content-Length (chunked): refused once the count passes the cap, while the body is still unfinished
    body, content_type = multipart(os.urandom(2**20 + 100), "big.mp4")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        sent = 0
        while sent <= 2**20:  # just past the cap; the terminating chunk is never sent
            chunk = body[sent : sent + 65536]
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:200]
    check_error(413, json.loads(rest.split(b"\r\n\r\n", 1)[1]), 413, "too large", "limit is 1 MiB")
    wait_until(lambda: leftovers(uploads) == [])
    assert request(f"{server.url}/healthz")[0] == 200


def test_eight_concurrent_requests_are_all_answered(server: ServerThread, colour_run: dict, uploads: Path) -> None:
    clips = [colour_run["test_videos"][i % len(colour_run["test_videos"])] for i in range(8)]
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda c: post_video(server.url, c.read_bytes(), c.name), clips))
    for clip, (status, served) in zip(clips, answers, strict=True):
        assert status == 200, served
        assert served["video"] == clip.name and served["label"] == clip.parent.name
    wait_until(lambda: request(f"{server.url}/healthz")[1]["busy"] == 0)
    assert leftovers(uploads) == []


class GatedRunner:
    """A model runner that waits for ``gate`` before each call: a job that takes as long as the test wants."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.gate = runner, threading.Event()

    def __call__(self, streams: Any) -> Any:
        assert self.gate.wait(timeout=30)
        return self.runner(streams)


def test_tokens_a_full_queue_and_the_time_limit(predictor: Predictor, colour_run: dict, tmp_path: Path) -> None:
    gated = GatedRunner(predictor.runner)
    slow = Predictor(
        gated,
        predictor.spec,
        predictor.class_names,
        temperature=predictor.temperature,
        source=predictor.source,
        model=predictor.model,
    )
    config = ServeConfig(token=TOKEN, workers=1, queue=0, timeout_s=1.0, tmp_dir=str(tmp_path))
    clip = colour_run["test_videos"][0]
    data = clip.read_bytes()
    with ServerThread(create_app(slow, config)) as s:
        status, health, _ = request(f"{s.url}/healthz")  # open: the page learns from it that a token is needed
        assert status == 200 and health["token_required"] is True and health["capacity"] == 1
        status, payload, headers = request(f"{s.url}/v1/model")
        check_error(status, payload, 401, "missing")
        assert headers["WWW-Authenticate"] == "Bearer"
        check_error(*request(f"{s.url}/v1/model", headers={"Authorization": "Bearer nope"})[:2], 401, "wrong")
        check_error(*post_video(s.url, data, clip.name), 401, "token")
        check_error(*post_video(s.url, data, clip.name, token="wrong"), 401, "wrong")
        assert request(f"{s.url}/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200

        with ThreadPoolExecutor(1) as ex:  # one request holds the only place; its model call waits on the gate
            first = ex.submit(post_video, s.url, data, clip.name, "", TOKEN)
            wait_until(lambda: request(f"{s.url}/healthz")[1]["busy"] == 1)
            status, payload = post_video(s.url, data, clip.name, token=TOKEN)
            check_error(status, payload, 503, "busy")
            check_error(*first.result(timeout=30), 504, "limit of 1 s")
        # the timed-out job is still running: it keeps its place (and its files) until it ends
        assert request(f"{s.url}/healthz")[1]["busy"] == 1 and leftovers(tmp_path) != []
        check_error(*post_video(s.url, data, clip.name, token=TOKEN), 503, "busy")
        gated.gate.set()
        wait_until(lambda: request(f"{s.url}/healthz")[1]["busy"] == 0)
        assert leftovers(tmp_path) == []
        status, served = post_video(s.url, data, clip.name, token=TOKEN)
        assert status == 200 and served["label"] == clip.parent.name
    assert leftovers(tmp_path) == []


def test_safe_names() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\clip 1.mp4") == "clip 1.mp4"
    assert safe_name(".hidden.mkv") == "hidden.mkv" and safe_name("") == safe_name("..") == "upload"
    assert safe_name("a;rm -rf $HOME|<b>.avi") == "a_rm -rf _HOME__b_.avi"
    long = safe_name("x" * 300 + ".webm")
    assert len(long) <= 100 and long.endswith(".webm")


def test_the_serve_command_answers(colour_run: dict, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port (the server binds it a moment later)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "dymsta", "serve", str(colour_run["run"]), "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "TMPDIR": str(tmp_path), "DYMSTA_SERVE_TOKEN": ""}  # uploads' folders go to tmp_path
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read()
            try:
                return request(f"{url}/healthz")[0] == 200
            except OSError:
                return False

        wait_until(up, timeout=90)
        clip = colour_run["test_videos"][-1]
        status, served = post_video(url, clip.read_bytes(), clip.name)
        assert status == 200 and served["label"] == clip.parent.name
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "POST /v1/predict 200" in out and "Uvicorn running" in out  # each request logged (size, time, label)
    assert list(tmp_path.glob("dymsta-serve-*")) == []
