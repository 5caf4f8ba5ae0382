"""Windows of a video classified as its frames arrive: ``dymsta predict --stream`` and ``--timeline``, one path.

    run = WindowStream(predictor, "rtsp://camera/stream", window=2.0, stride=1.0)   # or "/dev/video0", "-", a file
    for w in run:                    # one per window: {"start", "end", "label", "predictions", "latency_s"}
        print(w)
    run.summary()                    # frames, dropped windows and frames, latency, the merged segments

A window of ``window`` seconds starts every ``stride`` seconds; each is a clip of the recipe's sampling
(``num_frames`` segment centres inside it, the recipe's streams), cut by a :class:`dymsta.data.live.ClipReader`
while the frames come in: memory holds the windows in flight, not the stream. On a live source the reader does
not wait for the model: when it falls behind, whole windows are dropped and counted, and ``frames_dropped``
counts the frames that a planned window covered and no answered window did. ``latency_s`` of a window is the
wall-clock time from the decoding of the last frame its clip uses (its last segment centre, or the frame after
it for ``rgbdiff``) to its answer.

A file is the same pass without drops, in batches; :func:`timeline` adds what a finished file allows (its
duration, a last window that ends at its end, the windows' owned spans) and is what ``Predictor.timeline`` returns.

Segments: consecutive windows with one label merge. The labels follow the best path through the windows
(:func:`best_path`, Viterbi): the sum of the windows' log-probabilities less ``switch_cost`` per change of label,
so a label survives a window or two that briefly prefer another. Optionally the probabilities are first smoothed
over ``smooth`` neighbouring windows (a centred moving average; :func:`smooth_probs`), and segments shorter than
``min_segment`` seconds are merged into a neighbour (:func:`merge_short`); windows below the predictor's
threshold are ``unknown``. The default, ``switch_cost`` 2 with no moving average and no minimum length, is what
validation ranked first on long videos of real clips (docs/predict.md, "Timeline quality"). The per-window lines
of a stream are each window's own answer; the path shapes the segments.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dymsta.data import VideoDecodeError, VideoRecord, probe_video
from dymsta.data.decode import ClipRequest
from dymsta.data.live import ClipReader, Source, open_source
from dymsta.data.sampling import segment_indices
from dymsta.utils import get_logger

if TYPE_CHECKING:
    from dymsta.engine.predict import Predictor

__all__ = [
    "DEFAULT_SWITCH_COST",
    "UNKNOWN",
    "WindowStream",
    "best_path",
    "label_segments",
    "merge_short",
    "owned_spans",
    "segments_of",
    "sliding_windows",
    "smooth_probs",
    "timeline",
    "window_labels",
]

log = get_logger(__name__)

DEFAULT_SWITCH_COST = 2.0  # chosen on the validation side of scripts/timeline_quality.py (docs/predict.md)
UNKNOWN = "unknown"  # the label of a video (or window) whose top probability is below the threshold


# ------------------------------------------------------------------------------------------------ windows


def sliding_windows(num_frames: int, fps: float, window: float, stride: float) -> list[tuple[int, int]]:
    """``[start, stop)`` frame ranges of windows of ``window`` seconds every ``stride`` seconds over a file.

    Windows start at 0, stride, 2 x stride, ... while they fit in the video; one more, ending at the video's end,
    covers a tail the stride grid leaves; a video shorter than one window is one window. Every range holds at
    least one frame.
    """
    duration = num_frames / fps
    if duration <= window:
        return [(0, num_frames)]
    starts = [k * stride for k in range(int(math.floor((duration - window) / stride + 1e-9)) + 1)]
    if starts[-1] + window < duration - 0.5 / fps:
        starts.append(duration - window)
    spans = []
    for s in starts:
        a = min(num_frames - 1, int(round(s * fps)))
        b = max(a + 1, min(num_frames, int(round((s + window) * fps))))
        spans.append((a, b))
    return spans


def _endless_span(fps: float, window: float, stride: float) -> Callable[[int], tuple[int, int]]:
    """Window ``k`` of a stream of unknown length: ``[round(k stride fps), + round(window fps))``."""
    width = max(1, int(round(window * fps)))
    return lambda k: (int(round(k * stride * fps)), int(round(k * stride * fps)) + width)


def owned_spans(spans: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """The time each window owns: from midway after its predecessor's centre to midway before its successor's."""
    centres = [(a + b) / 2 for a, b in spans]
    bounds = [0.0] + [(c0 + c1) / 2 for c0, c1 in zip(centres, centres[1:], strict=False)] + [duration]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


# ------------------------------------------------------------------------------------------------ segments


def smooth_probs(probs: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of window probabilities ``(N, K)`` over ``width`` windows (odd; 1: unchanged).

    At the ends the average is over the windows that exist (no padding), so rows still sum to 1.
    """
    if width <= 1 or len(probs) <= 1:
        return probs
    half = width // 2
    cum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    lo = np.clip(np.arange(len(probs)) - half, 0, len(probs))
    hi = np.clip(np.arange(len(probs)) + half + 1, 0, len(probs))
    return (cum[hi] - cum[lo]) / (hi - lo)[:, None]


