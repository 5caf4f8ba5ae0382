"""PNG plots of a run: training curves (the paper's Figures 2-4), confusion matrix, per-class F1, attention.

Figures are built with the object-oriented API on the Agg canvas (no pyplot, no global state, no
display needed) and saved atomically. Inputs are plain lists and numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dymsta.reports.metrics import ReportError
from dymsta.utils import atomic_path, get_logger

__all__ = [
    "plot_training_curves",
    "plot_confusion_matrix",
    "plot_per_class_f1",
    "plot_attention",
    "plot_reliability",
    "plot_timeline",
    "write_all_plots",
]

logger = get_logger(__name__)

_DPI = 100


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path, *, dpi: int = _DPI) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    logger.info("wrote %s", path)
    return path


# --------------------------------------------------------------------------- training curves


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``key`` over the rows where both are finite numbers."""
    xs, ys = [], []
    for row in rows:
        x, y = row.get("epoch"), row.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y):
            xs.append(float(x))
            ys.append(float(y))
    return np.asarray(xs), np.asarray(ys)


def _curve_plot(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[tuple[str, str]],
    ylabel: str,
    title: str,
    path: Path,
    *,
    best: str,
) -> Path | None:
    """One line per (key, label) present in ``rows``; marks the best value of the last series (max or min)."""
    series = [(label, *_series(rows, key)) for key, label in keys]
    series = [s for s in series if s[1].size]
    if not series:
        return None
    fig = _new_figure(7, 4.5)
    ax = fig.add_subplot()
    for label, x, y in series:
        ax.plot(x, y, marker="o" if x.size <= 30 else None, markersize=3, label=label)
    label, x, y = series[-1]
    i = int(np.argmax(y) if best == "max" else np.argmin(y))
    mark = f"{'best' if best == 'max' else 'lowest'} {label}: {y[i]:.4f} (epoch {x[i]:g})"
    ax.scatter([x[i]], [y[i]], color="red", zorder=3, s=20, label=mark)  # in the legend: never hidden by it
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _lr_plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    x, y = _series(rows, "lr")
    if not y.size:
        return None
    fig = _new_figure(7, 4)
    ax = fig.add_subplot()
    ax.plot(x, y, drawstyle="steps-post", marker="o" if x.size <= 30 else None, markersize=3)
    positive = y[y > 0]
    if positive.size and positive.max() / positive.min() > 10:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="learning rate", title="Learning rate per epoch")
    ax.grid(True, alpha=0.3, which="both")
    return _save(fig, path)


def plot_training_curves(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Plot the per-epoch curves of the paper's Figures 2-4.

    Args:
        rows: metrics rows (as from :func:`dymsta.reports.metrics.read_metrics`) with ``epoch`` and any of
            ``train_acc``, ``val_acc``, ``train_loss``, ``val_loss``, ``lr``.
        out_dir: destination folder.

    Returns:
        The paths written, among ``accuracy.png`` (train/val accuracy, best val marked), ``loss.png``
        (train/val loss, lowest val marked) and ``lr.png`` (log y axis when the range exceeds 10x);
        a plot whose columns are all absent is skipped.
    """
    out_dir = Path(out_dir)
    written = [
        _curve_plot(
            rows,
            [("train_acc", "train"), ("val_acc", "val")],
            "accuracy",
            "Accuracy per epoch",
            out_dir / "accuracy.png",
            best="max",
        ),
        _curve_plot(
            rows,
            [("train_loss", "train"), ("val_loss", "val")],
            "loss",
            "Loss per epoch",
            out_dir / "loss.png",
            best="min",
        ),
        _lr_plot(rows, out_dir / "lr.png"),
    ]
    return [p for p in written if p is not None]


# --------------------------------------------------------------------------- evaluation plots


def _label_fontsize(num: int) -> float:
    """Tick-label size that stays legible from 2 up to ~100 labels."""
    return float(np.clip(10 - num / 15, 6.5, 10))


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path, *, normalize: bool = True) -> Path:
    """Confusion matrix heat map; the figure grows with K so that 101 class labels stay readable.

    Args:
        cm: (K, K) counts, rows = true class, columns = predicted class.
        class_names: K names.
        path: output PNG path.
        normalize: divide each row by its count (recall on the diagonal); empty rows stay 0.

    Returns:
        ``path``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ReportError(f"confusion matrix must have shape (K, K), got {cm.shape}")
    num = cm.shape[0]
    if len(class_names) != num:
        raise ReportError(f"class_names has {len(class_names)} names but the confusion matrix is {num}x{num}")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)  # (K, 1)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    side = float(np.clip(0.2 * num + 3.5, 6, 26))
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="fraction of true class" if normalize else "count")
    ticks = np.arange(num)
    size = _label_fontsize(num)
    ax.set_xticks(ticks, [str(c) for c in class_names], rotation=90, fontsize=size)
    ax.set_yticks(ticks, [str(c) for c in class_names], fontsize=size)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
    if num <= 20:  # cell values only where they fit
        threshold = cm.max() / 2 if cm.max() > 0 else 1
        for (i, j), value in np.ndenumerate(cm):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            ax.text(
                j, i, text, ha="center", va="center", fontsize=size - 1, color="white" if value > threshold else "black"
            )
    return _save(fig, path, dpi=150 if num > 30 else _DPI)  # more pixels per label for large K


