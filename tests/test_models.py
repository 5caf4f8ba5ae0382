"""DyMSTA-Net and baselines: shapes, ablations, config validation, gradients, bf16, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dymsta.models import (
    BackboneWeightsError,
    ModelConfig,
    ModelConfigError,
    ModelFileError,
    ModelInputError,
    MultiScaleTemporalBlock,
    SpatioTemporalAttention,
    build_model,
    load_model,
    save_model,
)
from dymsta.models.backbone import pool_grid
from dymsta.models.layers import TemporalConv, from_tokens, to_tokens

SMALL = {"num_classes": 5, "num_frames": 8, "temporal_kernels": (2, 3, 5), "dim": 32}


def _cfg(**kw: object) -> ModelConfig:
    return ModelConfig(**{**SMALL, **kw})


@pytest.fixture(scope="module")
def dymsta() -> torch.nn.Module:
    return build_model(_cfg())


# ---------------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", ["dymsta", "tsn", "linear", "r2plus1d_18", "r3d_18"])
@pytest.mark.parametrize("b,t,h,w", [(1, 8, 64, 64), (2, 6, 96, 64)])
def test_forward_shapes_every_arch(arch: str, b: int, t: int, h: int, w: int) -> None:
    model = build_model(_cfg(arch=arch, pretrained=arch in ("dymsta", "tsn", "linear"))).eval()
    with torch.no_grad():
        logits = model(torch.randn(b, 3, t, h, w))
    assert logits.shape == (b, 5) and torch.isfinite(logits).all()
    assert model.uses_frame_backbone == (arch in ("dymsta", "tsn", "linear"))
    assert (model.backbone is None) == (not model.uses_frame_backbone)
    assert len(model.mean) == 3 and len(model.std) == 3 and model.input_size in (112, 224)


ABLATIONS = [
    {},
    {"dynamic": False},
    {"attention": False},
    {"multiscale": False},
    {"dynamic": False, "attention": False, "multiscale": False},
    {"dynamic_mode": "modulate"},
    {"dynamic_kernel": (3, 3, 3)},
    {"num_kernels": 1},
    {"spatial_pool": 0},
    {"spatial_pool": 1},
    {"branch_channels": 8},
    {"temporal_pool": "mean"},
    {"feature_dropout": 0.3},
    {"temporal_center": True},
]


@pytest.mark.parametrize("switches", ABLATIONS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "full")
@pytest.mark.parametrize("b,t,h,w", [(1, 5, 7, 7), (3, 8, 4, 4), (2, 16, 7, 5)])
def test_head_shapes_for_every_ablation(switches: dict, b: int, t: int, h: int, w: int) -> None:
    model = build_model(_cfg(pretrained=False, **switches))
    feats = torch.randn(b, model.backbone.out_channels, t, h, w)  # (B, Cb, T, h, w) as the cache stores them
    logits, maps = model.forward_head(feats, return_maps=True)
    assert logits.shape == (b, 5)
    if model.cfg.attention:
        grid = {
            (0, 7, 7): (7, 7),
            (4, 7, 7): (4, 4),
            (1, 7, 7): (1, 1),
            (0, 4, 4): (4, 4),
            (4, 4, 4): (4, 4),
            (1, 4, 4): (1, 1),
            (0, 7, 5): (7, 5),
            (4, 7, 5): (4, 3),
            (1, 7, 5): (1, 1),
        }[(model.cfg.spatial_pool, h, w)]
        assert maps["temporal"].shape == (b, t) and maps["spatial"].shape == (b, t, *grid)
        assert ((maps["temporal"] > 0) & (maps["temporal"] < 1)).all()
    else:
        assert maps == {}
    assert model.forward_head(feats).shape == (b, 5)


def test_backbone_keeps_its_grid_and_each_head_pools_it() -> None:
    """One feature cache serves every head: the backbone's whole grid, pooled by the head (or at cache read time)."""
    video = torch.randn(1, 3, 8, 224, 224)
    dy, tsn = build_model(_cfg()).eval(), build_model(_cfg(arch="tsn")).eval()
    with torch.no_grad():
        feats = dy.backbone(video)
        assert feats.shape == tsn.backbone(video).shape == (1, 1280, 8, 7, 7)
        torch.testing.assert_close(dy.forward_head(feats), dy.forward_head(pool_grid(feats, 4)))  # 7x7 -> <= 4x4
        torch.testing.assert_close(tsn.forward_head(feats), tsn.forward_head(feats.mean(dim=(3, 4), keepdim=True)))


