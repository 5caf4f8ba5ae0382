"""Live video (`dymsta predict --stream`): windows classified as a piped stream arrives, dropped windows counted
when the model falls behind, a clean stop on Ctrl-C and at the end, one-line errors for sources that do not open
or stall; and the pass over a file equal to classifying each window's clip on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import colour_frames, write_video
from dymsta.cli import main
from dymsta.data.decode import read_clip
from dymsta.data.live import open_source, source_kind
from dymsta.data.sampling import segment_indices
from dymsta.engine.predict import Predictor
from dymsta.engine.stream import WindowStream, sliding_windows

FPS = 8
WINDOW_FIELDS = {"start", "end", "label", "predictions", "latency_s"}


def _long_video(folder: Path, order: list[str], seconds: int = 3, suffix: str = ".mkv") -> Path:
    frames = np.concatenate([colour_frames(c, seconds * FPS, seed=70 + i) for i, c in enumerate(order)])
    return write_video(folder / f"long{suffix}", frames, fps=FPS)


def _stream_cli(run: Path, *extra: str) -> list[str]:
    args = ["-m", "dymsta", "predict", str(run), "--stream", "-", "--window", "1", "--stride", "0.5", *extra]
    return [sys.executable, *args]


def _feed(proc: subprocess.Popen, data: bytes, *, seconds: float, stop_at: float = 1.0, close: bool = True) -> None:
    """Write ``data[: stop_at share]`` into the process's stdin over ``seconds`` (a live source's pace), then close
    it (the end of the stream) unless ``close`` is False. Not with ``communicate()``, which closes stdin at once."""
    chunks = np.array_split(np.frombuffer(data[: int(len(data) * stop_at)], dtype=np.uint8), 20)
    try:
        for chunk in chunks:
            proc.stdin.write(chunk.tobytes())
            proc.stdin.flush()
            time.sleep(seconds / len(chunks))
        if close:
            proc.stdin.close()
    except (BrokenPipeError, ValueError):
        pass


def test_source_kinds() -> None:
    assert source_kind("-") == "stdin"
    assert source_kind("/dev/video0") == "camera"
    assert source_kind("rtsp://cam.local/live") == source_kind("SRT://host:9000") == "network"
    assert source_kind("clips/a.mp4") == source_kind("C:/videos/a.mp4") == "file"


def test_file_pass_equals_each_window_classified_alone(colour_run: dict, tmp_path: Path) -> None:
    """The streaming reader hands the model what read_clip + the dataset's streams give for each window."""
    video = _long_video(tmp_path, ["red", "blue"], seconds=2)
    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    spans = sliding_windows(4 * FPS, FPS, 1.0, 0.5)
    run = WindowStream(predictor, open_source(video), window=1.0, stride=0.5, spans=spans, batch_size=3)
    windows = list(run)
    assert len(windows) == len(spans) == 7 and run.reader.dropped == []
    clips = predictor.spec.dataset()
    for (a, b), got in zip(spans, run.probs, strict=True):
        local = segment_indices(b - a, predictor.spec.num_frames, mode="eval")
        clip = read_clip(video, [a + int(i) for i in local], short_side=clips.resize)
        streams = clips.clip_streams(clip, 0, path=str(video))
        alone = predictor.probabilities({k: v[None] for k, v in streams.items()})[0]
        np.testing.assert_allclose(got, alone, atol=1e-5)
    assert [w["label"] for w in windows][:2] == ["red", "red"] and windows[-1]["label"] == "blue"


def test_a_slow_model_on_a_live_source_drops_whole_windows_and_counts_them(colour_run: dict, tmp_path: Path) -> None:
    video = _long_video(tmp_path, ["red", "green", "blue"], seconds=4)
    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    fast = predictor.probabilities
    pending: list[int] = []

    def slow(streams: dict[str, torch.Tensor]) -> np.ndarray:
        pending.append(run.reader.pending())
        time.sleep(0.3)
        return fast(streams)

    predictor.probabilities = slow
    run = WindowStream(predictor, open_source(video, live=True), window=1.0, stride=0.5, max_pending=2)
    windows = list(run)
    summary = run.summary()
    total = 12 * FPS // 4  # a window starts every 4 frames until the stream ends (the last one cut short by it)
    assert summary["windows_dropped"] > 0 and len(windows) == summary["windows"] > 0
    assert summary["windows"] + summary["windows_dropped"] == total
    assert max(pending) <= 2  # the reader keeps at most max_pending finished windows
    assert 0 < summary["frames_dropped"] < 12 * FPS and summary["frames_decoded"] == 12 * FPS
    starts = [w["start"] for w in windows]
    assert starts == sorted(starts) and all(w["latency_s"] >= 0 for w in windows)


