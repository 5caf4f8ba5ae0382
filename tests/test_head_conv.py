"""``model.head_conv``: the backbone's last layer moved after the pooling (frozen or trained per stream)."""

from __future__ import annotations

import copy

import pytest
import torch

from dymsta.config import OptimConfig
from dymsta.engine.optim import LRSchedule, build_optimizer
from dymsta.models import ModelConfig, build_model
from dymsta.models.config import ModelConfigError

STREAMS = ("rgb", "rgbdiff")


def lite0(**kw) -> torch.nn.Module:
    cfg = {"arch": "dymsta", "num_classes": 4, "num_frames": 6, "temporal_kernels": (1, 3, 5), "streams": STREAMS}
    return build_model(ModelConfig(runtime="torch", dim=32, **{**cfg, **kw}))


def clips(batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {s: torch.randn(batch, 3, 6, 224, 224) for s in STREAMS}


@pytest.mark.parametrize(("head_conv", "trunk_channels", "tol"), [("frozen", 320, 1e-5), ("stage", 192, 1e-4)])
@torch.no_grad()
def test_what_moved_after_the_cache_gives_the_backbones_own_features_on_the_whole_grid(
    head_conv: str, trunk_channels: int, tol: float
) -> None:
    """With no pooling between them (``head_conv_grid=0``), trunk -> the detached layer (``frozen``), or the last
    stage then that layer (``stage``) == the whole backbone."""
    whole = lite0(spatial_pool=0).eval()
    split = lite0(spatial_pool=0, head_conv=head_conv, head_conv_grid=0).eval()
    x = clips()
    trunk = split.extract(x)
    assert trunk["rgb"].shape == (2, trunk_channels, 6, 7, 7)  # what the cache stores
    lifted, reference = split.lift(trunk), whole.extract(x)
    for s in STREAMS:
        assert lifted[s].shape == reference[s].shape == (2, 1280, 6, 7, 7)
        torch.testing.assert_close(lifted[s], reference[s], rtol=tol, atol=tol)
    assert split.backbone.fingerprint() != whole.backbone.fingerprint()  # caches of the two forms never mix


@torch.no_grad()
def test_the_layer_runs_on_the_pooled_grid_then_the_head_pools_further() -> None:
    split = lite0(head_conv="frozen").eval()  # model.head_conv_grid: 4 (DyMSTA-Net reads 4x4 too)
    linear = lite0(arch="linear", head_conv="frozen").eval()  # the probe then takes the frame mean
    mean_first = lite0(arch="linear", head_conv="frozen", head_conv_grid=1).eval()
    trunk = split.extract(clips())
    assert split.read_grid == linear.read_grid == 4 and mean_first.read_grid == 1
    assert split.lift(trunk)["rgb"].shape == linear.lift(trunk)["rgb"].shape == (2, 1280, 6, 4, 4)
    assert mean_first.lift(trunk)["rgb"].shape == (2, 1280, 6, 1, 1)
    assert split(clips()).shape == linear(clips()).shape == (2, 4)


def test_trained_copies_learn_per_stream_and_keep_their_norm_statistics() -> None:
    model = lite0(arch="linear", head_conv="trained")
    frozen = lite0(arch="linear", head_conv="frozen")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pretrained = model.pretrained_parameters()
    assert len(pretrained) == 3 * len(STREAMS)  # conv weight, norm weight and bias, per stream
    assert frozen.pretrained_parameters() == [] and not any(p.requires_grad for p in frozen.head_layers.parameters())
    model.train()
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model.forward_head(model.extract(clips())), torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for s in STREAMS:
        assert not torch.equal(after[f"head_layers.{s}.layer.0.weight"], before[f"head_layers.{s}.layer.0.weight"])
        for stat in ("running_mean", "running_var"):
            assert torch.equal(after[f"head_layers.{s}.layer.1.{stat}"], before[f"head_layers.{s}.layer.1.{stat}"])
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("backbone."))


