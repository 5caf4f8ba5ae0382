"""``dymsta check-videos``: decode every video once, in worker processes, and say what is wrong with each file.

Every file gets one ``status``:

- ``ok``: every frame its header announces decodes;
- ``unreadable``: it cannot be opened or decoded at all (not a video, a truncated container, no video stream, no
  permission, missing);
- ``empty``: 0 bytes, or a video stream with no decodable frame;
- ``partial``: decoding stops before the frames its header announces (truncated, or corrupt after frame k): more
  than ``max(2, 5%)`` frames short (:func:`dymsta.data.decode.is_partial`), or an FFmpeg error mid-stream;

and ``notes`` for what is legal but worth knowing: ``rotated`` (a display rotation, applied when decoding) and
``variable_frame_rate`` (the 90th percentile of the gaps between frames over the 10th above 1.25). Files are only
read (FFmpeg opens them read-only); nothing is ever written beside them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from dymsta.data.decode import VideoDecodeError, is_partial, probe_video, scan_frames
from dymsta.data.splits import list_dataset
from dymsta.utils import atomic_write_text, get_logger, progress

__all__ = ["NOTES", "STATUSES", "check_video", "check_videos", "dataset_paths", "summarize", "write_invalid_list"]

log = get_logger(__name__)

STATUSES = ("ok", "unreadable", "empty", "partial")
NOTES = ("rotated", "variable_frame_rate")
VFR_SPREAD = 1.25  # p90 / p10 of the frame gaps above which a video counts as variable frame rate
_EMPTY_CAUSES = ("empty file", "video stream has no frames", "zero decodable frames")


def check_video(path: str | os.PathLike) -> dict[str, Any]:
    """Decode all of ``path`` (no colour conversion) and classify it.

    Returns:
        ``{"video", "status", "notes", "frames_decoded", "frames_expected", "fps", "width", "height", "rotation",
        "error"}``: ``status`` in :data:`STATUSES`, ``notes`` a list from :data:`NOTES`, ``error`` one line or None.
    """
    result: dict[str, Any] = {
        "video": str(path),
        "status": "ok",
        "notes": [],
        "frames_decoded": 0,
        "frames_expected": 0,
        "fps": 0.0,
        "width": 0,
        "height": 0,
        "rotation": 0,
        "error": None,
    }
    try:
        info = probe_video(path)
        scan = scan_frames(path)
    except VideoDecodeError as e:
        result["status"] = "empty" if e.cause.startswith(_EMPTY_CAUSES) else "unreadable"
        result["error"] = str(e)
        return result
    expected = info.expected_frames
    result.update(
        frames_decoded=scan.num_decoded,
        frames_expected=expected,
        fps=round(info.fps, 3),
        width=info.width,
        height=info.height,
        rotation=info.rotation,
    )
    if is_partial(scan.num_decoded, expected) or (scan.error and scan.num_decoded < expected):
        result["status"] = "partial"
        cause = f" ({scan.error})" if scan.error else ""
        result["error"] = f"{path}: decoded {scan.num_decoded} of {expected} frames{cause}"
    if info.rotation:
        result["notes"].append("rotated")
    if _variable_frame_rate(scan.timestamps):
        result["notes"].append("variable_frame_rate")
    return result


def _variable_frame_rate(times: np.ndarray) -> bool:
    gaps = np.diff(np.sort(times[np.isfinite(times)]))
    gaps = gaps[gaps > 0]
    if len(gaps) < 3:
        return False
    low, high = np.percentile(gaps, [10, 90])
    return bool(high / low > VFR_SPREAD)


def check_videos(
    paths: Sequence[str | os.PathLike], *, workers: int = 2, show_progress: bool = False
) -> Iterator[dict[str, Any]]:
    """:func:`check_video` of every path, in order, decoded in ``workers`` processes (0: in this process)."""
    paths = [str(p) for p in paths]
    if workers <= 0 or len(paths) <= 1:
        yield from progress(
            map(check_video, paths), desc="check", unit="video", enabled=show_progress, total=len(paths)
        )
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        results = pool.map(check_video, paths, chunksize=1)
        yield from progress(results, desc="check", unit="video", enabled=show_progress, total=len(paths))


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Files per status and per note: ``{"total", "ok", "unreadable", "empty", "partial", "rotated",
    "variable_frame_rate"}``."""
    counts = {"total": len(results), **{s: 0 for s in STATUSES}, **{n: 0 for n in NOTES}}
    for r in results:
        counts[r["status"]] += 1
        for note in r["notes"]:
            counts[note] += 1
    return counts


def write_invalid_list(path: str | os.PathLike, results: Sequence[dict[str, Any]]) -> int:
    """Write the files whose status is not ``ok``, one per line (MMAction2's ``invalid.txt``); returns how many."""
    bad = [r["video"] for r in results if r["status"] != "ok"]
    atomic_write_text(path, "".join(f"{p}\n" for p in bad))
    return len(bad)


def dataset_paths(
    kind: str, root: str, *, split: int = 1, annotations: str | None = None, label_map: str | None = None
) -> list[str]:
    """Every video a dataset config lists (train, validation and test sides), without probing any."""
    class_names = None
    if label_map is not None:
        from dymsta.data.labels import read_label_map

        class_names = read_label_map(label_map)
    lists = list_dataset(kind, root, split=split, annotations=annotations, class_names=class_names)
    entries = lists.train + lists.test + (lists.val or [])
    return sorted({e.path for e in entries})
