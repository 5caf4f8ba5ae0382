"""What the motion streams cost, on ucf101-mini clips, all in one process run (16 frames, 224 x 224).

1. Decoding (:func:`dymsta.data.decode.read_clip`) of the 16 sampled frames: plain (what the RGB stream needs)
   against the same pass with codec motion-vector export and rasterisation (``mv``: of the sampled frames, and of
   every frame of each segment, ``mv_window=0``), with the following frame of each sampled one converted too
   (``rgbdiff``), and both. Target: vector export <= 1.15x plain decoding.
2. One clip-dataset item (decode + crop + flip + streams), RGB only against every stream, eval view.
3. Backbone work: frames per clip through the backbone for each set of streams (``rgbdiff`` and an ``mv`` image
   each add one pass per sampled frame; an ``mv`` histogram adds none).

The methods run interleaved clip by clip after a warm-up (a busy neighbour slows them alike); each figure is the
median over repeats of the total time over the clips; ratios are within this run. Torch runs single-threaded, as
DataLoader workers do. JSON: ``benchmarks/results/bench_motion.json``. ``--smoke``: the same on 4 clips of a tiny
synthetic set, 8 frames at 64 px, one repeat, in seconds (figures meaningless).

    python benchmarks/bench_motion.py [--clips 80] [--repeats 3]
    python benchmarks/bench_motion.py --smoke --out /tmp/bench_motion.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common import REPO, RESULTS, machine, smoke_dataset
from dymsta.data import IMAGENET_MEAN, IMAGENET_STD, VideoClipDataset, load_splits, segment_indices
from dymsta.data.datasets import motion_windows
from dymsta.data.decode import read_clip
from dymsta.data.motion import MotionSettings
from dymsta.utils import atomic_write_json

T, SIZE = 16, 224  # frames per clip, crop size (smoke: 8, 64)
SMOKE_T, SMOKE_SIZE = 8, 64


def interleaved(methods: dict[str, Callable[[int], object]], n: int, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of the total seconds of each method over items ``0..n-1``, run item by item."""
    totals: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():  # warm-up
        fn(0)
    for _ in range(repeats):
        spent = dict.fromkeys(methods, 0.0)
        for i in range(n):
            for k, fn in methods.items():
                t0 = time.perf_counter()
                fn(i)
                spent[k] += time.perf_counter() - t0
        for k in methods:
            totals[k].append(spent[k])
    return {k: statistics.median(v) for k, v in totals.items()}


def decode_section(records: list, repeats: int, frames: int = T) -> dict:
    plans = []
    for r in records:
        idx = segment_indices(r.num_frames, frames)
        windows = {w: motion_windows(idx, r.num_frames, frames, window=w) for w in (1, 0)}  # 0: the whole segment
        plans.append((r.path, idx, windows))

    def method(following: int, motion: bool, window: int = 1) -> Callable[[int], object]:
        def fn(i: int) -> object:
            path, idx, windows = plans[i]
            asked = windows[window] if motion else None
            return read_clip(path, idx, short_side=256, following=following, motion_windows=asked)

        return fn

    sec = interleaved(
        {
            "plain (rgb)": method(0, False),
            "motion vectors (mv)": method(0, True),
            "following frames (rgbdiff)": method(1, False),
            "both (rgb + rgbdiff + mv)": method(1, True),
            "mv, whole segment (mv_window=0)": method(0, True, window=0),
        },
        len(plans),
        repeats,
    )
    base = sec["plain (rgb)"]
    return {k: {"clips_per_s": len(plans) / v, "x_plain": v / base} for k, v in sec.items()}


def dataset_section(records: list, repeats: int, frames: int = T, size: int = SIZE) -> dict:
    grid = -(-size // 32)  # Lite0's feature grid at this size (7 x 7 at 224)

    def dataset(modalities: tuple[str, ...], motion: MotionSettings | None = None) -> VideoClipDataset:
        return VideoClipDataset(
            records,
            num_frames=frames,
            size=size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            modalities=modalities,
            motion=motion,
            feature_grid=(grid, grid),
        )

    sets = {
        "rgb": dataset(("rgb",)),
        "rgb + rgbdiff": dataset(("rgb", "rgbdiff")),
        "rgb + mv (image)": dataset(("rgb", "mv")),
        "rgb + rgbdiff + mv (image)": dataset(("rgb", "rgbdiff", "mv")),
        "rgb + mv (hist)": dataset(("rgb", "mv"), MotionSettings(mv_encoding="hist")),
    }
    sec = interleaved({k: ds.__getitem__ for k, ds in sets.items()}, len(records), repeats)
    base = sec["rgb"]
    backbone_frames = {k: frames * len(ds.motion.image_streams(ds.modalities)) for k, ds in sets.items()}
    return {
        k: {"clips_per_s": len(records) / v, "x_rgb": v / base, "backbone_frames_per_clip": backbone_frames[k]}
        for k, v in sec.items()
    }


def run(records: list, repeats: int, frames: int, size: int) -> dict:
    """Both sections on ``records``; the results record."""
    print(f"{len(records)} clips, {frames} frames, {size} px, {repeats} repeats", flush=True)
    info = machine()  # load average before this run's own work
    decode = decode_section(records, repeats, frames)
    print("\n1. decoding the sampled frames (read_clip)")
    for k, v in decode.items():
        print(f"  {k:32s} {v['clips_per_s']:7.1f} clips/s  {v['x_plain']:.3f}x plain")
    items = dataset_section(records, repeats, frames, size)
    print("\n2-3. one dataset item (eval view) and backbone frames per clip")
    for k, v in items.items():
        print(
            f"  {k:32s} {v['clips_per_s']:7.1f} clips/s  {v['x_rgb']:.2f}x rgb  {v['backbone_frames_per_clip']} frames"
        )
    return {
        "machine": info,
        "clips": len(records),
        "frames": frames,
        "size": size,
        "repeats": repeats,
        "decode": decode,
        "dataset": items,
    }


def pick_records(mini: Path, n: int) -> list:
    """``n`` clips of ucf101-mini's split 1 (train and test), evenly spaced."""
    splits = load_splits("ucf101", mini, val_fraction=0.0)
    records = splits.train + splits.test
    return records[:: max(1, len(records) // n)][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--clips", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="seconds: 4 synthetic clips, 8 frames, 64 px, one repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_motion.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench-motion-smoke-") as tmp:
            out = run(pick_records(smoke_dataset(Path(tmp) / "ucf101-mini"), 4), 1, SMOKE_T, SMOKE_SIZE)
        out["smoke"] = True
    else:
        out = run(pick_records(args.root / "ucf101-mini", args.clips), args.repeats, T, SIZE)
    atomic_write_json(args.out, out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