def plot_per_class_f1(report: Mapping[str, Any], path: Path) -> Path:
    """Horizontal bars of per-class F1, sorted best (top) to worst (bottom), with the macro F1 marked.

    Args:
        report: a dict from :func:`dymsta.reports.metrics.classification_metrics`.
        path: output PNG path.

    Returns:
        ``path``.
    """
    per_class = report.get("per_class")
    if not per_class:
        raise ReportError("report has no 'per_class' entries to plot")
    items = sorted(per_class.items(), key=lambda kv: kv[1]["f1"])  # ascending: barh draws bottom-up
    names = [name for name, _ in items]
    f1 = np.array([row["f1"] for _, row in items])
    num = len(names)
    fig = _new_figure(8, float(np.clip(0.17 * num + 1.5, 3, 20)))
    ax = fig.add_subplot()
    colors = ["tab:red" if v < 0.5 else "tab:blue" for v in f1]
    ax.barh(np.arange(num), f1, color=colors)
    ax.set_yticks(np.arange(num), names, fontsize=_label_fontsize(num))
    ax.set_ylim(-0.6, num - 0.4)
    ax.set_xlim(0, 1.0)
    macro = report.get("macro_avg", {}).get("f1")
    if macro is not None:
        ax.axvline(macro, color="black", linestyle="--", linewidth=1, label=f"macro F1 = {macro:.3f}")
        ax.legend(loc="lower right")
    ax.set(xlabel="F1-score", title="Per-class F1")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- attention


