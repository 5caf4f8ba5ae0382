"""Timelines: sliding windows, the streaming decode (equal to read_clip window by window, for every stream), and
a long video made of clips of known classes whose segments follow their order, with its plot and labelled copy."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import colour_frames, write_video
from dymsta.cli import main
from dymsta.data.decode import ClipRequest, read_clip, stream_clips
from dymsta.engine.predict import Predictor, sliding_windows

# docs/predict.md, "Timeline of one video"
TIMELINE_FIELDS = {
    "video": str,
    "duration_s": float,
    "fps": float,
    "window_s": float,
    "stride_s": float,
    "frames_decoded": int,
    "frames_expected": int,
    "warnings": list,
    "error": (str, type(None)),
    "segments": list,
    "windows": list,
}


def check_timeline(t: dict, classes: list[str]) -> None:
    assert set(TIMELINE_FIELDS) <= set(t) <= set(TIMELINE_FIELDS) | {"plot", "video_out"}
    for key, types in TIMELINE_FIELDS.items():
        assert isinstance(t[key], types), (key, t[key])
    if t["error"]:
        assert t["segments"] == [] and t["windows"] == []
        return
    labels = set(classes) | {"unknown"}
    for w in t["windows"]:
        assert set(w) == {"segment", "label", "predictions"} and w["label"] in labels
        start, end = w["segment"]
        assert 0 <= start < end <= t["duration_s"] + 1e-6
        scores = [p["score"] for p in w["predictions"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    starts = [w["segment"][0] for w in t["windows"]]
    assert starts == sorted(starts)
    segs = t["segments"]
    assert segs and all(set(s) == {"segment", "label", "score"} for s in segs)
    assert segs[0]["segment"][0] == 0.0 and segs[-1]["segment"][1] == pytest.approx(t["duration_s"], abs=1e-3)
    for a, b in zip(segs, segs[1:], strict=False):
        assert a["segment"][1] == b["segment"][0] and a["label"] != b["label"]  # they tile, and merge runs


def test_sliding_windows_cover_the_video() -> None:
    assert sliding_windows(100, 10.0, 2.0, 1.0) == [(k * 10, k * 10 + 20) for k in range(9)]  # 10 s, fits exactly
    spans = sliding_windows(105, 10.0, 2.0, 1.0)  # 10.5 s: one more window ends at the end
    assert spans[-1] == (85, 105) and spans[-2] == (80, 100)
    assert sliding_windows(12, 25.0, 2.0, 1.0) == [(0, 12)]  # shorter than a window
    assert all(b > a for a, b in sliding_windows(7, 3.0, 0.1, 0.1))


def _windows(num_frames: int, T: int, width: int, step: int) -> list[list[int]]:
    return [[a + int(i) for i in np.linspace(0, width - 1, T).round()] for a in range(0, num_frames - width + 1, step)]


@pytest.mark.parametrize("motion", [False, True], ids=["rgb", "rgbdiff+mv"])
def test_streaming_decode_equals_read_clip_window_by_window(tiny_video, motion: bool) -> None:
    path, _ = tiny_video("clip.avi", num_frames=40, codec="mpeg4", height=64, width=80)
    clips = _windows(40, 4, 12, 3)  # overlapping windows: frames shared by several clips
    following = 1 if motion else 0
    mv = (lambda idx: tuple((i, i + 2) for i in idx)) if motion else (lambda idx: None)
    requests = [ClipRequest(tuple(idx), following, mv(idx)) for idx in clips]
    streamed = list(stream_clips(path, iter(requests), short_side=48))
    assert len(streamed) == len(clips)
    for idx, got in zip(clips, streamed, strict=True):
        ref = read_clip(path, idx, short_side=48, following=following, motion_windows=mv(idx))
        np.testing.assert_array_equal(got.frames, ref.frames)
        if motion:
            np.testing.assert_array_equal(got.following, ref.following)
            assert got.motion_source == ref.motion_source == "codec" and got.flow_cell == ref.flow_cell
            for a, b in zip(got.flows, ref.flows, strict=True):
                np.testing.assert_array_equal(a, b)
        assert not got.ended_early


def test_streaming_decode_stops_at_the_end_of_a_truncated_file(tmp_path: Path) -> None:
    whole = write_video(tmp_path / "whole.avi", colour_frames("red", 60, seed=1), codec="ffv1")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    clips = _windows(60, 4, 10, 5)
    streamed = list(stream_clips(cut, (ClipRequest(tuple(i)) for i in clips), strict=False))
    decodable = read_clip(cut, [0], to_end=True, strict=False).num_decoded
    assert 0 < decodable < 60
    reached = [idx for idx in clips if idx[0] < decodable]
    assert len(streamed) == len(reached) < len(clips)  # windows wholly past the end are dropped
    assert streamed[-1].ended_early and not streamed[0].ended_early
    with pytest.raises(ValueError, match="order"):
        list(stream_clips(whole, [ClipRequest((10, 11)), ClipRequest((2, 3))]))


def _concatenated(folder: Path, order: list[str], seconds: int = 3, fps: int = 8) -> Path:
    frames = np.concatenate([colour_frames(c, seconds * fps, seed=50 + i) for i, c in enumerate(order)])
    return write_video(folder / "long.mkv", frames, fps=fps)


def test_timeline_segments_follow_the_concatenated_classes(colour_run: dict, tmp_path: Path) -> None:
    order = ["red", "green", "blue", "green"]
    video = _concatenated(tmp_path, order)
    predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu")
    t = predictor.timeline(video, window=1.0, stride=0.5, plot=tmp_path / "t.png", video_out=tmp_path / "t.mp4")
    check_timeline(t, colour_run["classes"])
    assert [s["label"] for s in t["segments"]] == order
    boundaries = [s["segment"][0] for s in t["segments"][1:]]
    assert np.allclose(boundaries, [3.0, 6.0, 9.0], atol=0.5)
    assert t["duration_s"] == 12.0 and t["frames_decoded"] == t["frames_expected"] == 96
    assert len(t["windows"]) == 23 and all(len(w["predictions"]) == 3 for w in t["windows"])
    assert (tmp_path / "t.png").stat().st_size > 5000 and t["plot"] == str(tmp_path / "t.png")
    with av.open(str(tmp_path / "t.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 96 and min(frames[0].shape[:2]) >= 240
    assert frames[0][:10].mean() < frames[0][20:].mean()  # the darkened label banner


def test_timeline_cli_json_and_bad_files(colour_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = _concatenated(tmp_path, ["blue", "red"], seconds=2)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "t.jsonl"
    args = ["predict", str(colour_run["run"]), str(video), str(bad), "--timeline", "--window", "1", "--stride", "1"]
    assert main([*args, "--out", str(out), "--plot", str(tmp_path / "plots")]) == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    check_timeline(lines[0], colour_run["classes"])
    check_timeline(lines[1], colour_run["classes"])
    assert [s["label"] for s in lines[0]["segments"]] == ["blue", "red"]
    assert lines[1]["error"].startswith(str(bad))
    assert (tmp_path / "plots" / "long.timeline.png").is_file()  # a folder: one PNG per video
    printed = capsys.readouterr().out
    assert "blue (" in printed and "red (" in printed
    assert main(["predict", str(colour_run["run"]), str(video), "--timeline", "--window", "0"]) == 2


def test_best_path_is_the_viterbi_optimum_and_removes_brief_flicker() -> None:
    import itertools

    from dymsta.engine.stream import best_path

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=6)
    assert (best_path(probs, 0.0) == probs.argmax(1)).all()
    for cost in (0.5, 2.0):

        def value(path: tuple, cost: float = cost) -> float:
            changes = sum(a != b for a, b in zip(path, path[1:], strict=False))
            return float(np.log(probs[np.arange(6), list(path)]).sum()) - cost * changes

        brute = max(itertools.product(range(3), repeat=6), key=value)
        assert value(tuple(best_path(probs, cost))) == pytest.approx(value(brute))
    flicker = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] + [[0.9, 0.1]] * 4)  # one window prefers class 1 a little
    assert best_path(flicker, 0.0)[4] == 1 and (best_path(flicker, 2.0) == 0).all()
    change = np.array([[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 4)  # a real change survives
    assert list(best_path(change, 2.0)) == [0] * 4 + [1] * 4
