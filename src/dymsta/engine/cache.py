"""Feature cache: frozen-backbone features computed once per (video, view, stream), stored on disk, read by row.

With a frozen backbone (the paper's "feature extraction"), every epoch would recompute the same per-frame features.
The cache runs the backbone once per video and view and keeps the result, so 100 epochs of the head cost about as much
as one pass of the backbone.

Layout of one cache (a folder ``<cache_dir>/<name>-<key>``)::

    index.json               {"key", "spec", "video_ids", "labels", "views", "streams": {...}, "complete": true}
    <stream>-<id>.npy        (N_rows, C, T, h, w) float16/float32, or uint8 with a scales file; read row by row
    <stream>-<id>.scale.npy  (N_rows, C, 2) float32 (low, step) per row and channel, for uint8 storage

Rows are ``video * views + view``. The key hashes everything every stream of a view shares (backbone, its weights
and runtime, frames, size, sampling mode and views, seed, augmentation, each video file's size and a hash of its
first and last 16 KiB: :func:`content_stamp`, so a copied dataset keeps its caches), so a
change builds a new cache. Each stream (``rgb``, ``rgbdiff``, ``mv``) is a file of its own whose id hashes the
stream's settings and storage type: a run asking for a stream the cache lacks adds that file (decoding each video
once for all missing streams) and keeps the others. Features keep the backbone's whole grid; each head pools them
at read time (DyMSTA-Net to ``model.spatial_pool``, TSN and the linear probe to the frame mean). With
``cache.grid: auto`` (the default) each stream is pooled to that grid before it is written (:attr:`StreamSpec.grid`,
part of its file id): the same numbers the head would read, 49x smaller for a frame-mean head on Lite0's 7x7
grid at 224 px, 3x for DyMSTA-Net's 4x4; ``cache.grid: full`` keeps the whole grid, so one cache serves every
head.

A stream is written to ``.building-<file>`` and renamed into place when finished, then ``index.json`` is replaced
atomically: an interrupted build never looks complete and never damages the streams already there. Runs that share
a cache folder take turns on its ``.lock`` file: a second run waits while the first builds, then reuses its
streams. Under torchrun
the rows are sharded over ranks, each writing its own rows. Reads use ``os.pread`` rather than a memory map, so a
process's resident memory stays flat however large the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dymsta.data import VideoClipDataset, VideoRecord
from dymsta.engine import distributed as D
from dymsta.hardware import autocast
from dymsta.models.backbone import pool_grid
from dymsta.utils import atomic_write_json, progress

try:
    import fcntl
except ImportError:  # Windows: no lock between processes
    fcntl = None

__all__ = [
    "CacheSpec",
    "StreamSpec",
    "FeatureStore",
    "CachedClips",
    "build_streams",
    "cache_folder",
    "get_or_build_cache",
    "missing_streams",
    "zero_clips",
]

log = logging.getLogger(__name__)

STORAGE = ("float16", "float32", "uint8")
INDEX_VERSION = 2


@dataclass(frozen=True)
class CacheSpec:
    """What every stream of a cache depends on (besides the video files themselves)."""

    backbone: str  # FrameBackbone.fingerprint()
    num_frames: int
    size: int
    resize: int | None
    mode: str  # "augment" (train views) | "eval" (clips x crops grid)
    views: int
    crops: int
    seed: int
    augment: str = ""  # augmentation settings of "augment" views (flip, crop scale)
    runtime: str = "torch"  # the backbone's inference runtime (its rounding differs)

    def key(self, records: Sequence[VideoRecord]) -> str:
        h = hashlib.sha256(json.dumps({**asdict(self), "version": INDEX_VERSION}, sort_keys=True).encode())
        for r in records:
            h.update(f"{r.video_id}|{r.label}|{content_stamp(r.path)}\n".encode())
        return h.hexdigest()[:20]


STAMP_BYTES = 16 * 1024


def content_stamp(path: str | os.PathLike) -> str:
    """A video file's identity for cache keys: its size and a hash of its first and last ``STAMP_BYTES``.

    Not its mtime: a dataset copied to another disk or machine (new mtimes, same bytes) keeps its caches, while a
    re-encoded or truncated file gets a new key. 32 KiB read per file: 0.63 ms a file from a cold page cache on
    ucf101-mini here (410 files in 0.26 s; 0.025 s warm), so about 8 s for UCF101's 13,320 on a cold start.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.blake2b(f.read(STAMP_BYTES), digest_size=8)
            if size > STAMP_BYTES:
                f.seek(max(STAMP_BYTES, size - STAMP_BYTES))
                h.update(f.read(STAMP_BYTES))
    except OSError:
        return "missing"
    return f"{size}:{h.hexdigest()}"


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a cache: its name, how it is made (a settings string), and how it is stored."""

    name: str  # rgb | rgbdiff | mv
    settings: str = ""  # e.g. "signed,4.0" for rgbdiff; part of the file id
    dtype: str = "float16"  # float16 | float32 | uint8 (per row and channel: low + q * step)
    grid: int = 0  # the grid pooled to before writing (pool_grid: 1 = the frame mean, 4 = 4x4); 0 = as computed

    @property
    def file_id(self) -> str:
        layout = f"{self.name}|{self.settings}|{self.dtype}" + (f"|grid{self.grid}" if self.grid else "")
        digest = hashlib.sha256(layout.encode()).hexdigest()[:12]
        return f"{self.name}-{digest}"

    def stored_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The row shape stored for a computed ``(C, T, h, w)``: the grid pooled to ``grid``."""
        return tuple(pool_grid(torch.zeros(1, *shape[:-2], *shape[-2:]), self.grid).shape[1:])