def _as_maps(temporal: Any, spatial: Any, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``temporal`` to (T,) and ``spatial`` to (T, h, w), dropping leading singleton dims."""
    temporal = np.asarray(temporal, dtype=np.float64).reshape(-1)
    spatial = np.asarray(spatial, dtype=np.float64)
    if temporal.size != num_frames:
        raise ReportError(f"temporal attention has {temporal.size} values for {num_frames} frames")
    if spatial.ndim < 3 or math.prod(spatial.shape[:-3]) != 1 or spatial.shape[-3] != num_frames:
        raise ReportError(f"spatial attention must have shape (T={num_frames}, h, w), got {spatial.shape}")
    return temporal, spatial.reshape(spatial.shape[-3:])  # (T, h, w)


def plot_attention(
    frames: np.ndarray, temporal: np.ndarray, spatial: np.ndarray, path: Path, *, title: str = ""
) -> Path:
    """Frames with their spatial attention overlaid, and the temporal attention as bars beneath.

    Spatial maps are min-max normalised over all frames together (so frames can be compared) and
    bilinearly upsampled onto each frame. The frame with the largest temporal weight is marked.

    Args:
        frames: uint8 (T, H, W, 3) RGB frames, as decoded.
        temporal: (T,) temporal attention weights (leading singleton dims allowed, e.g. (1, 1, T, 1, 1)).
        spatial: (T, h, w) spatial attention maps at feature resolution (leading singleton dims allowed).
        path: output PNG path.
        title: figure title (e.g. the video name and predicted class).

    Returns:
        ``path``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ReportError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    num_frames, height, width = frames.shape[:3]
    temporal, spatial = _as_maps(temporal, spatial, num_frames)
    lo, hi = spatial.min(), spatial.max()
    spatial = (spatial - lo) / (hi - lo) if hi > lo else np.zeros_like(spatial)
    panel = float(np.clip(18 / num_frames, 1.0, 2.5))  # inches per frame
    fig = _new_figure(panel * num_frames + 0.8, panel * height / width + 2.6)
    grid = fig.add_gridspec(2, num_frames, height_ratios=[panel * height / width, 1.8])
    best = int(np.argmax(temporal))
    for t in range(num_frames):
        ax = fig.add_subplot(grid[0, t])
        ax.imshow(frames[t], interpolation="bilinear")
        ax.imshow(
            spatial[t],
            cmap="jet",
            alpha=0.45,
            vmin=0,
            vmax=1,
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            interpolation="bilinear",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"t={t}", fontsize=8, color="red" if t == best else "black")
        if t == best:
            for spine in ax.spines.values():
                spine.set(color="red", linewidth=2)
    bars = fig.add_subplot(grid[1, :])
    bars.bar(np.arange(num_frames), temporal, color=["tab:red" if t == best else "tab:blue" for t in range(num_frames)])
    bars.set_xlim(-0.5, num_frames - 0.5)
    bars.set_xticks(np.arange(num_frames))
    bars.set(xlabel="frame", ylabel="temporal weight")
    bars.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------- calibration and timelines


def plot_reliability(tables: Mapping[str, Mapping[str, Sequence[float]]], path: Path, *, title: str = "") -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, one series per table, with the diagonal.

    Args:
        tables: label -> a table from :func:`dymsta.reports.metrics.reliability_bins` (e.g. ``"before (T = 1)"``,
            ``"after (T = 1.52)"``); bars for the first, markers for the others, bin counts beneath.
        path: output PNG path.
        title: figure title.
    """
    if not tables:
        raise ReportError("plot_reliability needs at least one reliability table")
    fig = _new_figure(6.5, 6.5)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax, hist = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    for k, (label, table) in enumerate(tables.items()):
        edges = np.asarray(table["edges"], dtype=np.float64)
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        count = np.asarray(table["count"])
        used = count > 0
        acc, conf = np.asarray(table["accuracy"])[used], np.asarray(table["confidence"])[used]
        if k == 0:
            ax.bar(centres[used], acc, width=width[used], alpha=0.35, edgecolor="tab:blue", label=f"{label}: accuracy")
        ax.plot(conf, acc, marker="o", markersize=4, label=f"{label}: accuracy vs confidence")
        hist.bar(centres + (k - 0.5) * width / 3, count, width=width / 3, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    hist.set(xlim=(0, 1), xlabel="confidence", ylabel="videos")
    hist.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_timeline(
    times: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    segments: Sequence[Mapping[str, Any]] = (),
    top: int = 6,
    threshold: float | None = None,
    title: str = "",
) -> Path:
    """Class probabilities over time (one line per class among the ``top`` most probable anywhere), with the
    merged segments as coloured bands beneath.

    Args:
        times: (W,) window centres in seconds.
        probs: (W, K) probabilities of each window.
        class_names: K names.
        path: output PNG path.
        segments: ``{"segment": [start_s, end_s], "label": str, ...}`` dicts (the timeline's segments).
        top: how many classes get a line.
        threshold: drawn as a dashed line when given (below it a window is ``"unknown"``).
        title: figure title.
    """
    times, probs = np.asarray(times, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != times.shape[0] or probs.shape[0] == 0:
        raise ReportError(f"probs must be (W, K) for W = {times.shape[0]} window times, got {probs.shape}")
    if probs.shape[1] != len(class_names):
        raise ReportError(f"class_names has {len(class_names)} names for {probs.shape[1]} columns")
    shown = np.argsort(-probs.max(axis=0), kind="stable")[: max(1, top)]
    colors = {int(c): f"C{i % 10}" for i, c in enumerate(shown)}
    fig = _new_figure(10, 5)
    grid = fig.add_gridspec(2, 1, height_ratios=[4, 1])
    ax, band = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    for c in shown:
        ax.plot(times, probs[:, c], marker="o" if len(times) <= 60 else None, markersize=3, color=colors[int(c)])
        ax.lines[-1].set_label(str(class_names[c]))
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set(ylim=(0, 1.02), ylabel="probability", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    index = {str(n): i for i, n in enumerate(class_names)}
    for seg in segments:
        start, end = seg["segment"]
        c = index.get(str(seg["label"]))
        color = colors.get(c, "lightgray") if c is not None else "lightgray"
        band.axvspan(start, end, color=color, alpha=0.8)
        band.text((start + end) / 2, 0.5, str(seg["label"]), ha="center", va="center", fontsize=7, clip_on=True)
    end_time = max([times.max()] + [float(seg["segment"][1]) for seg in segments])
    for a in (ax, band):
        a.set_xlim(0, end_time)
    band.set(yticks=[], xlabel="time (s)")
    return _save(fig, path)


def write_all_plots(
    run_dir: Path, rows: Sequence[Mapping[str, Any]] | None, report: Mapping[str, Any] | None
) -> list[Path]:
    """Write every plot that the inputs allow into ``run_dir/plots``.

    Args:
        run_dir: the run folder.
        rows: metrics rows (training curves), or None / empty to skip them.
        report: an evaluation report (confusion matrix, per-class F1), or None to skip it.

    Returns:
        The PNG paths written.
    """
    out_dir = Path(run_dir) / "plots"
    written: list[Path] = []
    if rows:
        written += plot_training_curves(rows, out_dir)
    if report:
        if "confusion_matrix" in report and "class_names" in report:
            written.append(
                plot_confusion_matrix(
                    report["confusion_matrix"], report["class_names"], out_dir / "confusion_matrix.png"
                )
            )
        if report.get("per_class"):
            written.append(plot_per_class_f1(report, out_dir / "per_class_f1.png"))
    return written
