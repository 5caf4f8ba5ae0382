"""Build any architecture from a :class:`ModelConfig`; save and load models with their config inside."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from dymsta.models.backbone import FrameBackbone
from dymsta.models.baselines import TSN, LinearProbe, VideoResNet
from dymsta.models.config import ModelConfig
from dymsta.models.dymsta_net import DyMSTANet
from dymsta.utils import atomic_path, get_logger

__all__ = ["build_model", "save_model", "load_model", "ModelFileError", "CONFIG_KEY", "FORMAT_KEY"]

log = get_logger(__name__)

FORMAT_KEY = "dymsta.format"
CONFIG_KEY = "dymsta.model_config"
FORMAT = "dymsta-model-1"
_FRAME_MODELS = {"dymsta": DyMSTANet, "tsn": TSN, "linear": LinearProbe}


class ModelFileError(ValueError):
    """A saved model file is missing, unreadable or does not match its stored config (one line, names the file)."""


def build_model(cfg: ModelConfig) -> nn.Module:
    """Validate ``cfg`` and build its architecture.

    Returns:
        A module with ``cfg``, ``forward(video (B, 3, T, H, W)) -> (B, N)``, ``forward_head``, ``mean``, ``std``,
        ``input_size``, ``uses_frame_backbone``, ``backbone``, ``set_epoch`` and ``trainable_parameters``.

    Raises:
        ModelConfigError: an invalid setting (message starts with the dotted key).
        BackboneWeightsError: pretrained weights could not be fetched or loaded.
    """
    cfg.validate()
    if cfg.arch in _FRAME_MODELS:
        # The backbone keeps its whole grid, and each head pools it (DyMSTA-Net to spatial_pool, TSN and the linear
        # probe to the frame mean): so one feature cache per backbone serves every head.
        backbone = FrameBackbone(
            name=cfg.backbone,
            weights=cfg.backbone_weights,
            pretrained=cfg.pretrained,
            trainable_stages=cfg.trainable_stages,
        )
        model = _FRAME_MODELS[cfg.arch](cfg=cfg, backbone=backbone)
    else:
        model = VideoResNet(cfg=cfg)
    log.info(
        "built %s: %.2fM parameters, %.2fM trainable",
        cfg.arch,
        sum(p.numel() for p in model.parameters()) / 1e6,
        sum(p.numel() for p in model.trainable_parameters()) / 1e6,
    )
    return model


def save_model(model: nn.Module, path: str | Path, *, metadata: dict[str, str] | None = None) -> None:
    """Write the weights as safetensors with the model config (JSON) in the metadata; atomic (temp + rename).

    Args:
        model: a model from :func:`build_model`.
        path: destination ``.safetensors`` file.
        metadata: extra string key/values stored beside the config (returned by :func:`load_model`).
    """
    from safetensors.torch import save_file

    metadata = dict(metadata or {})
    bad = [
        k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str) or k.startswith("dymsta.")
    ]
    if bad:
        raise ValueError(
            f"save_model: metadata keys/values must be strings not starting with 'dymsta.'; bad: {bad[0]!r}"
        )
    tensors = {k: v.detach().to("cpu", copy=False).contiguous() for k, v in model.state_dict().items()}
    metadata.update({FORMAT_KEY: FORMAT, CONFIG_KEY: model.cfg.to_json()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, str]]:
    """Rebuild a model saved by :func:`save_model` from its stored config; no flags, no pretrained download.

    The architecture is built with ``pretrained=False`` and then receives the saved state dict, so neither the
    hub nor the offline weight packages are needed. ``model.cfg`` is the stored config, unchanged.

    Returns:
        ``(model, metadata)``: the model in eval mode on ``map_location``, and the caller's metadata from
        :func:`save_model` (without the ``dymsta.*`` keys).

    Raises:
        ModelFileError: missing/unreadable file, no stored config, or weights that do not fit the config.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several error types
        raise ModelFileError(
            f"{path}: not a readable safetensors model ({type(e).__name__}: {e})".split("\n")[0]
        ) from None
    if meta.get(FORMAT_KEY) != FORMAT or CONFIG_KEY not in meta:
        raise ModelFileError(f"{path}: no dymsta model config in its metadata (not written by save_model?)")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        cfg.validate()
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: stored model config is invalid: {e}".split("\n")[0]) from None
    model = build_model(dataclasses.replace(cfg, pretrained=False))
    model.cfg = cfg
    state = load_file(str(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")
        raise ModelFileError(f"{path}: weights do not match the stored config ({' '.join(first[:2])[:300]})") from None
    model = model.to(map_location).eval()
    return model, {k: v for k, v in meta.items() if not k.startswith("dymsta.")}