def test_tsn_averages_frame_logits_and_linear_probes_the_mean_feature() -> None:
    tsn, lin = build_model(_cfg(arch="tsn")).eval(), build_model(_cfg(arch="linear")).eval()
    feats = torch.randn(2, 1280, 8, 1, 1)
    with torch.no_grad():
        per_frame = torch.stack([tsn.classifier(feats[:, :, i, 0, 0]) for i in range(8)], 1)  # (B, T, N)
        torch.testing.assert_close(tsn.forward_head(feats), per_frame.mean(1))
        torch.testing.assert_close(lin.forward_head(feats), lin.classifier(feats.mean(dim=(2, 3, 4))))


def test_head_accepts_fp16_and_any_memory_format(dymsta: torch.nn.Module) -> None:
    dymsta.eval()
    feats = torch.randn(2, 1280, 8, 4, 4)
    with torch.no_grad():
        ref = dymsta.forward_head(feats)
        cl = dymsta.forward_head(feats.contiguous(memory_format=torch.channels_last_3d))
        half = dymsta.forward_head(feats.half())
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(half, ref, rtol=0.02, atol=0.02)


def test_token_layers_equal_their_conv3d_definitions() -> None:
    x = torch.randn(2, 6, 9, 3, 4, dtype=torch.float64)
    for k, pad in [(1, 0), (3, 1), (7, 0)]:
        conv = TemporalConv(6, 5, k, padding=pad, bias=True).double()
        expected = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=(pad, 0, 0))
        torch.testing.assert_close(from_tokens(conv(to_tokens(x))), expected)
    block = MultiScaleTemporalBlock(in_channels=6, out_channels=4, kernels=(2, 3, 5), branch_channels=3).double()
    block.eval()
    expected = [x.amax(dim=2)]
    for branch in block.branches:
        conv, bn = branch[0], branch[1]
        y = torch.nn.functional.conv3d(x, conv.weight)  # valid temporal conv
        y = torch.nn.functional.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        expected.append(torch.relu(y).amax(dim=2))
    fuse, bn = block.fuse[0], block.fuse[1]
    z = torch.einsum("oc,bchw->bohw", fuse.weight, torch.cat(expected, 1))
    z = torch.relu(torch.nn.functional.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    torch.testing.assert_close(block(x), z)


def test_attention_is_parallel_and_only_emphasises() -> None:
    att = SpatioTemporalAttention(channels=8).double()
    x = torch.randn(2, 8, 6, 3, 3, dtype=torch.float64)
    y, maps = att(x, return_maps=True)
    a_t, a_s = att.maps(x)  # both computed from the same input
    torch.testing.assert_close(maps["temporal"], a_t)
    torch.testing.assert_close(y, x * (1 + a_t[:, None, :, None, None] * a_s[:, None]))
    ratio = (y / x)[x.abs() > 1e-6]
    assert ratio.min() >= 1 and ratio.max() <= 2


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"temporal_kernels": (3, 5, 9)}, "temporal_kernels"),  # T_long > num_frames (8)
        ({"temporal_kernels": (5, 5, 7)}, "temporal_kernels"),  # T_short >= T_medium
        ({"temporal_kernels": (3, 7, 5)}, "temporal_kernels"),
        ({"temporal_kernels": (0, 3, 5)}, "temporal_kernels"),
        ({"temporal_kernels": (3, 5)}, "temporal_kernels"),
        ({"backbone": "no_such_backbone"}, "backbone"),
        ({"arch": "resnet"}, "arch"),
        ({"dynamic_mode": "sum"}, "dynamic_mode"),
        ({"dropout": 1.0}, "dropout"),
        ({"temperature": 0.5}, "temperature"),
        ({"num_classes": 0}, "num_classes"),
        ({"dim": 2.5}, "dim"),
        ({"dynamic_kernel": (2, 1, 1)}, "dynamic_kernel"),
        ({"multiscale": "yes"}, "multiscale"),
        ({"arch": "linear", "trainable_stages": 2}, "trainable_stages"),
        ({"trainable_stages": -1}, "trainable_stages"),
        ({"temporal_pool": "median"}, "temporal_pool"),
        ({"feature_dropout": 1.0}, "feature_dropout"),
    ],
)
def test_invalid_settings_raise_a_clear_error(kw: dict, field: str) -> None:
    cfg = _cfg(**kw)
    with pytest.raises(ModelConfigError, match=rf"^model\.{field}: ") as info:
        build_model(cfg)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("pool,center", [("max", False), ("mean", False), ("max", True)])
