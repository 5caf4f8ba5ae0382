"""Export a model to ONNX and check the exported graph against eager PyTorch with onnxruntime.

An exported file can carry what a client needs to use it -- class names, input layout, frames, size, sampling,
normalisation, calibration temperature -- as ONNX ``metadata_props`` (string key/values, read by any ONNX tool,
e.g. ``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``). :func:`export_onnx` writes the
``metadata`` it is given; :func:`read_onnx_metadata` reads them back. The keys dymsta writes are listed in
docs/predict.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dymsta.utils import atomic_path, get_logger

__all__ = ["export_onnx", "check_onnx", "example_inputs", "input_names", "read_onnx_metadata", "ExportError"]

log = get_logger(__name__)


class ExportError(RuntimeError):
    """ONNX export or the onnxruntime check failed (one line, names the file)."""


def input_names(model: nn.Module) -> list[str]:
    """ONNX input names, one per stream in the model's order: ``video`` for RGB, the stream's name otherwise."""
    return ["video" if s == "rgb" else s for s in getattr(model, "streams", ("rgb",))]


def example_inputs(model: nn.Module, *, batch: int, num_frames: int, size: int) -> dict[str, torch.Tensor]:
    """Random inputs of every stream, named as in the ONNX file: images ``(B, 3, T, S, S)``, an mv histogram
    ``(B, hist_channels, T, h, w)`` on the backbone's grid at ``S``."""
    out = {}
    for name, stream in zip(input_names(model), getattr(model, "streams", ("rgb",)), strict=True):
        if stream in getattr(model, "image_streams", ("rgb",)):
            out[name] = torch.randn(batch, 3, num_frames, size, size)
        else:
            with torch.no_grad():
                h, w = model.backbone(torch.zeros(1, 3, 1, size, size)).shape[-2:]
            out[name] = torch.randn(batch, model.cfg.hist_channels, num_frames, h, w)
    return out


class _Exportable(nn.Module):
    """``forward(*inputs) = model({stream: input})``: a plain module with positional tensor inputs to export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.streams = tuple(getattr(model, "streams", ("rgb",)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.streams == ("rgb",):
            return self.model(inputs[0])
        return self.model(dict(zip(self.streams, inputs, strict=True)))


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
    metadata: Mapping[str, str] | None = None,
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
        metadata: string key/values stored as the file's ``metadata_props`` (class names, preprocessing).

    Returns:
        The written path. One input per stream (:func:`input_names`: ``video`` for RGB, then ``rgbdiff``, ``mv``),
        output ``logits``; T and S are fixed, B is dynamic.
    """
    path = Path(path)
    t = num_frames or model.cfg.num_frames
    s = size or model.input_size
    example = example_inputs(model, batch=2, num_frames=t, size=s)
    use_dynamo = opset >= 18 if dynamo is None else dynamo
    was_training = model.training
    saved = _use_bmm(model)
    wrapper = _Exportable(model).eval()
    try:
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter; correctness is checked by check_onnx
            (_export_dynamo if use_dynamo else _export_torchscript)(wrapper, example, tmp, opset)
            if metadata:
                _set_metadata(tmp, metadata)
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


def _set_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    import onnx

    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"ONNX metadata keys and values must be strings; bad key {bad[0]!r}")
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (empty when it has none).

    Raises:
        ExportError: the file is missing or not an ONNX model (one line, names the file).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf decode errors have several types
        raise ExportError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})".split("\n")[0][:400]) from None
    return {p.key: p.value for p in proto.metadata_props}


def _export_torchscript(module: nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    names = list(example)
    torch.onnx.export(
        module,
        tuple(example.values()),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
    )


def _export_dynamo(module: nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        module,
        tuple(example.values()),
        dynamo=True,
        opset_version=opset,
        input_names=list(example),
        output_names=["logits"],
        dynamic_shapes=(({0: batch},) * len(example),),  # one entry: the tuple of positional (*inputs) tensors
        optimize=True,
        verbose=False,
    )
    program.save(str(path), external_data=False)


def check_onnx(model: nn.Module, path: str | Path, inputs: torch.Tensor | dict[str, torch.Tensor]) -> float:
    """Max absolute difference of the logits of onnxruntime (CPU) and eager PyTorch (eval mode) on ``inputs``.

    Args:
        model: the eager model the file was exported from.
        path: the ``.onnx`` file.
        inputs: the RGB video ``(B, 3, T, S, S)``, or every stream named as in the file (:func:`example_inputs`),
            with the exported T and S (any B).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    feeds = inputs if isinstance(inputs, dict) else {"video": inputs}
    streams = dict(zip(input_names(model), getattr(model, "streams", ("rgb",)), strict=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = _Exportable(model)(*[feeds[n] for n in streams]).float().cpu().numpy()
    finally:
        model.train(was_training)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(["logits"], {n: v.float().cpu().numpy() for n, v in feeds.items()})
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
        raise ExportError(f"onnxruntime could not run {path}: {e}".split("\n")[0][:400]) from None
    return float(abs(got - expected).max())