class FeatureStore:
    """Read side of a finished cache: ``store.row(i) -> {stream: np.ndarray (C, T, h, w)}`` for its ``streams``."""

    def __init__(self, path: str | Path, streams: Sequence[StreamSpec] | None = None) -> None:
        self.path = Path(path)
        index = json.loads((self.path / "index.json").read_text())
        if not index.get("complete"):
            raise RuntimeError(f"feature cache {self.path} is incomplete")
        self.index = index
        self.video_ids: list[str] = index["video_ids"]
        self.labels: list[int] = index["labels"]
        self.views: int = index["views"]
        available = index["streams"]
        wanted = [s.file_id for s in streams] if streams is not None else list(available)
        missing = [w for w in wanted if w not in available]
        if missing:
            raise RuntimeError(f"feature cache {self.path} has no stream {missing[0]}")
        self.streams = {available[w]["name"]: _StreamFile(self.path, available[w]) for w in wanted}
        valid = np.ones(len(index["video_ids"]) * self.views, dtype=bool)
        for s in self.streams.values():
            valid &= s.valid
        self.valid = valid  # (N_rows,)

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``(C, T, h, w)`` of each stream's rows."""
        return {name: s.shape for name, s in self.streams.items()}

    def row(self, i: int) -> dict[str, np.ndarray]:
        """Row ``i`` of every stream: ``{stream: (C, T, h, w)}`` (float16/float32 as stored; uint8 rows decoded to
        float32)."""
        return {name: s.row(i) for name, s in self.streams.items()}

    def valid_views(self, video: int) -> list[int]:
        base = video * self.views
        return [v for v in range(self.views) if self.valid[base + v]]

    @property
    def num_skipped(self) -> int:
        """Videos none of whose views could be decoded."""
        return sum(1 for v in range(len(self.video_ids)) if not self.valid_views(v))

    def nbytes_per_row(self) -> int:
        """Disk bytes of one row over the selected streams (scales included)."""
        return sum(s.row_bytes + s.scale_bytes for s in self.streams.values())