def test_multiscale_block_pools_each_branch_over_time(pool: str, center: bool) -> None:
    torch.manual_seed(0)
    block = MultiScaleTemporalBlock(
        in_channels=6, out_channels=4, kernels=(1, 2, 3), branch_channels=5, pool=pool, center=center
    ).eval()
    x = torch.randn(2, 6, 7, 3, 2)  # (B, C, T, H, W)
    tokens = to_tokens(x)
    moving = tokens - tokens.mean(dim=1, keepdim=True) if center else tokens
    reduce = (lambda t: t.max(dim=1).values) if pool == "max" else (lambda t: t.mean(dim=1))
    pooled = [reduce(tokens)] + [reduce(branch(moving)) for branch in block.branches]
    expected = block.fuse(torch.cat(pooled, dim=-1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(block(x), expected)


def test_feature_dropout_is_active_in_training_only() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(pretrained=False, feature_dropout=0.5, dropout=0.0))
    feats = torch.randn(2, 1280, 8, 4, 4)
    model.eval()
    torch.testing.assert_close(model.forward_head(feats), model.forward_head(feats))
    model.train()
    assert not torch.allclose(model.forward_head(feats), model.forward_head(feats))


def test_long_kernel_is_fine_without_the_multiscale_block() -> None:
    _cfg(temporal_kernels=(3, 5, 9), multiscale=False).validate()


def test_bad_input_shapes_are_one_line_errors(dymsta: torch.nn.Module) -> None:
    with pytest.raises(ModelInputError, match=r"expected video \(B, 3, T, H, W\), got shape \(3, 8, 64, 64\)"):
        dymsta(torch.randn(3, 8, 64, 64))
    with pytest.raises(ModelInputError, match="expected backbone features"):
        dymsta.forward_head(torch.randn(2, 1280, 8, 16))


def test_too_many_stages_and_too_few_frames() -> None:
    with pytest.raises(ModelConfigError, match="model.trainable_stages"):
        build_model(_cfg(trainable_stages=12))
    model = build_model(_cfg(pretrained=False))
    with pytest.raises(ModelInputError, match="fewer than the longest temporal kernel"):
        model.forward_head(torch.randn(1, 1280, 4, 2, 2))


def test_config_round_trips_through_json() -> None:
    cfg = _cfg(dynamic_mode="modulate", backbone_weights="/x.safetensors")
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ModelConfigError, match="model.depth: unknown"):
        ModelConfig.from_dict({"depth": 3})


# ---------------------------------------------------------------------- training behaviour


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"dynamic_mode": "modulate"},
        {"dynamic_kernel": (3, 3, 3)},
        {"arch": "tsn"},
        {"arch": "linear"},
        {"spatial_pool": 0},
        {"dynamic_mode": "modulate", "num_kernels": 1},
    ],
)
def test_every_trainable_parameter_of_the_head_gets_a_gradient(kw: dict) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(dropout=0.0, pretrained=False, **kw)).train()
    model.set_epoch(3)
    grid = 7 if model.cfg.spatial_pool == 0 else 4
    logits = model.forward_head(torch.randn(2, 1280, 8, grid, grid))
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    _assert_gradients(model)


def test_every_trainable_parameter_gets_a_gradient_through_the_video() -> None:
    """Fine-tuning the last backbone stage: gradients reach it through the per-frame CNN; frozen stages get none."""
    torch.manual_seed(0)
    model = build_model(_cfg(dropout=0.0, trainable_stages=1)).train()
    logits = model(torch.randn(2, 3, 8, 64, 64))
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    _assert_gradients(model)
    assert model.backbone.net.conv_head.weight.grad is not None


def _assert_gradients(model: torch.nn.Module) -> None:
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert {id(p) for p in model.trainable_parameters()} == {id(params[n]) for n in trainable}
    for name in trainable:
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert len(frozen) > 0 and all(p.grad is None for p in frozen)


