"""Tests for the synthetic temporal dataset generator: layout, decoding, determinism, pair statistics, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from dymsta.data import synth
from dymsta.data.synth import SYNTH_CLASSES, SYNTH_PAIRS, SynthConfigError, generate_synthetic, render_clip

TINY = dict(
    classes=["MoveLeft", "MoveRight", "SlowBounce", "FastBounce"],
    groups=3,
    clips_per_group=2,
    num_frames=16,
    size=64,
    test_groups=1,
)


def _decode(path: Path) -> np.ndarray:
    """All frames of ``path`` as uint8 (T, H, W, 3) RGB, decoded with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth_a"), seed=7, **TINY)


def test_layout_and_split_files(tiny: Path) -> None:
    lists = tiny / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text().splitlines() == [
        "1 MoveLeft",
        "2 MoveRight",
        "3 SlowBounce",
        "4 FastBounce",
    ]
    train = (lists / "trainlist01.txt").read_text().splitlines()
    test = (lists / "testlist01.txt").read_text().splitlines()
    assert len(train) == 4 * 2 * 2 and len(test) == 4 * 1 * 2
    assert "MoveRight/v_MoveRight_g02_c01.avi 2" in train
    assert "FastBounce/v_FastBounce_g01_c02.avi" in test
    assert all("_g01_" in line for line in test) and not any("_g01_" in line for line in train)
    listed = {line.split()[0] for line in train + test}
    on_disk = {str(p.relative_to(tiny / "UCF-101")) for p in (tiny / "UCF-101").rglob("*.avi")}
    assert listed == on_disk
    assert not [p for p in tiny.rglob(".*")], "temporary files left behind"
    meta = json.loads((tiny / "synth_meta.json").read_text())
    assert meta["seed"] == 7 and meta["classes"] == TINY["classes"]
    assert meta["pairs"] == [["MoveRight", "MoveLeft"], ["SlowBounce", "FastBounce"]]


def _yuv420(frames: np.ndarray) -> np.ndarray:
    """``frames`` (T, H, W, 3) through the RGB -> YUV 4:2:0 -> RGB conversion every such video goes through."""
    convert = lambda x: av.VideoFrame.from_ndarray(x, format="rgb24").reformat(format="yuv420p")  # noqa: E731
    return np.stack([convert(x).to_ndarray(format="rgb24") for x in frames]).astype(np.float32)


def test_files_decode_and_match_rendered_frames(tiny: Path) -> None:
    for name, partner in [("MoveLeft", "MoveRight"), ("SlowBounce", "FastBounce")]:
        path = tiny / "UCF-101" / name / f"v_{name}_g02_c01.avi"
        frames = _decode(path)
        assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
        with av.open(str(path)) as container:
            assert container.streams.video[0].average_rate == 25
        reference = _yuv420(render_clip(name, group=2, clip=1, seed=7, num_frames=16, size=64))
        error = np.abs(frames - reference).mean()
        assert error < 5, f"{name}: decoded frames differ from the rendered ones by {error:.1f} levels on average"
        # the motion survives compression: the partner (same frames in another order) is much further away
        other = _yuv420(render_clip(partner, group=2, clip=1, seed=7, num_frames=16, size=64))
        assert error < 0.7 * np.abs(frames - other).mean()


def test_same_seed_gives_identical_files_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", seed=7, **TINY)
    assert _hashes(again) == _hashes(tiny)
    other = generate_synthetic(
        tmp_path / "other", seed=8, progress=True, **{**TINY, "classes": ["MoveLeft"], "groups": 2}
    )
    clip = "MoveLeft/v_MoveLeft_g01_c01.avi"
    a, b = _decode(tiny / "UCF-101" / clip), _decode(other / "UCF-101" / clip)
    assert np.abs(a.astype(np.int16) - b).mean() > 5


