"""Peak resident memory of one training epoch from the feature cache, at 1x and 4x dataset size.

The cache is read row by row (``os.pread``), the evaluation streams, so a process's memory should not grow with the
number of videos. Each size runs in a fresh subprocess (``ru_maxrss`` is a high-water mark), on a cache of random
Lite0-shaped features (1280 x 16 x 7 x 7 fp16 per clip, 2 MB) built with the cache's own writer format. JSON:
``benchmarks/results/bench_memory.json``. ``--smoke``: 8 videos at 1x of 1280 x 16 x 4 x 4 features, batch 4, in
seconds (figures meaningless).

    python benchmarks/bench_memory.py [--videos 256] [--quick]
    python benchmarks/bench_memory.py --smoke --out /tmp/bench_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, machine


def make_store(
    path: Path, videos: int, views: int, shape: tuple[int, ...], classes: int, streams: tuple[str, ...] = ("rgb",)
) -> None:
    """A finished cache folder with random fp16 features, one file per stream (the layout FeatureStore reads)."""
    path.mkdir(parents=True)
    rows = videos * views
    rng = np.random.default_rng(0)
    entries = {}
    for name in streams:
        file = f"{name}-bench.npy"
        mm = np.lib.format.open_memmap(path / file, mode="w+", dtype=np.float16, shape=(rows, *shape))
        for i in range(rows):
            mm[i] = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
        mm.flush()
        offset = mm.offset
        del mm
        entries[f"{name}-bench"] = {
            "name": name,
            "settings": "bench",
            "dtype": "float16",
            "file": file,
            "row_shape": list(shape),
            "data_offset": offset,
            "valid": [True] * rows,
        }
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


def child(store: str, classes: int, batch: int) -> None:
    """Train one epoch of the default DyMSTA-Net head over the store; print peak RSS (MiB) as JSON."""
    import torch

    from dymsta.engine.cache import CachedClips, FeatureStore
    from dymsta.engine.loops import EpochBatchSampler, collate_features, evaluate, train_one_epoch
    from dymsta.engine.train import HeadNet
    from dymsta.models import ModelConfig, build_model

    model = build_model(ModelConfig(num_classes=classes, pretrained=False))
    data = CachedClips(FeatureStore(store), per_video=True)
    sampler = EpochBatchSampler(len(data), batch, shuffle=True)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate_features)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    t0 = time.time()
    train_one_epoch(
        HeadNet(model), loader, opt, device=torch.device("cpu"), global_batch_size=batch, amp_dtype=torch.bfloat16
    )
    evaluate(
        HeadNet(model),
        torch.utils.data.DataLoader(data, batch_size=batch, collate_fn=collate_features),
        device=torch.device("cpu"),
        amp_dtype=torch.bfloat16,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": round(peak, 1), "seconds": round(time.time() - t0, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=256, help="videos at 1x (4x is measured too)")
    ap.add_argument("--quick", action="store_true", help="64 videos at 1x")
    ap.add_argument("--smoke", action="store_true", help="seconds: 8 videos at 1x, 4x4 grids, batch 4")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_memory.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    info = machine()  # load average before this run's own work
    videos = 8 if args.smoke else 64 if args.quick else args.videos
    shape, classes, views, batch = (1280, 16, 7, 7), 8, 1, 32
    if args.smoke:
        shape, batch = (1280, 16, 4, 4), 4
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 4):
            store = Path(tmp) / f"x{scale}"
            make_store(store, videos * scale, views, shape, classes)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(store), str(classes), str(batch)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            res = json.loads(out.strip().splitlines()[-1])
            size_mib = (store / "rgb-bench.npy").stat().st_size / 2**20
            results.append({"scale": scale, "videos": videos * scale, "cache_mib": round(size_mib, 1), **res})
            print(
                f"{scale}x  {videos * scale:6d} videos  cache {size_mib:8.1f} MiB  peak RSS {res['peak_rss_mib']:8.1f} "
                f"MiB  epoch+eval {res['seconds']:.1f} s"
            )
    ratio = results[1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    print(f"peak RSS 4x / 1x = {ratio:.3f}")
    record = {
        "machine": info,
        "smoke": args.smoke,
        "row_shape": list(shape),
        "batch": batch,
        "results": results,
        "rss_ratio_4x_over_1x": round(ratio, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
