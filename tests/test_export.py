"""ONNX export: onnxruntime gives the logits of eager PyTorch (any batch size); failures are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dymsta.models import ModelConfig, build_model, load_model, save_model
from dymsta.models.export import ExportError, check_onnx, export_onnx

pytest.importorskip("onnxruntime")

TOL = 1e-4  # fp32 eager vs onnxruntime on CPU; differences come from kernel summation order only


SMALL_BACKBONE = {"backbone": "timm:mobilenetv3_small_050", "pretrained": False}  # a real, fast-to-trace CNN


def _cfg(**kw: object) -> ModelConfig:
    return ModelConfig(**{"num_classes": 6, "num_frames": 8, "temporal_kernels": (2, 3, 5), "dim": 32, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"dynamic_mode": "modulate", "dynamic_kernel": (3, 3, 3), **SMALL_BACKBONE},
        {"arch": "tsn", **SMALL_BACKBONE},
        {"head_conv": "trained"},  # Lite0's last layer after the pooling, as the folded matmul
        {"arch": "linear", "head_conv": "frozen", "head_conv_grid": 1},
        {"head_conv": "stage"},  # and the last stage before it: folded matmuls and a grouped conv per frame
    ],
    ids=["lite0", "modulate-333", "tsn", "lite0-head-conv", "linear-head-conv-1x1", "lite0-head-stage"],
)
def test_onnx_round_trip_equals_eager(tmp_path: Path, kw: dict) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(**kw)).eval()
    path = export_onnx(model, tmp_path / "model.onnx", size=64)
    assert path.is_file() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    video = torch.randn(3, 3, 8, 64, 64)  # exported with batch 2: the batch axis is dynamic
    diff = check_onnx(model, path, video)
    assert diff < TOL
    with torch.no_grad():
        assert model(video).abs().max() > 100 * TOL  # the comparison is not trivially small


@pytest.mark.parametrize("arch,input_norm", [("dymsta", False), ("tsn", False), ("dymsta", True), ("linear", True)])
def test_multi_stream_export_has_one_input_per_stream(tmp_path: Path, arch: str, input_norm: bool) -> None:
    import onnx

    from dymsta.models.export import example_inputs

    torch.manual_seed(0)
    cfg = _cfg(
        arch=arch,
        streams=("rgb", "rgbdiff", "mv"),
        hist_channels=9,
        fusion="gated",
        input_norm=input_norm,
        **SMALL_BACKBONE,
    )
    model = build_model(cfg).eval()
    for norm in (model.input_norm or {}).values():  # fitted statistics travel into the graph as constants
        c = norm.mean.numel()
        norm.set_statistics(torch.rand(c), torch.rand(c) + 0.5)
    path = export_onnx(model, tmp_path / "streams.onnx", size=64)
    names = [i.name for i in onnx.load(str(path)).graph.input]
    assert names == ["video", "rgbdiff", "mv"]
    inputs = example_inputs(model, batch=3, num_frames=8, size=64)
    assert inputs["mv"].shape == (3, 9, 8, 2, 2)  # a histogram on the backbone's grid
    assert check_onnx(model, path, inputs) < TOL
    with torch.no_grad():
        moved = model({"rgb": inputs["video"], "rgbdiff": inputs["rgbdiff"], "mv": inputs["mv"] + 1})
        assert not torch.allclose(moved, model({"rgb": inputs["video"], **{k: inputs[k] for k in ("rgbdiff", "mv")}}))


def test_export_of_a_loaded_model_and_a_video_baseline(tmp_path: Path) -> None:
    model = build_model(_cfg(arch="r3d_18", pretrained=False)).eval()
    save_model(model, tmp_path / "m.safetensors")
    loaded, _ = load_model(tmp_path / "m.safetensors")
    path = export_onnx(loaded, tmp_path / "r3d.onnx", num_frames=4, size=32)
    assert check_onnx(loaded, path, torch.randn(1, 3, 4, 32, 32)) < TOL


def test_export_keeps_the_model_state(tmp_path: Path) -> None:
    model = build_model(_cfg(**SMALL_BACKBONE)).train()
    model.dynamic_conv.impl = "grouped"
    export_onnx(model, tmp_path / "m.onnx", size=32)
    assert model.training and model.dynamic_conv.impl == "grouped"


def test_export_failure_is_one_line(tmp_path: Path) -> None:
    model = build_model(_cfg(**SMALL_BACKBONE))
    with pytest.raises(ExportError, match=r"ONNX export to .*m\.onnx failed") as info:
        export_onnx(model, tmp_path / "m.onnx", num_frames=3, size=32)  # fewer frames than T_long = 5
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ExportError, match="not found"):
        check_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 8, 32, 32))
    path = export_onnx(model, tmp_path / "ok.onnx", size=32)
    with pytest.raises(ExportError, match=r"onnxruntime could not run .*ok\.onnx"):
        check_onnx(model, path, torch.randn(1, 3, 8, 48, 48))  # the graph was exported for 32x32


@pytest.mark.slow
def test_dynamo_exporter_round_trip(tmp_path: Path) -> None:
    """The torch.export-based exporter (opset 18) gives the same logits too (DyMSTA head, small backbone)."""
    model = build_model(_cfg(**SMALL_BACKBONE)).eval()
    path = export_onnx(model, tmp_path / "dyn.onnx", size=64, opset=18)
    assert check_onnx(model, path, torch.randn(3, 3, 8, 64, 64)) < TOL
