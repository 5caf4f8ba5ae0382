"""A training epoch from a feature cache the page cache does not hold, against the same epoch from memory.

A cache larger than RAM is read from the disk on every epoch. Writing one of twice this machine's free memory
(tens of GB) takes longer than the measurement, so each "cold" epoch starts with the cache files evicted from the
page cache instead (``posix_fadvise(POSIX_FADV_DONTNEED)``, no root needed; the kernel's ``Cached`` memory is
recorded before and after, to show that the eviction happened). Both kinds of epoch run interleaved in one
process, ``--repeats`` times each; figures are medians and the ratio cold / warm is the result.

The cache is the DyMSTA-Net recipe's layout (``model.head_conv``, ``cache.grid: auto``): three streams (rgb,
rgbdiff, mv) of 320 x 16 x 4 x 4 fp16 per clip-view, ``--views`` views per video, written in the cache's own
format; the head trains its per-stream copies of Lite0's last layer (``model.head_conv=trained``, random weights)
and the recipe's DyMSTA-Net head. JSON: ``benchmarks/results/bench_cold_epoch.json``. ``--smoke``: 32 videos,
batch 4, one repeat, in seconds (figures meaningless).

    python benchmarks/bench_cold_epoch.py [--videos 2400] [--views 4] [--repeats 3] [--dir /somewhere/big]
    python benchmarks/bench_cold_epoch.py --smoke --out /tmp/bench_cold_epoch.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, machine
from dymsta.engine.cache import CachedClips, FeatureStore
from dymsta.engine.loops import EpochBatchSampler, collate_features, train_one_epoch
from dymsta.engine.train import HeadNet
from dymsta.hardware import resolve_precision
from dymsta.models import ModelConfig, build_model
from dymsta.utils import atomic_write_json

STREAMS = ("rgb", "rgbdiff", "mv")
SHAPE = (320, 16, 4, 4)  # Lite0's activations before its last layer, pooled to DyMSTA-Net's 4x4 grid


def write_store(path: Path, videos: int, views: int, classes: int) -> list[Path]:
    """A finished cache folder of random fp16 rows (64 distinct rows written in turn); the stream files."""
    path.mkdir(parents=True)
    rows = videos * views
    pool = np.random.default_rng(0).standard_normal((64, *SHAPE), dtype=np.float32).astype(np.float16)
    entries, files = {}, []
    for name in STREAMS:
        file = path / f"{name}-bench.npy"
        mm = np.lib.format.open_memmap(file, mode="w+", dtype=np.float16, shape=(rows, *SHAPE))
        for i in range(0, rows, 64):
            n = min(64, rows - i)
            mm[i : i + n] = pool[:n]
        mm.flush()
        entries[f"{name}-bench"] = {
            "name": name,
            "settings": "bench",
            "dtype": "float16",
            "file": file.name,
            "row_shape": list(SHAPE),
            "data_offset": mm.offset,
            "valid": [True] * rows,
        }
        del mm
        files.append(file)
    index = {
        "version": 2,
        "key": "bench",
        "spec": {},
        "video_ids": [f"v{i}" for i in range(videos)],
        "labels": [i % classes for i in range(videos)],
        "views": views,
        "streams": entries,
        "complete": True,
    }
    (path / "index.json").write_text(json.dumps(index))
    return files


def cached_mib() -> float:
    """The kernel's page cache (``Cached`` of /proc/meminfo), MiB; NaN where there is no /proc."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Cached:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def evict(files: list[Path]) -> float:
    """Drop ``files`` from the page cache; the MiB of page cache that went with them."""
    before = cached_mib()
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return before - cached_mib()


def warm(files: list[Path]) -> None:
    """Read ``files`` once, so the page cache holds them."""
    for file in files:
        with open(file, "rb") as f:
            while f.read(1 << 24):
                pass


def epoch(store: FeatureStore, batch: int, seed: int, *, train: bool) -> float:
    """Seconds of one epoch over the cache: reading alone, or a whole training epoch of the recipe's head."""
    data = CachedClips(store, per_video=True, seed=seed, grid=4)
    data.set_epoch(seed)
    sampler = EpochBatchSampler(len(data), batch, shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate_features)
    t0 = time.perf_counter()
    if not train:
        for _ in loader:
            pass
        return time.perf_counter() - t0
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=8, pretrained=False, streams=STREAMS, fusion="sum", head_conv="trained")
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    amp = resolve_precision("auto", torch.device("cpu")).dtype
    t0 = time.perf_counter()
    train_one_epoch(HeadNet(model), loader, opt, device=torch.device("cpu"), global_batch_size=batch, amp_dtype=amp)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=2400)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the cache (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="seconds: 32 videos, batch 4, one repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_cold_epoch.json")
    args = ap.parse_args()
    if args.smoke:
        args.videos, args.batch, args.repeats = 32, 4, 1
    torch.set_num_threads(args.threads)
    info = machine()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.perf_counter()
        files = write_store(Path(tmp) / "train", args.videos, args.views, 8)
        write_s = time.perf_counter() - t0
        size_gb = sum(f.stat().st_size for f in files) / 1e9
        store = FeatureStore(Path(tmp) / "train")
        times: dict[str, list[float]] = {k: [] for k in ("read warm", "read cold", "train warm", "train cold")}
        evicted: list[float] = []
        for r in range(args.repeats):
            for kind in ("read", "train"):
                warm(files)
                times[f"{kind} warm"].append(epoch(store, args.batch, r, train=kind == "train"))
                evicted.append(evict(files))
                times[f"{kind} cold"].append(epoch(store, args.batch, r, train=kind == "train"))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows_read = args.videos  # one view per video and epoch
    mb_read = rows_read * len(STREAMS) * int(np.prod(SHAPE)) * 2 / 1e6
    results = {
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "cold_over_warm": {k: round(med[f"{k} cold"] / med[f"{k} warm"], 3) for k in ("read", "train")},
        "cold_read_MB_per_s": round(mb_read / med["read cold"], 1),
        "evicted_MiB_median": round(statistics.median(evicted), 1),
        "runs": times,
    }
    print(
        f"{args.videos} videos x {args.views} views x {len(STREAMS)} streams of {SHAPE} fp16 = {size_gb:.2f} GB "
        f"(written in {write_s:.0f} s); each epoch reads {mb_read:.0f} MB; page cache evicted per cold epoch: "
        f"{results['evicted_MiB_median']:.0f} MiB"
    )
    for kind in ("read", "train"):
        w, c = med[f"{kind} warm"], med[f"{kind} cold"]
        print(f"  {kind:5s} epoch: warm {w:7.2f} s   cold {c:7.2f} s   cold / warm {c / w:5.2f}x")
    record = {"machine": info, "videos": args.videos, "views": args.views, "batch": args.batch, "smoke": args.smoke}
    record.update(cache_GB=round(size_gb, 3), streams=STREAMS, shape=SHAPE, write_seconds=round(write_s, 1))
    atomic_write_json(args.out, {**record, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
