"""Prediction benchmarks (issue 10): batch throughput, and the memory of a timeline as the video grows.

1. Throughput: ``dymsta predict MODEL clip`` run once per clip (one process each: what a shell loop does) against
   one ``dymsta predict MODEL clip1 ... clipN`` (batches, decoding in worker processes), on the same N clips; the
   ratio of wall-clock times is the figure (target >= 2x). One per-file call first warms the runtime cache; the
   batch run is repeated and its median taken. Both runs must give the same labels.
2. Timeline memory: ``Predictor.timeline`` on a short and a long video (default 1 and 10 minutes), each in a fresh
   process (``ru_maxrss`` is a high-water mark), with a third process on a 2-second video as the baseline of the
   model and libraries. Target: peak RSS of the long run within 1.2x of the short run, time about linear.

The model is the demo recipe's DyMSTA-Net (EfficientNet-Lite0, 16 frames, 112 px, backbone runtime ``auto``) with
untrained head weights unless ``--run`` names a trained one: speed and memory do not depend on the weights. Clips
are real UCF101 AVIs from ../shared/data/ucf101-mini when present, else synthetic ones. Results go to
``benchmarks/results/bench_predict.json``, tagged with the machine and its load average; ``--emulate-avx2``
reruns it with PyTorch and oneDNN capped to AVX2 (``bench_predict_avx2.json``).

``--smoke``: 1 clip, one repeat, 3- and 6-second timelines, in seconds (figures meaningless).

    python benchmarks/bench_predict.py [--clips 32] [--long-minutes 10] [--short-minutes 1] [--quick] [--emulate-avx2]
    python benchmarks/bench_predict.py --smoke --out /tmp/bench_predict.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, RESULTS, machine, rerun_as_avx2
from dymsta.utils import atomic_write_json

SHARED = REPO.parent / "shared" / "data"


def make_checkpoint(folder: Path) -> Path:
    """The demo recipe's model (untrained head) saved as ``dymsta train`` saves a checkpoint."""
    from dymsta.config import config_to_dict, load_config, recipe_path
    from dymsta.models import build_model, save_model

    cfg = load_config(recipe_path("demo"), ["data.root=/unused", "model.num_classes=8"])
    model = build_model(cfg.model)
    path = folder / "checkpoints" / "best.safetensors"
    meta = {"run_config": json.dumps(config_to_dict(cfg)), "class_names": json.dumps([f"c{i}" for i in range(8)])}
    save_model(model, path, metadata=meta)
    return folder


def find_clips(n: int, folder: Path) -> list[str]:
    """``n`` real UCF101 clips, or synthetic ones (6 s, 320x240, MPEG-4) when the shared data is absent."""
    real = sorted((SHARED / "ucf101-mini" / "UCF-101").rglob("*.avi")) if SHARED.is_dir() else []
    if len(real) >= n:
        step = len(real) // n
        return [str(p) for p in real[::step][:n]]
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_frames, write_video

    out = []
    for i in range(n):
        path = folder / f"clip_{i:02d}.avi"
        write_video(path, make_frames(150, 240, 320, seed=i), codec="mpeg4")
        out.append(str(path))
    return out


