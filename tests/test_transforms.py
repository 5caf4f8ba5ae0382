"""Clip transforms: layouts, same geometry for every frame, fused eval crop, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_frames
from dymsta.data.sampling import eval_crop_box
from dymsta.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ResizeShortSide,
    center_crop,
    clip_to_tensor,
    crop,
    eval_source_box,
    hflip,
    normalize,
    resize,
    resize_short_side,
    resized_crop,
)


@pytest.fixture
def frames() -> torch.Tensor:
    return torch.from_numpy(make_frames(4, 60, 80))  # (T, H, W, C) uint8


@pytest.mark.parametrize(("h", "w", "expected"), [(60, 80, (32, 43)), (80, 60, (43, 32)), (32, 32, (32, 32))])
def test_resize_short_side_shapes(h, w, expected):
    x = make_frames(2, h, w)
    out = resize_short_side(x, 32)  # numpy in, tensor out
    assert out.shape == (2, *expected, 3) and out.dtype == torch.uint8


def test_uint8_resize_matches_float_resize(frames):
    fast = resize(frames, 45, 33).float()
    slow = resize(frames.float(), 45, 33)
    assert (fast - slow).abs().max() <= 1.0  # only rounding differs


def test_crops_are_views_of_the_right_region(frames):
    np.testing.assert_array_equal(center_crop(frames, 40).numpy(), frames[:, 10:50, 20:60].numpy())
    np.testing.assert_array_equal(crop(frames, (5, 7, 20, 30)).numpy(), frames[:, 5:25, 7:37].numpy())
    with pytest.raises(ValueError, match="outside"):
        crop(frames, (50, 0, 20, 20))


def test_hflip_mirrors_every_frame(frames):
    np.testing.assert_array_equal(hflip(frames).numpy(), frames.numpy()[:, :, ::-1])


def test_resized_crop_full_box_same_size_is_identity(frames):
    assert torch.equal(resized_crop(frames, (0, 0, 60, 80), 60), resize(frames, 60, 60))
    square = frames[:, :, :60]
    assert torch.equal(resized_crop(square, (0, 0, 60, 60), 60), square)


def test_fused_eval_crop_equals_resize_then_centre_crop():
    x = torch.from_numpy(make_frames(3, 120, 160))
    for index, crops in [(0, 1), (1, 3), (2, 3), (4, 5)]:
        box = eval_source_box(120, 160, size=48, resize=56, index=index, crops=crops)
        fused = resized_crop(x, box, 48).float()
        top, left, h, w = eval_crop_box(56, 75, 48, index=index, crops=crops)
        sequential = resize_short_side(x, 56)[:, top : top + h, left : left + w].float()
        assert fused.shape == sequential.shape == (3, 48, 48, 3)
        assert (fused - sequential).abs().mean() < 4.0  # same region; interpolation grids differ slightly


def test_clip_to_tensor_layout_and_range(frames):
    clip = clip_to_tensor(frames)
    assert clip.shape == (3, 4, 60, 80) and clip.dtype == torch.float32 and clip.is_contiguous()
    assert clip[2, 1, 5, 7] == pytest.approx(frames[1, 5, 7, 2].item() / 255)
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    with pytest.raises(TypeError, match="uint8"):
        clip_to_tensor(frames.float())


def test_fused_normalisation_equals_two_steps(frames):
    fused = clip_to_tensor(frames, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    two_step = normalize(clip_to_tensor(frames), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(fused, two_step, rtol=1e-5, atol=1e-5)
    assert fused[0].mean() == pytest.approx(((frames[..., 0].float() / 255 - 0.485) / 0.229).mean().item(), abs=1e-4)


def test_normalisation_errors(frames):
    with pytest.raises(ValueError, match="3 values"):
        clip_to_tensor(frames, mean=(0.5, 0.5), std=(0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        clip_to_tensor(frames, mean=(0.5,) * 3, std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="both"):
        clip_to_tensor(frames, mean=IMAGENET_MEAN)


def test_random_resized_crop_same_box_for_every_frame():
    still = torch.from_numpy(np.repeat(make_frames(1, 60, 80), 5, axis=0))  # five identical frames
    torch.manual_seed(0)
    out = RandomResizedCrop(size=32)(still)
    assert out.shape == (5, 32, 32, 3)
    assert all(torch.equal(out[0], out[t]) for t in range(1, 5))
    torch.manual_seed(0)
    assert torch.equal(RandomResizedCrop(size=32)(still), out)  # reproducible from torch's seed


def test_flip_probability(frames):
    assert torch.equal(RandomHorizontalFlip(p=1.0)(frames), hflip(frames))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(frames), frames)


def test_compose_eval_pipeline(frames):
    pipeline = Compose(transforms=[ResizeShortSide(size=40), CenterCrop(size=32), Normalize()])
    clip = pipeline(frames)
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32
