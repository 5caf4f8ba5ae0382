"""TSN frame sampling and crop boxes: determinism for a seed, coverage, short clips, multi-view layouts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from dymsta.data.sampling import (
    clip_offset,
    eval_crop_box,
    random_resized_crop_box,
    segment_indices,
    stable_seed,
)


@pytest.mark.parametrize(("n", "t"), [(300, 16), (17, 16), (16, 16), (5, 16), (1, 8), (1000, 1)])
def test_indices_shape_range_order(n, t):
    for mode in ("train", "eval"):
        idx = segment_indices(n, t, mode=mode, rng=np.random.default_rng(0))
        assert idx.shape == (t,) and idx.dtype == np.int64
        assert idx.min() >= 0 and idx.max() < n
        assert np.all(np.diff(idx) >= 0)


def test_eval_takes_segment_centres():
    np.testing.assert_array_equal(segment_indices(100, 4, mode="eval"), [12, 37, 62, 87])
    np.testing.assert_array_equal(segment_indices(100, 4, mode="eval", offset=0.0), [0, 25, 50, 75])


def test_one_frame_per_segment_in_train():
    n, t = 97, 8
    bounds = np.arange(t + 1) * n / t
    for seed in range(50):
        idx = segment_indices(n, t, mode="train", rng=np.random.default_rng(seed))
        assert np.all((idx >= np.floor(bounds[:-1])) & (idx < np.ceil(bounds[1:])))


def test_train_deterministic_for_a_seed_and_varies_across_seeds():
    a = segment_indices(500, 16, mode="train", rng=np.random.default_rng(3))
    b = segment_indices(500, 16, mode="train", rng=np.random.default_rng(3))
    c = segment_indices(500, 16, mode="train", rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_uses_torch_rng_without_rng():
    torch.manual_seed(7)
    a = segment_indices(500, 16, mode="train")
    torch.manual_seed(7)
    b = segment_indices(500, 16, mode="train")
    c = segment_indices(500, 16, mode="train")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


@pytest.mark.parametrize(("n", "t"), [(120, 16), (33, 8), (7, 16)])
def test_training_draws_cover_the_whole_clip(n, t):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        seen.update(segment_indices(n, t, mode="train", rng=rng).tolist())
    assert seen == set(range(n))


def test_multi_clip_views_cover_the_whole_clip():
    n, t, clips = 64, 8, 8
    seen = set()
    for c in range(clips):
        seen.update(segment_indices(n, t, mode="eval", offset=clip_offset(c, clips)).tolist())
    assert seen == set(range(n))


def test_short_clip_repeats_frames_in_order():
    idx = segment_indices(3, 8, mode="eval")
    assert sorted(set(idx.tolist())) == [0, 1, 2]
    assert np.all(np.diff(idx) >= 0)
    assert np.bincount(idx).min() >= 2  # each frame used about T/N times


def test_clip_offsets():
    assert clip_offset(0, 1) == 0.5
    assert [clip_offset(c, 4) for c in range(4)] == [0.125, 0.375, 0.625, 0.875]
    with pytest.raises(ValueError):
        clip_offset(4, 4)


def test_argument_errors():
    with pytest.raises(ValueError, match="num_frames"):
        segment_indices(0, 8)
    with pytest.raises(ValueError, match="num_segments"):
        segment_indices(8, 0)
    with pytest.raises(ValueError, match="mode"):
        segment_indices(8, 4, mode="test")
    with pytest.raises(ValueError, match="offset"):
        segment_indices(8, 4, offset=1.5)


def test_eval_crop_boxes():
    assert eval_crop_box(256, 341, 224) == (16, 58, 224, 224)
    three = [eval_crop_box(256, 341, 224, index=i, crops=3) for i in range(3)]
    assert three == [(16, 58, 224, 224), (16, 0, 224, 224), (16, 117, 224, 224)]
    portrait = [eval_crop_box(341, 256, 224, index=i, crops=3) for i in range(3)]
    assert portrait == [(58, 16, 224, 224), (0, 16, 224, 224), (117, 16, 224, 224)]
    five = {eval_crop_box(256, 300, 224, index=i, crops=5) for i in range(5)}
    assert five == {(16, 38, 224, 224), (0, 0, 224, 224), (0, 76, 224, 224), (32, 0, 224, 224), (32, 76, 224, 224)}
    assert eval_crop_box(100, 150, 224) == (0, 25, 100, 100)  # smaller than the crop: the largest centred square
    with pytest.raises(ValueError, match="crops"):
        eval_crop_box(256, 341, 224, crops=4)


def test_random_resized_crop_box_valid_and_seeded():
    h, w = 240, 320
    boxes = [random_resized_crop_box(h, w, scale=(0.3, 1.0), rng=np.random.default_rng(s)) for s in range(200)]
    for top, left, bh, bw in boxes:
        assert 0 <= top and 0 <= left and top + bh <= h and left + bw <= w
        assert 0.3 * h * w * 0.9 <= bh * bw <= h * w
        assert 3 / 4 * 0.95 <= bw / bh <= 4 / 3 * 1.05
    assert len(set(boxes)) > 150
    assert boxes[5] == random_resized_crop_box(h, w, scale=(0.3, 1.0), rng=np.random.default_rng(5))
    assert {b[1] for b in boxes} != {boxes[0][1]}  # positions vary


def test_random_resized_crop_box_falls_back_to_centre():
    # a 10:1 strip cannot hold a 3/4..4/3 box of >= 90% of its area: centre crop with the ratio clamped
    top, left, h, w = random_resized_crop_box(20, 200, scale=(0.9, 1.0), rng=np.random.default_rng(0))
    assert (h, w) == (20, 27) and top == 0 and left == (200 - 27) // 2


def test_stable_seed():
    assert stable_seed(0, "a/b.avi", 1) == stable_seed(0, "a/b.avi", 1)
    assert stable_seed(0, "a/b.avi", 1) != stable_seed(0, "a/b.avi", 2)
    # defined by SHA-256 of the joined parts: the same on every machine and Python run (unlike hash())
    expected = int.from_bytes(hashlib.sha256(b"0\x1fa/b.avi\x1f1").digest()[:8], "little")
    assert stable_seed(0, "a/b.avi", 1) == expected
