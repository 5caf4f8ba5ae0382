"""Tests for dymsta.reports: metrics on hand-computed cases, report files, metrics log, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import classification_report

from dymsta.reports import (
    MetricsLogger,
    ReportError,
    aggregate_by_video,
    classification_metrics,
    format_table1,
    plot_attention,
    plot_confusion_matrix,
    plot_per_class_f1,
    plot_training_curves,
    read_metrics,
    topk_accuracy,
    write_all_plots,
    write_report,
)

# A hand-computed case: 4 classes, class "d" absent from the test set.
#   true:  a a a b b c      pred: a a b b c c
#   a: P = 2/2, R = 2/3, F1 = 0.8     b: P = 1/2, R = 1/2, F1 = 0.5
#   c: P = 1/2, R = 1/1, F1 = 2/3     d: support 0, all 0
CLASSES = ["a", "b", "c", "d"]
LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDS = np.array([0, 0, 1, 1, 2, 2])


def _probs_for(preds: np.ndarray, num_classes: int) -> np.ndarray:
    probs = np.full((len(preds), num_classes), 0.1 / (num_classes - 1))
    probs[np.arange(len(preds)), preds] = 0.9
    return probs


@pytest.fixture
def report() -> dict:
    return classification_metrics(_probs_for(PREDS, 4), LABELS, CLASSES, num_skipped=2, clip_accuracy=0.5)


def _assert_png(path: Path, *, min_side: int = 300) -> np.ndarray:
    assert path.is_file() and path.suffix == ".png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10, f"{path} looks blank"
    return pixels


# --------------------------------------------------------------------------- metrics


def test_classification_metrics_hand_computed(report):
    assert report["accuracy"] == pytest.approx(4 / 6)
    per = report["per_class"]
    assert list(per) == CLASSES
    assert per["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert per["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert per["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # macro over all 4 classes (absent class counts as 0), weighted by support 3, 2, 1, 0
    assert report["macro_avg"] == pytest.approx(
        {"precision": 2 / 4, "recall": (2 / 3 + 0.5 + 1) / 4, "f1": (0.8 + 0.5 + 2 / 3) / 4}
    )
    assert report["weighted_avg"] == pytest.approx({"precision": 4.5 / 6, "recall": 4 / 6, "f1": (2.4 + 1 + 2 / 3) / 6})
    assert report["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert report["top5_accuracy"] == 1.0  # k clipped to K = 4
    assert (report["num_videos"], report["num_skipped"], report["clip_accuracy"]) == (6, 2, 0.5)
    assert report["class_names"] == CLASSES
    json.dumps(report)  # plain JSON types only


def test_classification_metrics_omits_clip_accuracy_and_rejects_bad_input():
    probs = _probs_for(PREDS, 4)
    assert "clip_accuracy" not in classification_metrics(probs, LABELS, CLASSES)
    with pytest.raises(ReportError, match="class_names"):
        classification_metrics(probs, LABELS, CLASSES[:3])
    with pytest.raises(ReportError, match="labels must lie"):
        classification_metrics(probs, np.array([0, 0, 0, 1, 1, 4]), CLASSES)
    with pytest.raises(ReportError, match="NaN"):
        classification_metrics(np.where(probs > 0.5, np.nan, probs), LABELS, CLASSES)
    with pytest.raises(ReportError, match="shape"):
        classification_metrics(probs[:, :, None], LABELS, CLASSES)


def test_topk_accuracy_crafted():
    # label ranks: row0 1st, row1 2nd, row2 3rd, row3 6th (last)
    probs = np.array(
        [
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],
            [0.30, 0.40, 0.10, 0.10, 0.05, 0.05],
            [0.30, 0.25, 0.20, 0.15, 0.06, 0.04],
            [0.30, 0.25, 0.20, 0.15, 0.06, 0.04],
        ]
    )
    labels = np.array([0, 0, 2, 5])
    assert [topk_accuracy(probs, labels, k) for k in (1, 2, 3, 5, 6, 100)] == [0.25, 0.5, 0.75, 0.75, 1.0, 1.0]
    with pytest.raises(ReportError, match="k must be"):
        topk_accuracy(probs, labels, 0)
    with pytest.raises(ValueError, match="labels must have shape"):
        topk_accuracy(probs, labels[:3], 1)


def test_aggregate_by_video_means_in_first_appearance_order():
    ids = ["v2", "v1", "v2", "v3", "v1", "v2"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.4, 0.6], [0.0, 1.0]])
    labels = np.array([0, 1, 0, 1, 1, 0])
    vids, vprobs, vlabels = aggregate_by_video(ids, probs, labels)
    assert vids == ["v2", "v1", "v3"]
    np.testing.assert_allclose(vprobs, [[0.5, 0.5], [0.3, 0.7], [0.5, 0.5]])
    np.testing.assert_array_equal(vlabels, [0, 1, 1])
    # video-level top-1: v2 is a tie (argmax -> class 0, correct), v1 correct, v3 a tie -> class 0, wrong
    assert topk_accuracy(vprobs, vlabels, 1) == pytest.approx(2 / 3)


def test_aggregate_by_video_rejects_disagreeing_labels_and_lengths():
    probs = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="'v1' carry different labels"):
        aggregate_by_video(["v1", "v2", "v1"], probs, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="video_ids has 2 entries"):
        aggregate_by_video(["v1", "v2"], probs, np.array([0, 1, 1]))


# --------------------------------------------------------------------------- report files


def test_format_table1_matches_paper_layout():
    paper = {
        "accuracy": 0.80,
        "top5_accuracy": 0.9294,
        "macro_avg": {"precision": 0.79, "recall": 0.79, "f1": 0.78},
        "weighted_avg": {"precision": 0.80, "recall": 0.80, "f1": 0.79},
    }
    assert format_table1(paper) == (
        "| | Precision | Recall | F1-score |\n"
        "|---|---|---|---|\n"
        "| Accuracy | | | 0.80 |\n"
        "| Macro avg | 0.79 | 0.79 | 0.78 |\n"
        "| Weighted avg | 0.80 | 0.80 | 0.79 |\n"
        "\n"
        "Top-5 accuracy: 0.9294\n"
    )
    with pytest.raises(ReportError, match="missing key"):
        format_table1({"accuracy": 0.8})


def test_write_report_files(tmp_path, report):
    json_path, md_path = write_report(report, tmp_path / "eval", title="UCF101 split 1")
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    assert md.startswith("# UCF101 split 1\n")
    # hand-computed values from test_classification_metrics_hand_computed, to 2 decimals
    assert "| Accuracy | | | 0.67 |" in md
    assert "| Macro avg | 0.50 | 0.54 | 0.49 |" in md
    assert "| Weighted avg | 0.75 | 0.67 | 0.68 |" in md
    assert "Top-5 accuracy: 1.0000" in md
    assert "- Top-1 accuracy: 0.6667" in md
    assert "- Clip-level top-1 accuracy: 0.5000" in md
    assert (
        "- Videos evaluated: 6" in md and "- Videos skipped (unreadable, or decoding too few of their frames): 2" in md
    )
    assert "| a | 1.0000 | 0.6667 | 0.8000 | 3 |" in md
    assert "| d | 0.0000 | 0.0000 | 0.0000 | 0 |" in md
    # the sklearn block, rebuilt from the confusion matrix, equals sklearn on the original labels
    expected = classification_report(LABELS, PREDS, labels=range(4), target_names=CLASSES, digits=4, zero_division=0)
    assert expected.rstrip() in md
    assert not list(tmp_path.glob("eval/.*"))  # no temp files left behind


def test_write_report_bad_report_writes_nothing(tmp_path):
    with pytest.raises(ReportError, match="missing key"):
        write_report({"accuracy": 1.0}, tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- metrics log


def _row(epoch: int, **extra) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_acc": 0.1 * epoch,
        "val_loss": 2.0 / epoch,
        "val_acc": 0.05 * epoch,
        "lr": 1e-3,
        **extra,
    }


def test_metrics_logger_roundtrip_and_fixed_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    with MetricsLogger(path) as log:
        log.log({"lr": np.float32(0.5), "epoch": 1, "train_loss": 0.123456789012345, "extra": "x"})
        assert path.read_text().splitlines()[0] == "epoch,train_loss,lr,extra"  # preferred order, then others
        log.log({"epoch": 2, "train_loss": 0.5, "new_key": 3})  # unknown key dropped, missing -> empty
    rows = read_metrics(path)
    assert rows == [
        {"epoch": 1, "train_loss": 0.123456789012345, "lr": 0.5, "extra": "x"},
        {"epoch": 2, "train_loss": 0.5, "lr": None, "extra": None},
    ]
    with pytest.raises(ReportError, match="epoch"):
        MetricsLogger(tmp_path / "m2.csv").log({"train_loss": 1.0})


def test_metrics_logger_resume_drops_rerun_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    first = MetricsLogger(path)
    for epoch in range(1, 8):
        first.log(_row(epoch))
    del first  # killed after epoch 7, without close()
    # resumed from the epoch-5 checkpoint: epochs 6 and 7 run again with new values
    with MetricsLogger(path, resume=True) as log:
        log.log(_row(6, note="resumed"))
        assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]
        log.log(_row(7, note="resumed"))
    rows = read_metrics(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["note"] for r in rows] == [None] * 5 + ["resumed"] * 2  # new column appended on resume
    assert rows[0]["train_loss"] == 1.0 and rows[6]["val_acc"] == pytest.approx(0.35)
    # without resume, the old file is replaced
    with MetricsLogger(path) as log:
        log.log(_row(1))
    assert [r["epoch"] for r in read_metrics(path)] == [1]


def test_metrics_logger_resume_without_file_and_read_errors(tmp_path):
    path = tmp_path / "metrics.csv"
    with MetricsLogger(path, resume=True) as log:
        log.log(_row(3))
    assert [r["epoch"] for r in read_metrics(path)] == [3]
    with pytest.raises(ReportError, match="not found"):
        read_metrics(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match="bad.csv: not a metrics file"):
        read_metrics(tmp_path / "bad.csv")


def test_metrics_logger_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = tmp_path / "tb"
    with MetricsLogger(tmp_path / "metrics.csv", tensorboard_dir=tb_dir) as log:
        for epoch in (1, 2, 3):
            log.log(_row(epoch))
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    assert {"loss/train", "loss/val", "acc/train", "acc/val", "lr"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("acc/val")
    assert [e.step for e in events] == [1, 2, 3]
    assert [e.value for e in events] == pytest.approx([0.05, 0.10, 0.15])


# --------------------------------------------------------------------------- plots


def test_training_curves_pngs(tmp_path):
    rows = [_row(e) | {"lr": 1e-3 * 0.5 ** (e // 3)} for e in range(1, 21)]
    paths = plot_training_curves(rows, tmp_path)
    assert [p.name for p in paths] == ["accuracy.png", "loss.png", "lr.png"]
    for p in paths:
        _assert_png(p)
    # columns that are absent give no plot; a run without validation still plots train curves
    only_train = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 4)]
    assert [p.name for p in plot_training_curves(only_train, tmp_path / "t")] == ["loss.png"]


def test_confusion_matrix_png_scales_with_classes(tmp_path, report):
    small = _assert_png(plot_confusion_matrix(report["confusion_matrix"], CLASSES, tmp_path / "cm4.png"))
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 3, size=(101, 101)) + np.diag(rng.integers(10, 40, size=101))
    names = [f"Class{i:03d}" for i in range(101)]
    big = _assert_png(plot_confusion_matrix(cm, names, tmp_path / "cm101.png"))
    assert big.shape[0] >= 2 * small.shape[0]  # grows with K so labels stay readable
    with pytest.raises(ReportError, match="class_names"):
        plot_confusion_matrix(cm, names[:5], tmp_path / "bad.png")


def test_per_class_f1_png(tmp_path, report):
    _assert_png(plot_per_class_f1(report, tmp_path / "f1.png"))
    with pytest.raises(ReportError, match="per_class"):
        plot_per_class_f1({}, tmp_path / "none.png")


def test_attention_png_shows_spatial_map(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    cat = skimage_data.chelsea()[:, :, :3]  # (300, 451, 3) uint8, a real photo
    frames = np.stack([np.roll(cat, 20 * t, axis=1) for t in range(8)])  # (T=8, H, W, 3)
    temporal = np.linspace(0.1, 1.0, 8)
    left = np.zeros((8, 7, 7))
    left[:, :, :2] = 1.0  # attention on the left of every frame
    a = _assert_png(plot_attention(frames, temporal, left, tmp_path / "left.png", title="cat"), min_side=200)
    b = _assert_png(
        plot_attention(
            frames, temporal[None, None, :, None, None], left[:, :, ::-1][None, None], tmp_path / "right.png"
        )
    )
    assert a.shape == b.shape and np.abs(a - b).mean() > 1.0  # the overlay is drawn and follows the map
    with pytest.raises(ReportError, match="temporal attention has 7 values"):
        plot_attention(frames, temporal[:7], left, tmp_path / "x.png")
    with pytest.raises(ReportError, match="spatial attention"):
        plot_attention(frames, temporal, left[:4], tmp_path / "x.png")
    with pytest.raises(ReportError, match="uint8"):
        plot_attention(frames.astype(np.float32), temporal, left, tmp_path / "x.png")


def test_write_all_plots(tmp_path, report):
    rows = [_row(e) for e in range(1, 6)]
    paths = write_all_plots(tmp_path, rows, report)
    assert sorted(p.name for p in paths) == [
        "accuracy.png",
        "confusion_matrix.png",
        "loss.png",
        "lr.png",
        "per_class_f1.png",
    ]
    assert all(p.parent == tmp_path / "plots" for p in paths)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)  # no temp files
    assert write_all_plots(tmp_path / "empty", None, None) == []


def test_reports_imports_no_other_dymsta_package():
    code = (
        "import sys, dymsta.reports\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['dymsta','models'],['dymsta','data'],['dymsta','engine'],['dymsta','cli'])]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- segment scores of timelines (issue 20) -----------------------------------------------------------------------


def test_segment_scores_match_by_label_and_iou_each_truth_once() -> None:
    from dymsta.reports import segment_iou, segment_scores, wrong_segments

    truth = [{"segment": [0, 4], "label": "a"}, {"segment": [4, 8], "label": "b"}, {"segment": [8, 12], "label": "a"}]
    predicted = [
        {"segment": [0, 3], "label": "a"},  # IoU 0.75: a match
        {"segment": [3, 4.5], "label": "c"},  # a label the truth has not there: wrong
        {"segment": [4.5, 7], "label": "b"},  # IoU 0.625
        {"segment": [7, 12], "label": "a"},  # IoU 0.8 with the second "a"
        {"segment": [11, 12], "label": "a"},  # the second "a" is taken: no match
    ]
    assert segment_iou([0, 4], [2, 6]) == pytest.approx(2 / 6) and segment_iou([0, 1], [1, 2]) == 0.0
    s = segment_scores(predicted, truth, iou=0.5)
    assert (s["matched"], s["predicted"], s["true"]) == (3, 5, 3)
    assert s["precision"] == pytest.approx(0.6) and s["recall"] == 1.0 and s["f1"] == pytest.approx(0.75)
    assert segment_scores(predicted, truth, iou=0.7)["matched"] == 2  # b's 0.625 falls below
    assert wrong_segments(predicted, truth) == [predicted[1]]
    assert segment_scores([], truth)["recall"] == 0.0
