"""Feature cache: frozen-backbone features computed once per (video, view), stored fp16 on disk, read by row.

With a frozen backbone (the paper's "feature extraction"), every epoch would recompute the same per-frame features.
The cache runs the backbone once per video and view and keeps the result, so 100 epochs of the head cost about as much
as one pass of the backbone.

Layout of one cache (a folder ``<cache_dir>/<name>-<key>``)::

    features.npy   (N_rows, Cb, T, h, w) float16/float32, a plain .npy file read row by row with pread
    index.json     {"key", "spec", "video_ids", "labels", "views", "valid", "complete": true}

Rows are ``video * views + view``. The key hashes everything the features depend on (backbone and its weights,
frames, size, sampling mode and views, seed, the video files' sizes and mtimes), so a change builds a new cache.
Building happens in ``.building-<name>-<key>/`` and is renamed into place when finished: an interrupted build never
looks complete. Under torchrun the rows are sharded over ranks, each writing its own rows.
Reads use ``os.pread`` rather than a memory map, so a process's resident memory stays flat however large the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dymsta.data import VideoClipDataset, VideoRecord
from dymsta.engine import distributed as D
from dymsta.utils import atomic_write_json, progress

__all__ = ["CacheSpec", "FeatureStore", "CachedClips", "build_feature_cache", "get_or_build_cache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheSpec:
    """What a cache's features depend on (besides the video files themselves)."""

    backbone: str  # FrameBackbone.fingerprint()
    num_frames: int
    size: int
    resize: int | None
    mode: str  # "augment" (train views) | "eval" (clips x crops grid)
    views: int
    crops: int
    seed: int
    dtype: str
    augment: str = ""  # augmentation settings of "augment" views (flip, crop scale)

    def key(self, records: Sequence[VideoRecord]) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for r in records:
            try:
                st = os.stat(r.path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"{r.video_id}|{r.label}|{stamp}\n".encode())
        return h.hexdigest()[:20]


