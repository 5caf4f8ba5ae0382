"""``dymsta eval``: a saved model on a split of the dataset it was trained on (prediction on files: predict.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from dymsta.config import apply_overrides, config_from_dict
from dymsta.engine.calibration import TEMPERATURE_KEY
from dymsta.engine.predict import resolve_checkpoint
from dymsta.engine.train import build_pipeline, evaluate_records, write_reliability_plot
from dymsta.models import load_model
from dymsta.reports import write_report

__all__ = ["resolve_checkpoint", "evaluate_checkpoint"]

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    views: int | None = None,
    crops: int | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split of the dataset it was trained on (``data.root=...`` may move it).

    Scores use the checkpoint's calibration temperature (1 when it has none). Writes ``report.json``/``report.md``
    and ``plots/reliability.png`` into ``out`` (default ``RUN_DIR/eval-<split>-<views>x<crops>``).
    """
    ckpt, run_dir = resolve_checkpoint(path)
    if ckpt.suffix.lower() == ".onnx":
        raise ValueError(f"{ckpt}: dymsta eval needs the checkpoint (.safetensors or run folder), not an ONNX file")
    model, meta = load_model(ckpt, map_location=torch.device("cpu"))
    model.eval()
    if "run_config" not in meta:
        raise ValueError(f"{ckpt} stores no run config; evaluate with the run folder's checkpoint")
    classes = json.loads(meta["class_names"]) if "class_names" in meta else None
    temperature = json.loads(meta[TEMPERATURE_KEY]) if TEMPERATURE_KEY in meta else None
    cfg = config_from_dict(apply_overrides(json.loads(meta["run_config"]), list(overrides or [])))
    cfg.validate()
    views = views or cfg.data.test_clips
    crops = crops or cfg.data.test_crops
    p = build_pipeline(cfg, run_dir, model=model)
    if classes is not None and p.splits.class_names != classes:
        raise ValueError(
            f"the dataset's classes ({len(p.splits.class_names)}) differ from the checkpoint's "
            f"({len(classes)}); check data.root / data.kind"
        )
    records = {"test": p.splits.test, "val": p.splits.val, "train": p.splits.train}.get(split)
    if records is None:
        raise ValueError(f"--split must be test, val or train; got {split!r}")
    if not records:
        raise ValueError(f"the {split} split is empty")
    report = evaluate_records(p, records, views=views, crops=crops, temperature=temperature or 1.0, split=split)
    calibration = report.pop(f"calibration_{split}")
    note = {} if temperature else {"note": "the checkpoint stores no calibration temperature"}
    report["calibration"] = {"temperature": temperature, **note, **calibration}
    out_dir = Path(out) if out else run_dir / f"eval-{split}-{views}x{crops}"
    write_reliability_plot(report["calibration"], out_dir / "plots" / "reliability.png")
    write_report(report, out_dir, title=f"{cfg.data.kind}: {split} split, {views} clip(s) x {crops} crop(s)")
    return report
