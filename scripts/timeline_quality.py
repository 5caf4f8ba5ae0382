"""Timeline quality (issue 20): long videos made of held-out real clips of known classes, segmented by a trained
run, before and after smoothing; the smoothing chosen on the validation side, reported on the test side.

For each side (the run's validation list: held-out groups of the training list; then the test list) the script
writes ``--videos`` long videos, each ``--clips`` clips of that side back to back (no two neighbours of one
class), re-encoded as one MPEG-4 file at the clips' size and 25 fps, with their true segments. The run's
timeline (``--window`` s windows every ``--stride`` s) gives each window's probabilities once; every setting of
``smooth`` (centred moving average over that many windows) x ``switch_cost`` (the best path's cost of a change of
label, :func:`dymsta.engine.stream.best_path`) x ``min_segment`` (seconds) then makes segments
from them, scored by segment precision/recall/F1 at IoU 0.5 (:mod:`dymsta.reports.segments`) and by the wrong
segments (a label the truth does not have where they lie) longer than ``min_segment``. The best setting by
validation F1 (ties: the fewest mechanisms in use, then the smallest settings) is reported on the test side beside none, and beside the best moving average.

    python scripts/timeline_quality.py runs/ucf101_mini_s0 --out docs/results/timeline_quality.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dymsta.config import load_config
from dymsta.data import load_splits
from dymsta.engine.predict import Predictor
from dymsta.engine.stream import label_segments, timeline
from dymsta.reports import segment_scores, wrong_segments
from dymsta.utils import atomic_write_json

SMOOTH = (1, 3, 5, 7)
SWITCH_COST = (0.0, 1.0, 2.0, 4.0, 8.0)
MIN_SEGMENT = (0.0, 1.0, 2.0, 3.0)
FPS = 25


def long_videos(
    records: list, names: list[str], count: int, clips: int, folder: Path, seed: int
) -> list[tuple[Path, list[dict]]]:
    """``count`` videos of ``clips`` clips from ``records`` (neighbours of different classes): ``(path, truth)``."""
    rng = random.Random(seed)
    by_class: dict[int, list] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    out = []
    for v in range(count):
        chosen, last = [], None
        for _ in range(clips):
            label = rng.choice([c for c in by_class if c != last])
            chosen.append(rng.choice(by_class[label]))
            last = label
        out.append(concatenate(chosen, names, folder / f"long_{v:02d}.avi"))
    return out


def concatenate(records: list, names: list[str], path: Path) -> tuple[Path, list[dict]]:
    """The clips decoded and re-encoded back to back (size of the first, 25 fps): ``(path, true segments)``;
    an earlier run's file of the same clips is reused."""
    names_file = path.with_suffix(".truth.json")
    wanted = [Path(r.path).name for r in records]
    if path.is_file() and names_file.is_file():
        truth = json.loads(names_file.read_text())
        if [t["video"] for t in truth] == wanted:
            return path, truth
    truth, t = [], 0
    with av.open(str(path), mode="w") as out:
        stream = None
        for r in records:
            start = t
            with av.open(r.path) as src:
                for frame in src.decode(video=0):
                    if stream is None:
                        stream = out.add_stream("mpeg4", rate=FPS)
                        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                        stream.codec_context.bit_rate = 1_500_000
                    image = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
                    image.pts, image.time_base = t, Fraction(1, FPS)
                    for packet in stream.encode(image):
                        out.mux(packet)
                    t += 1
            truth.append({"segment": [start / FPS, t / FPS], "label": names[r.label], "video": Path(r.path).name})
        for packet in stream.encode():
            out.mux(packet)
    names_file.write_text(json.dumps(truth))
    return path, truth


def window_probs(predictor: Predictor, path: Path, window: float, stride: float) -> tuple[np.ndarray, list, float]:
    """Raw (unsmoothed) window probabilities (N, K), the windows' second spans and the video's duration."""
    result, probs, spans, fps = timeline(predictor, str(path), window=window, stride=stride, smooth=1)
    if result["error"]:
        raise RuntimeError(result["error"])
    return probs, [(a / fps, b / fps) for a, b in spans], result["duration_s"]


def segments_for(predictor: Predictor, probs: np.ndarray, spans: list, duration: float, setting: tuple) -> list:
    """The segments one ``(smooth, switch_cost, min_segment)`` setting makes of a video's windows."""
    smooth, switch_cost, min_seg = setting
    return label_segments(probs, spans, duration, predictor.class_names, threshold=predictor.threshold,
                          smooth=smooth, switch_cost=switch_cost, min_segment=min_seg)  # fmt: skip


