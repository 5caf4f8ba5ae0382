"""Backbone runtimes: OpenVINO / ONNX Runtime equal eager PyTorch on real frames; files reused, atomic; resolution."""

from __future__ import annotations

import copy
import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dymsta.models import FrameBackbone, ModelConfig, ModelConfigError
from dymsta.models import runtime as rt
from dymsta.models.backbone import lite_imagenet_classifier
from dymsta.models.errors import RuntimeUnavailableError
from dymsta.models.export import ExportError

CAT_CLASSES = {281, 282, 285}  # ImageNet: tabby, tiger cat, Egyptian cat
INSTALLED = [
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} not installed"))
    for name in ("onnxruntime", "openvino")
]
FP32_TOL = 1e-4  # max |diff| / max |feature| of fp32 runtimes; measured 4.8e-6 (ORT, Lite0), summation order only
# bf16 runtimes (OpenVINO on an AMX / AVX-512-bf16 CPU): measured on these frames with Lite0, relative to the
# feature scale (6, ReLU6): OpenVINO max 0.110, mean 0.050; PyTorch's own bf16 autocast max 0.105, mean 0.047.
# (Lite2: OpenVINO 0.29 / 0.095, PyTorch bf16 0.18 / 0.079.) The test allows twice PyTorch bf16's error.
BF16_FACTOR = 2.0