class FeatureStore:
    """Read side of a finished cache: ``store.row(i) -> np.ndarray (Cb, T, h, w)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        index = json.loads((self.path / "index.json").read_text())
        if not index.get("complete"):
            raise RuntimeError(f"feature cache {self.path} is incomplete")
        self.index = index
        self.video_ids: list[str] = index["video_ids"]
        self.labels: list[int] = index["labels"]
        self.views: int = index["views"]
        self.valid = np.asarray(index["valid"], dtype=bool)  # (N_rows,)
        self.shape = tuple(index["row_shape"])
        self.dtype = np.dtype(index["dtype"])
        self._offset = int(index["data_offset"])
        self._row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self.valid)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the file
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def row(self, i: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path / "features.npy", os.O_RDONLY)
        buf = os.pread(self._fd, self._row_bytes, self._offset + i * self._row_bytes)
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.shape)

    def valid_views(self, video: int) -> list[int]:
        base = video * self.views
        return [v for v in range(self.views) if self.valid[base + v]]

    @property
    def num_skipped(self) -> int:
        """Videos none of whose views could be decoded."""
        return sum(1 for v in range(len(self.video_ids)) if not self.valid_views(v))


class CachedClips(Dataset):
    """Cached features as a dataset of ``(features float32 (Cb, T, h, w), label, video_id)``.

    ``per_video=True`` (training): one item per usable video; the view is drawn afresh each epoch from
    ``(seed, epoch)`` (call :meth:`set_epoch`), so the head sees a different augmentation every epoch, reproducibly.
    ``per_video=False`` (evaluation): one item per valid row (every view of every video).
    """

    def __init__(self, store: FeatureStore, *, per_video: bool, seed: int = 0) -> None:
        self.store = store
        self.per_video = per_video
        self.seed = seed
        if per_video:
            self.items = [v for v in range(len(store.video_ids)) if store.valid_views(v)]
        else:
            self.items = [int(i) for i in np.flatnonzero(store.valid)]
        self._rows = self._pick_rows(0)

    def _pick_rows(self, epoch: int) -> list[int]:
        if not self.per_video:
            return self.items
        rng = np.random.default_rng([self.seed, epoch])
        rows = []
        for v in self.items:
            views = self.store.valid_views(v)
            rows.append(v * self.store.views + views[int(rng.integers(len(views)))])
        return rows

    def set_epoch(self, epoch: int) -> None:
        self._rows = self._pick_rows(epoch)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        row = self._rows[i]
        video = row // self.store.views
        feats = torch.from_numpy(self.store.row(row).astype(np.float32))
        return feats, self.store.labels[video], self.store.video_ids[video]


class _Rows(Dataset):
    """(row, clip | None) for the rows this rank builds."""

    def __init__(self, clips: VideoClipDataset, rows: list[int]) -> None:
        self.clips, self.rows = clips, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        row = self.rows[i]
        item = self.clips[row]
        return row, (None if item is None else item[0])


def _collate_rows(batch: list) -> tuple[list[int], list[int], torch.Tensor | None]:
    ok = [(r, c) for r, c in batch if c is not None]
    bad = [r for r, c in batch if c is None]
    clips = torch.stack([c for _, c in ok]) if ok else None
    return [r for r, _ in ok], bad, clips


@torch.no_grad()
def build_feature_cache(
    backbone: torch.nn.Module,
    clips: VideoClipDataset,
    out: Path,
    *,
    spec: CacheSpec,
    key: str,
    batch_size: int,
    workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    desc: str,
) -> FeatureStore:
    """Run ``backbone`` over every (video, view) of ``clips`` and write a finished cache at ``out``."""
    records = clips.records
    building = out.parent / f".building-{out.name}"
    if D.is_main():
        shutil.rmtree(building, ignore_errors=True)  # a stale build of a killed run
        building.mkdir(parents=True)
    backbone.eval().to(device)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with autocast:
        probe = backbone(torch.zeros(1, 3, spec.num_frames, spec.size, spec.size, device=device))
    row_shape = tuple(probe.shape[1:])  # (Cb, T, h, w)
    dtype = np.dtype(spec.dtype)
    n_rows = len(clips)
    data_file = building / "features.npy"
    if D.is_main():
        np.lib.format.open_memmap(data_file, mode="w+", dtype=dtype, shape=(n_rows, *row_shape)).flush()
    D.barrier()
    offset = _npy_data_offset(data_file)
    row_bytes = int(np.prod(row_shape)) * dtype.itemsize

    my_rows = D.shard(list(range(n_rows)))
    loader = DataLoader(
        _Rows(clips, my_rows),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate_rows,
        persistent_workers=False,
    )
    valid = np.zeros(n_rows, dtype=bool)
    fd = os.open(data_file, os.O_WRONLY)
    try:
        for rows, _bad, batch in progress(loader, desc=desc, enabled=D.is_main(), unit="batch"):
            if batch is None:
                continue
            with autocast:
                feats = backbone(batch.to(device, non_blocking=True))  # (B, Cb, T, h, w)
            feats = feats.float().cpu().numpy().astype(dtype)
            for row, f in zip(rows, feats, strict=True):
                os.pwrite(fd, np.ascontiguousarray(f).tobytes(), offset + row * row_bytes)
                valid[row] = True
        os.fsync(fd)
    finally:
        os.close(fd)
    valid = np.any(np.stack(D.all_gather_objects(valid)), axis=0)
    if D.is_main():
        index = {
            "key": key,
            "spec": asdict(spec),
            "video_ids": [r.video_id for r in records],
            "labels": [r.label for r in records],
            "views": clips.views,
            "valid": valid.tolist(),
            "row_shape": list(row_shape),
            "dtype": dtype.name,
            "data_offset": offset,
            "complete": True,
        }
        atomic_write_json(building / "index.json", index)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(building, out)
        log.info("feature cache %s: %d rows, %d undecodable", out, n_rows, int((~valid).sum()))
    D.barrier()
    return FeatureStore(out)


def get_or_build_cache(
    name: str,
    backbone: torch.nn.Module,
    clips: VideoClipDataset,
    cache_dir: Path,
    *,
    spec: CacheSpec,
    batch_size: int,
    workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> FeatureStore:
    """Reuse the cache for ``clips`` if one with the same key is complete, else build it."""
    key = spec.key(clips.records)
    out = Path(cache_dir) / f"{name}-{key}"
    index = out / "index.json"
    if index.is_file() and json.loads(index.read_text()).get("complete"):
        log.info("feature cache %s: reusing %s", name, out)
        return FeatureStore(out)
    return build_feature_cache(
        backbone,
        clips,
        out,
        spec=spec,
        key=key,
        batch_size=batch_size,
        workers=workers,
        device=device,
        amp_dtype=amp_dtype,
        desc=f"caching {name}",
    )


def _npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a .npy file (after its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()