def test_stream_from_stdin_prints_windows_and_the_segments(colour_run: dict, tmp_path: Path) -> None:
    video = _long_video(tmp_path, ["red", "green", "blue"], seconds=3, suffix=".nut")
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen(
        _stream_cli(colour_run["run"], "--out", str(out), "--smooth", "3"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    _feed(proc, video.read_bytes(), seconds=3.0)  # at 3x real time (the outputs are small: no pipe fills up)
    proc.wait(timeout=120)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert lines == [json.loads(line) for line in out.read_text().splitlines()]
    windows, summary = lines[:-1], lines[-1]["summary"]
    assert windows and all(set(w) == WINDOW_FIELDS for w in windows)
    assert summary["windows"] == len(windows) and summary["error"] is None and summary["stopped"] is False
    assert summary["windows"] + summary["windows_dropped"] == 9 * FPS // 4  # one every 4 frames
    assert summary["frames_decoded"] == 9 * FPS and summary["fps"] == FPS
    assert [s["label"] for s in summary["segments"]] == ["red", "green", "blue"]
    assert windows[0]["start"] == 0.0 and windows[0]["end"] == 1.0


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal gives it, even where pytest was started in the background of
    a script (`make test &`), which leaves SIGINT ignored for every child and Ctrl-C a no-op."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_stream_cleanly_with_its_summary(colour_run: dict, tmp_path: Path) -> None:
    video = _long_video(tmp_path, ["red", "green"], seconds=6, suffix=".nut")
    proc = subprocess.Popen(
        _stream_cli(colour_run["run"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_interruptible,
    )
    data = video.read_bytes()
    feeder = threading.Thread(target=_feed, args=(proc, data), kwargs={"seconds": 60.0, "close": False})
    feeder.daemon = True
    feeder.start()
    first = proc.stdout.readline()  # a window's answer: the stream is running
    assert set(json.loads(first)) == WINDOW_FIELDS, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    summary = json.loads(stdout.decode().splitlines()[-1])["summary"]
    assert summary["stopped"] is True and summary["error"] is None and summary["windows"] >= 1, (
        summary,
        stderr[-2000:],
    )
    assert summary["segments"] and summary["segments"][0]["label"] == "red"


def test_a_stalled_source_ends_with_a_one_line_error(colour_run: dict, tmp_path: Path) -> None:
    video = _long_video(tmp_path, ["red", "green"], seconds=4, suffix=".nut")
    proc = subprocess.Popen(
        _stream_cli(colour_run["run"], "--timeout", "2"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _feed(proc, video.read_bytes(), seconds=0.5, stop_at=0.5, close=False)  # half the stream, then nothing
    try:
        proc.wait(timeout=60)  # not communicate(): that would close stdin, an end rather than a stall
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 1
    errors = [line for line in stderr.decode().splitlines() if "error:" in line]
    assert len(errors) == 1 and "stalled" in errors[0] and errors[0].startswith("dymsta predict: error: -")
    summary = json.loads(stdout.decode().splitlines()[-1])["summary"]
    assert "stalled" in summary["error"] and summary["windows"] >= 1


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("missing.mp4", "missing.mp4: file not found"),
        ("rtsp://127.0.0.1:9/none", "rtsp://127.0.0.1:9/none: cannot open the source"),
    ],
)
def test_a_source_that_does_not_open_is_a_one_line_error(
    colour_run: dict, source: str, expected: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["predict", str(colour_run["run"]), "--stream", source, "--timeout", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_stream_options_are_checked(colour_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = _long_video(tmp_path, ["red"], seconds=2)
    assert main(["predict", str(colour_run["run"]), "--stream", str(video), "-"]) == 2
    assert "--stream takes one source, got 2 inputs" in capsys.readouterr().err
    assert main(["predict", str(colour_run["run"]), str(video), "--timeline", "--smooth", "2"]) == 2
    assert "--smooth" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".ts", ".webm"])
def test_containers_a_live_source_sends_open_from_a_pipe(colour_run: dict, tmp_path: Path, suffix: str) -> None:
    """MPEG-TS (codec parameters in-band) and WebM open with the short live probe and decode every frame."""
    codec = "libx264" if suffix == ".ts" else "libvpx-vp9"
    frames = np.concatenate([colour_frames(c, 3 * FPS, seed=80 + i) for i, c in enumerate(["red", "blue"])])
    video = write_video(tmp_path / f"live{suffix}", frames, fps=FPS, codec=codec)
    proc = subprocess.Popen(_stream_cli(colour_run["run"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    _feed(proc, video.read_bytes(), seconds=1.5)
    proc.wait(timeout=120)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    summary = json.loads(stdout.decode().splitlines()[-1])["summary"]
    assert summary["frames_decoded"] == 6 * FPS and summary["windows"] >= 1 and summary["error"] is None
