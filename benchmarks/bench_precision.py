"""Precision on this CPU: what ``train.amp=auto`` picks (``dymsta.hardware``) against bf16 autocast, the old auto.

In one process, each variant in turn, repeat by repeat (medians; ratios within this run):

1. ``linear``: a 1024 x 1024 ``nn.Linear`` on a batch of 256, GFLOP/s in fp32 and under bf16 autocast (issue 18's
   probe of whether bf16 is native).
2. ``head_epoch``: one training epoch of the demo recipe's head from a cache of its shape (three streams of
   1280 x 16 x 4 x 4 fp16 rows, ``--videos`` videos with 2 views, batch 32, DyMSTA-Net width 128, sum fusion): bf16
   autocast (``amp=auto`` before issue 18), fp32 (``amp=none``), and ``amp=auto`` now. Target on a CPU without
   native bf16: auto now >= 4x auto before; where bf16 is native, auto now = bf16 (unchanged).
3. ``backbone``: Lite0 at 224 px, 32 frames per call, inference: PyTorch fp32 and bf16 autocast (channels-last), and
   OpenVINO / ONNX Runtime where installed at the precision the policy asks for.

``--emulate-avx2`` reruns the script with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: PyTorch and oneDNN
then use AVX2 kernels only and bf16 is emulated, as on an AVX2-only CPU (the record says so:
``torch_cpu_capability``, ``onednn_max_cpu_isa``). OpenVINO ignores those caps, so its figures stay the host's.

    python benchmarks/bench_precision.py [--emulate-avx2] [--threads auto] [--repeats 3] [--videos 848] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common import RESULTS, busy_cores, machine, rerun_as_avx2
from dymsta.engine.cache import CachedClips, FeatureStore
from dymsta.engine.loops import EpochBatchSampler, collate_features, train_one_epoch
from dymsta.engine.train import HeadNet
from dymsta.hardware import autocast, resolve_precision
from dymsta.models import FrameBackbone, ModelConfig, build_model
from dymsta.models import runtime as rt
from dymsta.utils import atomic_write_json

STREAMS = ("rgb", "rgbdiff", "mv")


def medians(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of each function's returned seconds; the functions take turns, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(ts) for name, ts in times.items()}


def timed(fn: Callable[[], object], calls: int = 1) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls

    return run


# ---------------------------------------------------------------------- sections


def linear_section(repeats: int, calls: int) -> dict:
    layer, x = torch.nn.Linear(1024, 1024), torch.randn(256, 1024)
    flops = 2 * 256 * 1024 * 1024

    def at(dtype: torch.dtype | None) -> Callable[[], float]:
        def call() -> None:
            with torch.no_grad(), autocast("cpu", dtype):
                layer(x)

        return timed(call, calls)

    t = medians({"fp32": at(None), "bf16_autocast": at(torch.bfloat16)}, repeats)
    return {name: {"gflops": round(flops / s / 1e9, 1)} for name, s in t.items()}


def head_epoch_section(videos: int, repeats: int, batch: int, shape: tuple[int, ...]) -> dict:
    from bench_memory import make_store

    auto = resolve_precision("auto", "cpu")
    variants = {"bf16 autocast (auto before)": torch.bfloat16, "fp32 (amp=none)": None, "auto now": auto.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "train", videos, 2, shape, 8, streams=STREAMS)
        data = CachedClips(FeatureStore(Path(tmp) / "train"), per_video=True, grid=4)

        def epoch(dtype: torch.dtype | None) -> Callable[[], float]:
            def run() -> float:
                torch.manual_seed(0)
                cfg = ModelConfig(num_classes=8, pretrained=False, dim=128, streams=STREAMS, fusion="sum")
                model = build_model(cfg)
                opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
                sampler = EpochBatchSampler(len(data), batch, shuffle=True)
                loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate_features)
                t0 = time.perf_counter()
                net, cpu = HeadNet(model), torch.device("cpu")
                train_one_epoch(net, loader, opt, device=cpu, global_batch_size=batch, amp_dtype=dtype)
                return time.perf_counter() - t0

            return run

        t = medians({name: epoch(dtype) for name, dtype in variants.items()}, repeats)
    before = t["bf16 autocast (auto before)"]
    out = {name: {"epoch_s": round(s, 3), "x_auto_before": round(before / s, 2)} for name, s in t.items()}
    out["auto now"]["picks"] = auto.name
    out["auto now"]["reason"] = auto.reason
    return out


def backbone_section(repeats: int, frames: int, size: int) -> dict:
    lite0 = FrameBackbone(name="efficientnet_lite0").eval()
    video = torch.randn(1, 3, frames, size, size)
    auto = resolve_precision("auto", "cpu")

    def run(backbone: FrameBackbone, dtype: torch.dtype | None) -> Callable[[], float]:
        def call() -> None:
            with torch.inference_mode(), autocast("cpu", dtype):
                backbone(video)

        return timed(call)

    fns = {"torch fp32": run(lite0, None), "torch bf16 autocast": run(lite0, torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("openvino", "onnxruntime"):
            if rt.installed(name):
                other = FrameBackbone(name="efficientnet_lite0").eval()
                other.set_runtime(name, cache_dir=tmp, size=size)
                with autocast("cpu", auto.dtype):
                    label = f"{name} {other.runtime_id.split('-')[-1]} (auto's precision)"
                fns[label] = run(other, auto.dtype)
        t = medians(fns, repeats)
    fp32 = t["torch fp32"]
    return {name: {"frames_per_s": round(frames / s, 1), "x_torch_fp32": round(fp32 / s, 2)} for name, s in t.items()}


# ---------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emulate-avx2", action="store_true", help="rerun with PyTorch and oneDNN capped to AVX2")
    ap.add_argument("--threads", default="auto", help="torch threads, or auto: the cores idle at the start")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--videos", type=int, default=848, help="videos in the head-epoch cache (the demo: 848)")
    ap.add_argument("--smoke", action="store_true", help="seconds: tiny shapes, one repeat (figures mean nothing)")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON (default: benchmarks/results/bench_precision[_avx2].json)"
    )
    args = ap.parse_args()
    if args.emulate_avx2:
        rerun_as_avx2(args.out, "bench_precision_avx2.json")
    out = args.out or RESULTS / "bench_precision.json"
    busy = busy_cores(1.0)
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, round(cores - busy)) if args.threads == "auto" else int(args.threads))
    info = machine()
    info["busy_cores_at_start"] = round(busy, 2)
    repeats = 1 if args.smoke else args.repeats
    print(f"{info['cpu']} ({info['cpu_class']}, native bf16: {info['native_bf16']}), {torch.get_num_threads()} threads")
    result = {"benchmark": "bench_precision", "machine": info, "smoke": args.smoke, "repeats": repeats}
    result["linear"] = linear_section(repeats, 3 if args.smoke else 30)
    print("linear 1024x1024, batch 256:", result["linear"], flush=True)
    result["head_epoch"] = head_epoch_section(16 if args.smoke else args.videos, repeats, 32, (1280, 16, 4, 4))
    for name, r in result["head_epoch"].items():
        print(f"head epoch, {name:28s} {r['epoch_s']:7.2f} s  {r['x_auto_before']:5.2f}x auto before", flush=True)
    result["backbone"] = backbone_section(repeats, 4 if args.smoke else 32, 64 if args.smoke else 224)
    for name, r in result["backbone"].items():
        print(f"Lite0 {name:36s} {r['frames_per_s']:7.1f} frames/s  {r['x_torch_fp32']:5.2f}x torch fp32")
    result["loadavg_after"] = list(os.getloadavg())
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
