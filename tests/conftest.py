"""Shared fixtures: the optional ../shared/data folder, and small real videos written with PyAV."""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

# codec -> (encoder pixel format, encoder options); the first two are lossless in RGB.
TINY_CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "ffv1": ("bgr0", {}),
    "libx264rgb": ("rgb24", {"qp": "0", "preset": "ultrafast"}),
    "libx264": ("yuv420p", {"crf": "18", "preset": "ultrafast"}),
    "mpeg4": ("yuv420p", {"qscale": "2"}),
    "libvpx-vp9": ("yuv420p", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}),  # no motion vectors
}


def shared_data_dir() -> Path | None:
    """``$DYMSTA_SHARED_DATA`` or ``<repo>/../shared/data``, if it exists."""
    env = os.environ.get("DYMSTA_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-video folder (../shared/data); skips the test when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real video data not found (../shared/data or $DYMSTA_SHARED_DATA)")
    return path


def make_frames(num_frames: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3) frames that differ from each other and are asymmetric (any flip/rotation shows).

    Smooth gradients (so lossy codecs keep them close), a bright block that moves with the frame index, and the
    frame index as the level of the top-left 8x8 corner in the blue channel.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 64 * 2], -1)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        f = base.copy()
        x0 = (t * 5) % max(1, width - width // 4)
        f[height // 4 : height // 2, x0 : x0 + width // 4] = 255
        f[:8, :8, 2] = (t * 23) % 256
        frames[t] = np.clip(f + rng.integers(0, 3, f.shape), 0, 255)
    return frames


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    codec: str = "ffv1",
    fps: int | Fraction = 25,
    rotation: int = 0,
    timestamps_ms: list[int] | None = None,
) -> Path:
    """Encode uint8 (T, H, W, 3) RGB ``frames`` to ``path`` (container from the suffix) with PyAV.

    ``rotation``: display-matrix angle in FFmpeg's convention (counter-clockwise degrees), as phones write it.
    ``timestamps_ms``: explicit presentation times (variable frame rate); default: constant ``fps``.
    """
    pix_fmt, options = TINY_CODECS[codec]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=dict(options))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1
        if rotation:
            stream.set_display_rotation(rotation)
        if timestamps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format=pix_fmt)
            if timestamps_ms is not None:
                frame.pts, frame.time_base = timestamps_ms[t], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def tiny_video(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory: ``tiny_video(name="clip.mkv", num_frames=12, height=48, width=64, codec="ffv1", fps=25,
    rotation=0, seed=0, folder=None, timestamps_ms=None)`` writes a real video under ``tmp_path`` and returns ``(path, frames)``."""

    def make(
        name: str = "clip.mkv",
        *,
        num_frames: int = 12,
        height: int = 48,
        width: int = 64,
        codec: str = "ffv1",
        fps: int | Fraction = 25,
        rotation: int = 0,
        seed: int = 0,
        folder: Path | None = None,
        timestamps_ms: list[int] | None = None,
    ) -> tuple[Path, np.ndarray]:
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = make_frames(num_frames, height, width, seed=seed)
        write_video(path, frames, codec=codec, fps=fps, rotation=rotation, timestamps_ms=timestamps_ms)
        return path, frames

    return make


# ------------------------------------------------------------------------------------- a small trained model

COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 50, 40)}  # sorted: the class ids


def colour_frames(colour: str, num_frames: int, size: int = 48, *, seed: int = 0) -> np.ndarray:
    """uint8 (T, size, size, 3): a noisy field of one colour with a grey block moving across it."""
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        f = np.array(COLOURS[colour], dtype=np.int16) + rng.integers(-30, 31, (size, size, 3))
        x0 = (t * 3 + seed * 7) % (size - size // 4)
        f[size // 3 : size // 3 + size // 4, x0 : x0 + size // 4] = 128
        frames[t] = np.clip(f, 0, 255)
    return frames


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A DyMSTA-Net trained (fp32, PyTorch runtime, a few seconds) to tell three colours apart, on a folder
    dataset with train/val/test sides: ``{"run", "root", "classes", "test_videos"}``."""
    from dymsta.config import load_config
    from dymsta.engine.train import train

    root = tmp_path_factory.mktemp("colours")
    seed = 0
    for side, count in (("train", 8), ("val", 3), ("test", 2)):
        for colour in COLOURS:
            for k in range(count):
                seed += 1
                path = root / side / colour / f"{colour}_{side}_{k}x.mkv"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_video(path, colour_frames(colour, 16, seed=seed), fps=8)
    overrides = [
        "data.kind=folder",
        f"data.root={root}",
        "data.num_frames=8",
        "data.size=64",
        "data.workers=0",
        "model.dim=32",
        "model.temporal_kernels=[1,3,5]",
        "model.runtime=torch",
        "data.modalities=[rgb]",  # colours need no motion
        "model.fusion=concat",
        "train.amp=none",
        "train.epochs=12",
        "train.batch_size=8",
        "train.label_smoothing=0.2",
        "optim.lr=0.003",
        "optim.scheduler=none",
        f"cache.dir={root.parent / (root.name + '-cache')}",
        "cache.train_views=2",
        "cache.batch_size=8",
    ]
    repo = Path(__file__).resolve().parents[1]
    run = root.parent / (root.name + "-run")
    train(load_config(repo / "configs" / "demo.yaml", overrides), run)
    tests = sorted((root / "test").rglob("*.mkv"))
    return {"run": run, "root": root, "classes": sorted(COLOURS), "test_videos": tests, "overrides": overrides}
