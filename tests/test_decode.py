"""Decoding: lossless round trips, frame selection, rotation, VFR, bad files, and every real sample clip."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import shared_data_dir
from dymsta.data import DecoderBackendError, VideoDecodeError, probe_video, read_frames, torchcodec_available
from dymsta.data.transforms import resize_short_side

# ------------------------------------------------------------------------------------------ synthetic videos


@pytest.mark.parametrize(
    ("codec", "ext"), [("ffv1", "mkv"), ("ffv1", "avi"), ("libx264rgb", "mp4"), ("libx264rgb", "mkv")]
)
def test_lossless_round_trip(tiny_video, codec, ext):
    path, frames = tiny_video(f"clip.{ext}", codec=codec, num_frames=12)
    out = read_frames(path, range(12))
    assert out.dtype == np.uint8 and out.shape == (12, 48, 64, 3)
    np.testing.assert_array_equal(out, frames)


def test_requested_order_and_duplicates(tiny_video):
    path, frames = tiny_video(num_frames=12)
    order = [5, 0, 5, 11, 3, 3]
    np.testing.assert_array_equal(read_frames(path, order), frames[order])


def test_probe_metadata(tiny_video):
    path, _ = tiny_video("clip.mp4", codec="libx264rgb", num_frames=10, height=40, width=72, fps=30)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.rotation) == (10, 72, 40, 0)
    assert info.fps == pytest.approx(30.0)
    assert info.path == str(path)


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_variable_frame_rate_frames_by_index(tiny_video, ext):
    stamps = [0, 10, 50, 60, 200, 210, 215, 400, 401, 500, 700, 705]  # irregular gaps, in ms
    codec = "ffv1" if ext == "mkv" else "libx264rgb"
    path, frames = tiny_video(f"vfr.{ext}", codec=codec, num_frames=12, timestamps_ms=stamps)
    assert probe_video(path).num_frames == 12
    np.testing.assert_array_equal(read_frames(path, [0, 6, 7, 11]), frames[[0, 6, 7, 11]])


@pytest.mark.parametrize("angle", [90, -90, 180])
def test_rotation_metadata_is_applied(tiny_video, angle):
    # FFmpeg's display-matrix angle is counter-clockwise, as is np.rot90 for positive k.
    path, frames = tiny_video(f"rot{angle}.mp4", codec="libx264rgb", num_frames=3, rotation=angle)
    info = probe_video(path)
    assert info.rotation == (-angle) % 360
    out = read_frames(path, [0, 2])
    expected = np.rot90(frames[[0, 2]], k=angle // 90, axes=(1, 2))
    np.testing.assert_array_equal(out, expected)
    assert (info.height, info.width) == out.shape[1:3]


def test_decode_time_downscale(tiny_video):
    path, frames = tiny_video(num_frames=4, height=96, width=128)
    small = read_frames(path, [1, 2], short_side=48)
    assert small.shape == (2, 48, 64, 3)
    reference = resize_short_side(torch.from_numpy(frames[[1, 2]]), 48).numpy()
    assert np.abs(small.astype(int) - reference).mean() < 6  # same picture, another anti-aliasing filter
    assert read_frames(path, [0], short_side=200).shape == (1, 96, 128, 3)  # never enlarged


def test_indices_past_the_end_repeat_the_last_frame(tiny_video):
    path, frames = tiny_video(num_frames=6)
    np.testing.assert_array_equal(read_frames(path, [5, 40, 2]), frames[[5, 5, 2]])


def test_argument_errors(tiny_video):
    path, _ = tiny_video(num_frames=4)
    with pytest.raises(ValueError, match="indices"):
        read_frames(path, [0, -1])
    with pytest.raises(DecoderBackendError, match="unknown decoding backend"):
        read_frames(path, [0], backend="opencv")
    assert read_frames(path, []).shape == (0, 48, 64, 3)


def test_matches_pyav_default_conversion(tiny_video):
    """The shared single-threaded swscale context gives exactly PyAV's default to_ndarray pixels (lossy YUV)."""
    path, _ = tiny_video("clip.mp4", codec="libx264", num_frames=8)
    with av.open(str(path)) as container:
        reference = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    np.testing.assert_array_equal(read_frames(path, [7, 1, 4]), reference[[7, 1, 4]])


def test_torchcodec_backend_matches_or_says_why(tiny_video):
    path, frames = tiny_video("clip.mkv", codec="ffv1", num_frames=6)
    ok, why = torchcodec_available()
    if ok:
        np.testing.assert_array_equal(read_frames(path, [4, 0, 4], backend="torchcodec"), frames[[4, 0, 4]])
    else:
        with pytest.raises(DecoderBackendError, match="TorchCodec") as err:
            read_frames(path, [0], backend="torchcodec")
        assert "\n" not in str(err.value) and str(err.value) == why