def best_path(probs: np.ndarray, switch_cost: float) -> np.ndarray:
    """The labels ``(N,)`` that maximise ``sum_t log p_t(label_t) - switch_cost x (label changes)`` (Viterbi).

    ``probs``: window probabilities ``(N, K)``. ``switch_cost`` 0 gives each window's own top label; larger costs
    keep a label through windows that briefly prefer another, unless the evidence outweighs the cost. O(N K).
    """
    if switch_cost <= 0 or len(probs) <= 1:
        return probs.argmax(axis=1)
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    n, k = logp.shape
    score, back = logp[0].copy(), np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        best = int(score.argmax())
        switch = score[best] - switch_cost
        back[t] = np.where(switch > score, best, np.arange(k))
        score = np.maximum(score, switch) + logp[t]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def segments_of(owned: list[tuple[float, float]], labels: list[str], scores: list[float]) -> list[dict[str, Any]]:
    """Merge consecutive windows of one label into ``{"segment": [start_s, end_s], "label", "score"}``; a
    segment's score is the mean of its windows' ``scores`` (the probability of its label)."""
    segments: list[dict[str, Any]] = []
    start = 0
    for w in range(1, len(labels) + 1):
        if w == len(labels) or labels[w] != labels[start]:
            segments.append(
                {
                    "segment": [round(owned[start][0], 3), round(owned[w - 1][1], 3)],
                    "label": labels[start],
                    "score": round(float(np.mean(scores[start:w])), 6),
                }
            )
            start = w
    return segments


def merge_short(segments: list[dict[str, Any]], min_length: float) -> list[dict[str, Any]]:
    """Segments shorter than ``min_length`` seconds joined to a neighbour, shortest first: to the neighbour with
    the higher score (the only one at an end); neighbours of one label then merge. Scores are length-weighted."""
    segs = [dict(s, segment=list(s["segment"])) for s in segments]

    def length(s: dict[str, Any]) -> float:
        return s["segment"][1] - s["segment"][0]

    def join(a: dict[str, Any], b: dict[str, Any], label: str, score_of: dict[str, Any]) -> dict[str, Any]:
        la, lb = length(a), length(b)
        score = score_of["score"] if a["label"] != b["label"] else (a["score"] * la + b["score"] * lb) / (la + lb)
        return {"segment": [a["segment"][0], b["segment"][1]], "label": label, "score": round(score, 6)}

    while len(segs) > 1:
        i = min(range(len(segs)), key=lambda k: length(segs[k]))
        if length(segs[i]) >= min_length:
            break
        left, right = segs[i - 1] if i > 0 else None, segs[i + 1] if i + 1 < len(segs) else None
        into = left if right is None or (left is not None and left["score"] >= right["score"]) else right
        if into is left:
            segs[i - 1 : i + 1] = [join(left, segs[i], left["label"], left)]
        else:
            segs[i : i + 2] = [join(segs[i], right, right["label"], right)]
        k = 0
        while k + 1 < len(segs):  # neighbours that now share a label
            if segs[k]["label"] == segs[k + 1]["label"]:
                segs[k : k + 2] = [join(segs[k], segs[k + 1], segs[k]["label"], segs[k])]
            else:
                k += 1
    return segs