class _StreamFile:
    """One stream's ``.npy`` (and scales) file: ``row(i)`` by ``pread``; reopened lazily in worker processes."""

    def __init__(self, folder: Path, entry: dict[str, Any]) -> None:
        self.file = folder / entry["file"]
        self.scale_file = folder / entry["scale_file"] if entry.get("scale_file") else None
        self.shape = tuple(entry["row_shape"])
        self.dtype = np.dtype(entry["dtype"])
        self.valid = np.asarray(entry["valid"], dtype=bool)
        self.offset = int(entry["data_offset"])
        self.scale_offset = int(entry.get("scale_offset", 0))
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.scale_bytes = self.shape[0] * 2 * 4 if self.scale_file else 0
        self._fd: int | None = None
        self._scale_fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the files
        return {**self.__dict__, "_fd": None, "_scale_fd": None}

    def row(self, i: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.file, os.O_RDONLY)
        x = np.empty(self.shape, dtype=self.dtype)  # writable, read in place (no bytes object to copy from)
        if os.preadv(self._fd, [memoryview(x).cast("B")], self.offset + i * self.row_bytes) != self.row_bytes:
            raise RuntimeError(f"feature cache file {self.file} is shorter than its index says (row {i})")
        if self.scale_file is None:
            return x
        if self._scale_fd is None:
            self._scale_fd = os.open(self.scale_file, os.O_RDONLY)
        scales = np.frombuffer(
            os.pread(self._scale_fd, self.scale_bytes, self.scale_offset + i * self.scale_bytes), dtype=np.float32
        ).reshape(-1, 2)  # (C, 2): low, step
        return dequantize(x, scales)


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine uint8 per channel: ``x (C, ...) float -> (q uint8 (C, ...), scales float32 (C, 2) = (low, step))``;
    ``x ~ low + q * step`` with at most ``step / 2`` error (``step = (max - min) / 255`` of the channel)."""
    flat = x.reshape(x.shape[0], -1).astype(np.float32)
    low, high = flat.min(axis=1), flat.max(axis=1)
    step = np.where(high > low, (high - low) / 255.0, 1.0).astype(np.float32)
    q = np.clip(np.rint((flat - low[:, None]) / step[:, None]), 0, 255).astype(np.uint8)
    return q.reshape(x.shape), np.stack([low, step], axis=1).astype(np.float32)


def dequantize(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize`: ``(C, ...) uint8, (C, 2) -> (C, ...) float32``."""
    shape = (-1,) + (1,) * (q.ndim - 1)
    return scales[:, 0].reshape(shape) + q.astype(np.float32) * scales[:, 1].reshape(shape)


class CachedClips(Dataset):
    """Cached features as a dataset of ``({stream: float32 (C, T, h', w')}, label, video_id)``.

    ``grid`` pools every stream's grid at read time (:func:`dymsta.models.backbone.pool_grid`; 0 = as stored), to
    what the head uses, so the head's own pooling is a no-op and batches stay small.
    ``per_video=True`` (training): one item per usable video; the view is drawn afresh each epoch from
    ``(seed, epoch)`` (call :meth:`set_epoch`), so the head sees a different augmentation every epoch, reproducibly.
    ``per_video=False`` (evaluation): one item per valid row (every view of every video).
    """

    def __init__(self, store: FeatureStore, *, per_video: bool, seed: int = 0, grid: int = 0) -> None:
        self.store = store
        self.per_video = per_video
        self.seed = seed
        self.grid = grid
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

    def features(self, row: int) -> dict[str, torch.Tensor]:
        """``{stream: (C, T, h', w')}`` of a cache row, pooled to ``grid``: float16 as stored when no pooling is
        needed, else float32. The head casts each batch to its compute dtype in one copy
        (:func:`dymsta.models.base.feature_input`); a NumPy float16 -> float32 copy per row took 3x the whole
        training step on this CPU."""
        return {name: _pooled(torch.from_numpy(x), self.grid) for name, x in self.store.row(row).items()}

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int, str]:
        row = self._rows[i]
        video = row // self.store.views
        return self.features(row), self.store.labels[video], self.store.video_ids[video]


