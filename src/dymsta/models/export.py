"""Export a model to ONNX and check the exported graph against eager PyTorch with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from dymsta.utils import atomic_path, get_logger

__all__ = ["export_onnx", "check_onnx", "ExportError"]

log = get_logger(__name__)


class ExportError(RuntimeError):
    """ONNX export or the onnxruntime check failed (one line, names the file)."""


class _Exportable(nn.Module):
    """``forward(video) = model(video)``: a plain module to export (the model may have extra methods/attributes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video)


def _use_bmm(model: nn.Module) -> dict[nn.Module, str]:
    from dymsta.models.dynamic_conv import DynamicConv3d

    saved = {}
    for m in model.modules():
        if isinstance(m, DynamicConv3d):
            saved[m] = m.impl
            m.impl = "bmm"  # the grouped path needs a static batch size (groups = B)
    return saved


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    num_frames: int | None = None,
    size: int | None = None,
    opset: int = 17,
    dynamo: bool | None = None,
) -> Path:
    """Export ``model`` (video ``(B, 3, T, S, S)`` -> logits ``(B, N)``) to ONNX with a dynamic batch axis.

    Args:
        model: a model from :func:`dymsta.models.build_model` or :func:`dymsta.models.load_model`.
        path: destination ``.onnx`` file (written atomically).
        num_frames: T of the exported graph (default ``model.cfg.num_frames``).
        size: S, frame size (default ``model.input_size``).
        opset: ONNX opset version.
        dynamo: use the ``torch.export``-based exporter; default: only for opset >= 18 (it has no opset 17
            implementations), else the TorchScript exporter (opset 17, and ~6x faster to export).

    Returns:
        The written path. Input name ``video``, output name ``logits``; T and S are fixed, B is dynamic.
    """
    path = Path(path)
    t = num_frames or model.cfg.num_frames
    s = size or model.input_size
    example = torch.randn(2, 3, t, s, s)
    use_dynamo = opset >= 18 if dynamo is None else dynamo
    was_training = model.training
    saved = _use_bmm(model)
    wrapper = _Exportable(model).eval()
    try:
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter; correctness is checked by check_onnx
            (_export_dynamo if use_dynamo else _export_torchscript)(wrapper, example, tmp, opset)
    except Exception as e:  # noqa: BLE001 - the exporters raise many types
        raise ExportError(f"ONNX export to {path} failed: {type(e).__name__}: {e}".split("\n")[0][:400]) from None
    finally:
        for m, impl in saved.items():
            m.impl = impl
        model.train(was_training)
    log.info(
        "exported %s (T=%d, %dx%d, opset %d, %s exporter)",
        path,
        t,
        s,
        s,
        opset,
        "dynamo" if use_dynamo else "torchscript",
    )
    return path


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["video"],
        output_names=["logits"],
        dynamic_axes={"video": {0: "batch"}, "logits": {0: "batch"}},
    )


def _export_dynamo(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        opset_version=opset,
        input_names=["video"],
        output_names=["logits"],
        dynamic_shapes={"video": {0: batch}},
        optimize=True,
        verbose=False,
    )
    program.save(str(path), external_data=False)


def check_onnx(model: nn.Module, path: str | Path, video: torch.Tensor) -> float:
    """Max absolute difference of the logits of onnxruntime (CPU) and eager PyTorch (eval mode) on ``video``.

    Args:
        model: the eager model the file was exported from.
        path: the ``.onnx`` file.
        video: ``(B, 3, T, S, S)`` float input with the exported T and S (any B).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(video).float().cpu().numpy()
    finally:
        model.train(was_training)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(["logits"], {"video": video.float().cpu().numpy()})
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
        raise ExportError(f"onnxruntime could not run {path}: {e}".split("\n")[0][:400]) from None
    return float(abs(got - expected).max())
