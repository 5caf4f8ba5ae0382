"""Data loading throughput on ucf101-mini: the clip loader against a naive baseline and the decode-only bound.

All in one process run, 16 frames per clip, 224 x 224, on the same clips:

- ``dataset_eval`` / ``dataset_train``: one item of :class:`dymsta.data.VideoClipDataset` (the loader's per-clip
  work; eval mode does the same work as the naive baseline), and ``loader_*``: whole DataLoader passes (batch 8)
  in eval mode with 0 workers and train mode with 0, 1 and 2 workers.
- ``naive``: decode every frame with PyAV's default ``frame.to_ndarray(format="rgb24")``, then take the 16
  segment-centre frames, resize (short side 256), centre-crop 224, normalise. What a first implementation does.
- ``naive_reused_converter``: the same, converting every frame with one reused single-threaded swscale context:
  separates "convert only the kept frames" from "do not rebuild the converter for every frame".
- ``decode_only``: PyAV decode of every frame without colour conversion (the bound on a sequential decoder).
- decode-time resize on the 1080p H.264-in-AVI clip (``clips/edge``), on 16 already-decoded frames: swscale
  shrink during conversion against a full-size conversion followed by torch's uint8 resize.
- TorchCodec vs PyAV for the 16 frames: in this process when TorchCodec loads; otherwise in a subprocess whose
  ``LD_LIBRARY_PATH`` points at symlinks to PyAV's bundled FFmpeg libraries (a workaround, reported as such).

Torch runs single-threaded in this process by default (``--threads``), as DataLoader workers do. After a warm-up,
the single-process methods run interleaved clip by clip (a busy neighbour on a shared CPU slows them alike), the
DataLoader passes round-robin; the median of the repeats is reported, ratios computed within this run. JSON goes to
``benchmarks/results/bench_data.json``. ``--smoke`` runs every section in seconds on 4 clips of a tiny synthetic set
(8 frames, 48 px, one repeat; the decode-time resize on one of those clips), its figures meaningless.

    python benchmarks/bench_data.py [--quick] [--root ../shared/data] [--repeats 3]
    python benchmarks/bench_data.py --smoke --out /tmp/bench_data.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import DataLoader

from common import REPO, RESULTS, machine, smoke_dataset
from dymsta.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoClipDataset,
    collate_clips,
    load_splits,
    read_frames,
    segment_indices,
    torchcodec_available,
)
from dymsta.data.transforms import center_crop, clip_to_tensor, resize_short_side
from dymsta.utils import atomic_write_json


@dataclass(frozen=True)
class Plan:
    """Clip shape, loader batch and warm-up of a run: the benchmark's, or smoke mode's tiny ones."""

    frames: int = 16
    size: int = 224
    resize: int = 256  # short side before the centre crop
    batch: int = 8
    warmup: int = 8  # clips decoded (and loader items) before timing: page cache, imports, allocator
    resize_repeats: int = 10  # of the decode-time resize section
    torchcodec_clips: int = 40


FULL = Plan()
SMOKE = Plan(frames=8, size=48, resize=56, batch=2, warmup=1, resize_repeats=1, torchcodec_clips=2)


def default_root() -> Path:
    env = os.environ.get("DYMSTA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def decoder_versions() -> dict:
    """PyAV's and its bundled FFmpeg's versions, added to the machine record."""
    return {"av": av.__version__, "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}


# ------------------------------------------------------------------------------------------------ methods


def naive_clip(path: str, plan: Plan, *, reuse_converter: bool = False) -> torch.Tensor:
    """Decode and convert every frame, then sample and transform: (3, T, size, size)."""
    with av.open(path) as container:
        if reuse_converter:
            conv = VideoReformatter()
            frames = [conv.reformat(f, format="rgb24", threads=1).to_ndarray() for f in container.decode(video=0)]
        else:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    video = np.stack(frames)  # (N, H, W, 3)
    picked = video[segment_indices(len(video), plan.frames, mode="eval")]
    x = center_crop(resize_short_side(torch.from_numpy(picked), plan.resize), plan.size)
    return clip_to_tensor(x, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def decode_only(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def loader_pass(dataset: VideoClipDataset, workers: int, batch: int) -> int:
    """Clips of one DataLoader pass (batches are ``{"video": {stream: tensor}, "label", ...}``)."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_clips,
        generator=torch.Generator().manual_seed(0),
    )
    return sum(len(b["label"]) for b in loader if b is not None)