# ----------------------------------------------------------------------------------------------- bad inputs


def _truncated_mp4(tmp_path: Path, tiny_video) -> Path:
    path, _ = tiny_video("whole.mp4", codec="libx264rgb", num_frames=12)
    data = path.read_bytes()
    out = tmp_path / "truncated.mp4"
    out.write_bytes(data[: len(data) // 2])  # PyAV writes the moov atom last: it is cut off
    return out


def _audio_only(tmp_path: Path, _tiny_video) -> Path:
    out = tmp_path / "sound.wav"
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out


def _no_frames(tmp_path: Path, _tiny_video) -> Path:
    """A video stream without a single packet (and an audio stream, so the file gets written)."""
    out = tmp_path / "noframes.mkv"
    with av.open(str(out), mode="w") as container:
        video = container.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "bgr0"
        audio = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_FILES = {
    "missing": (lambda tmp, tv: tmp / "nope.mp4", "file not found"),
    "directory": (lambda tmp, tv: tmp, "directory"),
    "empty": (lambda tmp, tv: _write(tmp / "empty.mp4", b""), "empty file"),
    "not_a_video": (lambda tmp, tv: _write(tmp / "notes.mp4", b"hello\n" * 100), "not a video"),
    "truncated": (_truncated_mp4, "truncated"),
    "audio_only": (_audio_only, "no video stream"),
    "no_frames": (_no_frames, r"(no|zero decodable) frames"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_gives_one_clear_error(tmp_path, tiny_video, case):
    make, words = BAD_FILES[case]
    path = make(tmp_path, tiny_video)
    for call in (lambda: probe_video(path), lambda: read_frames(path, [0, 1])):
        with pytest.raises(VideoDecodeError) as err:
            call()
        e = err.value
        assert str(e) == f"{path}: {e.cause}" and "\n" not in str(e)
        assert e.path == str(path) and re.search(words, e.cause)


def test_truncated_avi_decodes_a_prefix_or_fails_cleanly(tmp_path, tiny_video):
    path, frames = tiny_video("whole.avi", codec="ffv1", num_frames=12)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 2 // 3])
    try:
        n = probe_video(cut).num_frames
        out = read_frames(cut, range(n))
    except VideoDecodeError as e:
        assert str(cut) in str(e)
    else:
        assert 0 < n < 12
        np.testing.assert_array_equal(out, frames[:n])


def test_unreadable_file(tiny_video):
    path, _ = tiny_video(num_frames=2)
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading")
        with pytest.raises(VideoDecodeError, match="permission denied"):
            probe_video(path)
    finally:
        os.chmod(path, 0o644)


def test_decode_error_pickles():
    e = pickle.loads(pickle.dumps(VideoDecodeError("/a/b.mp4", "zero decodable frames")))
    assert (e.path, e.cause, str(e)) == ("/a/b.mp4", "zero decodable frames", "/a/b.mp4: zero decodable frames")


# ------------------------------------------------------------------------------------- real sample clips

_SHARED = shared_data_dir()
_CLIPS = (
    sorted(p.relative_to(_SHARED / "clips").as_posix() for p in (_SHARED / "clips").rglob("*") if p.is_file())
    if (_SHARED and (_SHARED / "clips").is_dir())
    else []
)
_GOOD_CLIPS = [c for c in _CLIPS if c != "edge/corrupted.mp4"]


@pytest.mark.parametrize("name", _GOOD_CLIPS or [pytest.param("none", marks=pytest.mark.skip("no ../shared/data"))])
def test_real_clip_decodes_every_frame(shared_data, name):
    path = shared_data / "clips" / name
    with av.open(str(path)) as container:  # ground truth: PyAV's own count of decoded frames
        truth = sum(1 for _ in container.decode(video=0))
    info = probe_video(path)
    assert info.num_frames == truth
    small = read_frames(path, range(truth), short_side=64)  # every frame decodes (kept small in memory)
    assert small.shape[0] == truth and min(small.shape[1:3]) == min(64, info.width, info.height)
    ends = read_frames(path, [0, truth - 1])
    assert ends.shape == (2, info.height, info.width, 3)
    if info.rotation in (90, 270):
        assert info.height > info.width  # the edge/video_{90,270}.mov clips are landscape-coded portrait videos


def test_real_rotated_clips(shared_data):
    for angle in (0, 90, 180, 270):
        info = probe_video(shared_data / "clips" / "edge" / f"video_{angle}.mov")
        assert info.rotation == angle


def test_corrupted_clip_gives_clear_error(shared_data):
    path = shared_data / "clips" / "edge" / "corrupted.mp4"
    with pytest.raises(VideoDecodeError) as err:
        read_frames(path, range(probe_video(path).num_frames))
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert "decoding failed" in err.value.cause