def test_pretrained_layers_get_their_own_lr_and_weight_decay() -> None:
    model = lite0(arch="linear", head_conv="trained")
    cfg = OptimConfig(lr=0.01, weight_decay=50.0, backbone_lr_scale=0.1, backbone_weight_decay=0.05, scheduler="cosine")
    opt = build_optimizer(model.trainable_parameters(), cfg, pretrained=model.pretrained_parameters())
    ids = {id(p) for p in model.pretrained_parameters()}
    for group in opt.param_groups:
        mine = {id(p) in ids for p in group["params"]}
        assert len(mine) <= 1
        if mine == {True}:
            assert group["lr"] == pytest.approx(0.001)
            assert group["weight_decay"] in (0.05, 0.0)
        else:
            assert group["lr"] == pytest.approx(0.01) and group["weight_decay"] in (50.0, 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(model.trainable_parameters())
    schedule = LRSchedule(opt, cfg, epochs=10)
    schedule.start_epoch(5)
    head, layer = opt.param_groups[0]["lr"], opt.param_groups[-1]["lr"]
    assert layer == pytest.approx(head * 0.1) and head < 0.01  # the cosine keeps the ratio


def test_head_conv_refuses_a_backbone_without_that_layer() -> None:
    with pytest.raises(ModelConfigError, match=r"^model.head_conv: resnet18 has no last 1x1 conv"):
        build_model(
            ModelConfig(arch="linear", num_classes=4, backbone="resnet18", pretrained=False, head_conv="frozen")
        )
    with pytest.raises(ModelConfigError, match=r"^model.head_conv: trained needs a frozen frame backbone"):
        ModelConfig(arch="dymsta", head_conv="trained", trainable_stages=1).validate()
    with pytest.raises(ModelConfigError, match=r"^model.head_conv: must be one of"):
        ModelConfig(head_conv="late").validate()


@pytest.mark.parametrize("head_conv", ["trained", "stage"])
@torch.no_grad()
def test_a_saved_model_with_trained_copies_loads_to_the_same_logits(tmp_path, head_conv: str) -> None:
    from dymsta.models import load_model, save_model

    model = lite0(head_conv=head_conv).eval()
    for layer in model.head_layers.values():  # as if trained: copies that differ from ImageNet's
        layer.layer[0].weight.mul_(1.5)
    for stage in (model.head_stages or {}).values():
        stage[0].depthwise[0].weight.mul_(0.5)
    save_model(model, tmp_path / "m.safetensors")
    loaded, _ = load_model(tmp_path / "m.safetensors")
    loaded.eval()
    x = clips()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_the_folded_layer_equals_conv_then_norm_with_gradients() -> None:
    """The fast path (one matmul, norm folded in) against ``Conv2d`` + timm's ``BatchNormAct2d`` run per frame."""
    from einops import rearrange
    from timm.layers import BatchNormAct2d

    from dymsta.models.layers import FrameLayer

    torch.manual_seed(0)
    conv, norm = torch.nn.Conv2d(12, 20, 1, bias=True), BatchNormAct2d(20, act_layer=torch.nn.ReLU6)
    norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2), norm.weight.data.normal_(), norm.bias.data.normal_()
    reference = torch.nn.Sequential(copy.deepcopy(conv), copy.deepcopy(norm)).eval()
    layer = FrameLayer(conv, norm, trainable=True).train()  # its norm stays in eval mode
    x = (torch.randn(2, 12, 3, 4, 4) * 3).contiguous(memory_format=torch.channels_last_3d)
    out = layer(x)
    expected = rearrange(reference(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", b=2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert 0 < (out == 6).float().mean() < 0.5 and out.is_contiguous(memory_format=torch.channels_last_3d)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (expected * grad).sum().backward()
    for mine, theirs in zip(layer.layer.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.layer[1].running_mean, reference[1].running_mean, rtol=0, atol=0)


def test_the_folded_block_equals_the_backbones_last_stage_with_gradients() -> None:
    """:class:`FrameBlock` (folded norms, matmuls, one grouped conv) against timm's ``InvertedResidual`` per frame."""
    from einops import rearrange

    from dymsta.models.layers import FrameBlock

    torch.manual_seed(0)
    block = copy.deepcopy(lite0().backbone.net.blocks[-1][0])  # Lite0's last stage: 192 -> 1152 -> 320, 3x3 dw
    for norm in (block.bn1, block.bn2, block.bn3):  # statistics and weights unlike a fresh norm's
        norm.running_mean.normal_(0, 0.1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 1.5)
    reference = copy.deepcopy(block).eval()
    for p in reference.parameters():
        p.requires_grad_(True)
    fast = FrameBlock(block, trainable=True).train()  # its norms stay in eval mode
    x = (torch.randn(2, 192, 3, 7, 7) * 2).contiguous(memory_format=torch.channels_last_3d)
    out = fast(x)
    expected = rearrange(reference(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", b=2)
    assert out.shape == (2, 320, 3, 7, 7) and out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (expected * grad).sum().backward()
    mine = dict(fast.named_parameters())
    names = {"expand.layer.0": "conv_pw", "expand.layer.1": "bn1", "depthwise.0": "conv_dw", "depthwise.1": "bn2"}
    names |= {"project.layer.0": "conv_pwl", "project.layer.1": "bn3"}
    for name, p in reference.named_parameters():
        key = next(k for k, v in names.items() if name.startswith(v + "."))
        torch.testing.assert_close(mine[key + name[len(names[key]) :]].grad, p.grad, rtol=1e-3, atol=1e-3, msg=name)


@torch.no_grad()
def test_the_stage_reads_the_whole_grid_and_trains_per_stream() -> None:
    """``head_conv=stage``: the cache keeps the whole grid (the depthwise conv reads neighbouring cells), the layer
    after the stage runs on ``head_conv_grid``, and each stream's stage and layer start from ImageNet's weights."""
    stage = lite0(head_conv="stage").eval()
    trunk = stage.extract(clips())
    assert stage.read_grid == 0 and trunk["rgb"].shape == (2, 192, 6, 7, 7)
    assert stage.lift(trunk)["rgb"].shape == (2, 1280, 6, 4, 4)
    fingerprints = {m.backbone.fingerprint() for m in (stage, lite0(head_conv="trained"), lite0())}
    assert len(fingerprints) == 3  # the three cache forms never mix
    assert len(stage.pretrained_parameters()) == len(STREAMS) * (3 + 3 * 3)  # the layer's 3, the block's 3 x 3
