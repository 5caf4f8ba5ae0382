"""Evaluation metrics, the paper's Table 1 report and the per-epoch metrics log.

Everything here takes plain arrays (numpy) and lists and writes files; nothing imports the model,
data or engine packages. Probabilities are laid out as (N, K): one row per clip or video, one column
per class; labels are integer class indices of shape (N,).
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from dymsta.utils import atomic_write_json, atomic_write_text, get_logger

__all__ = [
    "ReportError",
    "aggregate_by_video",
    "topk_accuracy",
    "classification_metrics",
    "ECE_BINS",
    "expected_calibration_error",
    "reliability_bins",
    "format_table1",
    "format_report_md",
    "write_report",
    "MetricsLogger",
    "read_metrics",
]

logger = get_logger(__name__)

# Column order of metrics.csv when these keys are present; other keys follow in the order first seen.
_PREFERRED_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


class ReportError(ValueError):
    """Bad input to a report function (shapes, labels, a malformed metrics file), with a one-line message."""


# --------------------------------------------------------------------------- input checks


def _check_probs_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``probs`` (N, K) and ``labels`` (N,) to float64 / int64 arrays."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ReportError(f"probs must have shape (N, K) with K >= 1, got {probs.shape}")
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ReportError(f"labels must have shape (N,) = ({probs.shape[0]},), got {labels.shape}")
    if probs.shape[0] == 0:
        raise ReportError("no samples to evaluate: probs has N = 0 rows")
    if not np.all(np.isfinite(probs)):
        raise ReportError("probs contains NaN or infinite values")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise ReportError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    num_classes = probs.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ReportError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return probs, labels


# --------------------------------------------------------------------------- metrics


def aggregate_by_video(
    video_ids: Sequence[str], probs: np.ndarray, labels: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Average clip/view probabilities per video (video-level evaluation).

    Args:
        video_ids: N identifiers, one per view; views of one video share an id.
        probs: (N, K) class probabilities, one row per view.
        labels: (N,) integer labels; every view of a video must carry the same label.

    Returns:
        ``(ids, video_probs, video_labels)``: V unique ids in order of first appearance, (V, K) mean
        probabilities over each video's views (float64) and (V,) int64 labels.

    Raises:
        ReportError: (a ValueError) on mismatched lengths or views of one video with different labels.
    """
    probs, labels = _check_probs_labels(probs, labels)
    video_ids = [str(v) for v in video_ids]
    if len(video_ids) != probs.shape[0]:
        raise ReportError(f"video_ids has {len(video_ids)} entries but probs has {probs.shape[0]} rows")
    index: dict[str, int] = {}
    for vid in video_ids:
        index.setdefault(vid, len(index))
    inverse = np.array([index[v] for v in video_ids], dtype=np.int64)  # (N,) view -> video
    num_videos = len(index)
    sums = np.zeros((num_videos, probs.shape[1]), dtype=np.float64)  # (V, K)
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=num_videos)  # (V,)
    video_labels = np.full(num_videos, -1, dtype=np.int64)
    video_labels[inverse] = labels  # last write wins; checked below
    mismatch = video_labels[inverse] != labels
    if np.any(mismatch):
        bad = video_ids[int(np.flatnonzero(mismatch)[0])]
        raise ReportError(f"views of video {bad!r} carry different labels")
    return list(index), sums / counts[:, None], video_labels


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores.

    Args:
        probs: (N, K) scores or probabilities.
        labels: (N,) integer labels.
        k: how many top classes count as a hit; clipped to K. Ties are broken by class index
            (lower index ranks first), so the result is deterministic.

    Returns:
        Accuracy in [0, 1].
    """
    probs, labels = _check_probs_labels(probs, labels)
    if k < 1:
        raise ReportError(f"k must be >= 1, got {k}")
    k = min(int(k), probs.shape[1])
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def _check_class_names(class_names: Sequence[str], num_classes: int) -> list[str]:
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise ReportError(f"class_names has {len(class_names)} names but probs has K = {num_classes} columns")
    if len(set(class_names)) != len(class_names):
        raise ReportError("class_names contains duplicate names")
    return class_names


def _prf(labels: np.ndarray, preds: np.ndarray, num_classes: int, average: str | None) -> tuple:
    return precision_recall_fscore_support(
        labels, preds, labels=list(range(num_classes)), average=average, zero_division=0
    )


def classification_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    num_skipped: int = 0,
    clip_accuracy: float | None = None,
) -> dict:
    """Top-1/top-5 accuracy, macro/weighted precision-recall-F1, per-class table and confusion matrix.

    All K classes are reported, including classes absent from ``labels`` (their support is 0 and their
    scores are 0: scikit-learn with ``labels=range(K)``, ``zero_division=0``). Macro averages run over
    all K classes, weighted averages weight by support, as in scikit-learn's ``classification_report``.

    Args:
        probs: (N, K) probabilities (usually video-level, see :func:`aggregate_by_video`).
        labels: (N,) integer labels.
        class_names: K class names, index-aligned with the columns of ``probs``.
        num_skipped: videos that could not be evaluated (broken files), reported as is.
        clip_accuracy: clip-level top-1 accuracy, stored when given.

    Returns:
        A JSON-serialisable dict with keys ``accuracy``, ``top5_accuracy``, ``macro_avg`` and
        ``weighted_avg`` (each ``{"precision", "recall", "f1"}``), ``per_class``
        (``{name: {"precision", "recall", "f1", "support"}}``), ``num_videos``, ``num_skipped``,
        ``clip_accuracy`` (only if given), ``confusion_matrix`` (K x K list of int lists, rows = true
        class, columns = predicted class) and ``class_names``.
    """
    probs, labels = _check_probs_labels(probs, labels)
    num_classes = probs.shape[1]
    class_names = _check_class_names(class_names, num_classes)
    if num_skipped < 0:
        raise ReportError(f"num_skipped must be >= 0, got {num_skipped}")
    preds = np.argmax(probs, axis=1)  # (N,) first maximum on ties, matching topk_accuracy
    precision, recall, f1, support = _prf(labels, preds, num_classes, None)
    report: dict[str, Any] = {
        "accuracy": float(np.mean(preds == labels)),
        "top5_accuracy": topk_accuracy(probs, labels, 5),
    }
    for key, average in (("macro_avg", "macro"), ("weighted_avg", "weighted")):
        p, r, f, _ = _prf(labels, preds, num_classes, average)
        report[key] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    report["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    report["num_videos"] = int(probs.shape[0])
    report["num_skipped"] = int(num_skipped)
    if clip_accuracy is not None:
        report["clip_accuracy"] = float(clip_accuracy)
    cm = confusion_matrix(labels, preds, labels=list(range(num_classes)))  # (K, K) rows = true
    report["confusion_matrix"] = cm.astype(int).tolist()
    report["class_names"] = class_names
    return report


# --------------------------------------------------------------------------- calibration

ECE_BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> dict[str, list]:
    """Top-1 confidence against accuracy in ``bins`` equal-width bins of [0, 1] (the reliability diagram).

    Bin ``m`` holds the rows whose top probability lies in ``((m - 1) / M, m / M]`` (the first bin includes 0).

    Returns:
        ``{"edges": M + 1 floats, "confidence": M mean top probabilities, "accuracy": M top-1 accuracies,
        "count": M ints}``; the means of an empty bin are 0.
    """
    probs, labels = _check_probs_labels(probs, labels)
    if bins < 1:
        raise ReportError(f"bins must be >= 1, got {bins}")
    confidence = probs.max(axis=1)  # (N,)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # (N,) bin of each row
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": edges.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """ECE: ``sum_m (n_m / N) * |accuracy_m - confidence_m|`` over :func:`reliability_bins` (top-1 confidence).

    0 for a model whose confidence is its accuracy in every bin; at most 1.
    """
    table = reliability_bins(probs, labels, bins=bins)
    count = np.asarray(table["count"], dtype=np.float64)
    gap = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    return float((count * gap).sum() / count.sum())


# --------------------------------------------------------------------------- report files


def _require(report: Mapping, *keys: str) -> None:
    missing = [k for k in keys if k not in report]
    if missing:
        raise ReportError(f"report is missing key(s) {', '.join(missing)}")


def format_table1(report: Mapping) -> str:
    """The paper's Table 1 as a markdown table (two decimals), followed by the top-5 accuracy line.

    Args:
        report: a dict from :func:`classification_metrics`.

    Returns:
        Markdown text::

            | | Precision | Recall | F1-score |
            |---|---|---|---|
            | Accuracy | | | 0.80 |
            | Macro avg | 0.79 | 0.79 | 0.78 |
            | Weighted avg | 0.80 | 0.80 | 0.79 |

            Top-5 accuracy: 0.9294
    """
    _require(report, "accuracy", "top5_accuracy", "macro_avg", "weighted_avg")
    lines = ["| | Precision | Recall | F1-score |", "|---|---|---|---|", f"| Accuracy | | | {report['accuracy']:.2f} |"]
    for label, key in (("Macro avg", "macro_avg"), ("Weighted avg", "weighted_avg")):
        avg = report[key]
        lines.append(f"| {label} | {avg['precision']:.2f} | {avg['recall']:.2f} | {avg['f1']:.2f} |")
    lines += ["", f"Top-5 accuracy: {report['top5_accuracy']:.4f}"]
    return "\n".join(lines) + "\n"


def _sklearn_report_text(report: Mapping) -> str:
    """scikit-learn's classification_report text, rebuilt exactly from the stored confusion matrix."""
    cm = np.asarray(report["confusion_matrix"], dtype=np.int64)  # (K, K) rows = true, cols = predicted
    num_classes = cm.shape[0]
    true_idx, pred_idx = np.nonzero(cm)
    counts = cm[true_idx, pred_idx]
    y_true = np.repeat(true_idx, counts)  # (N,) one entry per evaluated sample
    y_pred = np.repeat(pred_idx, counts)  # (N,)
    return classification_report(
        y_true,
        y_pred,
        labels=list(range(num_classes)),
        target_names=list(report["class_names"]),
        digits=4,
        zero_division=0,
    )


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _per_class_table(report: Mapping) -> str:
    lines = ["| Class | Precision | Recall | F1-score | Support |", "|---|---|---|---|---|"]
    for name, row in report["per_class"].items():
        lines.append(
            f"| {_md_escape(name)} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        )
    return "\n".join(lines) + "\n"


def format_report_md(report: Mapping, *, title: str = "Test results") -> str:
    """The full markdown report: Table 1, top-1/top-5, counts, per-class table and sklearn's text block."""
    _require(report, "accuracy", "top5_accuracy", "per_class", "num_videos", "num_skipped")
    parts = [f"# {title}", "", "## Summary (the paper's Table 1 layout)", "", format_table1(report)]
    parts.append(f"- Top-1 accuracy: {report['accuracy']:.4f}")
    parts.append(f"- Top-5 accuracy: {report['top5_accuracy']:.4f}")
    if report.get("clip_accuracy") is not None:
        parts.append(f"- Clip-level top-1 accuracy: {report['clip_accuracy']:.4f}")
    parts.append(f"- Videos evaluated: {report['num_videos']}")
    parts.append(f"- Videos skipped (unreadable, or decoding too few of their frames): {report['num_skipped']}")
    skipped = list(report.get("skipped_videos") or [])
    if skipped:
        rest = report["num_skipped"] - min(len(skipped), 10)
        shown = ", ".join(_md_escape(str(v)) for v in skipped[:10])
        parts.append(f"  ({shown}{f' and {rest} more' if rest > 0 else ''})")
    calibration = report.get("calibration")
    if calibration:
        parts += ["", "## Calibration", "", _calibration_text(calibration)]
    parts += ["", "## Per-class results", "", _per_class_table(report)]
    if "confusion_matrix" in report and "class_names" in report:
        parts += ["## scikit-learn classification_report", "", "```", _sklearn_report_text(report).rstrip(), "```"]
    return "\n".join(parts) + "\n"


def _calibration_text(c: Mapping[str, Any]) -> str:
    """The calibration section of report.md: temperature, and ECE before and after it."""
    lines = []
    if c.get("temperature") is None:
        lines.append(f"Temperature: not fitted ({c.get('note', 'no validation split')}); scores are the softmax.")
    else:
        lines.append(
            f"Temperature T = {c['temperature']:.4f}, fitted on the {c.get('fitted_on', 'validation')} split "
            f"({c.get('fitted_videos', '?')} videos) by minimising the NLL of softmax(logits / T); "
            "reported scores use it."
        )
        if c.get("note"):
            lines.append(f"Note: {c['note']}.")
    bins = c.get("bins", ECE_BINS)
    lines += [
        "",
        f"| Expected calibration error ({bins} equal-width bins) | before (T = 1) | after (T) |",
        "|---|---|---|",
    ]
    for split in ("val", "test"):
        if f"ece_{split}_before" in c:
            after = c.get(f"ece_{split}_after")
            lines.append(f"| {split} | {c[f'ece_{split}_before']:.4f} | {'' if after is None else f'{after:.4f}'} |")
    if c.get("plot"):
        lines += ["", f"Reliability diagram: `{c['plot']}`"]
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (and tuples) inside ``obj`` to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_report(report: Mapping, out_dir: Path, *, title: str = "Test results") -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``, each atomically.

    Args:
        report: a dict from :func:`classification_metrics` (extra keys are kept in the JSON).
        out_dir: destination folder, created if missing.
        title: heading of the markdown file.

    Returns:
        ``(json_path, md_path)``.
    """
    out_dir = Path(out_dir)
    md = format_report_md(report, title=title)  # validates before anything is written
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_json(json_path, _jsonable(report))
    atomic_write_text(md_path, md)
    logger.info("wrote %s and %s", json_path, md_path)
    return json_path, md_path


# --------------------------------------------------------------------------- metrics log


def _cell(value: Any) -> str:
    """One CSV cell: '' for None, full-precision repr for floats, str otherwise."""
    if value is None:
        return ""
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_metrics(path: Path) -> list[dict]:
    """Read a metrics CSV written by :class:`MetricsLogger`.

    Returns:
        One dict per row; numbers parsed as int or float, empty cells as None.

    Raises:
        ReportError: if the file is missing or has no ``epoch`` column.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: metrics file not found") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    if "epoch" not in reader.fieldnames:
        raise ReportError(f"{path}: not a metrics file (no 'epoch' column in header {reader.fieldnames})")
    return [{k: _parse_cell(v or "") for k, v in row.items() if k is not None} for row in reader]


def _order_columns(keys: Sequence[str]) -> list[str]:
    first = [k for k in _PREFERRED_COLUMNS if k in keys]
    return first + [k for k in keys if k not in first]


def _tb_tag(key: str) -> str:
    """TensorBoard tag grouping train and val curves: 'train_loss' -> 'loss/train'."""
    for split in ("train", "val", "test"):
        if key.startswith(split + "_"):
            return f"{key[len(split) + 1 :]}/{split}"
    return key


class MetricsLogger:
    """Per-epoch metrics log: ``metrics.csv`` (always) and TensorBoard scalars (when installed).

    The CSV columns are fixed at the first :meth:`log` call (``epoch`` first, then ``train_loss``,
    ``train_acc``, ``val_loss``, ``val_acc``, ``lr`` when present, then other keys in order); later
    rows with unknown keys have those keys dropped (with one warning), missing keys give empty cells.
    The whole file is rewritten atomically on each call, so a killed run never leaves a torn row.

    With ``resume=True`` the existing file's rows with ``epoch`` below the first epoch logged by this
    run are kept and later ones dropped, so a run killed after epoch 7 and resumed from its epoch-5
    checkpoint has each epoch exactly once.
    """

    def __init__(self, path: Path, *, tensorboard_dir: Path | None = None, resume: bool = False) -> None:
        self.path = Path(path)
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self.resume = resume
        self._columns: list[str] | None = None
        self._rows: list[dict] = []
        self._previous: list[dict] = read_metrics(self.path) if resume and self.path.exists() else []
        self._previous_columns: list[str] = list(self._previous[0]) if self._previous else []
        self._writer: Any = None
        self._warned_keys: set[str] = set()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, row: Mapping) -> None:
        first_epoch = row["epoch"]
        if self._previous_columns:
            self._columns = self._previous_columns + [
                k for k in _order_columns(list(row)) if k not in self._previous_columns
            ]
        else:
            self._columns = _order_columns(list(row))
        kept = [r for r in self._previous if r.get("epoch") is not None and r["epoch"] < first_epoch]
        if len(kept) < len(self._previous):
            logger.info(
                "%s: dropped %d row(s) from epoch %s on (resumed run)",
                self.path,
                len(self._previous) - len(kept),
                first_epoch,
            )
        self._rows = kept
        self._open_tensorboard(first_epoch)

    def _open_tensorboard(self, first_epoch: Any) -> None:
        if self.tensorboard_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            logger.info("tensorboard not installed: logging to %s only", self.path)
            return
        purge = int(first_epoch) if self.resume else None  # drop events of epochs re-run after a resume
        self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=purge)

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one epoch's metrics (must contain ``epoch``) and rewrite the CSV atomically."""
        if "epoch" not in row or row["epoch"] is None:
            raise ReportError(f"{self.path}: a metrics row needs an 'epoch' value, got keys {list(row)}")
        if self._columns is None:
            self._start(row)
        extra = [k for k in row if k not in self._columns and k not in self._warned_keys]
        if extra:
            logger.warning("%s: ignoring keys %s not in the columns fixed at the first row", self.path, extra)
            self._warned_keys.update(extra)
        self._rows.append({k: row.get(k) for k in self._columns})
        self._write_csv()
        self._write_tensorboard(row)

    def _write_csv(self) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self._columns)
        for r in self._rows:
            writer.writerow([_cell(r.get(k)) for k in self._columns])
        atomic_write_text(self.path, buf.getvalue())

    def _write_tensorboard(self, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        step = int(_parse_cell(_cell(row["epoch"])))
        for key, value in row.items():
            if key == "epoch" or key not in self._columns:
                continue
            cell = _parse_cell(_cell(value))
            if isinstance(cell, (int, float)) and math.isfinite(cell):
                self._writer.add_scalar(_tb_tag(key), cell, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (the CSV is already complete after every :meth:`log`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