def score_side(predictor: Predictor, videos: list, window: float, stride: float) -> dict:
    """Every setting's summed matches and wrong segments over the side's videos (their window probabilities are
    kept beside each video as ``<stem>.windows.json``, and reused when the video is unchanged)."""
    cached = []
    for path, truth in videos:
        keep = path.with_suffix(".windows.json")
        if keep.is_file() and keep.stat().st_mtime >= path.stat().st_mtime:
            saved = json.loads(keep.read_text())
            cached.append(((np.array(saved["probs"]), saved["spans"], saved["duration"]), truth))
            continue
        probs, spans, duration = window_probs(predictor, path, window, stride)
        keep.write_text(json.dumps({"probs": probs.tolist(), "spans": spans, "duration": duration, "truth": truth}))
        cached.append(((probs, spans, duration), truth))
    table = {}
    for setting in itertools.product(SMOOTH, SWITCH_COST, MIN_SEGMENT):
        smooth, switch_cost, min_seg = setting
        matched = predicted = true = long_wrong = 0
        for (probs, spans, duration), truth in cached:
            segs = segments_for(predictor, probs, spans, duration, setting)
            s = segment_scores(segs, truth, iou=0.5)
            matched, predicted, true = matched + s["matched"], predicted + s["predicted"], true + s["true"]
            wrong = wrong_segments(segs, truth)
            long_wrong += sum(1 for w in wrong if w["segment"][1] - w["segment"][0] > max(min_seg, 1e-9))
        precision, recall = matched / max(predicted, 1), matched / max(true, 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table[f"smooth={smooth} switch_cost={switch_cost:g} min_segment={min_seg:g}"] = {
            "smooth": smooth, "switch_cost": switch_cost, "min_segment": min_seg, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4), "segments": predicted, "true_segments": true,
            "wrong_segments_longer_than_min": long_wrong,
        }  # fmt: skip
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a trained run folder")
    ap.add_argument("--videos", type=int, default=16, help="long videos per side")
    ap.add_argument("--clips", type=int, default=6, help="clips per long video")
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--stride", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/timeline_quality", help="folder for the long videos")
    ap.add_argument("--out", default="docs/results/timeline_quality.json")
    args = ap.parse_args()
    started = time.perf_counter()
    run = Path(args.run)
    d = load_config(run / "config.yaml").data
    splits = load_splits(d.kind, d.root, split=d.split, val_fraction=d.val_fraction, seed=d.seed,
                         annotations=d.annotations, label_map=d.label_map)  # fmt: skip
    predictor = Predictor.from_checkpoint(run, device="cpu")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"run": str(run), "window_s": args.window, "stride_s": args.stride, "iou": 0.5, "sides": {}}
    for name, records, seed in (("val", splits.val, args.seed), ("test", splits.test, args.seed + 1)):
        folder = work / name
        folder.mkdir(exist_ok=True)
        videos = long_videos(records, splits.class_names, args.videos, args.clips, folder, seed)
        print(f"{name}: {len(videos)} long videos of {args.clips} clips", file=sys.stderr, flush=True)
        result["sides"][name] = score_side(predictor, videos, args.window, args.stride)
    val = result["sides"]["val"]

    def simplest(k: str) -> tuple:  # best F1; ties: the fewest mechanisms in use, then the smallest settings
        v = val[k]
        knobs = (v["smooth"] > 1) + (v["switch_cost"] > 0) + (v["min_segment"] > 0)
        return v["f1"], -knobs, -v["smooth"], -v["switch_cost"], -v["min_segment"]

    best = max(val, key=simplest)
    moving = max((k for k in val if val[k]["switch_cost"] == 0), key=simplest)
    result["chosen_on_val"], result["best_moving_average_on_val"] = best, moving
    result["test_before"] = result["sides"]["test"]["smooth=1 switch_cost=0 min_segment=0"]
    result["test_after"] = result["sides"]["test"][best]
    result["test_moving_average"] = result["sides"]["test"][moving]
    result["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(Path(args.out), result)
    keys = ("chosen_on_val", "best_moving_average_on_val", "test_before", "test_after", "test_moving_average")
    print(json.dumps({k: result[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main()
