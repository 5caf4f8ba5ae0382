"""Synthetic temporal action dataset: real encoded videos in the UCF101 layout that need temporal reasoning.

Eight classes form four pairs. Within a pair both classes show the same object, background, distractors and
noise; they differ only in the direction of time or in speed:

- ``MoveRight`` / ``MoveLeft``: the object slides along a near-horizontal line; ``MoveLeft`` is ``MoveRight``
  played backwards.
- ``Grow`` / ``Shrink``: the object scales up; ``Shrink`` is ``Grow`` played backwards.
- ``RotateCW`` / ``RotateCCW``: the object (with an off-centre colour cap so every shape shows its orientation)
  turns clockwise on screen; ``RotateCCW`` is ``RotateCW`` played backwards.
- ``SlowBounce`` / ``FastBounce``: the object oscillates (triangle wave) over the same segment, one cycle per clip
  versus ``k`` cycles (``k = 3`` unless that shares a factor with the frame count). When ``gcd(k, T) == 1`` the
  fast clip visits exactly the same ``T`` positions as the slow one, only in another order.

So the multiset of frames of the two classes of a pair is identical (time-reversal pairs) or nearly so (speed
pair): a model that averages per-frame features over time sits at chance inside each pair, and can at best tell
the four pairs apart (50 % accuracy on the eight classes).

A group ``gXX`` (per pair) fixes the appearance: textured background, object shape and colours, distractor
shapes and colours, noise level. Clips ``cYY`` of a group vary the motion: path, speed, phase, distractor
trajectories and per-frame noise. Everything derives from ``numpy.random.default_rng`` seeded by
``(seed, pair, group[, clip])``, and frames are encoded single-threaded, so a seed gives byte-identical files on
one machine (numpy's SIMD maths may round differently on another CPU).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from dymsta.utils import atomic_path, atomic_write_json, atomic_write_text, get_logger

__all__ = [
    "SYNTH_CLASSES",
    "SYNTH_PAIRS",
    "SynthConfigError",
    "generate_synthetic",
    "render_clip",
    "fast_cycles",
]

log = get_logger(__name__)

# (forward class, its partner). Time-reversal pairs: partner = forward played backwards. Speed pair: same path.
SYNTH_PAIRS: tuple[tuple[str, str], ...] = (
    ("MoveRight", "MoveLeft"),
    ("Grow", "Shrink"),
    ("RotateCW", "RotateCCW"),
    ("SlowBounce", "FastBounce"),
)
# Class order of classInd.txt: pairs adjacent, so a confusion matrix shows them as 2x2 blocks.
SYNTH_CLASSES: tuple[str, ...] = (
    "MoveLeft",
    "MoveRight",
    "Grow",
    "Shrink",
    "RotateCW",
    "RotateCCW",
    "FastBounce",
    "SlowBounce",
)
_PAIR_INDEX: dict[str, int] = {name: i for i, pair in enumerate(SYNTH_PAIRS) for name in pair}
_CODECS = ("mpeg4", "libx264")
_SHAPES = ("circle", "square", "triangle", "ring", "diamond", "cross")
_TEXTURES = ("noise", "stripes", "checkers", "gradient")
_FAST_CYCLE_CANDIDATES = (3, 4, 5, 2)
_MPEG4_QSCALE = 2


class SynthConfigError(ValueError):
    """A bad argument to the synthetic generator; the message names the argument."""


# ----------------------------------------------------------------------------------------------- appearance


@dataclass(frozen=True)
class _Sprite:
    """Appearance of one object: shape, colours (RGB in [0, 1]) and radius in pixels."""

    shape: str
    color: np.ndarray  # (3,)
    cap_color: np.ndarray  # (3,) colour of the off-centre cap that makes orientation visible
    radius: float


@dataclass(frozen=True)
class _Look:
    """Appearance shared by every clip of one (pair, group)."""

    background: np.ndarray  # (H, W, 3) float32 in [0, 1]
    target: _Sprite
    distractors: tuple[_Sprite, ...]
    noise_sigma: float  # per-frame luminance noise, in uint8 levels


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: x (1, W) and y (H, 1), float32."""
    ax = np.arange(size, dtype=np.float32) + 0.5
    return ax[None, :], ax[:, None]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid in [0, 1], shape (H, W)."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    f = pos - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]  # (H, cells+1)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]  # (H, W)