def test_groups_share_appearance_clips_vary_motion() -> None:
    kw = dict(seed=3, num_frames=16, size=64)
    c1, c2 = render_clip("Grow", group=1, clip=1, **kw), render_clip("Grow", group=1, clip=2, **kw)
    other_group = render_clip("Grow", group=2, clip=1, **kw)
    median_bg = lambda f: np.median(f.astype(np.float32), axis=0)  # noqa: E731  (T, H, W, C) -> (H, W, C)
    same_group = np.abs(median_bg(c1) - median_bg(c2)).mean()
    across = np.abs(median_bg(c1) - median_bg(other_group)).mean()
    assert same_group < 0.5 * across
    assert not np.array_equal(c1, c2)


@pytest.mark.parametrize("forward,partner", SYNTH_PAIRS[:3])
def test_reversal_pairs_are_the_same_frames_backwards(forward: str, partner: str) -> None:
    for group, clip in [(1, 1), (2, 3)]:
        a = render_clip(forward, group=group, clip=clip, seed=5, num_frames=16, size=64)
        b = render_clip(partner, group=group, clip=clip, seed=5, num_frames=16, size=64)
        assert np.array_equal(a[::-1], b)
        assert not np.array_equal(a, b), "a reversed clip must differ from the forward one"
        # so a time-average of any per-frame feature is identical: frame averaging is at chance inside the pair
        assert np.array_equal(a.astype(np.int64).sum(0), b.astype(np.int64).sum(0))


def _changed_fraction(frames: np.ndarray) -> float:
    """Fraction of pixels that change by more than 40 levels between consecutive frames (noise stays below)."""
    return float((np.abs(np.diff(frames.astype(np.float32), axis=0)) > 40).mean())


@pytest.mark.parametrize("num_frames", [16, 32, 30])
def test_speed_pair_same_time_average_different_speed(num_frames: int) -> None:
    # 30 frames share the factor 3 with the fast cycle count: positions are then only nearly the same
    tolerance = 0.05 if np.gcd(synth.fast_cycles(num_frames), num_frames) == 1 else 0.25
    for group, clip in [(1, 1), (2, 2), (3, 1)]:
        kw = dict(group=group, clip=clip, seed=11, num_frames=num_frames, size=64)
        slow = render_clip("SlowBounce", **kw).astype(np.float32)
        fast = render_clip("FastBounce", **kw).astype(np.float32)
        pair_gap = np.abs(slow.mean(0) - fast.mean(0)).mean()
        # the same statistic between the two halves of the slow clip: how much the target's path shows in a mean
        half = num_frames // 2
        path_gap = np.abs(slow[:half].mean(0) - slow[half:].mean(0)).mean()
        assert pair_gap < tolerance * path_gap, f"g{group} c{clip}: time averages differ ({pair_gap} vs {path_gap})"
        assert _changed_fraction(fast) > 1.2 * _changed_fraction(slow)


def test_bounce_tracks_visit_the_same_positions_at_different_speeds() -> None:
    for key in range(10):
        k = synth.fast_cycles(32)
        slow = synth._forward_track(np.random.default_rng(key), 3, 32, 112, 15.0, cycles=1)
        fast = synth._forward_track(np.random.default_rng(key), 3, 32, 112, 15.0, cycles=k)
        np.testing.assert_allclose(np.sort(slow.cx), np.sort(fast.cx), atol=1e-3)
        np.testing.assert_allclose(np.sort(slow.cy), np.sort(fast.cy), atol=1e-3)
        step = lambda tr: np.hypot(np.diff(tr.cx), np.diff(tr.cy)).mean()  # noqa: E731  pixels per frame
        assert step(fast) > 0.7 * k * step(slow)
        assert slow.cx.min() > 15 and slow.cx.max() < 112 - 15 and slow.cy.min() > 15 and slow.cy.max() < 112 - 15


def test_fast_cycles_coprime_with_frames() -> None:
    for t in range(8, 80):
        k = synth.fast_cycles(t)
        assert k >= 2 and t // k >= 4
    assert synth.fast_cycles(32) == 3 and synth.fast_cycles(16) == 3


