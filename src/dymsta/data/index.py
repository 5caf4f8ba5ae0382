"""The video index: per-file metadata probed once, in parallel, and cached as JSON beside the run.

A cache entry is keyed by absolute path and remembers the file's size and modification time; a file whose size or
mtime changed is probed again, a file that disappeared is reported missing, and files found broken are remembered
too (so a long list of bad files is not re-probed every run, until they change). On a warm cache, indexing
13,000 videos costs 13,000 ``stat`` calls.

Cache file layout (``index.json``)::

    {"version": 1, "files": {"/abs/path.avi": {"size": 123, "mtime_ns": 456,
                                               "info": {"num_frames": 164, "fps": 25.0, "width": 320, ...}}
                                               or "error": "zero decodable frames"}}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from dymsta.data.decode import VideoDecodeError, VideoInfo, probe_video
from dymsta.utils import atomic_write_json, get_logger

__all__ = ["INDEX_VERSION", "VideoRecord", "default_workers", "scan_videos"]

log = get_logger(__name__)

INDEX_VERSION = 1
_INFO_FIELDS = {f.name for f in fields(VideoInfo)} - {"path"}


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video, ready for sampling.

    Attributes:
        path: absolute path of the file.
        label: class index into the dataset's ``class_names``.
        video_id: stable identifier, the path relative to the dataset root (used for video-level accuracy).
        group: what must not be split between train and validation (UCF101 ``gXX``, HMDB51 source movie,
            Kinetics youtube_id, folder datasets: see :mod:`dymsta.data.splits`).
        num_frames: frames in the video (from the index).
        fps: average frame rate.
        header_frames: the frame count the container's header claims (0 = unknown); more than ``num_frames``
            when the file lost its end (see :class:`dymsta.data.decode.VideoInfo`).
    """

    path: str
    label: int
    video_id: str
    group: str
    num_frames: int
    fps: float
    header_frames: int = 0

    @property
    def expected_frames(self) -> int:
        """The frames the file should hold: the header's count, or the stream's where the header says less."""
        return max(self.num_frames, self.header_frames)


def default_workers() -> int:
    """Threads for probing: probing is mostly file reads, so a few more threads than cores pay on cold disks."""
    return max(1, min(8, 2 * (os.cpu_count() or 1)))


def scan_videos(
    paths: Sequence[str | os.PathLike],
    *,
    cache: str | os.PathLike | None = None,
    workers: int = 0,
) -> tuple[dict[str, VideoInfo], list[tuple[str, str]]]:
    """Probe every file (or take it from ``cache``), in parallel.

    Args:
        paths: video files; made absolute.
        cache: JSON index file to read and update (atomically); None = no caching.
        workers: probing threads; 0 = :func:`default_workers`.

    Returns:
        ``(infos, skipped)``: ``infos`` maps absolute path -> :class:`VideoInfo` for every good file; ``skipped``
        lists ``(path, reason)`` for missing or broken files, sorted by path.
    """
    files = sorted({str(Path(p).absolute()) for p in paths})
    known = _load_cache(cache) if cache is not None else {}
    entries: dict[str, dict[str, Any]] = {}
    to_probe: list[tuple[str, int, int]] = []
    missing: list[tuple[str, str]] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            missing.append((path, "file not found"))
            continue
        old = known.get(path)
        if _usable(old, st):
            entries[path] = old
        else:
            to_probe.append((path, st.st_size, st.st_mtime_ns))
    entries.update(_probe_all(to_probe, workers or default_workers()))
    infos: dict[str, VideoInfo] = {}
    broken: list[tuple[str, str]] = []
    for path, entry in entries.items():
        if "info" in entry:
            infos[path] = VideoInfo(path=path, **entry["info"])
        else:
            broken.append((path, str(entry.get("error", "unknown error"))))
    if cache is not None and to_probe:
        known.update(entries)
        atomic_write_json(cache, {"version": INDEX_VERSION, "files": known})
    log.info(
        "indexed %d videos: %d from the cache, %d probed; %d missing, %d unreadable",
        len(files),
        len(entries) - len(to_probe),
        len(to_probe),
        len(missing),
        len(broken),
    )
    return infos, sorted(missing + broken)


def _usable(entry: dict[str, Any] | None, st: os.stat_result) -> bool:
    """A cache entry for an unchanged file, holding a well-formed info or error."""
    if not isinstance(entry, dict) or entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
        return False
    if "info" in entry:
        info = entry["info"]
        return isinstance(info, dict) and set(info) == _INFO_FIELDS
    return isinstance(entry.get("error"), str)


def _probe_all(items: list[tuple[str, int, int]], workers: int) -> dict[str, dict[str, Any]]:
    if not items:
        return {}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        results = list(pool.map(_probe_entry, items))
    log.info("probed %d videos in %.1f s with %d threads", len(items), time.perf_counter() - start, workers)
    return {item[0]: entry for item, entry in zip(items, results, strict=True)}


def _probe_entry(item: tuple[str, int, int]) -> dict[str, Any]:
    path, size, mtime_ns = item
    entry: dict[str, Any] = {"size": size, "mtime_ns": mtime_ns}
    try:
        info = asdict(probe_video(path))
        del info["path"]
        entry["info"] = info
    except VideoDecodeError as e:
        entry["error"] = e.cause
    return entry


def _load_cache(cache: str | os.PathLike) -> dict[str, dict[str, Any]]:
    path = Path(cache)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s: index cache unreadable (%s); rebuilding it", path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("files"), dict):
        log.warning("%s: index cache of another version; rebuilding it", path)
        return {}
    return data["files"]
