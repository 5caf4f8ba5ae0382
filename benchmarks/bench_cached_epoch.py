"""One training epoch of the DyMSTA-Net head from the feature cache: reading rows as stored against the former
per-row NumPy float16 -> float32 copy, in one process.

The demo's shape: three streams (rgb, rgbdiff, mv) of 1280 x 16 x 4 x 4 fp16 per clip (Lite0 at 112 px), 848
videos, batch 32, bf16 autocast, the recipe's head (width 128, sum fusion). The cache is random features written in
the cache's own format (``bench_memory.make_store``). Methods run interleaved, ``--repeats`` times each; figures
are medians. Measured: (1) reading an epoch's batches alone, (2) a whole training epoch (read + forward + backward
+ step). JSON: ``benchmarks/results/bench_cached_epoch.json``. ``--smoke``: 16 videos, batch 4, one repeat, in
seconds (figures meaningless).

    python benchmarks/bench_cached_epoch.py [--videos 848] [--repeats 3] [--threads 2]
    python benchmarks/bench_cached_epoch.py --smoke --out /tmp/bench_cached_epoch.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_memory import make_store
from common import RESULTS, machine
from dymsta.engine.cache import CachedClips, FeatureStore
from dymsta.engine.loops import EpochBatchSampler, collate_features, train_one_epoch
from dymsta.engine.train import HeadNet
from dymsta.models import ModelConfig, build_model
from dymsta.models.backbone import pool_grid
from dymsta.utils import atomic_write_json

STREAMS = ("rgb", "rgbdiff", "mv")
SHAPE = (1280, 16, 4, 4)


class Float32Rows(CachedClips):
    """The reference: every row copied to float32 by NumPy on read (how CachedClips read rows before)."""

    def features(self, row: int) -> dict[str, torch.Tensor]:
        return {
            name: pool_grid(torch.from_numpy(x.astype(np.float32)), self.grid)
            for name, x in self.store.row(row).items()
        }


def loader(data: CachedClips, batch: int) -> torch.utils.data.DataLoader:
    sampler = EpochBatchSampler(len(data), batch, shuffle=True)
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate_features)


def read_epoch(data: CachedClips, batch: int) -> float:
    t0 = time.perf_counter()
    for _ in loader(data, batch):
        pass
    return time.perf_counter() - t0


def train_epoch(data: CachedClips, batch: int) -> float:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=8, pretrained=False, dim=128, streams=STREAMS, fusion="sum", num_frames=16)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    t0 = time.perf_counter()
    train_one_epoch(
        HeadNet(model),
        loader(data, batch),
        opt,
        device=torch.device("cpu"),
        global_batch_size=batch,
        amp_dtype=torch.bfloat16,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=848)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="seconds: 16 videos, batch 4, one repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_cached_epoch.json")
    args = ap.parse_args()
    if args.smoke:
        args.videos, args.batch, args.repeats = 16, 4, 1
    torch.set_num_threads(args.threads)
    info = machine()  # load average before this run's own work
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "train"
        make_store(store_dir, args.videos, 1, SHAPE, 8, streams=STREAMS)
        store = FeatureStore(store_dir)
        methods = {
            "per-row float32 (before)": Float32Rows(store, per_video=True, grid=4),
            "as stored (now)": CachedClips(store, per_video=True, grid=4),
        }
        timings: dict[str, dict[str, list[float]]] = {k: {"read": [], "train": []} for k in methods}
        for data in methods.values():  # warm-up: page cache, kernels
            read_epoch(data, args.batch)
        for _ in range(args.repeats):
            for name, data in methods.items():
                timings[name]["read"].append(read_epoch(data, args.batch))
                timings[name]["train"].append(train_epoch(data, args.batch))
    base = {k: statistics.median(v) for k, v in timings["per-row float32 (before)"].items()}
    results = {}
    print(f"{args.videos} videos x {len(STREAMS)} streams of {SHAPE} fp16, batch {args.batch}, {args.threads} threads")
    for name, t in timings.items():
        read, train = statistics.median(t["read"]), statistics.median(t["train"])
        results[name] = {
            "read_s": round(read, 3),
            "train_epoch_s": round(train, 3),
            "read_speedup": round(base["read"] / read, 2),
            "train_speedup": round(base["train"] / train, 2),
        }
        print(
            f"  {name:26s} read {read:6.2f} s ({base['read'] / read:4.1f}x)  train epoch {train:6.2f} s "
            f"({base['train'] / train:4.2f}x)"
        )
    record = {"machine": info, "videos": args.videos, "batch": args.batch, "smoke": args.smoke}
    atomic_write_json(args.out, {**record, "streams": STREAMS, "shape": SHAPE, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
