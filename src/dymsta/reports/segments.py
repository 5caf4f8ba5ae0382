"""Segment-level quality of a timeline against the true segments of a video: matches at an IoU threshold.

    scores = segment_scores(predicted, truth, iou=0.5)   # {"precision", "recall", "f1", "matched", ...}

``predicted`` and ``truth`` are lists of ``{"segment": [start_s, end_s], "label": name}`` (the timeline's
``segments``; extra keys ignored). A predicted segment matches a true one of the same label when their temporal
IoU is at least ``iou``; each true segment is matched at most once, greedily by IoU (ActivityNet's rule at one
threshold, without scores). ``unknown`` segments never match and count as predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["segment_iou", "segment_scores", "wrong_segments"]


def segment_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU of two ``[start, end]`` intervals (0 when either is empty)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 and inter > 0 else 0.0


def segment_scores(predicted: list[dict[str, Any]], truth: list[dict[str, Any]], *, iou: float = 0.5) -> dict:
    """Precision, recall and F1 of ``predicted`` segments against ``truth`` at ``iou`` (module docstring)."""
    pairs = sorted(
        (
            (segment_iou(p["segment"], t["segment"]), i, j)
            for i, p in enumerate(predicted)
            for j, t in enumerate(truth)
            if p["label"] == t["label"]
        ),
        reverse=True,
    )
    used_p, used_t = set(), set()
    for overlap, i, j in pairs:
        if overlap < iou:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    matched = len(used_t)
    precision = matched / len(predicted) if predicted else 0.0
    recall = matched / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched, "predicted": len(predicted),
            "true": len(truth)}  # fmt: skip


def wrong_segments(predicted: list[dict[str, Any]], truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted segments whose label is not the true label anywhere they overlap (``unknown`` included)."""
    wrong = []
    for p in predicted:
        labels = {t["label"] for t in truth if segment_iou(p["segment"], t["segment"]) > 0}
        if p["label"] not in labels:
            wrong.append(p)
    return wrong