def timed(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def measure(methods: dict[str, Callable[[], int]], repeats: int) -> dict[str, dict]:
    """clips/s per method, each a full pass: ``repeats`` interleaved rounds, median and all values."""
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(repeats):
        for name, fn in methods.items():
            rates[name].append(timed(fn))
            print(f"  round {r + 1}/{repeats} {name:28s} {rates[name][-1]:7.1f} clips/s", flush=True)
    return summarise(rates)


def measure_per_clip(methods: dict[str, Callable[[int], object]], n: int, repeats: int) -> dict[str, dict]:
    """clips/s per single-process method, interleaved clip by clip (method order rotating), so that a busy
    neighbour on a shared CPU slows every method alike; per round the rate is n / (summed time)."""
    names = list(methods)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        spent = dict.fromkeys(names, 0.0)
        for i in range(n):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                start = time.perf_counter()
                methods[name](i)
                spent[name] += time.perf_counter() - start
        for name in names:
            rates[name].append(n / spent[name])
        print(f"  round {r + 1}/{repeats} " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    return summarise(rates)


def summarise(rates: dict[str, list[float]]) -> dict[str, dict]:
    return {
        name: {"clips_per_s": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
        for name, v in rates.items()
    }


def throughput(records: list, repeats: int, plan: Plan) -> tuple[dict[str, dict], dict[str, dict]]:
    """(single-process per-clip rates, DataLoader pass rates)."""
    paths = [r.path for r in records]
    kw = {
        "num_frames": plan.frames,
        "size": plan.size,
        "resize": plan.resize,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    eval_ds = VideoClipDataset(records, mode="eval", **kw)
    train_ds = VideoClipDataset(records, mode="train", **kw)
    warm = min(plan.warmup, len(records))
    loader_pass(VideoClipDataset(records[:warm], mode="eval", **kw), 0, plan.batch)
    for p in paths[:warm]:
        naive_clip(p, plan)
        decode_only(p)
    print("single process, interleaved clip by clip:", flush=True)
    single = measure_per_clip(
        {
            "dataset_eval": lambda i: eval_ds[i],
            "dataset_train": lambda i: train_ds[i],
            "naive": lambda i: naive_clip(paths[i], plan),
            "naive_reused_converter": lambda i: naive_clip(paths[i], plan, reuse_converter=True),
            "decode_only": lambda i: decode_only(paths[i]),
        },
        len(paths),
        repeats,
    )
    print(f"DataLoader passes (batch {plan.batch}):", flush=True)
    loaders = measure(
        {
            "loader_eval_w0": lambda: loader_pass(eval_ds, 0, plan.batch),
            "loader_train_w0": lambda: loader_pass(train_ds, 0, plan.batch),
            "loader_train_w1": lambda: loader_pass(train_ds, 1, plan.batch),
            "loader_train_w2": lambda: loader_pass(train_ds, 2, plan.batch),
        },
        repeats,
    )
    return single, loaders


def decode_time_resize(clip: Path, repeats: int, plan: Plan) -> dict:
    """ms per clip (16 frames) of a 1080p clip to RGB at short side 256, from frames already decoded (decoding costs
    the same either way): swscale shrink during conversion vs full-size conversion + torch's uint8 resize."""
    with av.open(str(clip)) as container:
        decoded = list(container.decode(video=0))
    frames = [decoded[i] for i in segment_indices(len(decoded), plan.frames, mode="eval")]
    w, h = frames[0].width, frames[0].height
    small = (round(w * plan.resize / min(w, h)), round(h * plan.resize / min(w, h)))

    def swscale() -> None:
        conv = VideoReformatter()
        np.stack(
            [
                conv.reformat(
                    f, format="rgb24", width=small[0], height=small[1], interpolation="AREA", threads=1
                ).to_ndarray()
                for f in frames
            ]
        )

    def full_then_torch() -> None:
        conv = VideoReformatter()
        full = np.stack([conv.reformat(f, format="rgb24", threads=1).to_ndarray() for f in frames])
        resize_short_side(torch.from_numpy(full), plan.resize)

    ways = {f"swscale_shrink_to_{plan.resize}": swscale, "full_size_then_torch_resize": full_then_torch}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for fn in ways.values():
        fn()
    for _ in range(repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    key = f"ms_per_{plan.frames}_frames"
    out: dict = {k: {key: round(statistics.median(v), 1)} for k, v in times.items()}
    out["speedup"] = round(out["full_size_then_torch_resize"][key] / out[f"swscale_shrink_to_{plan.resize}"][key], 2)
    out["clip"] = f"{clip.name} ({w}x{h})"
    return out


# --------------------------------------------------------------------------------------------- TorchCodec


def backend_rates(paths: list[str], repeats: int, plan: Plan) -> dict:
    """clips/s of read_frames for the segment-centre frames, PyAV vs TorchCodec, interleaved in this process."""
    counts = {p: decode_only(p) for p in paths}

    def run(backend: str) -> Callable[[], int]:
        def clips() -> int:
            idx = {p: segment_indices(counts[p], plan.frames, mode="eval") for p in paths}
            return sum(read_frames(p, idx[p], backend=backend, short_side=plan.resize).shape[0] > 0 for p in paths)

        return clips

    for p in paths[: min(4, plan.warmup)]:  # warm-up: library loading, page cache
        for backend in ("pyav", "torchcodec"):
            read_frames(p, [0], backend=backend)
    res = measure({"read_frames_pyav": run("pyav"), "read_frames_torchcodec": run("torchcodec")}, repeats)
    res["torchcodec_over_pyav"] = round(
        res["read_frames_torchcodec"]["clips_per_s"] / res["read_frames_pyav"]["clips_per_s"], 2
    )
    return res


def ffmpeg_shim() -> tuple[Path, Path]:
    """A temp folder of symlinks ``libavcodec.so.62`` -> PyAV's bundled ``libavcodec-<hash>.so.62.x``, and av.libs."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    shim = Path(tempfile.mkdtemp(prefix="ffmpeg-shim-"))
    for lib in libs.glob("lib*.so*"):
        m = re.match(r"(lib(?:av\w+|sw\w+|postproc))-[0-9a-f]{8}\.so\.(\d+)", lib.name)
        if m:
            (shim / f"{m.group(1)}.so.{m.group(2)}").symlink_to(lib)
    return shim, libs


def torchcodec_section(paths: list[str], repeats: int, plan: Plan) -> dict:
    ok, why = torchcodec_available()
    if ok:
        return {"status": "available", **backend_rates(paths, repeats, plan)}
    section: dict = {"status": "unavailable", "reason": why}
    shim, libs = ffmpeg_shim()
    env = dict(os.environ, LD_LIBRARY_PATH=f"{shim}:{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    spec = {"paths": paths, "repeats": repeats, "plan": dataclasses.asdict(plan)}
    cmd = [sys.executable, __file__, "--torchcodec-child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        shutil.rmtree(shim, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        section["via_pyav_ffmpeg_shim"] = json.loads(lines[-1])
        section["shim_note"] = (
            "TorchCodec loaded PyAV's bundled FFmpeg through LD_LIBRARY_PATH symlinks "
            "(libavcodec.so.62 -> av.libs/libavcodec-<hash>.so.62...); not a supported setup, "
            "measured only to compare the decoders"
        )
    else:
        section["shim_error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return section


# ----------------------------------------------------------------------------------------------------- main


def run(mini: Path, records: list, repeats: int, plan: Plan, *, resize_clip: Path | None, quick: bool) -> dict:
    """Every section on ``records`` of the ucf101-mini folder ``mini``; the results record."""
    info = machine()
    info.update(decoder_versions())
    print(
        f"{len(records)} clips, {repeats} repeats on {info['cpu']} ({info['cores']} cores), "
        f"load {info['loadavg_at_start']}",
        flush=True,
    )
    single, loaders = throughput(records, repeats, plan)
    naive, bound = single["naive"]["clips_per_s"], single["decode_only"]["clips_per_s"]
    ratios = {f"{k}_over_naive": round(v["clips_per_s"] / naive, 2) for k, v in single.items() if k != "naive"}
    ratios.update(
        {
            f"{k}_over_decode_only": round(v["clips_per_s"] / bound, 2)
            for k, v in single.items()
            if k.startswith("dataset")
        }
    )
    ratios.update({f"{k}_over_naive": round(v["clips_per_s"] / naive, 2) for k, v in loaders.items()})
    result = {
        "benchmark": "bench_data",
        "machine": info,
        "setup": {
            "dataset": str(mini),
            "clips": len(records),
            "frames": plan.frames,
            "size": plan.size,
            "resize": plan.resize,
            "batch_size": plan.batch,
            "repeats": repeats,
            "quick": quick,
            "smoke": plan == SMOKE,
        },
        "single_process": single,
        "dataloader": loaders,
        "ratios": ratios,
        "targets": {
            "dataset_eval_over_naive>=3": ratios["dataset_eval_over_naive"] >= 3,
            "dataset_eval_over_decode_only>=0.5": ratios["dataset_eval_over_decode_only"] >= 0.5,
        },
    }
    if resize_clip is not None:
        result["decode_time_resize_1080p"] = decode_time_resize(resize_clip, plan.resize_repeats, plan)
    tc_paths = [r.path for r in records[: min(len(records), plan.torchcodec_clips)]]
    result["torchcodec"] = torchcodec_section(tc_paths, repeats, plan)
    return result


def pick_records(mini: Path, n_clips: int) -> list:
    """Every clip of ucf101-mini's split 1 (train and test), or ``n_clips`` of them evenly spaced."""
    splits = load_splits("ucf101", mini, val_fraction=0.0)
    records = sorted(splits.train + splits.test, key=lambda r: r.video_id)
    return records[:: max(1, len(records) // n_clips)][:n_clips] if n_clips else records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=default_root(), help="the shared data folder (holds ucf101-mini/)")
    ap.add_argument("--quick", action="store_true", help="40 clips, 2 repeats")
    ap.add_argument("--clips", type=int, default=0, help="clips to use (0 = all 410; --quick: 40)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of this process (DataLoader workers always use 1); default 1, "
        "as on a small shared CPU extra threads wait on each other for these small tensors",
    )
    ap.add_argument("--smoke", action="store_true", help="seconds: 4 synthetic clips, tiny frames, one repeat")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_data.json")
    ap.add_argument("--torchcodec-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torchcodec_child:
        spec = json.loads(args.torchcodec_child)
        print(json.dumps(backend_rates(spec["paths"], spec["repeats"], Plan(**spec["plan"]))))
        return
    torch.set_num_threads(args.threads)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench-data-smoke-") as tmp:
            mini = smoke_dataset(Path(tmp) / "ucf101-mini")
            records = pick_records(mini, 4)
            result = run(mini, records, 1, SMOKE, resize_clip=Path(records[0].path), quick=False)
    else:
        mini = args.root / "ucf101-mini"
        if not mini.is_dir():
            sys.exit(f"{mini}: ucf101-mini not found (give --root or set DYMSTA_SHARED_DATA)")
        records = pick_records(mini, args.clips or (40 if args.quick else 0))
        big = args.root / "clips" / "edge" / "ntu_1080p_h264_in_avi.avi"
        repeats = 2 if args.quick else args.repeats
        result = run(mini, records, repeats, FULL, resize_clip=big if big.is_file() else None, quick=args.quick)
    atomic_write_json(args.out, result)
    print(json.dumps({"ratios": result["ratios"], "targets": result["targets"]}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
