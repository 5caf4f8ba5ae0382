"""``dymsta serve`` benchmark (issue 11): HTTP latency and throughput for one clip, against in-process ``predict``.

One process holds the model once. The baseline is ``Predictor.predict_files([clip], workers=0)`` called directly;
the server is ``create_app`` on that same predictor, run by uvicorn on a loopback port in a thread of this process,
and called with ``http.client`` (multipart upload of the clip's bytes, JSON answer).

1. Concurrency 1: in-process calls and HTTP requests alternate, one of each per round, so that a machine whose load
   drifts weighs on both alike. Overhead = median HTTP latency / median in-process latency (target <= 1.2).
2. Concurrency 4: four clients send requests back to back (a bounded total); requests/s against concurrency 1's
   (target: no worse).

Every answer is checked: status 200 and the in-process label. The model is the demo recipe's DyMSTA-Net
(EfficientNet-Lite0, 16 frames, 112 px, backbone runtime ``auto``) with an untrained head unless ``--run`` names a
trained one: speed does not depend on the weights. The clip is a real UCF101 AVI from ../shared/data when present,
else a synthetic one. Results go to ``benchmarks/results/bench_serve.json``, tagged with the machine and its load
average (the figures there were taken while other jobs ran on the same cores: see ``machine``).

``--smoke``: 2 rounds, 4 requests, one warm-up, in seconds (figures meaningless).

    python benchmarks/bench_serve.py [--rounds 20] [--requests 24] [--workers 2] [--run RUN_DIR]
    python benchmarks/bench_serve.py --smoke --out /tmp/bench_serve.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_predict import make_checkpoint
from common import REPO, RESULTS, machine
from dymsta.utils import atomic_write_json

SHARED = REPO.parent / "shared" / "data"


def find_clip(folder: Path) -> Path:
    """A real UCF101 clip (7.1 s, 320x240 xvid AVI) when the shared data is there, else a synthetic 6 s one."""
    real = SHARED / "clips" / "ucf101" / "v_ApplyEyeMakeup_g01_c01.avi"
    if real.is_file():
        return real
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_frames, write_video

    return write_video(folder / "clip.avi", make_frames(150, 240, 320), codec="mpeg4")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation between order statistics."""
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(latencies: list[float], wall: float | None = None) -> dict:
    out = {
        "n": len(latencies),
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(percentile(latencies, 0.95), 4),
        "mean_s": round(statistics.fmean(latencies), 4),
    }
    if wall is not None:
        out["wall_s"] = round(wall, 3)
        out["requests_per_s"] = round(len(latencies) / wall, 3)
    return out


class Client:
    """One keep-alive HTTP connection that posts the clip to ``/v1/predict``."""

    def __init__(self, port: int, data: bytes, name: str) -> None:
        boundary = uuid.uuid4().hex
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
        self.body = head + data + f"\r\n--{boundary}--\r\n".encode()
        self.headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def predict(self) -> tuple[float, dict]:
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/predict", body=self.body, headers=self.headers)
        response = self.conn.getresponse()
        payload = json.loads(response.read())
        seconds = time.perf_counter() - t0
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload}")
        return seconds, payload

    def close(self) -> None:
        self.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="a trained run folder (default: the demo model, untrained)")
    parser.add_argument("--rounds", type=int, default=20, help="concurrency 1: in-process + HTTP pairs")
    parser.add_argument("--requests", type=int, default=24, help="concurrency 4: requests in all")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="the server's worker threads")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="seconds: 2 rounds, 4 requests, 1 warm-up")
    parser.add_argument("--out", default=str(RESULTS / "bench_serve.json"))
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.requests, args.warmup = 2, 4, 1

    import uvicorn

    from dymsta.engine.predict import Predictor
    from dymsta.serve import ServeConfig, create_app

    result: dict = {
        "machine": machine(),
        "device": "cpu",
        "smoke": args.smoke,
    }  # machine(): CPU model, cores, load at the start
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        run = Path(args.run) if args.run else make_checkpoint(folder / "run")
        clip = find_clip(folder)
        data = clip.read_bytes()
        predictor = Predictor.from_checkpoint(run, device="cpu")
        runtime = predictor.model.backbone.runtime_id
        config = ServeConfig(workers=args.workers, queue=max(8, args.concurrency), tmp_dir=str(folder))
        app = create_app(predictor, config)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)

        def in_process() -> tuple[float, dict]:
            t0 = time.perf_counter()
            (r,) = predictor.predict_files([clip], workers=0)
            return time.perf_counter() - t0, r

        client = Client(port, data, clip.name)
        for _ in range(args.warmup):
            _, expected = in_process()
            client.predict()
        local, http_1 = [], []
        for _ in range(args.rounds):
            seconds, r = in_process()
            local.append(seconds)
            seconds, served = client.predict()
            http_1.append(seconds)
            if served["label"] != expected["label"] or r["label"] != expected["label"]:
                raise RuntimeError(f"labels differ: {served['label']} / {r['label']} / {expected['label']}")
        client.close()

        clients = [Client(port, data, clip.name) for _ in range(args.concurrency)]
        lock, latencies, labels, cursor = threading.Lock(), [], [], [0]

        def worker(c: Client) -> None:
            while True:
                with lock:
                    if cursor[0] >= args.requests:
                        return
                    cursor[0] += 1
                seconds, served = c.predict()
                with lock:
                    latencies.append(seconds)
                    labels.append(served["label"])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            list(ex.map(worker, clients))
        wall_4 = time.perf_counter() - t0
        for c in clients:
            c.close()
        if set(labels) != {expected["label"]}:
            raise RuntimeError(f"concurrent labels differ: {sorted(set(labels))}")
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    c1 = summary(http_1)
    c1["requests_per_s"] = round(1 / statistics.fmean(http_1), 3)  # sequential: one request at a time
    c4 = summary(latencies, wall_4)
    base = summary(local)
    result.update(
        clip={"name": clip.name, "bytes": len(data), "frames": expected["frames_expected"]},
        model={
            "run": str(args.run) if args.run else "demo recipe (Lite0, 16 frames, 112 px), untrained head",
            "backbone_runtime": runtime,
        },
        server={"workers": args.workers, "queue": config.queue, "client": "http.client, keep-alive, loopback"},
        in_process_predict=base,
        http_concurrency_1=c1,
        **{f"http_concurrency_{args.concurrency}": c4},
        overhead_p50_http_over_in_process=round(c1["p50_s"] / base["p50_s"], 3),
        overhead_mean_http_over_in_process=round(c1["mean_s"] / base["mean_s"], 3),
        **{f"throughput_ratio_c{args.concurrency}_over_c1": round(c4["requests_per_s"] / c1["requests_per_s"], 3)},
        targets={"overhead_p50_max": 1.2, "throughput_ratio_min": 1.0},
    )
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    load, cores = result["machine"]["loadavg_at_start"][0], os.cpu_count() or 1
    if load > 0.5 * cores:
        result["machine"]["note"] = (
            f"load average {load} on {cores} cores at the start: other jobs shared the CPU during the measurement"
        )
    print(json.dumps(result, indent=2), flush=True)
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
