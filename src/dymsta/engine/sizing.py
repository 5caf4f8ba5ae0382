"""The feature cache's size and build time, before anything is built, and the free-space check (issue 19).

    plan = plan_cache(parts, shapes, dtype="float16", seconds_per_row=0.17, cache_dir="runs/cache")
    print(format_plan(plan))          # videos, clip-views, size per clip-view, total, estimated build time
    check_free_space(plan)            # CacheSpaceError (one line, both numbers) when the disk is too small

A cache holds, per clip-view (a video's augmented view, or one test clip x crop) and stream, the backbone's
features of shape ``(C, T, h, w)`` (:mod:`dymsta.engine.cache`) in ``cache.dtype``; uint8 rows add their
per-channel scales (``C x 2`` float32). ``parts`` are the caches a run needs: ``(name, videos, views, built)``,
``built`` meaning that cache already holds every stream (it costs nothing more). The build time is estimated from
``seconds_per_row``, the backbone's time for one clip-view of every stream measured on this machine just before
(:func:`measure_seconds_per_row`); decoding runs in worker processes beside it and is not counted, so on a
machine whose cores are all taken by decoding the build takes longer.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "CachePart",
    "CachePlan",
    "CacheSpaceError",
    "check_free_space",
    "format_bytes",
    "format_plan",
    "measure_seconds_per_row",
    "plan_cache",
    "row_bytes",
]


class CacheSpaceError(RuntimeError):
    """The disk holding ``cache.dir`` has less free space than the cache needs (one line, both numbers)."""


@dataclass(frozen=True)
class CachePart:
    """One cache of a run: ``videos`` x ``views`` clip-views; ``built``: already complete on disk."""

    name: str
    videos: int
    views: int
    built: bool = False

    @property
    def rows(self) -> int:
        return self.videos * self.views


@dataclass
class CachePlan:
    """What a run's caches take: per part and in all, bytes and estimated seconds of what is still to build."""

    parts: list[CachePart]
    row_shapes: dict[str, tuple[int, ...]]  # stream -> (C, T, h, w)
    dtype: str
    seconds_per_row: float
    cache_dir: Path
    bytes_per_row: int = field(init=False)

    def __post_init__(self) -> None:
        self.bytes_per_row = sum(row_bytes(shape, self.dtype) for shape in self.row_shapes.values())

    @property
    def total_bytes(self) -> int:
        return sum(p.rows for p in self.parts) * self.bytes_per_row

    @property
    def missing_bytes(self) -> int:
        return sum(p.rows for p in self.parts if not p.built) * self.bytes_per_row

    @property
    def missing_seconds(self) -> float:
        return sum(p.rows for p in self.parts if not p.built) * self.seconds_per_row


def row_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of one cached row of ``shape`` in ``dtype`` (uint8: with its ``C x 2`` float32 scales)."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    return size + (shape[0] * 2 * 4 if dtype == "uint8" else 0)


def plan_cache(
    parts: Sequence[CachePart],
    row_shapes: dict[str, tuple[int, ...]],
    *,
    dtype: str,
    seconds_per_row: float,
    cache_dir: str | Path,
) -> CachePlan:
    return CachePlan(list(parts), dict(row_shapes), dtype, seconds_per_row, Path(cache_dir))


def measure_seconds_per_row(run_backbone: Callable[[int], object], *, rows: int = 4, repeats: int = 2) -> float:
    """Seconds per clip-view of ``run_backbone(rows)`` (the backbone on ``rows`` clip-views of every stream): the
    fastest of ``repeats`` calls after a warm-up one."""
    run_backbone(1)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run_backbone(rows)
        best = min(best, time.perf_counter() - start)
    return best / rows


def format_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.{1 if n < 10 * scale else 0}f} {unit}"
    return f"{n:.0f} B"


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def format_plan(plan: CachePlan) -> str:
    """The plan as a table: one line per cache and a total."""
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in plan.row_shapes.items())
    lines = [
        f"feature cache in {plan.cache_dir}: {format_bytes(plan.bytes_per_row)} per clip-view ({shapes}, {plan.dtype})",
        f"{'cache':<16} {'videos':>9} {'views':>5} {'clip-views':>11} {'size':>10} {'build':>9}",
    ]
    for p in plan.parts:
        size = p.rows * plan.bytes_per_row
        build = "built" if p.built else format_duration(p.rows * plan.seconds_per_row)
        lines.append(f"{p.name:<16} {p.videos:>9,} {p.views:>5} {p.rows:>11,} {format_bytes(size):>10} {build:>9}")
    lines.append(
        f"{'total':<16} {sum(p.videos for p in plan.parts):>9,} {'':>5} {sum(p.rows for p in plan.parts):>11,} "
        f"{format_bytes(plan.total_bytes):>10} {format_duration(plan.missing_seconds):>9}"
    )
    return "\n".join(lines)


def check_free_space(plan: CachePlan) -> None:
    """Raise :class:`CacheSpaceError` when the disk under ``plan.cache_dir`` cannot take what is left to build."""
    need = plan.missing_bytes
    if need == 0:
        return
    folder = plan.cache_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise CacheSpaceError(
            f"cache.dir={plan.cache_dir}: the feature cache needs {format_bytes(need)} (about "
            f"{format_duration(plan.missing_seconds)} to build) but the disk has {format_bytes(free)} free; "
            "choose a smaller layout (cache.dtype=uint8, fewer cache.train_views), another cache.dir, or "
            "cache.check_space=false"
        )