def _texture_field(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A scalar pattern in [0, 1], shape (H, W)."""
    x, y = _grid(size)
    theta = rng.uniform(0, math.pi)
    along = x * math.cos(theta) + y * math.sin(theta)  # (H, W)
    if kind == "stripes":
        period = rng.uniform(0.08, 0.25) * size
        return 0.5 + 0.5 * np.tanh(3 * np.sin(2 * math.pi * along / period + rng.uniform(0, 2 * math.pi)))
    if kind == "checkers":
        across = -x * math.sin(theta) + y * math.cos(theta)
        cell = rng.uniform(0.08, 0.2) * size
        return ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    if kind == "gradient":
        return (along - along.min()) / (along.max() - along.min()) * 0.7 + 0.3 * _smooth_noise(rng, size, 6)
    return _smooth_noise(rng, size, int(rng.integers(3, 9)))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background, (H, W, 3) float32 in [0, 1], with two muted random colours."""
    kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    field = _texture_field(rng, kind, size)[..., None]  # (H, W, 1)
    base = rng.uniform(0.15, 0.85, 3)
    other = np.clip(base + rng.uniform(-0.3, 0.3, 3), 0, 1)
    grain = 0.04 * (rng.random((size, size, 1), dtype=np.float32) - 0.5)  # static fine texture
    return np.clip(base * (1 - field) + other * field + grain, 0, 1).astype(np.float32)


def _contrasting_color(rng: np.random.Generator, against: np.ndarray, min_dist: float = 0.45) -> np.ndarray:
    """A saturated colour at least ``min_dist`` (Euclidean, RGB in [0, 1]) away from ``against``."""
    best, best_dist = None, -1.0
    for _ in range(32):
        c = rng.random(3)
        c[int(rng.integers(3))] = rng.choice([0.05, 0.95])  # push one channel to an extreme: saturated colours
        dist = float(np.linalg.norm(c - against))
        if dist >= min_dist:
            return c.astype(np.float32)
        if dist > best_dist:
            best, best_dist = c, dist
    return best.astype(np.float32)


def _sprite(rng: np.random.Generator, against: np.ndarray, radius: float) -> _Sprite:
    shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
    color = _contrasting_color(rng, against)
    cap = _contrasting_color(rng, color, min_dist=0.5)
    return _Sprite(shape=shape, color=color, cap_color=cap, radius=radius)


def _look(seed: int, pair: int, group: int, size: int) -> _Look:
    rng = _rng(seed, pair, group, 0)
    background = _background(rng, size)
    mean = background.reshape(-1, 3).mean(0)
    target = _sprite(rng, mean, radius=rng.uniform(0.11, 0.17) * size)
    count = int(rng.integers(1, 3))
    distractors = tuple(_sprite(rng, mean, radius=rng.uniform(0.04, 0.07) * size) for _ in range(count))
    return _Look(background=background, target=target, distractors=distractors, noise_sigma=rng.uniform(1.5, 5.0))


# ----------------------------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class _Track:
    """Per-frame state of one object: centre (pixels), radius scale and orientation (radians); each (T,)."""

    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray


def _triangle(phase: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1, in [0, 1]: 0 at phase 0, 1 at phase 0.5."""
    return 1 - np.abs(2 * (phase % 1.0) - 1)


def fast_cycles(num_frames: int) -> int:
    """Cycles per clip of ``FastBounce`` (``SlowBounce`` makes one).

    The first of 3, 4, 5, 2 that is coprime with ``num_frames`` and leaves at least 4 frames per cycle, else
    ``min(3, num_frames // 4)`` (at least 2). Coprime means the fast clip visits exactly the slow clip's
    positions, in another order; otherwise it visits every ``gcd``-th of them, nearly the same distribution.
    """
    for k in _FAST_CYCLE_CANDIDATES:
        if math.gcd(k, num_frames) == 1 and num_frames // k >= 4:
            return k
    return max(2, min(3, num_frames // 4))


def _forward_track(
    rng: np.random.Generator, pair: int, num_frames: int, size: int, radius: float, cycles: int = 1
) -> _Track:
    """The target's motion for the pair's forward class (MoveRight, Grow, RotateCW; bounce with ``cycles``).

    Both classes of a pair consume the same random draws, so they share every parameter.
    """
    t = np.linspace(0, 1, num_frames, dtype=np.float32)  # (T,)
    margin = radius * 1.6
    lo, hi = margin, size - margin
    cx0, cy0 = rng.uniform(lo, hi), rng.uniform(lo, hi)
    wobble = rng.uniform(-0.03, 0.03, 2) * size * np.sin(2 * math.pi * (t[:, None] + rng.random(2)))  # (T, 2)
    angle0 = rng.uniform(0, 2 * math.pi)
    ones = np.ones_like(t)
    if pair == 0:  # MoveRight: a near-horizontal segment, left to right
        heading = rng.uniform(-0.35, 0.35)
        length = rng.uniform(0.35, 0.6) * size
        dx = min(length * math.cos(heading), 0.98 * (hi - lo))
        dy = float(np.clip(dx * math.tan(heading), -0.98 * (hi - lo), 0.98 * (hi - lo)))
        x0 = rng.uniform(lo, hi - dx)
        y0 = rng.uniform(lo + max(0.0, -dy), hi - max(0.0, dy))
        return _Track(cx=x0 + dx * t, cy=y0 + dy * t + wobble[:, 1], scale=ones, angle=angle0 * ones)
    if pair == 1:  # Grow
        s0, s1 = rng.uniform(0.35, 0.6), rng.uniform(1.15, 1.5)
        return _Track(cx=cx0 + wobble[:, 0], cy=cy0 + wobble[:, 1], scale=s0 + (s1 - s0) * t, angle=angle0 * ones)
    if pair == 2:  # RotateCW: angle grows; with y pointing down that turns clockwise on screen
        turns = rng.uniform(0.5, 1.0)
        return _Track(cx=cx0 + wobble[:, 0], cy=cy0 + wobble[:, 1], scale=ones, angle=angle0 + 2 * math.pi * turns * t)
    # Bounce: `cycles` triangle-wave cycles along a segment of random direction (phases i / T, not i / (T - 1))
    heading, half = rng.uniform(0, math.pi), rng.uniform(0.2, 0.32) * size
    ux, uy = math.cos(heading), math.sin(heading)
    half = min(half, (hi - lo) / 2 / max(abs(ux), abs(uy)))
    mx = rng.uniform(lo + half * abs(ux), hi - half * abs(ux))
    my = rng.uniform(lo + half * abs(uy), hi - half * abs(uy))
    phase = rng.random() + cycles * np.arange(num_frames, dtype=np.float32) / num_frames  # (T,)
    offset = (2 * _triangle(phase) - 1) * half  # (T,) in [-half, half]
    return _Track(cx=mx + offset * ux, cy=my + offset * uy, scale=ones, angle=angle0 * ones)


def _distractor_track(rng: np.random.Generator, num_frames: int, size: int, radius: float) -> _Track:
    """Straight motion at a random velocity, reflected off the frame borders."""
    t = np.arange(num_frames, dtype=np.float32)  # (T,)
    span = size - 2 * radius
    start = rng.random(2) * span
    speed = rng.uniform(0.5, 3.0) * size / 112  # pixels per frame
    heading = rng.uniform(0, 2 * math.pi)
    pos = start[None, :] + speed * t[:, None] * np.array([math.cos(heading), math.sin(heading)])  # (T, 2)
    pos = radius + span * _triangle(pos / (2 * span))  # reflect into [radius, size - radius]
    spin = rng.uniform(-0.1, 0.1) * t + rng.uniform(0, 2 * math.pi)
    return _Track(cx=pos[:, 0], cy=pos[:, 1], scale=np.ones_like(t), angle=spin)


# ----------------------------------------------------------------------------------------------- drawing


def _shape_depth(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed depth inside a unit shape at object coordinates (u, v): > 0 inside, in radius units."""
    if shape == "square":
        return 0.85 - np.maximum(np.abs(u), np.abs(v))
    if shape == "diamond":
        return (1.1 - (np.abs(u) + np.abs(v))) * 0.7071
    if shape == "triangle":  # circumradius 1, one vertex along +u
        faces = [u * math.cos(a) + v * math.sin(a) for a in (math.pi, math.pi / 3, -math.pi / 3)]
        return 0.5 - np.maximum(np.maximum(faces[0], faces[1]), faces[2])
    r = np.sqrt(u * u + v * v)
    if shape == "ring":
        return 0.3 - np.abs(r - 0.7)
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return np.maximum(np.minimum(0.33 - au, 1 - av_), np.minimum(0.33 - av_, 1 - au))
    return 1 - r


def _paint(frames: np.ndarray, sprite: _Sprite, track: _Track, x: np.ndarray, y: np.ndarray) -> None:
    """Alpha-blend ``sprite`` along ``track`` into ``frames`` (T, H, W, 3) float32, in place.

    Only the bounding box of the whole track is touched. Edges are anti-aliased over one pixel.
    """
    radius = sprite.radius * track.scale  # (T,)
    reach = float(radius.max()) * 1.05 + 1
    x_lo, x_hi = _span(track.cx, reach, x.shape[1])
    y_lo, y_hi = _span(track.cy, reach, y.shape[0])
    if x_lo >= x_hi or y_lo >= y_hi:
        return
    r = radius[:, None, None]  # (T, 1, 1)
    dx = (x[:, x_lo:x_hi] - track.cx[:, None, None]) / r  # (T, 1, w)
    dy = (y[y_lo:y_hi] - track.cy[:, None, None]) / r  # (T, h, 1)
    cos, sin = np.cos(track.angle)[:, None, None], np.sin(track.angle)[:, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # (T, h, w) rotated into the object frame
    alpha = np.clip(_shape_depth(sprite.shape, u, v) * r + 0.5, 0, 1)[..., None]  # (T, h, w, 1)
    cap = np.clip((u - 0.35) * r + 0.5, 0, 1)[..., None]  # (T, h, w, 1): 1 on the +u side
    color = sprite.color + cap * (sprite.cap_color - sprite.color)  # (T, h, w, 3)
    region = frames[:, y_lo:y_hi, x_lo:x_hi]
    region += alpha * (color - region)


def _span(center: np.ndarray, reach: float, size: int) -> tuple[int, int]:
    return max(0, int(math.floor(center.min() - reach))), min(size, int(math.ceil(center.max() + reach)))


def render_clip(
    class_name: str, *, group: int = 1, clip: int = 1, seed: int = 0, num_frames: int = 32, size: int = 112
) -> np.ndarray:
    """Render one synthetic clip (before encoding).

    Args:
        class_name: one of :data:`SYNTH_CLASSES`.
        group: 1-based group index; fixes background and object appearance (shared by the pair's two classes).
        clip: 1-based clip index inside the group; fixes the motion.
        seed: dataset seed.
        num_frames: frames T.
        size: frame height = width in pixels.

    Returns:
        uint8 array (T, H, W, 3), RGB.

    Raises:
        SynthConfigError: an unknown class or an out-of-range argument.
    """
    _check_class(class_name)
    _check_int("group", group, 1)
    _check_int("clip", clip, 1)
    _check_int("seed", seed, 0)
    _check_int("num_frames", num_frames, 8, 10_000)
    _check_int("size", size, 32, 4096)
    pair = _PAIR_INDEX[class_name]
    look = _look(seed, pair, group, size)
    rng = _rng(seed, pair, group, clip, 1)
    frames = _draw(look, rng, pair, class_name, num_frames, size)
    if class_name == SYNTH_PAIRS[pair][1] and pair < 3:  # time-reversed partner
        frames = frames[::-1]
    return np.ascontiguousarray(frames)


def _draw(look: _Look, rng: np.random.Generator, pair: int, name: str, num_frames: int, size: int) -> np.ndarray:
    """Compose background, distractors (behind), target and noise: uint8 (T, H, W, 3)."""
    x, y = _grid(size)
    cycles = fast_cycles(num_frames) if name == "FastBounce" else 1
    track = _forward_track(rng, pair, num_frames, size, look.target.radius, cycles)
    d_tracks = [_distractor_track(rng, num_frames, size, d.radius) for d in look.distractors]
    frames = np.repeat(look.background[None], num_frames, axis=0)  # (T, H, W, 3)
    for sprite, d_track in zip(look.distractors, d_tracks, strict=True):
        _paint(frames, sprite, d_track, x, y)
    _paint(frames, look.target, track, x, y)
    noise = rng.standard_normal((num_frames, size, size, 1), dtype=np.float32)  # (T, H, W, 1) luminance noise
    noise *= look.noise_sigma / 255
    frames += noise
    np.clip(frames, 0, 1, out=frames)
    frames *= 255
    frames += 0.5
    return frames.astype(np.uint8)


# ----------------------------------------------------------------------------------------------- encoding


def _encode(frames: np.ndarray, path: Path, *, fps: int, codec: str) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames into an AVI at ``path``, single-threaded (deterministic)."""
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.thread_count = 1
        ctx.max_b_frames = 0
        if codec == "mpeg4":
            # a fixed quantiser of 2, like ffmpeg -q:v 2, so motion survives compression. With the qscale flag the
            # encoder reads each frame's quality (0 from PyAV) and clips it to [qmin, qmax]: pin both.
            ctx.qscale = True
            ctx.global_quality = _MPEG4_QSCALE * 118  # FF_QP2LAMBDA = 118
            ctx.qmin = ctx.qmax = _MPEG4_QSCALE
            ctx.gop_size = 12
        else:
            stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "threads=1"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


# ----------------------------------------------------------------------------------------------- dataset


def _check_class(name: str) -> None:
    if name not in _PAIR_INDEX:
        raise SynthConfigError(f"classes: unknown synthetic class {name!r}; choose from {', '.join(SYNTH_CLASSES)}")


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SynthConfigError(f"{name}: expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise SynthConfigError(f"{name}: must be {bound}, got {value}")
    return int(value)


def _validate(
    classes: Sequence[str] | None,
    groups: int,
    clips_per_group: int,
    num_frames: int,
    size: int,
    fps: int,
    test_groups: int,
    seed: int,
    codec: str,
) -> tuple[str, ...]:
    names = SYNTH_CLASSES if classes is None else tuple(classes)
    if isinstance(classes, str) or not names:
        raise SynthConfigError(f"classes: expected a non-empty list of class names, got {classes!r}")
    for name in names:
        _check_class(name)
    if len(set(names)) != len(names):
        raise SynthConfigError(f"classes: duplicate class names in {list(names)}")
    _check_int("groups", groups, 1, 999)
    _check_int("clips_per_group", clips_per_group, 1, 999)
    _check_int("num_frames", num_frames, 8, 10_000)
    _check_int("size", size, 32, 4096)
    if size % 2:
        raise SynthConfigError(f"size: must be even (yuv420p video), got {size}")
    _check_int("fps", fps, 1, 240)
    _check_int("test_groups", test_groups, 0)
    if test_groups >= groups:
        raise SynthConfigError(f"test_groups: must be < groups ({groups}) so training keeps a group, got {test_groups}")
    _check_int("seed", seed, 0)
    if codec not in _CODECS:
        raise SynthConfigError(f"codec: must be one of {', '.join(_CODECS)}, got {codec!r}")
    if codec not in av.codecs_available:
        raise SynthConfigError(f"codec: {codec!r} is not available in this PyAV build")
    return names


def _clip_name(name: str, group: int, clip: int) -> str:
    return f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"


def _iterate(names: Sequence[str], groups: int, clips: int) -> list[tuple[str, int, int]]:
    return [(n, g, c) for n in names for g in range(1, groups + 1) for c in range(1, clips + 1)]


def _progress(items: list, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="synth", unit="clip")


def generate_synthetic(
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    groups: int = 10,
    clips_per_group: int = 4,
    num_frames: int = 32,
    size: int = 112,
    fps: int = 25,
    test_groups: int = 3,
    seed: int = 0,
    codec: str = "mpeg4",
    progress: bool = False,
) -> Path:
    """Write a synthetic temporal action dataset in the UCF101 layout.

    Files (each written atomically: temp file + rename)::

        out_dir/UCF-101/<Class>/v_<Class>_gXX_cYY.avi        AVI, ``codec``, size x size, num_frames frames
        out_dir/ucfTrainTestlist/classInd.txt                "<1-based idx> <Class>"
        out_dir/ucfTrainTestlist/trainlist01.txt             "<Class>/v_...avi <1-based idx>", groups > test_groups
        out_dir/ucfTrainTestlist/testlist01.txt              "<Class>/v_...avi", groups 1..test_groups
        out_dir/synth_meta.json                              settings and class pairs; written last, so it marks a
                                                             complete set

    Args:
        out_dir: output folder (created if missing; existing files of the same names are replaced).
        classes: subset of :data:`SYNTH_CLASSES` (default all), in classInd order.
        groups: groups per class; a group shares background and object appearance.
        clips_per_group: clips per group; they vary the motion.
        num_frames: frames per clip (>= 8).
        size: frame height and width in pixels (even, >= 32).
        fps: frame rate written in the files.
        test_groups: groups ``g01..g{test_groups}`` go to the test list, the rest to the train list.
        seed: dataset seed; the same seed gives the same files.
        codec: ``"mpeg4"`` (fixed quantiser 2, like UCF101's MPEG-4 Part 2) or ``"libx264"`` (CRF 18).
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        SynthConfigError: a bad argument (a ValueError naming it).
    """
    names = _validate(classes, groups, clips_per_group, num_frames, size, fps, test_groups, seed, codec)
    out = Path(out_dir)
    video_root = out / "UCF-101"
    items = _iterate(names, groups, clips_per_group)
    for name, group, clip in _progress(items, progress):
        frames = render_clip(name, group=group, clip=clip, seed=seed, num_frames=num_frames, size=size)
        target = video_root / _clip_name(name, group, clip)
        with atomic_path(target) as tmp:
            _encode(frames, tmp, fps=fps, codec=codec)
    _write_lists(out / "ucfTrainTestlist", names, items, test_groups)
    settings = dict(classes=list(names), groups=groups, clips_per_group=clips_per_group, num_frames=num_frames)
    settings.update(size=size, fps=fps, test_groups=test_groups, seed=seed, codec=codec)
    pairs = [list(p) for p in SYNTH_PAIRS if p[0] in names or p[1] in names]
    atomic_write_json(out / "synth_meta.json", {"generator": "dymsta.data.synth", **settings, "pairs": pairs})
    log.info("wrote %d synthetic clips (%d classes) to %s", len(items), len(names), video_root)
    return out


def _write_lists(list_dir: Path, names: Sequence[str], items: list[tuple[str, int, int]], test_groups: int) -> None:
    index = {name: i + 1 for i, name in enumerate(names)}
    train = [f"{_clip_name(n, g, c)} {index[n]}\n" for n, g, c in items if g > test_groups]
    test = [f"{_clip_name(n, g, c)}\n" for n, g, c in items if g <= test_groups]
    atomic_write_text(list_dir / "classInd.txt", "".join(f"{index[n]} {n}\n" for n in names))
    atomic_write_text(list_dir / "trainlist01.txt", "".join(train))
    atomic_write_text(list_dir / "testlist01.txt", "".join(test))