# ------------------------------------------------------------------------------------------------ the pass


class WindowStream:
    """The windows of ``source`` classified by ``predictor`` as the source delivers them (module docstring).

    Args:
        predictor: the model (:class:`dymsta.engine.predict.Predictor`).
        source: an open :class:`dymsta.data.live.Source`, or what :func:`dymsta.data.live.open_source` opens.
        window, stride: seconds (> 0).
        top_k: predictions kept per window.
        timeout: seconds a source may take to open, or go without a frame, before it is an error.
        batch_size: windows per model call (a live source: at most this many of those already waiting).
        max_pending: finished windows that may wait for the model before a live source drops the oldest.
        spans: the windows as frame ranges (files: :func:`sliding_windows`); default: endless at the source's fps.
        smooth, min_segment, switch_cost: how windows become segments (module docstring).

    Raises:
        VideoDecodeError: the source does not open (here), fails or stalls (while iterating); one line each.
        ValueError: a non-positive window or stride.
    """

    def __init__(
        self,
        predictor: Predictor,
        source: str | Source,
        *,
        window: float = 2.0,
        stride: float = 1.0,
        top_k: int = 5,
        timeout: float = 10.0,
        batch_size: int = 8,
        max_pending: int = 2,
        spans: list[tuple[int, int]] | None = None,
        smooth: int = 1,
        min_segment: float = 0.0,
        switch_cost: float = DEFAULT_SWITCH_COST,
    ) -> None:
        if not (window > 0 and stride > 0):
            raise ValueError(f"--window and --stride must be > 0 seconds, got {window} and {stride}")
        if timeout <= 0 or batch_size < 1 or top_k < 1:
            raise ValueError(f"timeout, batch size and top-k must be > 0, got {timeout}, {batch_size}, {top_k}")
        self.predictor, self.window, self.stride, self.top_k = predictor, window, stride, top_k
        self.timeout, self.batch_size, self.smooth, self.min_segment = timeout, batch_size, smooth, min_segment
        self.switch_cost = switch_cost
        self.source = source if isinstance(source, Source) else open_source(source, timeout=timeout)
        self.fps = self.source.fps
        self._span = spans.__getitem__ if spans is not None else _endless_span(self.fps, window, stride)
        self._count = len(spans) if spans is not None else None
        clips = predictor.spec.dataset()
        self._clips = clips
        self.reader = ClipReader(
            self.source,
            self._requests(),
            short_side=clips.resize,
            motion_fallback=clips.motion.mv_fallback,
            motion_source=clips.motion.mv_source,
            max_pending=max_pending,
        )
        self.answered: list[tuple[int, int]] = []  # frame spans of the answered windows, in order
        self.probs: list[np.ndarray] = []  # their calibrated probabilities (K,) float32
        self.latencies: list[float] = []
        self.motion_sources: set[str] = set()
        self.last_index, self.ended_early = -1, False
        self.error: str | None = None
        self.stopped = False  # stopped by its user (Ctrl-C) before the source ended

    def _requests(self) -> Iterator[ClipRequest]:
        record = VideoRecord(path=self.source.name, label=0, video_id=self.source.name, group="", num_frames=1, fps=0)
        k = 0
        while self._count is None or k < self._count:
            a, b = self._span(k)
            local = segment_indices(b - a, self.predictor.spec.num_frames, mode="eval")
            following, windows = self._clips.decode_settings(dataclasses.replace(record, num_frames=b - a), local)
            shifted = None if windows is None else tuple((a + s, a + e) for s, e in windows)
            yield ClipRequest(tuple(int(a + i) for i in local), following, shifted)
            k += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                batch = self._next_batch()
                if not batch:
                    return
                yield from self._answer(batch)
        finally:
            self.reader.close()

    def _next_batch(self) -> list[Any]:
        """Finished windows for one model call: a live source's waiting ones, or a file's next ``batch_size``."""
        first = self.reader.get(self.timeout)
        if first is None:
            return []
        batch = [first]
        while len(batch) < self.batch_size and (not self.source.live or self.reader.pending()):
            ready = self.reader.get(self.timeout)
            if ready is None:
                break
            batch.append(ready)
        return batch

    def _answer(self, batch: list[Any]) -> Iterator[dict[str, Any]]:
        streams = [self._clips.clip_streams(r.clip, 0, path=self.source.name) for r in batch]  # uint8 streams
        probs = self.predictor.probabilities({k: torch.stack([s[k] for s in streams]) for k in streams[0]})
        answered_at = time.monotonic()
        for ready, p in zip(batch, probs, strict=True):
            a, b = self._span(ready.index)
            self.answered.append((a, b))
            self.probs.append(p.astype(np.float32))
            self.latencies.append(answered_at - ready.ready_at)
            self.motion_sources.add(ready.clip.motion_source)
            self.last_index, self.ended_early = ready.index, self.ended_early or ready.clip.ended_early
            label, predictions = self.predictor._ranked(p, self.top_k)
            yield {
                "start": round(a / self.fps, 3),
                "end": round(b / self.fps, 3),
                "label": label,
                "predictions": predictions,
                "latency_s": round(self.latencies[-1], 4),
            }

    # -------------------------------------------------------------------------------------------- summary

    def frames_dropped(self) -> int:
        """Frames that a window reached by the stream covered and no answered window did."""
        decoded = self.reader.frames_decoded
        reached = sorted(self.answered + [self._span(k) for k in self.reader.dropped])
        return _covered(reached, decoded) - _covered(self.answered, decoded)

    def smoothed_probs(self) -> np.ndarray:
        """The answered windows' probabilities ``(N, K)`` after the moving average (``smooth``)."""
        return smooth_probs(np.stack(self.probs), self.smooth) if self.probs else np.zeros((0, 0))

    def segments(self, duration: float | None = None) -> list[dict[str, Any]]:
        """The merged segments of the windows answered so far (``duration``: where the last one ends)."""
        if not self.answered:
            return []
        spans = [(a / self.fps, b / self.fps) for a, b in self.answered]
        p = self.predictor
        return label_segments(
            np.stack(self.probs), spans, duration if duration is not None else spans[-1][1], p.class_names,
            threshold=p.threshold, smooth=self.smooth, switch_cost=self.switch_cost, min_segment=self.min_segment,
        )  # fmt: skip

    def follow(self) -> Iterator[dict[str, Any]]:
        """Each window's object as it is answered, then ``{"summary": ...}``; a source that fails or stalls ends
        the windows, and its one-line error is the summary's ``error``. The reader is closed however it ends."""
        try:
            yield from self
        except VideoDecodeError as e:
            self.error = str(e)
        finally:
            self.reader.close()
        yield {"summary": self.summary()}

    def summary(self) -> dict[str, Any]:
        """The pass so far: source, frames, windows answered and dropped, latency, and the merged segments."""
        lat = np.array(self.latencies) if self.latencies else np.array([math.nan])
        return {
            "source": self.source.name,
            "fps": round(self.fps, 3),
            "window_s": self.window,
            "stride_s": self.stride,
            "frames_decoded": self.reader.frames_decoded,
            "windows": len(self.answered),
            "windows_dropped": len(self.reader.dropped),
            "frames_dropped": self.frames_dropped(),
            "latency_p50_s": _round(np.percentile(lat, 50)),
            "latency_p95_s": _round(np.percentile(lat, 95)),
            "error": self.error,
            "stopped": self.stopped,
            "segments": self.segments(),
        }