def _chelsea_frames(size: int, mean: tuple, std: tuple, *, crops: int = 3, seed: int = 0) -> torch.Tensor:
    """scikit-image's cat photo: its centre square and ``crops`` random squares, each resized to ``size``.

    Returns ``(1, 3, 1 + crops, size, size)`` normalised with ``mean``/``std``.
    """
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255  # (1, 3, 300, 451)
    h, w = img.shape[-2:]
    gen = torch.Generator().manual_seed(seed)
    boxes = [(0, (w - h) // 2, h)]  # (top, left, side)
    for _ in range(crops):
        side = int(torch.randint(h // 2, h + 1, (1,), generator=gen))
        top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        boxes.append((top, left, side))
    frames = torch.cat(
        [
            F.interpolate(img[..., t : t + s, x : x + s], size=(size, size), mode="bilinear", antialias=True)
            for t, x, s in boxes
        ]
    )  # (T, 3, size, size)
    frames = (frames - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return frames.transpose(0, 1)[None]  # (1, 3, T, size, size)


@pytest.fixture(scope="module")
def lite0() -> FrameBackbone:
    return FrameBackbone(name="efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the equality tests: the Lite0 export happens once per runtime."""
    return tmp_path_factory.mktemp("cache")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max, mean) absolute difference, each relative to the same statistic of ``ref``."""
    diff = (a.float() - ref).abs()
    return (diff.max() / ref.abs().max()).item(), (diff.mean() / ref.abs().mean()).item()


@pytest.mark.parametrize("runtime", INSTALLED)
def test_runtime_equals_pytorch_fp32(runtime: str, lite0: FrameBackbone, shared_cache: Path) -> None:
    video = _chelsea_frames(224, lite0.mean, lite0.std)  # (1, 3, 4, 224, 224)
    with torch.no_grad():
        ref = lite0(video)  # fp32 eager
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch_bf16 = lite0(video)
    backbone = copy.deepcopy(lite0)
    assert backbone.set_runtime(runtime, cache_dir=shared_cache) == runtime
    with torch.no_grad():
        feats = backbone(video)
    assert feats.shape == ref.shape == (1, 1280, 4, 7, 7) and feats.dtype == torch.float32
    assert feats.is_contiguous(memory_format=torch.channels_last_3d)  # the same layout as the torch path
    err_max, err_mean = _rel(feats, ref)
    assert backbone.runtime_id.startswith(f"{runtime}-")
    if backbone.runtime_id.endswith("fp32"):
        assert err_max < FP32_TOL, f"{backbone.runtime_id}: max rel diff {err_max:.2e}"
    else:
        bf16_max, bf16_mean = _rel(torch_bf16, ref)
        assert err_max < BF16_FACTOR * bf16_max and err_mean < BF16_FACTOR * bf16_mean, (
            f"{backbone.runtime_id}: rel diff max {err_max:.3f} mean {err_mean:.3f}; "
            f"PyTorch bf16 {bf16_max:.3f} / {bf16_mean:.3f}"
        )
    classifier = lite_imagenet_classifier("efficientnet_lite0")
    with torch.no_grad():
        logits = classifier.forward_head(feats[:, :, 0])  # the centre frame through the ImageNet head
    assert CAT_CLASSES <= set(logits.topk(5).indices[0].tolist())  # still a cat


@pytest.mark.parametrize("runtime", INSTALLED)
def test_grid_pooling_and_other_frame_sizes(runtime: str, lite0: FrameBackbone, shared_cache: Path) -> None:
    pooled = FrameBackbone(name="efficientnet_lite0", grid=2).eval()
    pooled.set_runtime(runtime, cache_dir=shared_cache)
    video = torch.randn(2, 3, 3, 96, 64)  # another frame size (3 x 2 grid, pooled to 2 x 2): exported at first use
    with torch.no_grad():
        feats = pooled(video)
        pooled.set_runtime("torch")
        ref = pooled(video)
    assert feats.shape == ref.shape == (2, 1280, 3, 2, 2)
    assert feats.is_contiguous(memory_format=torch.channels_last_3d)
    tol = FP32_TOL if runtime == "onnxruntime" else 0.25
    assert _rel(feats, ref)[0] < tol
    names = sorted(p.name for p in (shared_cache / "runtimes").iterdir())
    assert any("-96x64-" in n for n in names) and any("-224x224-" in n for n in names)


@pytest.mark.parametrize("runtime", INSTALLED)
def test_export_is_reused_not_rewritten(runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = FrameBackbone(name="efficientnet_lite0")
    first.set_runtime(runtime, cache_dir=tmp_path)
    files = sorted((tmp_path / "runtimes").iterdir())
    assert files and all(f.stat().st_size > 0 for f in files)
    suffixes = {f.suffix for f in files}
    assert suffixes == ({".onnx"} if runtime == "onnxruntime" else {".onnx", ".xml", ".bin"})
    stats = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(rt, "export_frames_onnx", no_export)
    second = FrameBackbone(name="efficientnet_lite0")  # same weights, another object
    assert second.set_runtime(runtime, cache_dir=tmp_path) == runtime
    with torch.no_grad():
        second(torch.randn(1, 3, 2, 224, 224))
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in sorted((tmp_path / "runtimes").iterdir())} == stats


def test_new_weights_rebuild_the_runtime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    backbone = FrameBackbone(name="efficientnet_lite0").eval()
    backbone.set_runtime("onnxruntime", cache_dir=tmp_path)
    random = FrameBackbone(name="efficientnet_lite0", pretrained=False).eval()
    backbone.load_state_dict(random.state_dict())  # e.g. load_model: build, then load the checkpoint
    video = torch.randn(1, 3, 2, 224, 224)
    with torch.no_grad():
        feats, ref = backbone(video), random(video)
        copied = copy.deepcopy(backbone)(video)  # copies (EMA, DataLoader workers) rebuild from the files
    assert _rel(feats, ref)[0] < FP32_TOL
    torch.testing.assert_close(copied, feats)
    assert len(list((tmp_path / "runtimes").glob("*.onnx"))) == 2  # one file per weights


def test_failed_export_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")

    def broken_export(module: object, args: object, f: str, **kwargs: object) -> None:
        Path(f).write_bytes(b"half an onnx file")
        raise RuntimeError("exporter crashed\nwith a traceback")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    backbone = FrameBackbone(name="efficientnet_lite0").eval()
    with pytest.raises(ExportError) as info:
        backbone.set_runtime("onnxruntime", cache_dir=tmp_path)
    assert "\n" not in str(info.value) and ".onnx" in str(info.value) and "exporter crashed" in str(info.value)
    assert [p for p in (tmp_path / "runtimes").iterdir()] == []  # no partial file, no temporary left
    with caplog.at_level(logging.WARNING, logger="dymsta.models.backbone"):
        assert backbone.set_runtime("auto", cache_dir=tmp_path) == "torch"  # auto falls back, and says so
    assert "falls back to torch" in caplog.text
    assert backbone.runtime_id == "torch-fp32-cl"
    assert [p for p in (tmp_path / "runtimes").iterdir()] == []


def test_failed_openvino_conversion_leaves_no_ir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ov = pytest.importorskip("openvino")

    def broken_save(model: object, path: str, **kwargs: object) -> None:
        Path(path).with_suffix(".bin").write_bytes(b"half the weights")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ov, "save_model", broken_save)
    with pytest.raises(ExportError, match=r"OpenVINO conversion to .*\.xml failed: RuntimeError: disk full"):
        FrameBackbone(name="efficientnet_lite0").set_runtime("openvino", cache_dir=tmp_path)
    assert [p.suffix for p in (tmp_path / "runtimes").iterdir()] == [".onnx"]  # the complete export stays


def test_auto_resolution(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    def only(*names: str) -> None:
        monkeypatch.setattr(rt, "installed", lambda r: r == "torch" or r in names)

    only("openvino", "onnxruntime")
    assert rt.resolve_runtime("auto", "cpu") == "openvino"
    assert rt.resolve_runtime("auto", torch.device("cuda")) == "torch"  # on CUDA always PyTorch
    only("onnxruntime")
    assert rt.resolve_runtime("auto") == "onnxruntime"
    only()
    assert rt.resolve_runtime("auto") == "torch"
    backbone = FrameBackbone(name="timm:resnet18", pretrained=False)
    with caplog.at_level(logging.INFO, logger="dymsta.models.backbone"):
        assert backbone.set_runtime("auto") == "torch"
    assert [r.getMessage() for r in caplog.records if r.name == "dymsta.models.backbone"] == [
        "backbone timm:resnet18: runtime torch (model.runtime=auto on cpu)"
    ]


def test_unknown_or_missing_runtime_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelConfigError, match=r"^model.runtime: must be one of auto, torch, openvino, onnxruntime"):
        rt.resolve_runtime("tensorrt")
    with pytest.raises(ModelConfigError, match=r"^model.runtime: "):
        ModelConfig(runtime="tensorrt").validate()
    ModelConfig(runtime="openvino").validate()  # a valid value, installed or not: checked where it runs
    assert ModelConfig.from_json(ModelConfig(runtime="onnxruntime").to_json()).runtime == "onnxruntime"
    for name in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
        assert not rt.installed(name)
        with pytest.raises(RuntimeUnavailableError) as info:
            FrameBackbone(name="timm:resnet18", pretrained=False).set_runtime(name)
        assert str(info.value) == f'model.runtime={name} needs `pip install "dymsta[{name}]"`'
        assert isinstance(info.value, ModelConfigError)
    with pytest.raises(ModelConfigError, match=r"^model.runtime=openvino: runs the backbone on the CPU"):
        rt.resolve_runtime("openvino", "cuda")


def test_trainable_stages_keep_torch(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    monkeypatch.setattr(rt, "installed", lambda r: True)
    backbone = FrameBackbone(name="efficientnet_lite0", trainable_stages=1)
    with caplog.at_level(logging.INFO, logger="dymsta.models.backbone"):
        assert backbone.set_runtime("auto") == "torch"
    assert "model.trainable_stages=1 needs gradients" in caplog.text
    assert backbone.runtime == "torch" and backbone.runtime_id == "torch-fp32-cl"
    for name in ("openvino", "onnxruntime"):
        with pytest.raises(ModelConfigError, match=rf"^model.runtime={name}: the backbone fine-tunes"):
            backbone.set_runtime(name)


def test_token_backbone_through_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    vit = FrameBackbone(name="timm:vit_tiny_patch16_224", pretrained=False, grid=2).eval()
    video = torch.randn(2, 3, 2, 64, 96)  # (B, 3, T, H, W): a 4 x 6 patch grid
    with torch.no_grad():
        ref = vit(video)
        vit.set_runtime("onnxruntime", cache_dir=tmp_path)
        feats = vit(video)
    assert feats.shape == ref.shape == (2, 192, 2, 2, 2)
    assert _rel(feats, ref)[0] < FP32_TOL


def test_runtime_ids() -> None:
    backbone = FrameBackbone(name="timm:resnet18", pretrained=False)
    assert backbone.runtime_id == "torch-fp32-cl"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert backbone.runtime_id == "torch-bf16-cl"
    assert FrameBackbone(name="timm:resnet18", pretrained=False, channels_last=False).runtime_id == "torch-fp32"
    assert rt.runtime_id("onnxruntime") == "onnxruntime-fp32"
    if importlib.util.find_spec("openvino") is not None:
        assert rt.runtime_id("openvino") in ("openvino-bf16", "openvino-fp32", "openvino-fp16")
