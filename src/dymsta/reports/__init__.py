"""Evaluation reports: metrics (the paper's Table 1, top-k, per-class), the metrics log and PNG plots.

Takes plain arrays and lists, writes files; imports none of models/, data/, engine/ or the CLI.
"""

from dymsta.reports.metrics import (
    ECE_BINS,
    MetricsLogger,
    ReportError,
    aggregate_by_video,
    classification_metrics,
    expected_calibration_error,
    format_report_md,
    format_table1,
    read_metrics,
    reliability_bins,
    topk_accuracy,
    write_report,
)
from dymsta.reports.plots import (
    plot_attention,
    plot_confusion_matrix,
    plot_per_class_f1,
    plot_reliability,
    plot_timeline,
    plot_training_curves,
    write_all_plots,
)
from dymsta.reports.segments import segment_iou, segment_scores, wrong_segments

__all__ = [
    "ECE_BINS",
    "MetricsLogger",
    "ReportError",
    "aggregate_by_video",
    "classification_metrics",
    "expected_calibration_error",
    "format_report_md",
    "format_table1",
    "read_metrics",
    "reliability_bins",
    "segment_iou",
    "segment_scores",
    "topk_accuracy",
    "wrong_segments",
    "write_report",
    "plot_attention",
    "plot_confusion_matrix",
    "plot_per_class_f1",
    "plot_reliability",
    "plot_timeline",
    "plot_training_curves",
    "write_all_plots",
]