def window_labels(
    probs: np.ndarray, class_names: list[str], threshold: float | None, switch_cost: float
) -> tuple[list[str], list[float]]:
    """Labels of windows ``(N, K)`` along :func:`best_path` and their probabilities; :data:`UNKNOWN` below
    ``threshold``."""
    labels, scores = [], []
    for p, c in zip(probs, best_path(probs, switch_cost), strict=True):
        score = float(p[c])
        labels.append(UNKNOWN if threshold is not None and score < threshold else class_names[c])
        scores.append(score)
    return labels, scores


def label_segments(
    probs: np.ndarray,
    spans: list[tuple[float, float]],
    duration: float,
    class_names: list[str],
    *,
    threshold: float | None = None,
    smooth: int = 1,
    switch_cost: float = DEFAULT_SWITCH_COST,
    min_segment: float = 0.0,
) -> list[dict[str, Any]]:
    """Segments of windows (raw probabilities ``(N, K)``, their ``[start_s, end_s]`` spans) over a video of
    ``duration`` seconds: moving average, best path, merged runs, short segments joined (module docstring)."""
    labels, scores = window_labels(smooth_probs(probs, smooth), class_names, threshold, switch_cost)
    return merge_short(segments_of(owned_spans(spans, duration), labels, scores), min_segment)


