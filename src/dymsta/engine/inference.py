"""``dymsta eval`` and ``dymsta predict``: a saved model on a dataset split, or on video files."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dymsta.config import DataConfig, apply_overrides, config_from_dict
from dymsta.data import VideoClipDataset, VideoDecodeError, VideoRecord, probe_video, read_frames
from dymsta.engine.train import amp_dtype_for, build_pipeline, evaluate_records, resolve_device
from dymsta.models import load_model
from dymsta.reports import plot_attention, write_report

__all__ = ["resolve_checkpoint", "evaluate_checkpoint", "predict_videos", "Prediction"]

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``RUN_DIR`` or a ``.safetensors`` file -> (checkpoint file, run folder)."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "best.safetensors"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{path} has no checkpoints/best.safetensors (is it a dymsta run folder?)")
        return ckpt, path
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def _load(ckpt: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], list[str]]:
    model, meta = load_model(ckpt, map_location=device)
    model.eval()
    run_config = json.loads(meta["run_config"]) if "run_config" in meta else None
    classes = (
        json.loads(meta["class_names"]) if "class_names" in meta else [str(i) for i in range(model.cfg.num_classes)]
    )
    return model, run_config, classes


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

    Writes ``report.json``/``report.md`` into ``out`` (default ``RUN_DIR/eval-<split>-<views>x<crops>``).
    """
    ckpt, run_dir = resolve_checkpoint(path)
    model, run_config, classes = _load(ckpt, torch.device("cpu"))
    if run_config is None:
        raise ValueError(f"{ckpt} stores no run config; evaluate with the run folder's checkpoint")
    cfg = config_from_dict(apply_overrides(run_config, list(overrides or [])))
    cfg.validate()
    views = views or cfg.data.test_clips
    crops = crops or cfg.data.test_crops
    p = build_pipeline(cfg, run_dir, model=model)
    if p.splits.class_names != classes:
        raise ValueError(
            f"the dataset's classes ({len(p.splits.class_names)}) differ from the checkpoint's "
            f"({len(classes)}); check data.root / data.kind"
        )
    records = {"test": p.splits.test, "val": p.splits.val, "train": p.splits.train}.get(split)
    if records is None:
        raise ValueError(f"--split must be test, val or train; got {split!r}")
    if not records:
        raise ValueError(f"the {split} split is empty")
    report = evaluate_records(p, records, views=views, crops=crops)
    out_dir = Path(out) if out else run_dir / f"eval-{split}-{views}x{crops}"
    write_report(report, out_dir, title=f"{cfg.data.kind}: {split} split, {views} clip(s) x {crops} crop(s)")
    return report


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first
    error: str | None = None


@torch.no_grad()
def predict_videos(
    checkpoint: str | Path,
    videos: list[str | Path],
    *,
    top_k: int = 5,
    views: int = 1,
    explain_dir: str | Path | None = None,
    device: str = "auto",
) -> list[Prediction]:
    """Class probabilities for each video (averaged over ``views`` temporal clips).

    With ``explain_dir`` (DyMSTA-Net with attention), also writes ``<stem>_attention.png``: the sampled frames with the
    spatial attention overlaid and the temporal weights beneath.
    """
    ckpt, _ = resolve_checkpoint(checkpoint)
    dev = resolve_device(device)
    model, run_config, classes = _load(ckpt, dev)
    if run_config:
        data = config_from_dict(run_config).data
    else:  # a bare model file: its own frames and streams, default motion settings
        data = DataConfig(num_frames=model.cfg.num_frames, modalities=tuple(getattr(model, "streams", ("rgb",))))
    amp = amp_dtype_for(run_config["train"]["amp"] if run_config else "none", dev)
    size = data.size or model.input_size
    if getattr(model, "uses_frame_backbone", False):
        model.backbone.set_runtime(model.cfg.runtime, device=dev, size=size)  # exports kept in the user's cache
    results = []
    for path in videos:
        try:
            info = probe_video(path)
        except VideoDecodeError as e:
            results.append(Prediction(str(path), [], str(e)))
            continue
        record = VideoRecord(
            path=str(Path(path).resolve()),
            label=0,
            video_id=str(path),
            group="",
            num_frames=info.num_frames,
            fps=info.fps,
        )
        clips = VideoClipDataset(
            [record],
            num_frames=data.num_frames,
            size=size,
            mean=model.mean,
            std=model.std,
            mode="eval",
            views=views,
            resize=data.resize,
            modalities=data.modalities,
            motion=data.motion,
            feature_grid=_feature_grid(model, size) if "mv" in data.modalities else None,
        )
        items = [clips[i] for i in range(len(clips))]
        if any(item is None for item in items):
            results.append(Prediction(str(path), [], f"{path}: could not decode the sampled frames"))
            continue
        batch = {k: torch.stack([item[0][k] for item in items]).to(dev) for k in items[0][0]}  # {s: (V, C, T, ...)}
        with torch.autocast(dev.type, dtype=amp) if amp else nullcontext():
            logits = model(batch)
        probs = torch.softmax(logits.float(), dim=1).mean(0).cpu().numpy()
        order = np.argsort(-probs)[: min(top_k, len(classes))]
        results.append(Prediction(str(path), [(classes[i], float(probs[i])) for i in order]))
        if explain_dir is not None:
            first = {k: v[:1] for k, v in batch.items()}
            _explain(model, first, record, data.num_frames, Path(explain_dir), classes[order[0]])
    return results


def _feature_grid(model: torch.nn.Module, size: int) -> tuple[int, int] | None:
    """The backbone's ``(h, w)`` grid at ``size`` (what an mv histogram stream is made on)."""
    if getattr(model, "backbone", None) is None:
        return None
    device = next(model.parameters()).device
    return tuple(model.backbone(torch.zeros(1, 3, 1, size, size, device=device)).shape[-2:])


def _explain(
    model: torch.nn.Module,
    clip: dict[str, torch.Tensor],
    record: VideoRecord,
    num_frames: int,
    out_dir: Path,
    label: str,
) -> Path | None:
    """Attention maps of the first view over its frames, as a PNG."""
    if getattr(model, "backbone", None) is None or not getattr(model.cfg, "attention", False):
        log.warning("--explain needs DyMSTA-Net with attention; skipped")
        return None
    _, maps = model.forward_head(model.extract({k: v.float() for k, v in clip.items()}), return_maps=True)
    from dymsta.data.sampling import segment_indices

    indices = segment_indices(record.num_frames, num_frames, mode="eval")
    frames = read_frames(record.path, indices)  # (T, H, W, 3) uint8
    out = out_dir / f"{Path(record.path).stem}_attention.png"
    return plot_attention(
        frames,
        maps["temporal"][0].float().cpu().numpy(),
        maps["spatial"][0].float().cpu().numpy(),
        out,
        title=f"{Path(record.path).name}: {label}",
    )
