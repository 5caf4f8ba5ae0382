"""Live-stream benchmark (issue 20): ``dymsta predict RUN --stream -`` fed a real clip through a pipe at the
stream's own pace, as a camera or a network source would deliver it.

1. Latency: a 25 fps 320x240 stream (a real UCF101 clip looped, MPEG-4 in NUT), 2 s windows every 1 s, paced in
   real time. Figures: each window's ``latency_s`` (from the decoding of its last frame to its answer), p50 and
   p95, and the windows and frames dropped. Targets: p50 <= 0.5 s, p95 <= 1 s, nothing dropped.
2. 1080p: a 30 fps 1920x1080 H.264 stream (the clip scaled up), paced in real time: it keeps up by dropping
   whole windows, each counted (the figure is the share of windows answered and the latency of those).
3. Memory: a 30-minute 25 fps stream fed at ``--memory-pace`` times real time; the predicting process's peak RSS
   (``VmHWM``) when the stream reaches minute 1 and at its end. Target: at most 1.1x.

Pacing: the NUT file's bytes are written in pieces at the rate that delivers its frames at ``pace`` x their
frame rate (the clip's bit rate is near constant, so bytes track frames), from the moment the process says its
model is loaded (a stream that starts earlier arrives as a backlog, which a live source drops and counts). The model is the demo recipe's
DyMSTA-Net (Lite0, 16 frames, 112 px; untrained head: speed does not depend on the weights) unless ``--run``
names a trained one. Results: ``benchmarks/results/bench_stream.json``, with the machine.

``--smoke``: a 6-second 64 px stream at 4x real time, each part in seconds (figures meaningless).

    python benchmarks/bench_stream.py [--latency-seconds 120] [--hd-seconds 60] [--memory-minutes 30] [--only latency,hd]
    python benchmarks/bench_stream.py --smoke --out /tmp/bench_stream.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench_predict import SHARED, make_checkpoint
from common import REPO, RESULTS, machine
from dymsta.utils import atomic_write_json

CLIP = SHARED / "clips" / "ucf101" / "v_Shotput_g05_c02.avi"


def source_frames(size: tuple[int, int] | None) -> np.ndarray:
    """The real clip's frames (T, H, W, 3) uint8, resized to ``size`` (W, H) when given; synthetic without it."""
    if not CLIP.is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import make_frames

        frames = make_frames(125, 240, 320, seed=0)
    else:
        with av.open(str(CLIP)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    if size is None:
        return frames
    out = []
    for image in frames:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        out.append(frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
    return np.stack(out)


def write_stream(path: Path, frames: np.ndarray, seconds: float, fps: int, codec: str) -> Path:
    """``frames`` looped to ``seconds`` at ``fps``, encoded with ``codec`` into a NUT file (streamable)."""
    count = int(round(seconds * fps))
    with av.open(str(path), mode="w", format="nut") as container:
        options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.bit_rate = 1_500_000
        for t in range(count):
            image = frames[t % len(frames)] if (t // len(frames)) % 2 == 0 else frames[-1 - t % len(frames)]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of process ``pid`` so far, MiB (Linux ``/proc``; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def feed(proc: subprocess.Popen, data: bytes, seconds: float, stop: threading.Event) -> None:
    """Write ``data`` into ``proc``'s stdin evenly over ``seconds``, then close it (the end of the stream)."""
    pieces = max(1, int(seconds * 20))  # every 50 ms
    step = -(-len(data) // pieces)
    start = time.monotonic()
    try:
        for i in range(pieces):
            if stop.is_set():
                break
            proc.stdin.write(data[i * step : (i + 1) * step])
            proc.stdin.flush()
            delay = start + (i + 1) * seconds / pieces - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        proc.stdin.close()
    except (BrokenPipeError, ValueError):
        pass


def run_stream(run: Path, video: Path, stream_seconds: float, pace: float, mark_at: float | None = None) -> dict:
    """Feed ``video`` (``stream_seconds`` long) at ``pace`` x real time into ``predict --stream -``: latencies,
    drops, and the process's peak RSS when the windows reach ``mark_at`` stream seconds and at the end."""
    cmd = [sys.executable, "-m", "dymsta", "predict", str(run), "--stream", "-", "--window", "2", "--stride", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop, ready = threading.Event(), threading.Event()
    err: list[bytes] = []

    def drain() -> None:  # stderr, noting when the model is loaded (the stream starts then, as a camera would)
        for line in proc.stderr:
            err.append(line)
            if b"model ready" in line:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    feeder = threading.Thread(target=feed, args=(proc, video.read_bytes(), stream_seconds / pace, stop), daemon=True)
    latencies, summary, rss_mark, rss_last = [], None, None, float("nan")
    ready.wait(timeout=120)
    started = time.monotonic()
    feeder.start()
    for line in proc.stdout:
        record = json.loads(line)
        if "summary" in record:
            summary = record["summary"]
            break
        latencies.append(record["latency_s"])
        rss_last = vm_hwm_mib(proc.pid)
        if mark_at is not None and rss_mark is None and record["end"] >= mark_at:
            rss_mark = rss_last
    wall = time.monotonic() - started
    stop.set()
    proc.wait(timeout=60)
    if proc.returncode != 0 or summary is None:
        tail = b"".join(err).decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"predict --stream exited {proc.returncode}: {tail}")
    lat = np.array(latencies) if latencies else np.array([np.nan])
    out = {
        "stream_s": stream_seconds,
        "pace": pace,
        "wall_s": round(wall, 1),
        "fps": summary["fps"],
        "frames_decoded": summary["frames_decoded"],
        "windows": summary["windows"],
        "windows_dropped": summary["windows_dropped"],
        "frames_dropped": summary["frames_dropped"],
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
        "latency_max_s": round(float(lat.max()), 3),
    }
    if mark_at is not None:
        out.update(peak_rss_mib_at_mark=rss_mark, peak_rss_mib_at_end=round(rss_last, 1), mark_at_s=mark_at)
        out["rss_end_over_mark"] = round(rss_last / rss_mark, 3) if rss_mark else None
    return out


def _dated(part: dict) -> dict:
    return {**part, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="a trained run folder (default: the demo model, untrained)")
    parser.add_argument("--latency-seconds", type=float, default=120.0)
    parser.add_argument("--hd-seconds", type=float, default=60.0)
    parser.add_argument("--memory-minutes", type=float, default=30.0)
    parser.add_argument("--memory-pace", type=float, default=4.0, help="the memory stream's speed x real time")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny streams at 4x real time")
    parser.add_argument(
        "--only", default="latency,hd,memory", help="parts to run (the others are kept from the results file)"
    )
    parser.add_argument("--out", default=None, help="results JSON (default: results/bench_stream.json)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else RESULTS / "bench_stream.json"
    parts = set(args.only.split(","))
    result: dict = {"benchmark": "bench_stream", "smoke": args.smoke, "machine": machine(), "source": str(CLIP)}
    if parts != {"latency", "hd", "memory"} and out.is_file():  # keep the parts not rerun, each with its date
        result = {**json.loads(out.read_text()), **result}
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        folder = Path(tmp)
        run = Path(args.run) if args.run else make_checkpoint(folder / "run")
        if args.smoke:
            small = source_frames((64, 48))
            video = write_stream(folder / "smoke.nut", small, 6.0, 25, "mpeg4")
            result["latency_25fps"] = run_stream(run, video, 6.0, pace=4.0, mark_at=2.0)
        else:
            frames = source_frames(None)
            if "latency" in parts:
                video = write_stream(folder / "sd.nut", frames, args.latency_seconds, 25, "mpeg4")
                result["latency_25fps"] = _dated(run_stream(run, video, args.latency_seconds, pace=1.0))
                print(json.dumps({"latency_25fps": result["latency_25fps"]}), flush=True)
            if "hd" in parts:
                hd = write_stream(folder / "hd.nut", source_frames((1920, 1080)), args.hd_seconds, 30, "libx264")
                result["hd_1080p_30fps"] = _dated(run_stream(run, hd, args.hd_seconds, pace=1.0))
                print(json.dumps({"hd_1080p_30fps": result["hd_1080p_30fps"]}), flush=True)
                hd.unlink()
            if "memory" in parts:
                long = write_stream(folder / "long.nut", frames, args.memory_minutes * 60, 25, "mpeg4")
                memory = run_stream(run, long, args.memory_minutes * 60, pace=args.memory_pace, mark_at=60.0)
                result["memory_30min"] = _dated(memory)
                print(json.dumps({"memory_30min": result["memory_30min"]}), flush=True)
    result["loadavg_after"] = list(os.getloadavg())
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
