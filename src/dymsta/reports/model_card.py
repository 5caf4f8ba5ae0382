"""``MODEL_CARD.md``: a Hugging Face model card for a run -- front matter (``pipeline_tag``, ``library_name``,
``model-index`` with the test results and protocol), then the data, the recipe, calibration and known limitations.

Takes plain dicts (the resolved config, the test report, counts) and writes a file; imports nothing of the model,
data or engine packages. The front matter is YAML (``yaml.safe_dump``), so the Hub and ``yaml.safe_load`` read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dymsta.utils import atomic_write_text

__all__ = ["format_model_card", "write_model_card"]

_DATASET_NAMES = {"ucf101": "UCF101", "hmdb51": "HMDB51", "kinetics": "Kinetics-style CSV", "folder": "video folder"}


def _protocol(clips: int, crops: int) -> str:
    return f"{clips} clip{'s' if clips != 1 else ''} x {crops} crop{'s' if crops != 1 else ''}"


def _front_matter(
    name: str, config: Mapping[str, Any], report: Mapping[str, Any] | None, clips: int, crops: int
) -> dict[str, Any]:
    model, data = config["model"], config["data"]
    meta: dict[str, Any] = {
        "library_name": "dymsta",
        "pipeline_tag": "video-classification",
        "tags": list(
            dict.fromkeys(["video-classification", "action-recognition", "dymsta", model["arch"], model["backbone"]])
        ),
        "metrics": ["accuracy", "f1"],
    }
    if report is None:
        return meta
    dataset = {
        "name": f"{_DATASET_NAMES.get(data['kind'], data['kind'])}"
        + (f" split {data['split']}" if data["kind"] in ("ucf101", "hmdb51") else "")
        + " (test)",
        "type": str(data["kind"]),
        "split": "test",
        "args": {"clips": clips, "crops": crops, "frames": int(data["num_frames"])},
    }
    protocol = _protocol(clips, crops)
    metrics = [
        {"type": "accuracy", "name": f"Top-1 accuracy ({protocol})", "value": round(float(report["accuracy"]), 4)},
        {
            "type": "top_5_accuracy",
            "name": f"Top-5 accuracy ({protocol})",
            "value": round(float(report["top5_accuracy"]), 4),
        },
        {
            "type": "f1",
            "name": f"Macro F1 ({protocol})",
            "value": round(float(report["macro_avg"]["f1"]), 4),
            "args": {"average": "macro"},
        },
    ]
    meta["model-index"] = [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "video-classification", "name": "Video Classification"},
                    "dataset": dataset,
                    "metrics": metrics,
                }
            ],
        }
    ]
    return meta


def _limitations(
    config: Mapping[str, Any], counts: Mapping[str, int], class_names: Sequence[str], calibration: Mapping | None
) -> list[str]:
    model, data = config["model"], config["data"]
    out = [
        f"It knows only its {len(class_names)} classes: any other action is still given one of them. "
        "`dymsta predict --threshold P` answers `unknown` when the top probability is below P.",
        f"Each prediction looks at {data['num_frames']} frames spread over the whole clip (TSN segment centres); "
        "on long or untrimmed videos use `dymsta predict --timeline` (one prediction per window).",
        f"The frame backbone ({model['backbone']}, ImageNet weights) is frozen: the model sees appearance, and "
        "motion only through its input streams "
        f"({', '.join(model.get('streams', ['rgb']))}) and the temporal modules on top of per-frame features.",
        f"Accuracy was measured on the {counts.get('test', 0)} test videos of this dataset only; footage from "
        "other cameras, viewpoints or frame rates may score lower.",
    ]
    if counts.get("train", 0) < 1000:
        out.append(f"Small training set ({counts.get('train', 0)} videos): expect high variance between runs.")
    if not counts.get("val"):
        out.append("No validation split: the kept epoch was chosen on training accuracy, and scores are uncalibrated.")
    elif calibration and calibration.get("temperature") is not None:
        out.append(
            f"Scores are calibrated (temperature {calibration['temperature']:.3f}) on the validation split of this "
            "dataset; on other footage they can still be over-confident."
        )
    if config.get("train", {}).get("amp", "none") != "none":
        out.append("Run in bf16 (autocast) by default: scores differ from fp32 in the third decimal.")
    return out


def format_model_card(
    *,
    name: str,
    config: Mapping[str, Any],
    class_names: Sequence[str],
    counts: Mapping[str, int],
    report: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    best_epoch: int | None = None,
) -> str:
    """The model card's text.

    Args:
        name: the model's name (the run folder's).
        config: the resolved run config as a dict (``config_to_dict``).
        class_names: the classes, in id order.
        counts: videos per side (``train``, ``val``, ``test``) and ``unreadable``.
        report: the test report (:func:`dymsta.reports.metrics.classification_metrics`), if the run has one.
        calibration: the report's ``calibration`` entry (temperature, ECE before/after).
        best_epoch: the epoch whose weights were kept.
    """
    data, model, train, optim = config["data"], config["model"], config["train"], config["optim"]
    clips, crops = int(data.get("test_clips", 1)), int(data.get("test_crops", 1))
    front = yaml.safe_dump(_front_matter(name, config, report, clips, crops), sort_keys=False, allow_unicode=True)
    dataset = _DATASET_NAMES.get(data["kind"], data["kind"])
    lines = ["---", front.rstrip(), "---", "", f"# {name}", ""]
    lines.append(
        f"DyMSTA-Net video action classifier (`{model['arch']}` head on a frozen `{model['backbone']}`), trained "
        f"with dymsta on {dataset} ({len(class_names)} classes)."
    )
    if report is not None:
        lines += [
            "",
            "## Results",
            "",
            f"Test protocol: {_protocol(clips, crops)} per video, softmax averaged per video "
            f"({report.get('num_videos', 0)} test videos, {report.get('num_skipped', 0)} skipped).",
            "",
            "| metric | value |",
            "|---|---|",
            f"| Top-1 accuracy | {report['accuracy']:.4f} |",
            f"| Top-5 accuracy | {report['top5_accuracy']:.4f} |",
            f"| Macro F1 | {report['macro_avg']['f1']:.4f} |",
            f"| Weighted F1 | {report['weighted_avg']['f1']:.4f} |",
        ]
        if report.get("clip_accuracy") is not None:
            lines.append(f"| Clip-level top-1 | {report['clip_accuracy']:.4f} |")
    shown = ", ".join(f"`{c}`" for c in class_names[:30]) + (" ..." if len(class_names) > 30 else "")
    lines += [
        "",
        "## Data",
        "",
        f"- Dataset: {dataset} (`data.kind={data['kind']}`"
        + (f", split {data['split']}" if data["kind"] in ("ucf101", "hmdb51") else "")
        + ")",
        f"- Videos: {counts.get('train', 0)} train / {counts.get('val', 0)} validation / {counts.get('test', 0)} "
        f"test; {counts.get('unreadable', 0)} unreadable files skipped when indexing",
        f"- Validation: {data['val_fraction']:g} of the training list, held out by whole groups",
        f"- Classes ({len(class_names)}): {shown}  (full list: `labels.txt`, `labels.json`)",
        "",
        "## Recipe",
        "",
        f"- Model: `{model['arch']}`, width {model.get('dim', '?')}, streams {list(model.get('streams', ['rgb']))}",
        f"- Input: {data['num_frames']} frames per clip (TSN segments), {data.get('size') or 'native'} px crops "
        f"of frames resized to short side {data.get('resize') or 'size x 256 / 224'}; ImageNet normalisation",
        f"- Training: {train['epochs']} epochs max ({'best epoch ' + str(best_epoch) if best_epoch else 'last'}"
        f" kept on validation), batch {train['batch_size']}, {optim['name']} lr {optim['lr']:g}, "
        f"scheduler {optim['scheduler']}, label smoothing {train['label_smoothing']:g}, amp {train['amp']}",
        "- Full config: `config.yaml` beside this card (also stored inside the checkpoint).",
    ]
    if calibration is not None:
        lines += ["", "## Calibration", ""]
        if calibration.get("temperature") is None:
            lines.append(f"Not calibrated ({calibration.get('note', 'no validation split')}).")
        else:
            ece = [
                f"{split} ECE {calibration[f'ece_{split}_before']:.4f} -> {calibration[f'ece_{split}_after']:.4f}"
                for split in ("val", "test")
                if calibration.get(f"ece_{split}_after") is not None
            ]
            lines.append(
                f"Temperature scaling: T = {calibration['temperature']:.4f} fitted on the validation split; "
                + "; ".join(ece)
                + f" ({calibration.get('bins', 15)} equal-width bins). `dymsta eval` and `dymsta predict` use it."
            )
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "dymsta predict RUN_DIR video.mp4 --top-k 5                 # or folders, globs, @list.txt; --json",
        "dymsta predict RUN_DIR long.mp4 --timeline --window 2 --stride 1 --plot timeline.png",
        "dymsta export RUN_DIR model.onnx                            # class names and preprocessing inside",
        "```",
        "",
        "## Known limitations",
        "",
        *[f"- {item}" for item in _limitations(config, counts, class_names, calibration)],
    ]
    return "\n".join(lines) + "\n"


def write_model_card(path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`format_model_card` (same keyword arguments) to ``path`` atomically."""
    path = Path(path)
    atomic_write_text(path, format_model_card(**kwargs))
    return path
