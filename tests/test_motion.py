"""Motion streams: RGB differences, codec motion vectors, the optical-flow fallback, and their alignment with the
frames under crops and flips (real videos encoded by FFmpeg in the tests)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_video
from dymsta.data import VideoRecord
from dymsta.data.datasets import VideoClipDataset, motion_windows
from dymsta.data.decode import read_clip
from dymsta.data.motion import (
    MotionSettings,
    check_modalities,
    crop_flow,
    flow_curl,
    flow_histogram,
    flow_image,
    rasterize_frames,
    rasterize_vectors,
    rgb_difference,
    rotate_flow,
    stream_settings,
)
from dymsta.data.transforms import IMAGENET_MEAN, IMAGENET_STD

MV_DTYPE = np.dtype(
    [
        ("source", "int32"),
        ("w", "uint8"),
        ("h", "uint8"),
        ("src_x", "int16"),
        ("src_y", "int16"),
        ("dst_x", "int16"),
        ("dst_y", "int16"),
        ("flags", "uint64"),
        ("motion_x", "int32"),
        ("motion_y", "int32"),
        ("motion_scale", "uint16"),
    ],
    align=True,
)  # FFmpeg's AVMotionVector, as PyAV's to_ndarray() gives it


def _vectors(*rows: tuple) -> np.ndarray:
    """rows of (source, w, h, dst_x, dst_y, motion_x, motion_y, motion_scale)."""
    out = np.zeros(len(rows), MV_DTYPE)
    for i, (source, w, h, x, y, mx, my, scale) in enumerate(rows):
        out[i] = (source, w, h, x + mx // scale, y + my // scale, x, y, 0, mx, my, scale)
    return out


def moving_square(num_frames: int = 24, size: int = 96, step: int = 4) -> np.ndarray:
    """uint8 (T, size, size, 3): a square moving right by ``step`` px per frame on a still background, both with
    smooth texture (block motion search follows smooth content; on white noise encoders pick intra blocks)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.stack(
        [128 + 60 * np.sin(xx / 9.0), 128 + 60 * np.cos(yy / 11.0), 128 + 40 * np.sin((xx + yy) / 13.0)], -1
    )
    sy, sx = np.mgrid[0:32, 0:32].astype(np.float32)
    square = np.stack([200 + 50 * np.sin(sx / 4.0), 60 + 50 * np.cos(sy / 5.0), 100 + 80 * np.sin((sx - sy) / 6.0)], -1)
    frames = np.repeat(background[None], num_frames, 0)
    for t in range(num_frames):
        x = 8 + t * step
        width = max(0, min(32, size - x))
        frames[t, 32:64, x : x + width] = square[:, :width]
    return np.clip(frames, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------------- pure functions


def test_rasterize_vectors_signs_cells_and_averages() -> None:
    vectors = _vectors(
        (-1, 16, 16, 8, 8, -8, 0, 2),  # past reference 4 px to the left: the block moved right by +4
        (1, 16, 16, 24, 8, 0, 6, 2),  # future reference 3 px below: it moves down by +3
        (-1, 8, 8, 4, 20, -4, 0, 4),  # two 8x8 partitions of one macroblock: +1 and +3 in x, averaged to +2
        (-1, 8, 8, 12, 20, -12, 0, 4),
    )
    field = rasterize_vectors(vectors, 32, 40)
    assert field.shape == (2, 2, 3)
    np.testing.assert_allclose(field[:, 0, 0], [4.0, 0.0])
    np.testing.assert_allclose(field[:, 0, 1], [0.0, 3.0])
    np.testing.assert_allclose(field[:, 1, 0], [2.0, 0.0])
    assert not field[:, :, 2].any() and not field[:, 1, 1].any()  # no vector: intra or still
    assert rasterize_vectors(vectors[:0], 32, 40).shape == (2, 2, 3)


def test_rasterize_frames_matches_one_frame_at_a_time() -> None:
    first = _vectors((-1, 16, 16, 8, 8, -8, 0, 2), (1, 16, 16, 24, 8, 0, 6, 2))
    second = _vectors((-1, 8, 8, 4, 20, -4, 0, 4), (-1, 8, 8, 12, 20, -12, 0, 4), (-1, 16, 16, 50, 24, 2, 2, 1))
    frames = [first, second[:0], second]  # the middle frame has side data but no vector
    fields = rasterize_frames(frames, 32, 40)
    assert fields.shape == (3, 2, 2, 3) and fields.dtype == np.float32
    for field, vectors in zip(fields, frames, strict=True):
        np.testing.assert_array_equal(field, rasterize_vectors(vectors, 32, 40))
    np.testing.assert_allclose(fields[2][:, 1, 0], [2.0, 0.0])
    np.testing.assert_allclose(fields[2][:, 1, 2], [-2.0, -2.0])  # dst_x 50 clipped into the last column
    assert not fields[1].any() and rasterize_frames([], 32, 40).shape == (0, 2, 2, 3)


def test_rotate_flow_turns_positions_and_vectors_like_the_frames() -> None:
    field = np.zeros((2, 2, 3), np.float32)
    field[:, 0, 2] = [1.0, 0.0]  # top-right cell moves right
    marker = np.zeros((2, 3))
    marker[0, 2] = 1
    for rotation, expected in [(90, [0.0, 1.0]), (180, [-1.0, 0.0]), (270, [0.0, -1.0])]:
        turned = rotate_flow(field, rotation)
        where = np.rot90(marker, -rotation // 90)  # how decode.py turns the frames for display
        assert turned.shape[1:] == where.shape
        np.testing.assert_allclose(turned[:, where == 1][:, 0], expected)  # right turns into down, left, up
    np.testing.assert_array_equal(rotate_flow(field, 0), field)


def test_crop_flow_rescales_vectors_and_a_flip_mirrors_and_negates_dx() -> None:
    fields = torch.zeros(1, 2, 6, 8)  # 16-px cells over a 96x128 frame
    fields[0, 0] = 2.0  # everything moves right 2 px/frame
    fields[0, 1, :, :4] = 1.0  # the left half also moves down
    box = (0, 0, 96, 112)  # top, left, height, width in frame pixels
    out = crop_flow(fields, box, cell=16.0, out_size=16, flip=False)
    assert out.shape == (1, 2, 16, 16)
    torch.testing.assert_close(out[0, 0], torch.full((16, 16), 2.0 * 224 / 112))  # px of a 224-px crop
    assert out[0, 1, :, :7].min() > 0.9 * 224 / 96 and out[0, 1, :, -5:].abs().max() < 1e-6
    flipped = crop_flow(fields, box, cell=16.0, out_size=16, flip=True)
    torch.testing.assert_close(flipped[0, 0], -out[0, 0])
    torch.testing.assert_close(flipped[0, 1], out[0, 1].flip(-1))


def test_flow_image_and_histogram_encode_direction() -> None:
    right = torch.zeros(1, 2, 8, 8)
    right[0, 0] = 1.0
    img = flow_image(right, scale=8.0)
    assert img.dtype == torch.uint8 and img.shape == (8, 8, 3)
    assert (img[..., 0] == 136).all() and (img[..., 1] == 128).all() and (img[..., 2] == 16).all()
    hist = flow_histogram(right, bins=8, grid=(2, 2))
    assert hist.shape == (9, 2, 2)
    assert hist[4].min() == 1.0 and hist[:4].abs().sum() + hist[5:8].abs().sum() == 0  # angle 0 -> bin 4 of 8
    assert (hist[8] == 1.0).all()  # every cell moves more than the threshold
    left = flow_histogram(-right, bins=8, grid=(2, 2))
    assert left[0].min() == 1.0  # angle pi -> bin 0


def test_curl_channel_tells_clockwise_from_counter_clockwise() -> None:
    y, x = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(9.0) - 4, indexing="ij")  # y points down
    omega = 0.25  # radians per frame, clockwise on screen: the top moves right, the right side moves down
    clockwise = torch.stack([-omega * y, omega * x])[None]  # (1, 2, 9, 9)
    torch.testing.assert_close(flow_curl(clockwise), torch.full((1, 9, 9), 2 * omega))
    cw = flow_image(clockwise, scale=8.0, third="curl")
    ccw = flow_image(-clockwise, scale=8.0, third="curl")
    assert (cw[..., 2] == 132).all() and (ccw[..., 2] == 124).all()  # 128 +- 8 * 2 * 0.25
    assert torch.equal(cw[..., :2], flow_image(clockwise, scale=8.0)[..., :2])  # dx, dy as with magnitude
    assert not flow_curl(torch.ones(1, 2, 1, 1)).any()  # a one-cell field has no curl
    with pytest.raises(ValueError, match="data.motion.mv_image"):
        flow_image(clockwise, scale=8.0, third="shear")


def test_rgb_difference_modes() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    following = rng.integers(0, 256, (2, 3, 4, 5, 3), dtype=np.uint8)
    d = following[:, 0].astype(np.float32) - frames
    np.testing.assert_array_equal(
        rgb_difference(frames, following, mode="signed", scale=4.0), np.clip(np.rint(128 + 2 * d), 0, 255)
    )
    np.testing.assert_array_equal(
        rgb_difference(frames, following, mode="abs", scale=4.0), np.clip(np.rint(4 * np.abs(d)), 0, 255)
    )
    grey = np.concatenate([frames[:, None], following], 1).astype(np.float32).mean(-1)  # (T, 4, H, W)
    gray3 = rgb_difference(frames, following, mode="gray3", scale=2.0)
    for k in range(3):
        np.testing.assert_array_equal(gray3[..., k], np.clip(np.rint(128 + grey[:, k + 1] - grey[:, k]), 0, 255))


def test_motion_windows_and_settings() -> None:
    idx = np.array([1, 4, 8])
    assert motion_windows(idx, 10, 3, window=1) == [(1, 2), (4, 5), (8, 9)]
    assert motion_windows(idx, 10, 3, window=3) == [(0, 3), (3, 6), (7, 10)]
    assert motion_windows(idx, 10, 3, window=0) == [(0, 3), (3, 6), (6, 10)]  # the TSN segments
    assert check_modalities(["mv", "rgb"]) == ("rgb", "mv")
    for bad in (["rgb", "rgb"], ["flow"], []):
        with pytest.raises(ValueError, match="data.modalities"):
            check_modalities(bad)
    with pytest.raises(ValueError, match="data.motion.rgbdiff"):
        MotionSettings(rgbdiff="stack").validate()
    assert stream_settings("mv", MotionSettings()) != stream_settings("mv", MotionSettings(mv_scale=4.0))
    flow = stream_settings("mv", MotionSettings(mv_source="flow"))
    assert flow != stream_settings("mv", MotionSettings()) and flow == stream_settings(
        "mv", MotionSettings(mv_source="flow", mv_window=0)
    )  # the window does not apply to optical flow
    with pytest.raises(ValueError, match="data.motion.mv_source"):
        MotionSettings(mv_source="dense").validate()


# -------------------------------------------------------------------------------------------------- real videos


@pytest.fixture(scope="module")
def square_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The moving square encoded by codecs with (mpeg4, H.264) and without (VP9) motion vectors."""
    root = tmp_path_factory.mktemp("motion")
    frames = moving_square()
    return {
        codec: write_video(root / f"square_{codec}.{ext}", frames, codec=codec)
        for codec, ext in (("mpeg4", "avi"), ("libx264", "mp4"), ("libvpx-vp9", "webm"))
    }


def _square_flow(path: Path, fallback: str = "flow", source: str = "codec") -> tuple[str, np.ndarray]:
    """Mean forward flow (dx, dy) inside the moving square over frames 4..12, and where it came from."""
    idx = list(range(4, 12))
    windows = [(i, i + 1) for i in idx]
    clip = read_clip(path, idx, motion_windows=windows, motion_fallback=fallback, motion_source=source)
    assert len(clip.flows) == len(idx) and clip.frames.shape == (8, 96, 96, 3)
    means = []
    for i, fields in zip(idx, clip.flows, strict=True):
        if len(fields) == 0:
            continue
        cell = clip.flow_cell
        x0 = 8 + i * 4
        rows = slice(int(40 // cell), int(56 // cell) + 1)  # the square's middle, in cells
        cols = slice(int((x0 + 8) // cell), int((x0 + 24) // cell) + 1)
        means.append(fields[:, :, rows, cols].mean(axis=(0, 2, 3)))
    return clip.motion_source, np.mean(means, 0) if means else np.zeros(2)


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_codec_motion_vectors_point_where_the_square_moves(square_videos: dict[str, Path], codec: str) -> None:
    source, (dx, dy) = _square_flow(square_videos[codec])
    assert source == "codec"
    assert 2.0 < dx < 6.0 and abs(dy) < 1.0, (dx, dy)  # 4 px per frame to the right


def test_vp9_has_no_vectors_and_falls_back_to_optical_flow(square_videos: dict[str, Path]) -> None:
    pytest.importorskip("cv2")
    source, (dx, dy) = _square_flow(square_videos["libvpx-vp9"])
    assert source == "flow"
    assert 2.0 < dx < 6.0 and abs(dy) < 1.0, (dx, dy)
    source, flow = _square_flow(square_videos["libvpx-vp9"], fallback="zeros")
    assert source == "none" and not flow.any()


def test_flow_source_gives_optical_flow_even_where_the_codec_has_vectors(square_videos: dict[str, Path]) -> None:
    pytest.importorskip("cv2")
    source, (dx, dy) = _square_flow(square_videos["libx264"], fallback="zeros", source="flow")
    assert source == "flow"  # mv_source=flow overrides the fallback setting too
    assert 2.0 < dx < 6.0 and abs(dy) < 1.0, (dx, dy)
    with pytest.raises(ValueError, match="motion_source"):
        _square_flow(square_videos["libx264"], source="vectors")
    ds = _square_dataset(square_videos["mpeg4"], modalities=("rgb", "mv"), motion=MotionSettings(mv_source="flow"))
    assert ds[0] is not None and ds.motion_fallbacks == {}  # chosen, not a fallback: nothing to count


def test_flow_source_without_opencv_warns_and_counts_the_zeros(
    square_videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import dymsta.data.motion as motion

    monkeypatch.setattr(motion, "dis_flow", lambda *a, **k: None)  # what dis_flow gives when cv2 is missing
    ds = _square_dataset(square_videos["mpeg4"], modalities=("rgb", "mv"), motion=MotionSettings(mv_source="flow"))
    with caplog.at_level(logging.WARNING, logger="dymsta.data.datasets"):
        assert ds[0] is not None
    assert ds.motion_fallbacks == {str(square_videos["mpeg4"]): "none"}
    assert any("no optical-flow fallback" in r.getMessage() for r in caplog.records)


def _square_dataset(path: Path, **kw) -> VideoClipDataset:
    record = VideoRecord(path=str(path), label=0, video_id=path.name, group="g", num_frames=24, fps=25.0)
    args = {
        "num_frames": 8,
        "size": 96,
        "resize": 96,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "modalities": ("rgb", "rgbdiff", "mv"),
        **kw,
    }
    return VideoClipDataset([record], **args)


def _uint8(stream: torch.Tensor) -> torch.Tensor:
    """Normalised (3, T, H, W) -> the uint8-valued image values (T, H, W, 3)."""
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return ((stream * s + m) * 255).round().permute(1, 2, 3, 0)


def test_streams_share_frames_crop_and_flip(square_videos: dict[str, Path]) -> None:
    """Every stream of a view comes from the same frames, box and flip: a flipped view's mv image says 'left'."""
    ds = _square_dataset(square_videos["mpeg4"], mode="augment", views=8, hflip=True, crop_scale=(0.9, 1.0))
    for view in range(1, 8):
        streams = ds[view][0]
        assert {k: tuple(v.shape) for k, v in streams.items()} == {s: (3, 8, 96, 96) for s in ("rgb", "rgbdiff", "mv")}
        rng = ds._view_rng(ds.records[0], view)
        indices = ds._indices(ds.records[0], view, rng)
        clip = ds._decode(ds.records[0], indices)
        box, flip = ds._box_and_flip(96, 96, view, rng)
        again = ds._stream_frames("rgbdiff", clip, box, flip)
        torch.testing.assert_close(_uint8(streams["rgbdiff"]), again.float(), atol=0.6, rtol=0)
        red = _uint8(streams["mv"])[..., 0]  # 128 + scale * dx
        moving = red[1:7, 40:56].float()  # frames 1-6 of the clip, the square's rows
        direction = (moving - 128).sum()
        assert (direction < 0) == flip and direction.abs() > 0, (view, flip, float(direction))


def test_eval_view_rgbdiff_is_the_difference_of_the_frames(square_videos: dict[str, Path]) -> None:
    ds = _square_dataset(square_videos["libx264"], mode="eval", modalities=("rgb", "rgbdiff"))
    streams = ds[0][0]
    idx = ds._indices(ds.records[0], 0, None)
    clip = read_clip(square_videos["libx264"], idx, following=1)
    expected = rgb_difference(clip.frames, clip.following, mode="signed", scale=4.0)
    np.testing.assert_allclose(_uint8(streams["rgbdiff"]).numpy(), expected, atol=0.6)
    np.testing.assert_allclose(_uint8(streams["rgb"]).numpy(), clip.frames, atol=0.6)


def test_histogram_stream_is_on_the_feature_grid(square_videos: dict[str, Path]) -> None:
    settings = MotionSettings(mv_encoding="hist")
    ds = _square_dataset(square_videos["mpeg4"], modalities=("mv",), motion=settings, feature_grid=(3, 3))
    hist = ds[0][0]["mv"]
    assert hist.shape == (9, 8, 3, 3)
    assert hist[4, 1:7, 1].sum() > hist[0, 1:7, 1].sum()  # rightward (bin 4) beats leftward (bin 0) at the square
    with pytest.raises(ValueError, match="feature_grid"):
        _square_dataset(square_videos["mpeg4"], modalities=("mv",), motion=settings)


def test_zero_motion_fallback_is_warned_once_and_counted(square_videos: dict[str, Path], caplog) -> None:
    ds = _square_dataset(
        square_videos["libvpx-vp9"], mode="augment", views=3, motion=MotionSettings(mv_fallback="zeros")
    )
    with caplog.at_level(logging.WARNING, logger="dymsta.data.datasets"):
        items = [ds[i] for i in range(3)]
    assert all(item is not None for item in items)
    assert sum("no motion vectors" in r.getMessage() for r in caplog.records) == 1
    assert ds.motion_fallbacks == {str(square_videos["libvpx-vp9"]): "none"}
    mv = _uint8(items[0][0]["mv"])
    assert (mv[..., :2] == 128).all() and (mv[..., 2] == 0).all()  # zero flow


def test_shared_clips_yield_every_stream(shared_data: Path) -> None:
    """Every format clip of ../shared/data/clips gives all streams, from codec vectors or the counted fallback."""
    clips = sorted(p for p in (shared_data / "clips").rglob("*") if p.is_file() and p.name != "corrupted.mp4")
    clips = [p for p in clips if p.suffix.lower() in (".avi", ".mp4", ".mkv", ".mov", ".webm")]
    from dymsta.data import probe_video

    sources = {}
    for path in clips:
        info = probe_video(path)
        record = VideoRecord(path=str(path), label=0, video_id=path.name, group="g", num_frames=info.num_frames, fps=25)
        ds = VideoClipDataset(
            [record], num_frames=8, size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD, modalities=("rgb", "rgbdiff", "mv")
        )
        streams = ds[0][0]
        assert all(v.shape == (3, 8, 64, 64) and torch.isfinite(v).all() for v in streams.values()), path
        sources[path.name] = ds.motion_fallbacks.get(str(path), "codec")
    assert sources and set(sources.values()) <= {"codec", "flow"}
    assert sources.get("ntu_1080p_h264_in_avi.avi") == "codec"