def run_cli(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dymsta", *args], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dymsta {' '.join(args[:3])} ... failed: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds, proc.stdout


def throughput(run: Path, clips: list[str], repeats: int, batch_size: int, workers: int) -> dict:
    base = ["predict", str(run), "--json", "--workers", "0"]
    run_cli([*base, clips[0]])  # warm-up: the backbone runtime's export is cached for every later process
    per_file, labels_one = [], []
    for clip in clips:
        seconds, out = run_cli([*base, clip])
        per_file.append(seconds)
        labels_one.append(json.loads(out)["label"])
    batch_times, labels_batch = [], None
    for _ in range(repeats):
        args = ["predict", str(run), "--json", "--batch-size", str(batch_size), "--workers", str(workers), *clips]
        seconds, out = run_cli(args)
        batch_times.append(seconds)
        labels_batch = [json.loads(line)["label"] for line in out.splitlines()]
    one_by_one = sum(per_file)
    batched = statistics.median(batch_times)
    return {
        "clips": len(clips),
        "per_file_process_s_total": round(one_by_one, 2),
        "per_file_process_s_median": round(statistics.median(per_file), 2),
        "batch_s_median": round(batched, 2),
        "batch_s_all": [round(t, 2) for t in batch_times],
        "ratio": round(one_by_one / batched, 2),
        "clips_per_s_batch": round(len(clips) / batched, 2),
        "clips_per_s_per_file": round(len(clips) / one_by_one, 2),
        "same_labels": labels_one == labels_batch,
        "batch_size": batch_size,
        "workers": workers,
    }


def write_long_video(path: Path, seconds: float, fps: int = 25, size: tuple[int, int] = (160, 120)) -> Path:
    """An MPEG-4 AVI of ``seconds``: a textured background that pans, and a block that moves (cheap to encode)."""
    import av

    w, h = size
    yy, xx = np.mgrid[0:h, 0 : 2 * w]
    base = np.stack([xx * 255 // (2 * w), yy * 255 // h, (xx * 7 + yy * 3) % 256], -1).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"qscale": "4"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(int(seconds * fps)):
            x = (t * 2) % w
            frame = np.ascontiguousarray(base[:, x : x + w])
            bx = (t * 5) % (w - 24)
            frame[40:64, bx : bx + 24] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    return path


def timeline_child(run: str, video: str, window: float, stride: float) -> None:
    """In a fresh process: one timeline; print seconds, windows and peak RSS (MiB) as JSON."""
    import resource

    from dymsta.engine.predict import Predictor

    predictor = Predictor.from_checkpoint(run)
    t0 = time.perf_counter()
    result = predictor.timeline(video, window=window, stride=stride)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"seconds": seconds, "windows": len(result["windows"]), "peak_rss_mib": peak, "error": result["error"]}
    print(json.dumps(out))


def timeline_memory(run: Path, folder: Path, short_min: float, long_min: float, window: float, stride: float) -> dict:
    out = {}
    for name, seconds in (("base_2s", 2.0), ("short", 60 * short_min), ("long", 60 * long_min)):
        video = write_long_video(folder / f"{name}.avi", seconds)
        cmd = [sys.executable, __file__, "--timeline-child", str(run), str(video), str(window), str(stride)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"timeline child failed: {proc.stderr.strip().splitlines()[-3:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        out[name]["video_s"] = seconds
    short, long, base = out["short"], out["long"], out["base_2s"]
    out["peak_ratio_long_over_short"] = round(long["peak_rss_mib"] / short["peak_rss_mib"], 3)
    grown = max(short["peak_rss_mib"] - base["peak_rss_mib"], 1.0)
    out["growth_over_base_mib"] = {
        "short": round(short["peak_rss_mib"] - base["peak_rss_mib"], 1),
        "long": round(long["peak_rss_mib"] - base["peak_rss_mib"], 1),
        "ratio": round((long["peak_rss_mib"] - base["peak_rss_mib"]) / grown, 3),
    }
    out["time_ratio_long_over_short"] = round(long["seconds"] / short["seconds"], 2)
    out["length_ratio"] = round(long["video_s"] / short["video_s"], 2)
    out["window_s"], out["stride_s"] = window, stride
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--run", default=None, help="a trained run folder (default: the demo model, untrained)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--short-minutes", type=float, default=1.0)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="8 clips, 1 repeat, 0.5 vs 5 minutes")
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 clip, 1 repeat, 3 vs 6 seconds")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--emulate-avx2", action="store_true", help="rerun with PyTorch and oneDNN capped to AVX2")
    parser.add_argument("--out", default=None, help="results JSON (default: results/bench_predict[_avx2].json)")
    parser.add_argument(
        "--timeline-child", nargs=4, metavar=("RUN", "VIDEO", "WINDOW", "STRIDE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.timeline_child:
        run, video, window, stride = args.timeline_child
        timeline_child(run, video, float(window), float(stride))
        return
    if args.emulate_avx2:
        rerun_as_avx2(args.out, "bench_predict_avx2.json")
    args.out = args.out or str(RESULTS / "bench_predict.json")
    if args.quick:
        args.clips, args.repeats, args.short_minutes, args.long_minutes = 8, 1, 0.5, 5.0
    if args.smoke:
        args.clips, args.repeats, args.short_minutes, args.long_minutes = 1, 1, 0.05, 0.1
    result: dict = {
        "machine": machine(),
        "device": "cpu",
        "smoke": args.smoke,
    }  # machine(): CPU model, cores, load at the start
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        folder = Path(tmp)
        run = Path(args.run) if args.run else make_checkpoint(folder / "run")
        if not args.skip_throughput:
            clips = find_clips(args.clips, folder)
            result["throughput"] = throughput(run, clips, args.repeats, args.batch_size, args.workers)
            print(json.dumps({"throughput": result["throughput"]}, indent=2), flush=True)
        if not args.skip_memory:
            result["timeline"] = timeline_memory(
                run, folder, args.short_minutes, args.long_minutes, args.window, args.stride
            )
            print(json.dumps({"timeline": result["timeline"]}, indent=2), flush=True)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