def _covered(spans: list[tuple[int, int]], limit: int) -> int:
    """Frames below ``limit`` inside the union of ``spans`` (sorted by start)."""
    total, end = 0, 0
    for a, b in sorted(spans):
        a, b = max(a, end), min(b, limit)
        if b > a:
            total += b - a
        end = max(end, min(b, limit))
    return total


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


# ------------------------------------------------------------------------------------------------ files


def timeline(
    predictor: Predictor,
    path: str,
    *,
    window: float = 2.0,
    stride: float = 1.0,
    top_k: int = 3,
    batch_size: int = 8,
    smooth: int = 1,
    min_segment: float = 0.0,
    switch_cost: float = DEFAULT_SWITCH_COST,
) -> tuple[dict[str, Any], np.ndarray, list[tuple[int, int]], float]:
    """The timeline of a finished file (docs/predict.md): the stream pass over it, then what its end allows.

    Returns ``(result, smoothed probabilities (N, K), the windows' frame spans, fps)``; a file that cannot be
    used gives a result with ``error`` and no windows.
    """
    if not (window > 0 and stride > 0):
        raise ValueError(f"--window and --stride must be > 0 seconds, got {window} and {stride}")
    result: dict[str, Any] = {
        "video": str(path),
        "duration_s": 0.0,
        "fps": 0.0,
        "window_s": window,
        "stride_s": stride,
        "frames_decoded": 0,
        "frames_expected": 0,
        "warnings": [],
        "error": None,
        "segments": [],
        "windows": [],
    }
    try:
        info = probe_video(path)
        source = open_source(path)
    except VideoDecodeError as e:
        result["error"] = str(e)
        return result, np.zeros((0, 0)), [], 0.0
    fps = info.fps if info.fps > 0 else 25.0
    source.fps = fps  # the probe's rate (it counts frames where the header does not)
    duration = info.num_frames / fps
    result.update(duration_s=round(duration, 3), fps=round(fps, 3), frames_expected=info.expected_frames)
    spans = sliding_windows(info.num_frames, fps, window, stride)
    run = WindowStream(
        predictor, source, window=window, stride=stride, top_k=top_k, batch_size=batch_size, spans=spans,
        smooth=smooth, min_segment=min_segment, switch_cost=switch_cost, max_pending=batch_size,
    )  # fmt: skip
    try:
        windows = list(run)
    except VideoDecodeError as e:
        result["error"] = str(e)
        return result, np.zeros((0, 0)), [], fps
    decoded = run.reader.frames_decoded if run.ended_early else max(run.reader.frames_decoded, info.num_frames)
    result["frames_decoded"] = decoded
    if decoded < info.expected_frames and (run.ended_early or info.num_frames < info.expected_frames):
        result["warnings"].append(f"{path}: decoded {decoded} of {info.expected_frames} frames (truncated or corrupt)")
        log.warning("%s", result["warnings"][-1])
    result["windows"] = [
        {"segment": [w["start"], w["end"]], "label": w["label"], "predictions": w["predictions"]} for w in windows
    ]
    result["segments"] = run.segments(duration)
    return result, run.smoothed_probs(), run.answered, fps