def test_video_baseline_gradients_and_epoch_noop() -> None:
    model = build_model(_cfg(arch="r2plus1d_18", pretrained=False)).train()
    model.set_epoch(5)
    model(torch.randn(1, 3, 4, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
    with pytest.raises(NotImplementedError, match="no frame backbone"):
        model.forward_head(torch.randn(1, 8, 4, 2, 2))


def test_frozen_backbone_stays_in_eval_mode(dymsta: torch.nn.Module) -> None:
    dymsta.train()
    assert dymsta.training and dymsta.classifier.training and dymsta.reduce["rgb"][1].training
    assert not any(m.training for m in dymsta.backbone.net.modules())


def test_temperature_anneals_per_epoch() -> None:
    model = build_model(_cfg(pretrained=False, temperature=21.0, anneal_epochs=4))
    assert model.dynamic_conv.temperature.item() == 21.0
    model.set_epoch(2)
    assert model.dynamic_conv.temperature.item() == pytest.approx(11.0)
    model.set_epoch(7)
    assert model.dynamic_conv.temperature.item() == 1.0


@pytest.mark.parametrize("kw", [{}, {"dynamic_mode": "modulate"}, {"arch": "tsn", "pretrained": False}])
def test_bf16_autocast_has_no_nan(kw: dict) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(dim=64, **kw)).train()
    feats = torch.randn(4, 1280, 8, 4, 4) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.forward_head(feats)
        video_logits = model(torch.randn(1, 3, 8, 64, 64)) if not kw else logits
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3])).backward()
    assert torch.isfinite(logits).all() and torch.isfinite(video_logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.trainable_parameters())
    model.eval()
    with torch.no_grad():
        ref = model.forward_head(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_head(feats).float()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


# ---------------------------------------------------------------------- save / load


def test_save_load_round_trip_needs_no_pretrained_weights(tmp_path: Path) -> None:
    """Build from a local weights file, save, delete that file: loading needs no flags and no weights source."""
    from safetensors.torch import save_file

    from dymsta.models import FrameBackbone

    weights = tmp_path / "lite0.safetensors"
    trunk = FrameBackbone(name="efficientnet_lite0").net
    save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, str(weights))
    model = build_model(_cfg(backbone_weights=str(weights), dynamic_mode="modulate", dropout=0.1)).eval()
    model.set_epoch(1)
    path = tmp_path / "model.safetensors"
    save_model(model, path, metadata={"class_names": '["a", "b"]', "epoch": "3"})
    weights.unlink()
    loaded, meta = load_model(path)
    assert meta == {"class_names": '["a", "b"]', "epoch": "3"}
    assert loaded.cfg == model.cfg and not loaded.training
    assert loaded.backbone.fingerprint() == model.backbone.fingerprint()
    video = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), model(video), rtol=0, atol=0)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp files left


@pytest.mark.parametrize("arch", ["tsn", "r3d_18"])
def test_save_load_baselines(tmp_path: Path, arch: str) -> None:
    model = build_model(_cfg(arch=arch, pretrained=False)).eval()
    save_model(model, tmp_path / "m.safetensors")
    loaded, meta = load_model(tmp_path / "m.safetensors")
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), model(video), rtol=0, atol=0)
    assert meta == {} and loaded.cfg.arch == arch


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(ModelFileError, match="missing.safetensors"):
        load_model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        load_model(junk)
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(1)}, str(bare))
    with pytest.raises(ModelFileError, match="bare.safetensors: no dymsta model config"):
        load_model(bare)
    model = build_model(_cfg(arch="linear", pretrained=False))
    save_model(model, tmp_path / "lin.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lin.safetensors"), framework="pt") as f:
        meta = f.metadata()
    meta["dymsta.model_config"] = dataclasses.replace(model.cfg, num_classes=9).to_json()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "bad.safetensors"), meta)
    with pytest.raises(ModelFileError, match="bad.safetensors: weights do not match"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="metadata"):
        save_model(model, tmp_path / "x.safetensors", metadata={"dymsta.model_config": "{}"})


def test_video_baseline_pretrained_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # unreachable: the download fails for certain
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(BackboneWeightsError, match=r"Kinetics-400 weights .* r3d_18 .*model.pretrained=false"):
        build_model(_cfg(arch="r3d_18"))


# ------------------------------------------------------------------------------------------------------ streams

