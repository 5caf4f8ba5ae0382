"""Map-style clip dataset over indexed videos: sample frames, decode only those, crop, flip, normalise.

Item ``i`` is view ``i % views`` of record ``i // views`` and returns ``(streams, label, video_id)``: ``streams`` maps
each of ``modalities`` to a float32 tensor -- ``rgb``, ``rgbdiff`` and ``mv`` (image encoding) are images
``(3, T, size, size)`` normalised with the backbone's mean/std; ``mv`` encoded as a histogram is
``(bins + 1, T, h, w)`` on the backbone's feature grid (:mod:`dymsta.data.motion`). Every stream of a view comes
from one decode of the file, with the same frames, crop and flip. Modes:

- ``"train"``: a random frame per TSN segment, one random resized crop (area share ``crop_scale``, aspect 3/4-4/3)
  and a random horizontal flip for the whole clip; all draws from torch's global RNG, so ``torch.manual_seed`` and
  DataLoader worker seeding make runs reproducible.
- ``"eval"``: deterministic ``views = clips x crops`` grid; view ``v`` is temporal clip ``v // crops`` (segment
  offset ``(c + 0.5) / clips``) and spatial crop ``v % crops`` of the frame resized to short side ``resize``.
- ``"augment"``: view 0 is the eval centre view; view ``v > 0`` is a random augmentation (segment jitter, resized
  crop, flip) seeded by ``(seed, video_id, v)``: the same on every run and machine (for the feature cache).

A file that fails to decode is logged once, remembered, and its items return None; :func:`collate_clips` drops
them and counts them in ``num_skipped``, so a long run goes on and reports the count. "Once" holds across the
DataLoader worker processes and the epochs (workers are forked afresh each epoch): the first process to fail on a
file creates its marker in a folder private to the dataset (``O_EXCL``), and only that process logs it.
Frames larger than ``resize`` on the short side are shrunk during colour conversion (decode-time resize).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from dymsta.data import motion as M
from dymsta.data.decode import (
    BACKENDS,
    DecodedClip,
    DecoderBackendError,
    VideoDecodeError,
    read_clip,
    read_frames,
    torchcodec_available,
)
from dymsta.data.index import VideoRecord
from dymsta.data.sampling import (
    EVAL_CROPS,
    CropBox,
    clip_offset,
    random_resized_crop_box,
    segment_indices,
    stable_seed,
)
from dymsta.data.transforms import clip_to_tensor, eval_source_box, hflip, resize, resized_crop
from dymsta.utils import get_logger

__all__ = ["MODES", "VideoClipDataset", "collate_clips", "motion_windows"]

log = get_logger(__name__)

MODES = ("train", "eval", "augment")


class VideoClipDataset(Dataset):
    """Clips of ``num_frames`` frames, ``size`` x ``size``, from a list of :class:`VideoRecord`.

    Args:
        records: the videos.
        num_frames: T, frames per clip (one per TSN segment).
        size: output crop side in pixels.
        mean, std: per-channel normalisation of [0, 1] RGB (the backbone's).
        mode: ``"train"``, ``"eval"`` or ``"augment"`` (see the module docstring).
        views: items per record (eval: temporal clips x crops; augment: cached views).
        crops: spatial crops per temporal clip in eval mode (1, 3 or 5); must divide ``views``.
        resize: short side before cropping in eval mode, and decode-time size limit; default
            ``round(size * 256 / 224)``.
        seed: seed of the augment-mode views.
        backend: decoding backend (``"pyav"`` or ``"torchcodec"``).
        crop_scale: area share range of the random resized crop (train and augment modes).
        hflip: random horizontal flips in train/augment modes; turn off when left/right is the label
            (the synthetic set's MoveLeft/MoveRight and RotateCW/RotateCCW).
        modalities: the streams of every item (``rgb``, ``rgbdiff``, ``mv``).
        motion: how the motion streams are made.
        feature_grid: ``(h, w)`` of the backbone's feature grid at ``size`` (for ``mv`` as a histogram).
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        num_frames: int,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        mode: str = "eval",
        views: int = 1,
        crops: int = 1,
        resize: int | None = None,
        seed: int = 0,
        backend: str = "pyav",
        crop_scale: tuple[float, float] = (0.4, 1.0),
        hflip: bool = True,
        modalities: Sequence[str] = ("rgb",),
        motion: M.MotionSettings | None = None,
        feature_grid: tuple[int, int] | None = None,
    ) -> None:
        _check_settings(num_frames=num_frames, size=size, mode=mode, views=views, crops=crops, backend=backend)
        self.modalities = M.check_modalities(modalities)
        self.motion = motion or M.MotionSettings()
        self.motion.validate()
        if "mv" in self.modalities and self.motion.mv_encoding == "hist" and feature_grid is None:
            raise ValueError("mv as a histogram (data.motion.mv_encoding=hist) needs the backbone's feature_grid")
        self.feature_grid = feature_grid
        self.records = list(records)
        self.num_frames, self.size, self.mode = num_frames, size, mode
        self.views, self.crops, self.seed, self.backend = views, crops, seed, backend
        self.resize = resize if resize is not None else round(size * 256 / 224)
        if self.resize < size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({size})")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")
        self.crop_scale = crop_scale
        self.hflip = hflip
        self._bad = _BadFiles()
        self._motion_notes = _BadFiles()  # files whose mv stream came from the fallback: path -> "flow" | "none"

    def __len__(self) -> int:
        return len(self.records) * self.views

    def view_of(self, i: int) -> tuple[int, int]:
        """(record index, view index) of item ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        return divmod(i, self.views)

    @property
    def bad_files(self) -> dict[str, str]:
        """Undecodable files found so far by this dataset in any of its processes: path -> cause."""
        return self._bad.all()

    @property
    def num_skipped(self) -> int:
        """How many files were found undecodable (so far, in any process)."""
        return len(self.bad_files)

    @property
    def motion_fallbacks(self) -> dict[str, str]:
        """Files whose ``mv`` stream did not come from codec vectors: path -> ``"flow"`` (optical flow) or
        ``"none"`` (zeros), so far, in any process."""
        return self._motion_notes.all()

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int, str] | None:
        r, view = self.view_of(i)
        record = self.records[r]
        if self._bad.get(record.path) is not None:
            return None
        try:
            clip = self._clip(record, view)
        except VideoDecodeError as e:
            if self._bad.add(record.path, e.cause):
                log.warning("skipping undecodable video %s", e)
            return None
        return clip, record.label, record.video_id

    # ------------------------------------------------------------------------------------------------ internals

    def _clip(self, record: VideoRecord, view: int) -> dict[str, torch.Tensor]:
        """The streams of one view of one record (see the module docstring for their shapes)."""
        rng = self._view_rng(record, view)
        indices = self._indices(record, view, rng)
        if self.modalities == ("rgb",) and self.backend != "pyav":
            frames = read_frames(record.path, indices, backend=self.backend, short_side=self.resize)
            clip = DecodedClip(frames=frames)
        else:
            clip = self._decode(record, indices)
        box, flip = self._box_and_flip(clip.frames.shape[1], clip.frames.shape[2], view, rng)
        if "mv" in self.modalities and clip.motion_source != "codec":
            if self._motion_notes.add(record.path, clip.motion_source) and clip.motion_source == "none":
                log.warning("%s: no motion vectors and no optical-flow fallback; its mv stream is zeros", record.path)
        out: dict[str, torch.Tensor] = {}
        for name in self.modalities:
            if name == "mv" and self.motion.mv_encoding == "hist":
                out[name] = self._motion_histogram(clip, box, flip)
            else:
                frames = self._stream_frames(name, clip, box, flip)
                out[name] = clip_to_tensor(frames, mean=self.mean, std=self.std)
        return out

    def _decode(self, record: VideoRecord, indices: np.ndarray) -> DecodedClip:
        """One pass over the file for every stream: frames, the frames after them, motion-vector fields."""
        m = self.motion
        following = m.next_frames if "rgbdiff" in self.modalities else 0
        windows = None
        if "mv" in self.modalities:
            windows = motion_windows(indices, record.num_frames, self.num_frames, window=m.mv_window)
        return read_clip(
            record.path,
            indices,
            short_side=self.resize,
            following=following,
            motion_windows=windows,
            motion_fallback=m.mv_fallback,
        )

    def _stream_frames(self, name: str, clip: DecodedClip, box: CropBox, flip: bool) -> torch.Tensor:
        """uint8 ``(T, size, size, 3)`` images of an image stream, cropped and flipped."""
        if name == "rgb":
            frames = torch.from_numpy(clip.frames)
        elif name == "rgbdiff":
            m = self.motion
            diff = M.rgb_difference(clip.frames, clip.following, mode=m.rgbdiff, scale=m.rgbdiff_scale)
            frames = torch.from_numpy(diff)
        else:  # mv as an image, built in crop coordinates (where the vectors are rescaled and flipped)
            return self._flow_images(clip, box, flip)
        frames = resized_crop(frames, box, self.size)  # (T, size, size, 3) uint8
        return hflip(frames) if flip else frames

    def _flows(self, clip: DecodedClip, box: CropBox, flip: bool, out_size: int) -> list[torch.Tensor]:
        """Per sampled frame, its window's flow fields ``(F, 2, out_size, out_size)`` in crop coordinates, camera
        motion (each frame's median vector) removed first."""
        out = []
        for fields in clip.flows:
            if len(fields) == 0:
                out.append(M.zero_flow(out_size))
                continue
            moving = M.remove_camera_motion(torch.from_numpy(fields))
            out.append(M.crop_flow(moving, box, cell=clip.flow_cell, out_size=out_size, flip=flip))
        return out

    def _flow_images(self, clip: DecodedClip, box: CropBox, flip: bool) -> torch.Tensor:
        """uint8 ``(T, size, size, 3)`` flow images: made at 1/8 of the size (the fields are 16-pixel blocks, so
        nothing finer exists), then resized up."""
        low = max(8, -(-self.size // 8))
        images = torch.stack([M.flow_image(f, scale=self.motion.mv_scale) for f in self._flows(clip, box, flip, low)])
        return resize(images, self.size, self.size, antialias=False)  # (T, low, low, 3) -> (T, size, size, 3)

    def _motion_histogram(self, clip: DecodedClip, box: CropBox, flip: bool) -> torch.Tensor:
        """float32 ``(bins + 1, T, h, w)`` orientation histograms on the feature grid."""
        gh, gw = self.feature_grid
        flows = self._flows(clip, box, flip, out_size=8 * max(gh, gw))  # 8 samples per grid cell and axis
        hist = [M.flow_histogram(f, bins=self.motion.mv_bins, grid=(gh, gw)) for f in flows]
        return torch.stack(hist, dim=1)

    def _is_random(self, view: int) -> bool:
        return self.mode == "train" or (self.mode == "augment" and view > 0)

    def _view_rng(self, record: VideoRecord, view: int) -> np.random.Generator | None:
        """Augment views draw from their own seeded generator; train draws from torch's RNG (None)."""
        if self.mode == "augment" and view > 0:
            return np.random.default_rng(stable_seed(self.seed, record.video_id, view))
        return None

    def _indices(self, record: VideoRecord, view: int, rng: np.random.Generator | None) -> np.ndarray:
        if self._is_random(view):
            return segment_indices(record.num_frames, self.num_frames, mode="train", rng=rng)
        clip = view // self.crops if self.mode == "eval" else 0
        clips = self.views // self.crops if self.mode == "eval" else 1
        return segment_indices(record.num_frames, self.num_frames, mode="eval", offset=clip_offset(clip, clips))

    def _box_and_flip(
        self, height: int, width: int, view: int, rng: np.random.Generator | None
    ) -> tuple[CropBox, bool]:
        if self._is_random(view):
            box = random_resized_crop_box(height, width, scale=self.crop_scale, rng=rng)
            u = rng.random() if rng is not None else float(torch.rand(()))  # drawn always: same RNG stream
            return box, self.hflip and u < 0.5
        crop = view % self.crops if self.mode == "eval" else 0
        box = eval_source_box(height, width, size=self.size, resize=self.resize, index=crop, crops=self.crops)
        return box, False


class _BadFiles:
    """Undecodable files, shared by the processes of one dataset through marker files in a private temp folder.

    The folder's path travels with the dataset into DataLoader workers (fork or spawn); only the creating process
    removes it, when the dataset is garbage-collected or at exit.
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dymsta-bad-videos-")
        self.local: dict[str, str] = {}
        weakref.finalize(self, _remove_if_owner, self.dir, os.getpid())

    def __getstate__(self) -> dict[str, Any]:
        return {"dir": self.dir, "local": dict(self.local)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dir, self.local = state["dir"], state["local"]

    def _marker(self, path: str) -> str:
        return os.path.join(self.dir, hashlib.sha1(path.encode("utf-8")).hexdigest())

    def add(self, path: str, cause: str) -> bool:
        """Record a bad file; True for the first process (of all) to record it."""
        self.local[path] = cause
        try:
            fd = os.open(self._marker(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError:  # the folder vanished (tmp cleaner): fall back to this process's memory
            return True
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps([path, cause]))
        return True

    def get(self, path: str) -> str | None:
        """The cause, if any process found ``path`` undecodable."""
        if path in self.local:
            return self.local[path]
        try:
            with open(self._marker(path), encoding="utf-8") as f:
                self.local[path] = cause = json.loads(f.read())[1]
        except (OSError, ValueError, IndexError):
            return None
        return cause

    def all(self) -> dict[str, str]:
        found = dict(self.local)
        try:
            names = os.listdir(self.dir)
        except OSError:
            return found
        for name in names:
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    path, cause = json.loads(f.read())
            except (OSError, ValueError):
                continue  # being written right now
            found[path] = cause
        return found


def _remove_if_owner(folder: str, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _check_settings(*, num_frames: int, size: int, mode: str, views: int, crops: int, backend: str) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if crops not in EVAL_CROPS:
        raise ValueError(f"crops must be one of {EVAL_CROPS}, got {crops}")
    if mode == "eval" and views % crops:
        raise ValueError(f"views ({views}) must be a multiple of crops ({crops}) in eval mode")
    if mode != "eval" and crops != 1:
        raise ValueError(f"crops={crops} applies to eval mode only (mode={mode!r})")
    if backend not in BACKENDS:
        raise DecoderBackendError(f"unknown decoding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torchcodec":
        ok, why = torchcodec_available()
        if not ok:
            raise DecoderBackendError(why)


def motion_windows(indices: np.ndarray, num_frames: int, num_segments: int, *, window: int) -> list[tuple[int, int]]:
    """``[start, stop)`` frames whose motion vectors make each sampled frame's flow.

    ``window`` frames centred on each index (1 = the sampled frame alone), or with ``window=0`` the whole TSN
    segment the index lies in; clipped to the video.
    """
    if window == 0:
        bounds = np.floor(np.arange(num_segments + 1) * (num_frames / num_segments)).astype(int)
        segment = np.minimum(np.searchsorted(bounds, indices, side="right") - 1, num_segments - 1)
        return [(int(bounds[s]), int(max(bounds[s + 1], bounds[s] + 1))) for s in segment]
    return [(max(0, int(i) - (window - 1) // 2), min(num_frames, int(i) + window // 2 + 1)) for i in indices]


def collate_clips(batch: list[tuple[dict[str, torch.Tensor], int, str] | None]) -> dict[str, Any] | None:
    """Stack dataset items, dropping skipped (None) ones.

    Returns:
        ``{"video": {stream: float (B, C, T, ...)}, "label": long (B,), "video_id": list[str], "num_skipped": int}``,
        or None when every item of the batch was skipped.
    """
    items = [b for b in batch if b is not None]
    if not items:
        return None
    return {
        "video": default_collate([clip for clip, _, _ in items]),  # in a worker: stacked straight into shared memory
        "label": torch.tensor([label for _, label, _ in items], dtype=torch.long),
        "video_id": [vid for _, _, vid in items],
        "num_skipped": len(batch) - len(items),
    }
