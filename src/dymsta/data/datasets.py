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
them and counts them in ``num_skipped``, so a long run goes on and reports the count. A *partial* file -- one whose
decoding stops early (truncated, or corrupt after frame k), or whose stream holds fewer frames than its header
claims -- is logged once as ``"<path>: decoded k of N frames ..."``; below ``min_decoded_fraction`` of its expected
frames it is skipped like an undecodable one, otherwise its clips are sampled from the k frames that decode. "Once" holds across the
DataLoader worker processes and the epochs (workers are forked afresh each epoch): the first process to fail on a
file creates its marker in a folder private to the dataset (``O_EXCL``), and only that process logs it.
Frames larger than ``resize`` on the short side are shrunk during colour conversion (decode-time resize).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
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
    is_partial,
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

__all__ = ["MODES", "DecodeReport", "VideoClipDataset", "collate_clips", "motion_windows"]

log = get_logger(__name__)

MODES = ("train", "eval", "augment")


@dataclass(frozen=True)
class DecodeReport:
    """How the decode of one view went (:meth:`VideoClipDataset.load`).

    Attributes:
        frames_decoded: frames known to decode: the stream's count, or where its decoding stopped early.
        frames_expected: what the file should hold (its header's count, or the stream's where that is more).
        warning: ``"<path>: decoded k of N frames ..."`` for a partial file, else ``""``.
    """

    frames_decoded: int
    frames_expected: int
    warning: str = ""


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
        uint8: give image streams as uint8 frames ``(T, size, size, 3)``, not normalised, for the consumer to
            convert (:func:`dymsta.data.transforms.frames_to_input`): a quarter of the bytes between processes.
        min_decoded_fraction: a partial file (see the module docstring) that decodes less than this share of its
            expected frames is skipped; 0 keeps every file that decodes at all (with its warning).
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
        uint8: bool = False,
        min_decoded_fraction: float = 0.5,
    ) -> None:
        _check_settings(num_frames=num_frames, size=size, mode=mode, views=views, crops=crops, backend=backend)
        self.modalities = M.check_modalities(modalities)
        self.motion = motion or M.MotionSettings()
        self.motion.validate()
        if "mv" in self.modalities and self.motion.mv_encoding == "hist" and feature_grid is None:
            raise ValueError("mv as a histogram (data.motion.mv_encoding=hist) needs the backbone's feature_grid")
        self.feature_grid = feature_grid
        self.uint8 = uint8
        if not 0.0 <= min_decoded_fraction <= 1.0:
            raise ValueError(f"data.min_decoded_fraction must be in [0, 1], got {min_decoded_fraction}")
        self.min_decoded_fraction = min_decoded_fraction
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
        self._partial = _BadFiles()  # partial files used anyway: path -> "decoded k of N frames ..."

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
    def partial_files(self) -> dict[str, str]:
        """Partial files used anyway (at least ``min_decoded_fraction`` decodes): path -> their warning, so far,
        in any process."""
        return self._partial.all()

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
            clip, report = self.load(i)
        except VideoDecodeError as e:
            if self._bad.add(record.path, e.cause):
                log.warning("skipping undecodable video %s", e)
            return None
        if report.warning and self._partial.add(record.path, report.warning):
            log.warning("%s", report.warning)
        return clip, record.label, record.video_id

    def load(self, i: int) -> tuple[dict[str, torch.Tensor], DecodeReport]:
        """Item ``i``'s streams and how its decode went, with nothing remembered or logged (``__getitem__`` does).

        Raises:
            VideoDecodeError: the file cannot be decoded, or decodes less than ``min_decoded_fraction`` of it.
        """
        r, view = self.view_of(i)
        return self.load_record(self.records[r], view)

    def load_record(self, record: VideoRecord, view: int = 0) -> tuple[dict[str, torch.Tensor], DecodeReport]:
        """View ``view`` of any ``record`` (in this dataset or not), as :meth:`load` gives it."""
        rng = self._view_rng(record, view)
        clip, report = self._decode_view(record, view, rng)
        return self.clip_streams(clip, view, rng=rng, path=record.path), report

    def clip_streams(
        self, clip: DecodedClip, view: int = 0, *, rng: np.random.Generator | None = None, path: str = ""
    ) -> dict[str, torch.Tensor]:
        """The streams of a decoded clip: its frames cropped and flipped as view ``view`` of this dataset's mode
        (``rng`` for the random draws of augment views), motion streams made, normalised unless ``uint8``."""
        box, flip = self._box_and_flip(clip.frames.shape[1], clip.frames.shape[2], view, rng)
        if "mv" in self.modalities and clip.motion_source != self.motion.mv_source:  # a fallback, or zeros
            if self._motion_notes.add(path, clip.motion_source):
                if clip.motion_source == "none":
                    log.warning("%s: no motion vectors and no optical-flow fallback; its mv stream is zeros", path)
                else:
                    log.info("%s: its codec exports no motion vectors; the mv stream is optical flow", path)
        out: dict[str, torch.Tensor] = {}
        for name in self.modalities:
            if name == "mv" and self.motion.mv_encoding == "hist":
                out[name] = self._motion_histogram(clip, box, flip)
            else:
                frames = self._stream_frames(name, clip, box, flip)  # (T, size, size, 3) uint8
                out[name] = frames.contiguous() if self.uint8 else clip_to_tensor(frames, mean=self.mean, std=self.std)
        return out

    # ------------------------------------------------------------------------------------------------ internals

    def _decode_view(
        self, record: VideoRecord, view: int, rng: np.random.Generator | None
    ) -> tuple[DecodedClip, DecodeReport]:
        """Decode one view; a partial file is sampled again over the frames that decode (or refused)."""
        clip = self._decode(record, self._indices(record, view, rng))
        expected = record.expected_frames
        available = clip.num_decoded if clip.ended_early else record.num_frames
        if not is_partial(available, expected):
            return clip, DecodeReport(available, expected)
        why = f"truncated or corrupt: {clip.error}" if clip.error else "truncated or corrupt"
        if available < self.min_decoded_fraction * expected:
            raise VideoDecodeError(
                record.path,
                f"decoded {available} of {expected} frames ({why}); below data.min_decoded_fraction="
                f"{self.min_decoded_fraction:g}",
            )
        if clip.ended_early:  # the positions past the end hold its last frame: sample the part that decodes
            record = dataclasses.replace(record, num_frames=available)
            clip = self._decode(record, self._indices(record, view, rng))
        warning = f"{record.path}: decoded {available} of {expected} frames ({why}); using those"
        return clip, DecodeReport(available, expected, warning)

    def decode_settings(self, record: VideoRecord, indices: np.ndarray) -> tuple[int, list[tuple[int, int]] | None]:
        """``(following, motion_windows)`` that this dataset's streams need around ``indices`` of ``record``."""
        m = self.motion
        following = m.next_frames if "rgbdiff" in self.modalities else 0
        windows = None
        if "mv" in self.modalities:
            windows = motion_windows(indices, record.num_frames, self.num_frames, window=m.mv_window)
        return following, windows

    def _decode(self, record: VideoRecord, indices: np.ndarray) -> DecodedClip:
        """One pass over the file for every stream: frames, the frames after them, motion-vector fields."""
        if self.modalities == ("rgb",) and self.backend != "pyav":
            frames = read_frames(record.path, indices, backend=self.backend, short_side=self.resize)
            return DecodedClip(frames=frames, num_decoded=record.num_frames)
        following, windows = self.decode_settings(record, indices)
        return read_clip(
            record.path,
            indices,
            short_side=self.resize,
            following=following,
            motion_windows=windows,
            motion_fallback=self.motion.mv_fallback,
            motion_source=self.motion.mv_source,
            strict=False,
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
        m = self.motion
        flows = self._flows(clip, box, flip, low)
        images = torch.stack([M.flow_image(f, scale=m.mv_scale, third=m.mv_image) for f in flows])
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