def _pooled(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``x`` (C, T, h, w) as it is when its grid is within ``grid`` (or ``grid`` is 0), else pooled in float32."""
    h, w = x.shape[-2:]
    return x if not grid or (h <= grid and w <= grid) else pool_grid(x.float(), grid)


class _Rows(Dataset):
    """(row, streams | None) for the rows this rank builds."""

    def __init__(self, clips: VideoClipDataset, rows: list[int]) -> None:
        self.clips, self.rows = clips, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, dict[str, torch.Tensor] | None]:
        row = self.rows[i]
        item = self.clips[row]
        return row, (None if item is None else item[0])


def _collate_rows(batch: list) -> tuple[list[int], list[int], dict[str, torch.Tensor] | None]:
    ok = [(r, c) for r, c in batch if c is not None]
    bad = [r for r, c in batch if c is None]
    streams = {name: torch.stack([c[name] for _, c in ok]) for name in ok[0][1]} if ok else None
    return [r for r, _ in ok], bad, streams


Extractor = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@torch.no_grad()
def build_streams(
    extract: Extractor,
    clips: VideoClipDataset,
    out: Path,
    *,
    spec: CacheSpec,
    key: str,
    streams: Sequence[StreamSpec],
    batch_size: int,
    workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    desc: str,
) -> FeatureStore:
    """Add ``streams`` to the cache at ``out`` (created if needed): ``extract`` turns every (video, view) of
    ``clips`` (whose modalities are these streams) into per-stream features ``{stream: (B, C, T, h, w)}``."""
    records = clips.records
    n_rows = len(clips)
    if D.is_main():
        out.mkdir(parents=True, exist_ok=True)
    amp = autocast(device, amp_dtype)  # bf16 only where native (dymsta.hardware)
    shapes = _probe_shapes(extract, clips, device, amp)  # {stream: (C, T, h, w)}
    writers = {st.name: _StreamWriter(out, st, st.stored_shape(shapes[st.name]), n_rows) for st in streams}
    my_rows = D.shard(list(range(n_rows)))
    loader = DataLoader(_Rows(clips, my_rows), batch_size=batch_size, num_workers=workers, collate_fn=_collate_rows)
    valid = np.zeros(n_rows, dtype=bool)
    frames = 0
    t0 = time.perf_counter()
    bar = progress(loader, desc=desc, enabled=D.is_main(), unit="batch")
    try:
        for rows, _bad, batch in bar:
            if batch is None:
                continue
            with amp:
                feats = extract({k: v.to(device, non_blocking=True) for k, v in batch.items()})  # {s: (B, C, T, h, w)}
            for name, w in writers.items():
                w.write(rows, pool_grid(feats[name].float(), w.spec.grid).cpu().numpy())
            valid[rows] = True
            frames += len(rows) * spec.num_frames
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - t0):.0f}")
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    valid = np.any(np.stack(D.all_gather_objects(valid)), axis=0)
    seconds = time.perf_counter() - t0
    if D.is_main():
        entries = {s.file_id: writers[s.name].finish(valid) for s in streams}
        _update_index(out, key=key, spec=spec, records=records, views=clips.views, entries=entries)
        log.info(
            "feature cache %s: %s for %d rows in %.0f s (%.0f frames/s), %d undecodable",
            out,
            "+".join(s.name for s in streams),
            n_rows,
            seconds,
            int(valid.sum()) * spec.num_frames / max(seconds, 1e-9),
            int((~valid).sum()),
        )
    D.barrier()
    return FeatureStore(out, streams)


def zero_clips(clips: VideoClipDataset, rows: int = 1) -> dict[str, torch.Tensor]:
    """``rows`` all-zero clips of every stream of ``clips``, shaped as the backbone takes them."""
    zeros = {}
    for name in clips.modalities:
        if name == "mv" and clips.motion.mv_encoding == "hist":
            zeros[name] = torch.zeros(rows, clips.motion.mv_bins + 1, clips.num_frames, *clips.feature_grid)
        else:
            zeros[name] = torch.zeros(rows, 3, clips.num_frames, clips.size, clips.size)
    return zeros


def _probe_shapes(extract: Extractor, clips: VideoClipDataset, device: torch.device, amp: Any) -> dict:
    """Row shapes ``{stream: (C, T, h, w)}``, from one dummy clip through ``extract`` (before the first batch)."""
    with amp:
        feats = extract({k: v.to(device) for k, v in zero_clips(clips).items()})
    return {k: tuple(v.shape[1:]) for k, v in feats.items()}


class _StreamWriter:
    """Writes one stream's rows into ``.building-<file>`` (and its scales); :meth:`finish` renames it into place."""

    def __init__(self, out: Path, spec: StreamSpec, shape: tuple[int, ...], n_rows: int) -> None:
        self.spec, self.shape = spec, shape
        self.final = out / f"{spec.file_id}.npy"
        self.temp = out / f".building-{spec.file_id}.npy"
        self.dtype = np.dtype(spec.dtype)
        self.scaled = spec.dtype == "uint8"
        self.final_scale = out / f"{spec.file_id}.scale.npy"
        self.temp_scale = out / f".building-{spec.file_id}.scale.npy"
        if D.is_main():
            np.lib.format.open_memmap(self.temp, mode="w+", dtype=self.dtype, shape=(n_rows, *shape)).flush()
            if self.scaled:
                scales = (n_rows, shape[0], 2)
                np.lib.format.open_memmap(self.temp_scale, mode="w+", dtype=np.float32, shape=scales).flush()
        D.barrier()
        self.offset = _npy_data_offset(self.temp)
        self.row_bytes = int(np.prod(shape)) * self.dtype.itemsize
        self.fd = os.open(self.temp, os.O_WRONLY)
        self.scale_fd = os.open(self.temp_scale, os.O_WRONLY) if self.scaled else None
        self.scale_offset = _npy_data_offset(self.temp_scale) if self.scaled else 0

    def write(self, rows: list[int], feats: np.ndarray) -> None:
        """``feats`` float32 ``(B, C, T, h, w)`` for ``rows``."""
        for row, f in zip(rows, feats, strict=True):
            if self.scaled:
                q, scales = quantize(f)
                os.pwrite(self.scale_fd, scales.tobytes(), self.scale_offset + row * scales.nbytes)
            else:
                q = f.astype(self.dtype)
            os.pwrite(self.fd, np.ascontiguousarray(q).tobytes(), self.offset + row * self.row_bytes)

    def close(self) -> None:
        for fd in (self.fd, self.scale_fd):
            if fd is not None:
                os.fsync(fd)
                os.close(fd)
        self.fd = self.scale_fd = None

    def abort(self) -> None:
        for fd in (self.fd, self.scale_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.scale_fd = None
        if D.is_main():
            for p in (self.temp, self.temp_scale):
                p.unlink(missing_ok=True)

    def finish(self, valid: np.ndarray) -> dict[str, Any]:
        """Rename into place; the stream's index entry."""
        os.replace(self.temp, self.final)
        entry = {
            "name": self.spec.name,
            "settings": self.spec.settings,
            "dtype": self.spec.dtype,
            "file": self.final.name,
            "row_shape": list(self.shape),
            "data_offset": self.offset,
            "valid": valid.tolist(),
        }
        if self.scaled:
            os.replace(self.temp_scale, self.final_scale)
            entry.update({"scale_file": self.final_scale.name, "scale_offset": self.scale_offset})
        return entry


def _update_index(
    out: Path, *, key: str, spec: CacheSpec, records: Sequence[VideoRecord], views: int, entries: dict[str, Any]
) -> None:
    """Write (or extend) ``index.json`` atomically with the new streams' entries."""
    index_file = out / "index.json"
    old = json.loads(index_file.read_text()) if index_file.is_file() else {}
    index = {
        "version": INDEX_VERSION,
        "key": key,
        "spec": asdict(spec),
        "video_ids": [r.video_id for r in records],
        "labels": [r.label for r in records],
        "views": views,
        "streams": {**old.get("streams", {}), **entries},
        "complete": True,
    }
    atomic_write_json(index_file, index)


def cache_folder(name: str, cache_dir: Path, spec: CacheSpec, records: Sequence[VideoRecord]) -> tuple[Path, str]:
    """``(<cache_dir>/<name>-<key>, key)`` of the cache for ``records`` under ``spec``."""
    key = spec.key(records)
    return Path(cache_dir) / f"{name}-{key}", key


def get_or_build_cache(
    name: str,
    extract: Extractor,
    make_clips: Callable[[tuple[str, ...]], VideoClipDataset],
    records: Sequence[VideoRecord],
    cache_dir: Path,
    *,
    spec: CacheSpec,
    streams: Sequence[StreamSpec],
    batch_size: int,
    workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> FeatureStore:
    """The cache of ``records`` with ``streams``: reused when complete, else the missing streams are built.

    ``make_clips(modalities)`` gives the clip dataset that decodes those streams (one decode for all of them).
    """
    out, key = cache_folder(name, cache_dir, spec, records)
    with _build_lock(out):  # another process building this cache finishes first; then its streams are reused
        missing = D.all_gather_objects(missing_streams(out, streams))[0]  # rank 0 decides for every rank
        if not missing:
            log.info("feature cache %s: reusing %s (%s)", name, out, "+".join(s.name for s in streams))
            return FeatureStore(out, streams)
        log.info("feature cache %s: building %s in %s", name, "+".join(s.name for s in missing), out)
        build_streams(
            extract,
            make_clips(tuple(s.name for s in missing)),
            out,
            spec=spec,
            key=key,
            streams=missing,
            batch_size=batch_size,
            workers=workers,
            device=device,
            amp_dtype=amp_dtype,
            desc=f"caching {name}",
        )
    return FeatureStore(out, streams)


def missing_streams(out: Path, streams: Sequence[StreamSpec]) -> list[StreamSpec]:
    """The ``streams`` the cache folder ``out`` does not hold yet (all of them where it does not exist)."""
    index = out / "index.json"
    present = json.loads(index.read_text()).get("streams", {}) if index.is_file() else {}
    return [s for s in streams if s.file_id not in present]


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on ``<out>/.lock`` (rank 0 only): two runs sharing a cache folder never write the same
    stream file at once, and the second reuses what the first built. No-op where ``fcntl`` is missing."""
    if not D.is_main() or fcntl is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("feature cache %s: another process is building it; waiting", out)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a .npy file (after its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()
