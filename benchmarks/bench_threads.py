"""Intra-op threads and OpenMP's wait policy, alone and beside a busy neighbour: what ``train.threads`` should be.

Each configuration runs in a fresh process (OpenMP reads its settings once, at start): PyTorch at 1 or 2 intra-op
threads (``torch.set_num_threads``; OpenVINO and ONNX Runtime get the same count), OpenMP's wait policy left at
libgomp's default (spin, then sleep) or ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once), and either nothing else on
the machine or a neighbour process spinning on one core (``while True: pass``). Configurations take turns, repeat
by repeat; medians are reported, ratios against 2 threads alone in this run. Measured in each:

- ``head_epoch_s``: a training epoch of the demo recipe's head from a cache of its shape (three streams of
  1280 x 16 x 4 x 4 fp16, ``--videos`` videos, batch 32) at ``train.amp=auto``'s precision, scaled to the demo's
  848 videos;
- ``backbone_fps``: Lite0 at 224 px on the backbone runtime ``model.runtime=auto`` picks, 32 frames a call;
- ``extract_s``: ``dymsta extract`` of a small synthetic set with the demo recipe (every stream, 112 px, two
  decoding workers beside the backbone), from an empty cache folder.

    python benchmarks/bench_threads.py [--emulate-avx2] [--repeats 2] [--videos 256] [--extract-groups 4] [--smoke]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, busy_cores, machine, rerun_as_avx2, smoke_dataset

DEMO_VIDEOS = 848
CONFIGS = [
    {"threads": t, "wait": w, "neighbour": n}
    for n, t, w in itertools.product((False, True), (2, 1), ("default", "passive"))
]


# ---------------------------------------------------------------------- one configuration (child process)


def head_epoch(videos: int) -> float:
    import torch

    from bench_memory import make_store
    from bench_precision import STREAMS
    from dymsta.engine.cache import CachedClips, FeatureStore
    from dymsta.engine.loops import EpochBatchSampler, collate_features, train_one_epoch
    from dymsta.engine.train import HeadNet
    from dymsta.hardware import resolve_precision
    from dymsta.models import ModelConfig, build_model

    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "train", videos, 1, (1280, 16, 4, 4), 8, streams=STREAMS)
        data = CachedClips(FeatureStore(Path(tmp) / "train"), per_video=True, grid=4)
        torch.manual_seed(0)
        model = build_model(ModelConfig(num_classes=8, pretrained=False, dim=128, streams=STREAMS, fusion="sum"))
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
        loader = torch.utils.data.DataLoader(
            data, batch_sampler=EpochBatchSampler(len(data), 32, shuffle=True), collate_fn=collate_features
        )
        dtype = resolve_precision("auto", "cpu").dtype
        t0 = time.perf_counter()
        train_one_epoch(HeadNet(model), loader, opt, device=torch.device("cpu"), global_batch_size=32, amp_dtype=dtype)
        return time.perf_counter() - t0


def backbone_fps(frames: int, size: int) -> tuple[float, str]:
    import torch

    from dymsta.hardware import autocast, resolve_precision
    from dymsta.models import FrameBackbone

    dtype = resolve_precision("auto", "cpu").dtype
    backbone = FrameBackbone(name="efficientnet_lite0").eval()
    with tempfile.TemporaryDirectory() as tmp:
        backbone.set_runtime("auto", cache_dir=tmp, size=size)
        video = torch.randn(1, 3, frames, size, size)
        with torch.inference_mode(), autocast("cpu", dtype):
            backbone(video)  # warm-up (and the compile at this precision)
            t0 = time.perf_counter()
            for _ in range(3):
                backbone(video)
            seconds = (time.perf_counter() - t0) / 3
            runtime = backbone.runtime_id
    return frames / seconds, runtime


def extract_seconds(root: Path, size: int) -> float:
    from dymsta.config import load_config, recipe_path
    from dymsta.engine.train import extract_features

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"data.root={root}", f"cache.dir={tmp}", f"data.size={size}", "train.threads=0"]
        cfg = load_config(recipe_path("demo"), overrides)
        t0 = time.perf_counter()
        extract_features(cfg, Path(tmp) / "run")
        return time.perf_counter() - t0


def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    out = {"head_epoch_s": head_epoch(spec["videos"]) * DEMO_VIDEOS / spec["videos"]}
    out["backbone_fps"], out["backbone_runtime"] = backbone_fps(spec["frames"], spec["size"])
    out["extract_s"] = extract_seconds(Path(spec["extract_root"]), spec["extract_size"])
    return out


# ---------------------------------------------------------------------- orchestration


def run_config(config: dict, spec: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if config["wait"] == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if config["neighbour"] else None
    try:
        time.sleep(0.5 if neighbour else 0)
        cmd = [sys.executable, __file__, "--child", json.dumps({**spec, "threads": config["threads"]})]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        if neighbour:
            neighbour.kill()
            neighbour.wait()
    if done.returncode:
        raise SystemExit(f"child {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def name_of(config: dict) -> str:
    return f"{config['threads']} thread(s), wait {config['wait']}, " + (
        "neighbour busy" if config["neighbour"] else "alone"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emulate-avx2", action="store_true", help="rerun with PyTorch and oneDNN capped to AVX2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--videos", type=int, default=256, help="videos in the head-epoch cache (scaled to 848)")
    ap.add_argument("--extract-groups", type=int, default=4, help="groups per class of the synthetic extract set")
    ap.add_argument("--smoke", action="store_true", help="seconds: tiny inputs, two configurations, one repeat")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON (default: benchmarks/results/bench_threads[_avx2].json)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.emulate_avx2:
        rerun_as_avx2(args.out, "bench_threads_avx2.json")
    out = args.out or RESULTS / "bench_threads.json"
    info = machine()
    info["busy_cores_at_start"] = round(busy_cores(1.0), 2)
    configs = CONFIGS[:2] if args.smoke else CONFIGS
    repeats = 1 if args.smoke else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        groups = 3 if args.smoke else args.extract_groups
        root = smoke_dataset(Path(tmp) / "synth", groups=groups, num_frames=32, size=64 if args.smoke else 112)
        spec = {
            "videos": 8 if args.smoke else args.videos,
            "frames": 4 if args.smoke else 32,
            "size": 64 if args.smoke else 224,
            "extract_root": str(root),
            "extract_size": 64 if args.smoke else 112,
        }
        runs: dict[str, list[dict]] = {name_of(c): [] for c in configs}
        for r in range(repeats):
            for config in configs:
                runs[name_of(config)].append(run_config(config, spec))
                print(f"repeat {r + 1}: {name_of(config):44s} {runs[name_of(config)][-1]}", flush=True)
    table = {}
    for config in configs:
        rows = runs[name_of(config)]
        table[name_of(config)] = {
            **config,
            **{
                k: round(statistics.median(row[k] for row in rows), 2)
                for k in ("head_epoch_s", "backbone_fps", "extract_s")
            },
            "backbone_runtime": rows[0]["backbone_runtime"],
        }
    base = table[name_of(configs[0])]
    for row in table.values():
        row["head_x_base"] = round(base["head_epoch_s"] / row["head_epoch_s"], 2)
        row["backbone_x_base"] = round(row["backbone_fps"] / base["backbone_fps"], 2)
        row["extract_x_base"] = round(base["extract_s"] / row["extract_s"], 2)
    result = {"benchmark": "bench_threads", "machine": info, "smoke": args.smoke, "repeats": repeats, "spec": spec}
    result["baseline"] = name_of(configs[0])
    result["configs"] = table
    result["loadavg_after"] = list(os.getloadavg())
    from dymsta.utils import atomic_write_json

    atomic_write_json(out, result)
    for name, row in table.items():
        print(
            f"{name:44s} head epoch {row['head_epoch_s']:6.1f} s ({row['head_x_base']:.2f}x)  backbone "
            f"{row['backbone_fps']:6.1f} f/s ({row['backbone_x_base']:.2f}x)  extract {row['extract_s']:6.1f} s "
            f"({row['extract_x_base']:.2f}x)"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