STREAMS = ("rgb", "rgbdiff", "mv")


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated"])
@pytest.mark.parametrize("hist", [0, 9])
def test_stream_models_shapes_and_gradients(fusion: str, hist: int) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(pretrained=False, streams=STREAMS, hist_channels=hist, fusion=fusion)).train()
    feats = {s: torch.randn(2, 1280, 8, 3, 3) for s in STREAMS}
    if hist:
        feats["mv"] = torch.rand(2, hist, 8, 3, 3)
    assert model.stream_channels() == {"rgb": 1280, "rgbdiff": 1280, "mv": hist or 1280}
    logits = model.forward_head(feats)
    assert logits.shape == (2, SMALL["num_classes"])
    logits.sum().backward()
    head = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone")]
    missing = [n for n, p in head if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    with pytest.raises(ModelInputError, match="missing 'rgbdiff'"):
        model.forward_head({k: v for k, v in feats.items() if k != "rgbdiff"})


def test_image_streams_share_one_backbone_batch() -> None:
    model = build_model(_cfg(pretrained=False, streams=("rgb", "mv"), arch="linear")).eval()
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    video = {"rgb": torch.randn(2, 3, 8, 64, 64), "mv": torch.randn(2, 3, 8, 64, 64)}
    with torch.no_grad():
        feats = model.extract(video)
        torch.testing.assert_close(feats["mv"], model.backbone(video["mv"]))
    assert calls[0] == (4, 3, 8, 64, 64)  # both streams in one call


def test_gated_fusion_weights_are_a_softmax_over_streams() -> None:
    from dymsta.models.fusion import StreamFusion

    fusion = StreamFusion(channels=8, num_streams=3, mode="gated")
    tokens = [torch.randn(2, 4, 3, 3, 8) for _ in range(3)]
    w = fusion.weights(tokens)
    assert w.shape == (2, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    expected = sum(w[:, i, None, None, None, None] * tokens[i] for i in range(3))
    torch.testing.assert_close(fusion(tokens), expected)
    torch.testing.assert_close(StreamFusion(channels=8, num_streams=3, mode="sum")(tokens), sum(tokens))


def test_baselines_concatenate_the_streams() -> None:
    tsn = build_model(_cfg(arch="tsn", pretrained=False, streams=("rgb", "mv"), hist_channels=9)).eval()
    feats = {"rgb": torch.randn(2, 1280, 8, 2, 2), "mv": torch.rand(2, 9, 8, 2, 2)}
    joined = torch.cat([feats["rgb"].mean(dim=(3, 4)), feats["mv"].mean(dim=(3, 4))], dim=1)  # (B, 1289, T)
    with torch.no_grad():
        per_frame = torch.stack([tsn.classifier(joined[:, :, t]) for t in range(8)], 1)
        torch.testing.assert_close(tsn.forward_head(feats), per_frame.mean(1))


# ---------------------------------------------------------------------- input standardisation (model.input_norm)


def _fitted(arch: str, feats: dict[str, torch.Tensor]) -> torch.nn.Module:
    from dymsta.engine.input_norm import fit_input_norm

    model = build_model(_cfg(arch=arch, pretrained=False, streams=("rgb", "mv"), input_norm=True)).eval()
    fit_input_norm(model, [{s: x[:3] for s, x in feats.items()}, {s: x[3:] for s, x in feats.items()}])
    return model


def test_fit_input_norm_gives_each_channels_mean_and_std() -> None:
    torch.manual_seed(0)
    feats = {s: torch.randn(5, 1280, 8, 2, 2) * 3 + 1 for s in ("rgb", "mv")}
    model = _fitted("linear", feats)
    for s, x in feats.items():
        per_channel = x.double().transpose(0, 1).reshape(1280, -1)
        torch.testing.assert_close(model.input_norm[s].mean.double(), per_channel.mean(1), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            1 / model.input_norm[s].inv_std.double(), per_channel.std(1, correction=0), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("arch", ["dymsta", "tsn", "linear"])
def test_input_norm_equals_the_plain_head_on_standardised_features(arch: str, tmp_path: Path) -> None:
    """The reference: the same head without input_norm, fed features standardised by hand; then save and load."""
    torch.manual_seed(0)
    feats = {s: torch.rand(5, 1280, 8, 2, 2) * 4 for s in ("rgb", "mv")}
    model = _fitted(arch, feats)
    plain = build_model(dataclasses.replace(model.cfg, input_norm=False)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("input_norm.")})
    by_hand = {}
    for s, x in feats.items():
        norm = model.input_norm[s]
        by_hand[s] = (x - norm.mean.view(1, -1, 1, 1, 1)) * norm.inv_std.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        expected = plain.forward_head(by_hand)
        torch.testing.assert_close(model.forward_head(feats), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(plain.forward_head(feats), expected, atol=1e-3)  # the statistics matter
    save_model(model, tmp_path / "m.safetensors")
    loaded, _ = load_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_head(feats), model.forward_head(feats), rtol=0, atol=0)


def test_input_norm_scales_a_dead_channel_by_one_over_eps() -> None:
    from dymsta.models.layers import ChannelStandardize

    norm = ChannelStandardize(2)
    norm.set_statistics(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]))
    x = torch.tensor([[2.0, 2.0]])  # (B=1, C=2)
    torch.testing.assert_close(norm(x), torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(norm(x.T.contiguous().T, dim=-1), torch.tensor([[2.0, 0.0]]))
    assert norm.inv_std[1].item() == pytest.approx(1000.0)