def test_forward_motion_has_the_named_direction() -> None:
    for key in range(20):
        move, grow, turn = (synth._forward_track(np.random.default_rng(key), p, 16, 112, 15.0) for p in range(3))
        assert move.cx[-1] - move.cx[0] > 0.3 * 112 and abs(move.cy[-1] - move.cy[0]) < move.cx[-1] - move.cx[0]
        assert np.all(np.diff(grow.scale) > 0)
        assert np.all(np.diff(turn.angle) > 0)  # image y points down: a growing angle turns clockwise on screen
        for track in (move, grow, turn):
            assert track.cx.min() > 15 and track.cx.max() < 112 - 15


def test_all_classes_render_distinct_uint8_clips() -> None:
    assert len(SYNTH_CLASSES) == 8 and {n for p in SYNTH_PAIRS for n in p} == set(SYNTH_CLASSES)
    for group in range(1, 41):  # many random draws: every parameter range must stay valid
        for name in SYNTH_CLASSES:
            frames = render_clip(name, group=group, clip=group % 5 + 1, seed=group // 7, num_frames=8, size=32)
            assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8, name
            assert frames.std() > 5, f"{name} g{group} looks blank"


@pytest.mark.skipif("libx264" not in av.codecs_available, reason="this PyAV build has no libx264")
def test_libx264_files_decode_deterministically(tmp_path: Path) -> None:
    kw = dict(classes=["RotateCW"], groups=2, clips_per_group=1, num_frames=8, size=32, test_groups=1, codec="libx264")
    a, b = generate_synthetic(tmp_path / "a", **kw), generate_synthetic(tmp_path / "b", **kw)
    assert _hashes(a) == _hashes(b)
    frames = _decode(a / "UCF-101/RotateCW/v_RotateCW_g02_c01.avi")
    reference = _yuv420(render_clip("RotateCW", group=2, clip=1, num_frames=8, size=32))
    assert frames.shape == (8, 32, 32, 3) and np.abs(frames - reference).mean() < 5


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(classes=["MoveLeft", "Jump"]), "classes"),
        (dict(classes="MoveLeft"), "classes"),
        (dict(classes=["Grow", "Grow"]), "classes"),
        (dict(classes=[]), "classes"),
        (dict(groups=3, test_groups=3), "test_groups"),
        (dict(test_groups=-1), "test_groups"),
        (dict(groups=0), "groups"),
        (dict(clips_per_group=0), "clips_per_group"),
        (dict(num_frames=4), "num_frames"),
        (dict(size=63), "size"),
        (dict(size=16), "size"),
        (dict(fps=0), "fps"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(codec="h265"), "codec"),
    ],
)
def test_bad_arguments_raise_a_clear_error(tmp_path: Path, kwargs: dict, argument: str) -> None:
    with pytest.raises(SynthConfigError, match=f"^{argument}:") as info:
        generate_synthetic(tmp_path / "out", **kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists(), "nothing may be written before the arguments are checked"


def test_render_clip_rejects_bad_arguments() -> None:
    with pytest.raises(SynthConfigError, match="classes: unknown synthetic class 'Wave'"):
        render_clip("Wave")
    with pytest.raises(SynthConfigError, match="^group:"):
        render_clip("Grow", group=0)
    with pytest.raises(SynthConfigError, match="^num_frames:"):
        render_clip("Grow", num_frames=3)


def test_mpeg4_quantiser_is_fixed_and_fine(tiny: Path, tmp_path: Path) -> None:
    """The AVI holds MPEG-4 Part 2 at quantiser 2: far more bits than the encoder's default rate control."""
    path = tiny / "UCF-101/MoveRight/v_MoveRight_g02_c01.avi"
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    frames = render_clip("MoveRight", group=2, clip=1, seed=7, num_frames=16, size=64)
    synth._encode(frames, tmp_path / "again.avi", fps=25, codec="mpeg4")
    assert (tmp_path / "again.avi").read_bytes() == path.read_bytes()
    with av.open(str(tmp_path / "default.avi"), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    assert path.stat().st_size > 2 * (tmp_path / "default.avi").stat().st_size
