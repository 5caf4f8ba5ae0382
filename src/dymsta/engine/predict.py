"""A trained model on real videos: batch prediction over many files, timelines of long videos, calibrated scores.

:class:`Predictor` is the one inference core (``dymsta predict`` and, later, ``dymsta serve`` use it)::

    predictor = Predictor.from_checkpoint("runs/ucf101_s1", threshold=0.5)   # a run, a .safetensors or a .onnx
    for result in predictor.predict_files(["a.mp4", "b.avi"]):              # plain dicts, documented fields
        print(result["video"], result["label"], result["predictions"][0])
    timeline = predictor.timeline("long.mp4", window=2.0, stride=1.0, plot="timeline.png")

Every clip is made as the model's recipe makes its test clips: ``data.num_frames`` TSN segment centres, resized to
short side ``data.resize``, centre crop ``data.size``, the backbone's normalisation, and the recipe's streams
(``rgbdiff`` and ``mv`` from the same decode). Scores are probabilities: ``softmax(logits / T)`` with the
temperature fitted after training (1 for an uncalibrated checkpoint), averaged over ``views`` temporal clips.
The JSON fields of a result and of a timeline are listed in docs/predict.md, and tested.

An exported ONNX file carries the class names, this preprocessing and the temperature in its metadata
(:func:`export_checkpoint`), so ``Predictor.from_checkpoint("model.onnx")`` runs it with onnxruntime and gives
the checkpoint's result.
"""

from __future__ import annotations

import bisect
import dataclasses
import glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dymsta.config import DataConfig, config_from_dict
from dymsta.data import VideoClipDataset, VideoDecodeError, VideoRecord, probe_video, read_frames
from dymsta.data.datasets import DecodeReport
from dymsta.data.decode import iter_frames
from dymsta.data.motion import MotionSettings
from dymsta.data.sampling import segment_indices
from dymsta.data.splits import VIDEO_EXTENSIONS
from dymsta.data.transforms import frames_to_input
from dymsta.engine import distributed as D
from dymsta.engine.calibration import TEMPERATURE_KEY, softmax
from dymsta.engine.checkpoint import CheckpointError
from dymsta.engine.stream import DEFAULT_SWITCH_COST, UNKNOWN, sliding_windows, timeline
from dymsta.hardware import autocast, resolve_precision
from dymsta.utils import atomic_path, get_logger, progress

__all__ = [
    "InputSpec",
    "Predictor",
    "UNKNOWN",
    "expand_inputs",
    "export_checkpoint",
    "predict_paths",
    "resolve_checkpoint",
    "sliding_windows",
]

log = get_logger(__name__)

ONNX_FORMAT = "dymsta-onnx-1"  # metadata "dymsta.format" of an exported file
_GLOB_CHARS = set("*?[")


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``RUN_DIR``, a ``.safetensors`` or an ``.onnx`` file -> (model file, run folder)."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "best.safetensors"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{path} has no checkpoints/best.safetensors (is it a dymsta run folder?)")
        return ckpt, path
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run_dir


# ------------------------------------------------------------------------------------------------- input spec


@dataclass(frozen=True)
class InputSpec:
    """What the model takes and how a clip is made from a video: the test-time sampling of its recipe.

    Attributes:
        num_frames: T, frames per clip: one per TSN segment, the segment's centre (views: evenly offset).
        size: S, the square crop fed to the model.
        resize: short side the frames are resized to before the centre crop (None: ``round(S * 256 / 224)``).
        mean, std: per-channel normalisation of [0, 1] RGB.
        modalities: the input streams (``rgb``, ``rgbdiff``, ``mv``).
        motion: how ``rgbdiff`` and ``mv`` are made.
        feature_grid: ``(h, w)`` of the backbone's grid at S, for an ``mv`` histogram stream (else None).
        min_decoded_fraction: a file that decodes less than this share of its frames is an error entry, the
            datasets' rule (the recipe's ``data.min_decoded_fraction``); ``allow_partial`` predicts anyway.
    """

    num_frames: int
    size: int
    resize: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    modalities: tuple[str, ...] = ("rgb",)
    motion: MotionSettings = dataclasses.field(default_factory=MotionSettings)
    feature_grid: tuple[int, int] | None = None
    min_decoded_fraction: float = 0.5

    def dataset(self, *, views: int = 1, min_decoded_fraction: float = 0.0) -> VideoClipDataset:
        """A clip pipeline with these settings (uint8 image streams, for :func:`frames_to_input`)."""
        return VideoClipDataset(
            [],
            num_frames=self.num_frames,
            size=self.size,
            mean=self.mean,
            std=self.std,
            mode="eval",
            views=views,
            resize=self.resize,
            modalities=self.modalities,
            motion=self.motion,
            feature_grid=self.feature_grid,
            uint8=True,
            min_decoded_fraction=min_decoded_fraction,
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["feature_grid"] = list(self.feature_grid) if self.feature_grid else None
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputSpec:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        d["modalities"] = tuple(d["modalities"])
        d["motion"] = MotionSettings(**d["motion"])
        d["feature_grid"] = tuple(d["feature_grid"]) if d.get("feature_grid") else None
        return cls(**d)


def _spec_of(model: torch.nn.Module, data: DataConfig) -> InputSpec:
    size = data.size or model.input_size
    hist = "mv" in data.modalities and data.motion.mv_encoding == "hist"
    grid = None
    if hist:
        device = next(model.parameters()).device
        with torch.no_grad():
            grid = tuple(model.backbone(torch.zeros(1, 3, 1, size, size, device=device)).shape[-2:])
    return InputSpec(
        num_frames=data.num_frames,
        size=size,
        resize=data.resize,
        mean=tuple(model.mean),
        std=tuple(model.std),
        modalities=tuple(data.modalities),
        motion=data.motion,
        feature_grid=grid,
        min_decoded_fraction=data.min_decoded_fraction,
    )


# ----------------------------------------------------------------------------------------------------- runners


class _TorchRunner:
    """A loaded PyTorch model: ``{stream: input batch}`` -> logits (B, K) float64."""

    def __init__(self, model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None) -> None:
        self.model, self.device, self.amp_dtype = model, device, amp_dtype

    @torch.no_grad()
    def __call__(self, streams: dict[str, torch.Tensor]) -> np.ndarray:
        batch = {k: v.to(self.device) for k, v in streams.items()}
        with autocast(self.device, self.amp_dtype):
            logits = self.model(batch)
        return logits.float().cpu().double().numpy()


class _OnnxRunner:
    """An exported ONNX model in onnxruntime: one input per stream (``video`` for RGB), output ``logits``."""

    def __init__(self, path: Path, device: torch.device) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, streams: dict[str, torch.Tensor]) -> np.ndarray:
        feeds = {("video" if s == "rgb" else s): v.float().cpu().numpy() for s, v in streams.items()}
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise ValueError(f"the ONNX model needs input {missing[0]!r}, which its metadata's streams do not make")
        (logits,) = self.session.run(["logits"], {n: feeds[n] for n in self.inputs})
        return logits.astype(np.float64)


# --------------------------------------------------------------------------------------------------- predictor


class Predictor:
    """A model ready for videos: its runner, input spec, class names, temperature and threshold.

    Args:
        runner: ``{stream: batch}`` -> logits (B, K).
        spec: how clips are made (:class:`InputSpec`).
        class_names: K names, in id order.
        temperature: calibration temperature T (scores are ``softmax(logits / T)``).
        threshold: a video (or window) whose top probability is below it is labelled :data:`UNKNOWN`.
        source: the model file, for messages and results.
        model: the PyTorch model, when there is one (``explain`` needs it).
        amp_dtype: the autocast dtype ``model`` runs at (:func:`dymsta.hardware.resolve_precision`); None: fp32.
    """

    def __init__(
        self,
        runner: Any,
        spec: InputSpec,
        class_names: Sequence[str],
        *,
        temperature: float = 1.0,
        threshold: float | None = None,
        source: str = "",
        model: torch.nn.Module | None = None,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"calibration temperature must be > 0, got {temperature}")
        _check_threshold(threshold)
        self.runner, self.spec, self.class_names = runner, spec, list(class_names)
        self.temperature, self.threshold, self.source, self.model = float(temperature), threshold, source, model
        self.amp_dtype = amp_dtype

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        threshold: float | None = None,
        runtime: str | None = None,
        amp: str | None = None,
    ) -> Predictor:
        """Load a run folder, a ``.safetensors`` checkpoint or an exported ``.onnx`` file.

        Args:
            path: the model.
            device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
            threshold: see :class:`Predictor`.
            runtime: the frozen backbone's runtime (``auto``, ``torch``, ``openvino``, ``onnxruntime``); default:
                the recipe's ``model.runtime``. Checkpoints only.
            amp: ``auto``/``bf16``/``fp16``/``none``: precision while predicting (:mod:`dymsta.hardware`: ``auto`` is
                bf16 only where the device computes it natively); default: the recipe's ``train.amp``.

        Raises:
            FileNotFoundError, CheckpointError, ModelFileError, ExportError: a missing or unusable model (one line).
        """
        from dymsta.engine.train import resolve_device
        from dymsta.models import load_model

        _check_threshold(threshold)  # before the model loads: a typo costs no time
        ckpt, _ = resolve_checkpoint(path)
        dev = resolve_device(device)
        if ckpt.suffix.lower() == ".onnx":
            return cls._from_onnx(ckpt, dev, threshold)
        model, meta = load_model(ckpt, map_location=dev)
        model.eval()
        run_config = json.loads(meta["run_config"]) if "run_config" in meta else None
        classes = json.loads(meta["class_names"]) if "class_names" in meta else None
        classes = classes or [str(i) for i in range(model.cfg.num_classes)]
        if run_config:
            data = config_from_dict(run_config).data
        else:  # a bare model file: its own frames and streams, default motion settings
            data = DataConfig(num_frames=model.cfg.num_frames, modalities=tuple(getattr(model, "streams", ("rgb",))))
        amp_name = amp or (run_config["train"]["amp"] if run_config else "none")
        spec = _spec_of(model, data)
        if getattr(model, "uses_frame_backbone", False):  # after the weights: set_runtime exports them
            model.backbone.set_runtime(runtime or model.cfg.runtime, device=dev, size=spec.size)
        try:
            temperature = float(json.loads(meta.get(TEMPERATURE_KEY, "1.0")))
        except (TypeError, ValueError):
            raise CheckpointError(f"{ckpt}: {TEMPERATURE_KEY} in its metadata is not a number") from None
        amp_dtype = resolve_precision(amp_name, dev).dtype
        runner = _TorchRunner(model, dev, amp_dtype)
        return cls(
            runner,
            spec,
            classes,
            temperature=temperature,
            threshold=threshold,
            source=str(ckpt),
            model=model,
            amp_dtype=amp_dtype,
        )

    @classmethod
    def _from_onnx(cls, path: Path, device: torch.device, threshold: float | None) -> Predictor:
        from dymsta.models.export import ExportError, read_onnx_metadata

        meta = read_onnx_metadata(path)
        if meta.get("dymsta.format") != ONNX_FORMAT:
            raise ExportError(f"{path}: no dymsta metadata (class names, preprocessing); export it with dymsta export")
        try:
            spec = InputSpec.from_json(json.loads(meta["dymsta.preprocessing"]))
            classes = json.loads(meta["dymsta.class_names"])
            temperature = float(meta.get("dymsta.calibration_temperature", "1.0"))
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"{path}: malformed dymsta metadata ({type(e).__name__}: {e})") from None
        return cls(
            _OnnxRunner(path, device), spec, classes, temperature=temperature, threshold=threshold, source=str(path)
        )

    # ------------------------------------------------------------------------------------------- scoring

    def probabilities(self, streams: dict[str, torch.Tensor]) -> np.ndarray:
        """Calibrated probabilities (B, K) of a batch of clips (uint8 image streams or model input)."""
        inputs = frames_to_input(streams, mean=self.spec.mean, std=self.spec.std)
        return softmax(self.runner(inputs), self.temperature)

    def _ranked(self, probs: np.ndarray, top_k: int) -> tuple[str, list[dict[str, Any]]]:
        """``(label, predictions)``: the top label (or :data:`UNKNOWN` under the threshold) and the top-k list."""
        order = np.argsort(-probs, kind="stable")[: max(1, min(top_k, len(self.class_names)))]
        predictions = [{"label": self.class_names[i], "score": round(float(probs[i]), 6)} for i in order]
        below = self.threshold is not None and float(probs[order[0]]) < self.threshold
        return (UNKNOWN if below else self.class_names[order[0]]), predictions

    # -------------------------------------------------------------------------------------------- files

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        top_k: int = 5,
        views: int = 1,
        batch_size: int = 8,
        workers: int = 2,
        show_progress: bool = False,
        allow_partial: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """One result per path, in order (see docs/predict.md); decoding runs in ``workers`` processes while the
        model runs on batches of ``batch_size`` clips. A file that cannot be used gives a result with ``error``;
        so does one that decodes less than ``spec.min_decoded_fraction`` of its frames, unless ``allow_partial``
        (then it is predicted with a warning, as is any partial file above that share).

        Result fields: ``video``, ``label`` (top class, or ``"unknown"`` under the threshold; None on error),
        ``predictions`` (``[{"label", "score"}]``, top-k, probabilities, best first), ``frames_decoded``,
        ``frames_expected``, ``warnings`` (one-line strings), ``error`` (None, or one line).
        """
        if views < 1 or batch_size < 1 or top_k < 1:
            raise ValueError(f"views, batch size and top-k must be >= 1, got {views}, {batch_size}, {top_k}")
        least = 0.0 if allow_partial else self.spec.min_decoded_fraction
        clips = self.spec.dataset(views=views, min_decoded_fraction=least)
        items = _FileItems([str(p) for p in paths], clips, views)
        workers = min(workers, len(items))
        loader = DataLoader(items, batch_size=None, num_workers=workers, collate_fn=_identity)
        queue: list[dict[str, Any]] = []
        pending = 0
        for item in progress(loader, desc="predict", unit="video", enabled=show_progress):
            queue.append(item)
            pending += views if item["streams"] is not None else 0
            if pending >= batch_size:
                yield from self._resolve(queue, top_k)
                queue, pending = [], 0
        yield from self._resolve(queue, top_k)

    def _resolve(self, queue: list[dict[str, Any]], top_k: int) -> Iterator[dict[str, Any]]:
        """Run the model once on every clip of ``queue`` and give its results in order."""
        ok = [item for item in queue if item["streams"] is not None]
        if ok:
            batch = {k: torch.cat([item["streams"][k] for item in ok]) for k in ok[0]["streams"]}  # (sum V, ...)
            probs = self.probabilities(batch)
            start = 0
            for item in ok:
                v = item["streams"][next(iter(item["streams"]))].shape[0]
                item["probs"] = probs[start : start + v].mean(axis=0)  # video level: mean over views
                start += v
        for item in queue:
            label, predictions = (None, []) if item["error"] else self._ranked(item["probs"], top_k)
            for warning in item["warnings"]:
                log.warning("%s", warning)
            yield {
                "video": item["video"],
                "label": label,
                "predictions": predictions,
                "frames_decoded": item["frames_decoded"],
                "frames_expected": item["frames_expected"],
                "warnings": item["warnings"],
                "error": item["error"],
            }

    # --------------------------------------------------------------------------------------------- timeline

    def timeline(
        self,
        path: str | os.PathLike,
        *,
        window: float = 2.0,
        stride: float = 1.0,
        top_k: int = 3,
        batch_size: int = 8,
        plot: str | os.PathLike | None = None,
        video_out: str | os.PathLike | None = None,
        smooth: int = 1,
        min_segment: float = 0.0,
        switch_cost: float = DEFAULT_SWITCH_COST,
    ) -> dict[str, Any]:
        """Classify sliding windows of ``window`` seconds every ``stride`` seconds, in one streaming pass
        (:mod:`dymsta.engine.stream`, the path of ``--stream`` too, reading a file).

        Each window is a clip of the recipe's sampling (``num_frames`` segment centres inside the window). Only
        the frames of the windows in flight are held, so memory stays flat with the video's length. Consecutive
        windows with the same label merge into segments; a window owns the time closer to its centre than to
        its neighbours', so segments tile the video.

        Args:
            path: the video.
            window, stride: seconds (> 0).
            top_k: predictions kept per window.
            batch_size: windows per model call.
            plot: write the class probabilities over time as this PNG.
            video_out: write the video with the current label drawn on it as this MP4.
            smooth: windows over which probabilities are averaged before labelling (centred; 1 = none).
            min_segment: segments shorter than this many seconds merge into a neighbour.
            switch_cost: log-probability a change of label costs on the windows' best path (0: each window's
                own label; :func:`dymsta.engine.stream.best_path`).

        Returns:
            A dict (docs/predict.md): ``video``, ``duration_s``, ``fps``, ``window_s``, ``stride_s``,
            ``frames_decoded``, ``frames_expected``, ``warnings``, ``error``, ``segments`` (ActivityNet style
            ``{"segment": [start_s, end_s], "label", "score"}``), ``windows`` (``{"segment", "label",
            "predictions"}``), and ``plot`` / ``video_out`` when written. A file that cannot be used gives
            ``error`` and no segments.
        """
        result, probs, spans, fps = timeline(
            self, str(path), window=window, stride=stride, top_k=top_k, batch_size=batch_size, smooth=smooth,
            min_segment=min_segment, switch_cost=switch_cost,
        )  # fmt: skip
        if plot is not None and len(probs):
            from dymsta.reports import plot_timeline

            centres = np.array([(a + b) / 2 / fps for a, b in spans])
            title = f"{Path(path).name}: {window:g} s windows every {stride:g} s"
            plot_timeline(
                centres,
                probs,
                self.class_names,
                Path(plot),
                segments=result["segments"],
                threshold=self.threshold,
                title=title,
            )
            result["plot"] = str(plot)
        if video_out is not None and result["segments"]:
            _write_labelled(path, Path(video_out), result["segments"], fps)
            result["video_out"] = str(video_out)
        return result

    # --------------------------------------------------------------------------------------------- explain

    def explain(self, path: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
        """Attention maps of the first clip of ``path`` over its frames, as ``<stem>_attention.png`` (DyMSTA-Net
        with attention, from a checkpoint); None (with a warning) for other models."""
        from dymsta.reports import plot_attention

        model = self.model
        if model is None or getattr(model, "backbone", None) is None or not getattr(model.cfg, "attention", False):
            log.warning("--explain needs a DyMSTA-Net checkpoint with attention; skipped")
            return None
        info = probe_video(path)
        record = VideoRecord(str(path), 0, str(path), "", info.num_frames, info.fps, info.header_frames)
        streams, _ = self.spec.dataset().load_record(record)
        device = next(model.parameters()).device
        batch = frames_to_input(
            {k: v[None].to(device) for k, v in streams.items()}, mean=self.spec.mean, std=self.spec.std
        )
        with torch.no_grad(), autocast(device, self.amp_dtype):  # the predictor's precision, as for scores
            logits, maps = model.forward_head(model.extract(batch), return_maps=True)
        label = self.class_names[int(logits.argmax(1))]
        indices = segment_indices(info.num_frames, self.spec.num_frames, mode="eval")
        frames = read_frames(path, indices)  # (T, H, W, 3) uint8
        return plot_attention(
            frames,
            maps["temporal"][0].float().cpu().numpy(),
            maps["spatial"][0].float().cpu().numpy(),
            Path(out_dir) / f"{Path(path).stem}_attention.png",
            title=f"{Path(path).name}: {label}",
        )


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be a probability in [0, 1], got {threshold}")


def _stack(clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([c[k] for c in clips]) for k in clips[0]}


def _identity(item: Any) -> Any:
    return item


class _FileItems(Dataset):
    """Item ``i``: the ``views`` clips of file ``i`` (decoded in a DataLoader worker), or why there are none."""

    def __init__(self, paths: list[str], clips: VideoClipDataset, views: int) -> None:
        self.paths, self.clips, self.views = paths, clips, views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        item: dict[str, Any] = {
            "video": path,
            "streams": None,
            "frames_decoded": 0,
            "frames_expected": 0,
            "warnings": [],
            "error": None,
        }
        try:
            info = probe_video(path)
            item["frames_expected"] = info.expected_frames
            record = VideoRecord(path, 0, path, "", info.num_frames, info.fps, info.header_frames)
            views = [self.clips.load_record(record, v) for v in range(self.views)]
        except VideoDecodeError as e:
            item["error"] = _input_error(path, e)
            return item
        except Exception as e:  # noqa: BLE001 - one odd file must not end a run over thousands
            item["error"] = f"{path}: {type(e).__name__}: {e}".split("\n")[0]
            return item
        report: DecodeReport = views[0][1]
        item["frames_decoded"], item["frames_expected"] = report.frames_decoded, report.frames_expected
        item["warnings"] = [report.warning] if report.warning else []
        item["streams"] = {k: torch.stack([s[k] for s, _ in views]) for k in views[0][0]}  # {s: (V, ...)}
        return item


def _input_error(path: str, e: VideoDecodeError) -> str:
    """A clearer line for inputs that were never files: a pattern with no match, a folder with no video."""
    if e.cause == "file not found" and _GLOB_CHARS & set(path):
        return f"{path}: no file matches this pattern"
    if e.cause.startswith("is a directory"):
        return f"{path}: a folder with no video files ({', '.join(VIDEO_EXTENSIONS)})"
    if "min_decoded_fraction" in str(e):
        return f"{e} (--allow-partial uses it anyway)"
    return str(e)


# --------------------------------------------------------------------------------------------------- helpers


def _write_labelled(path: str | os.PathLike, out: Path, segments: list[dict[str, Any]], fps: float) -> None:
    from dymsta.reports.video import write_labelled_video

    starts = [s["segment"][0] for s in segments]

    def label_at(t: float) -> str:
        seg = segments[max(0, bisect.bisect_right(starts, t) - 1)]
        return f"{seg['label']} ({seg['score']:.0%})  {t:.1f} s"

    write_labelled_video(iter_frames(path, short_side=480), out, fps=fps, label_at=label_at)


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Video paths from command-line items, in order: files as given; folders walked recursively for video
    extensions (sorted, hidden entries skipped); glob patterns (``**`` allowed) expanded, sorted; ``@list.txt``
    read as one item per line (blank lines and ``#`` comments skipped, relative paths relative to the list's
    folder). A pattern or folder that yields nothing stays as it is, so that its result says so.

    Raises:
        FileNotFoundError: a ``@list`` file that does not exist.
    """
    out: list[str] = []
    for item in items:
        if item.startswith("@") and len(item) > 1:
            listing = Path(item[1:])
            if not listing.is_file():
                raise FileNotFoundError(f"list file not found: {listing}")
            base = listing.parent
            lines = listing.read_text(encoding="utf-8-sig").splitlines()
            entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            out.extend(expand_inputs(str(p if Path(p).is_absolute() else base / p) for p in entries))
        elif Path(item).is_dir():
            found = _videos_under(Path(item))
            out.extend(found or [item])
        elif _GLOB_CHARS & set(item) and not Path(item).exists():
            matched = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            out.extend(matched or [item])
        else:
            out.append(item)
    return out


def _videos_under(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
    return sorted(found)


def predict_paths(
    predictor: Predictor,
    paths: Sequence[str],
    *,
    out: str | os.PathLike | None = None,
    timeline: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Results for ``paths`` in input order, written as JSONL to ``out`` (atomically) when given.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) each rank takes a strided share of the files (one GPU or
    process each); rank 0 gathers every share, and yields and writes all results in input order; the other ranks
    yield nothing. ``timeline``: keyword arguments of :meth:`Predictor.timeline` (one result per video is then a
    timeline; ``plot``/``video_out`` there may be a folder, receiving ``<stem>.timeline.png`` / ``<stem>.mp4``);
    else ``kwargs`` go to :meth:`Predictor.predict_files`.
    """
    device = next(iter(predictor.model.parameters())).device if predictor.model is not None else torch.device("cpu")
    distributed = D.init_distributed(device)
    mine = D.shard(list(range(len(paths))))
    results = _run(predictor, [paths[i] for i in mine], timeline, kwargs)
    if distributed:
        gathered = D.all_gather_objects((mine, list(results)))
        if not D.is_main():
            return
        by_index = {i: r for part_idx, part in gathered for i, r in zip(part_idx, part, strict=True)}
        results = (by_index[i] for i in range(len(paths)))
    with atomic_path(out, suffix=".jsonl") if out is not None else nullcontext() as tmp:
        f = open(tmp, "w", encoding="utf-8") if tmp is not None else None  # noqa: SIM115 - closed below
        try:
            for result in results:
                if f is not None:
                    f.write(json.dumps(result) + "\n")
                yield result
        finally:
            if f is not None:
                f.close()


def _run(
    predictor: Predictor, paths: list[str], timeline: dict[str, Any] | None, kwargs: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    if timeline is None:
        yield from predictor.predict_files(paths, **kwargs)
        return
    for path in progress(paths, desc="timeline", unit="video", enabled=kwargs.get("show_progress", False)):
        options = dict(timeline)
        for key, suffix in (("plot", ".timeline.png"), ("video_out", ".labelled.mp4")):
            target = options.get(key)
            if target is not None and (len(paths) > 1 or Path(target).is_dir() or not Path(target).suffix):
                options[key] = Path(target) / f"{Path(path).stem}{suffix}"
        yield predictor.timeline(path, **options)


# ----------------------------------------------------------------------------------------------------- export


def export_checkpoint(
    path: str | Path, out: str | Path, *, frames: int | None = None, size: int | None = None
) -> tuple[Path, float]:
    """Export a checkpoint to ONNX with what a client needs in its metadata, and check it against PyTorch.

    Metadata (docs/predict.md): ``dymsta.format``, ``dymsta.class_names`` (JSON list, id order),
    ``dymsta.inputs`` (JSON: input name -> stream, layout, shape, dtype), ``dymsta.input_layout``,
    ``dymsta.num_frames``, ``dymsta.size``, ``dymsta.resize``, ``dymsta.sampling``, ``dymsta.mean``,
    ``dymsta.std``, ``dymsta.calibration_temperature``, ``dymsta.preprocessing`` (JSON of :class:`InputSpec`).

    Returns:
        ``(path written, max |logit difference| of onnxruntime vs PyTorch)``.
    """
    from dymsta.models.export import check_onnx, example_inputs, export_onnx, input_names

    ckpt, _ = resolve_checkpoint(path)
    if ckpt.suffix.lower() == ".onnx":
        raise CheckpointError(f"{ckpt} is already an ONNX file; export a run folder or a .safetensors checkpoint")
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", runtime="torch", amp="none")
    model = predictor.model
    spec = dataclasses.replace(
        predictor.spec, num_frames=frames or predictor.spec.num_frames, size=size or predictor.spec.size
    )
    if spec.num_frames != model.cfg.num_frames:
        raise ValueError(f"--frames {spec.num_frames}: the model was built for {model.cfg.num_frames} frames")
    if spec.feature_grid is not None and spec.size != predictor.spec.size:
        spec = dataclasses.replace(spec, feature_grid=_spec_of(model, _data_like(spec)).feature_grid)
    example = example_inputs(model, batch=2, num_frames=spec.num_frames, size=spec.size)
    inputs = {
        name: {
            "stream": stream,
            "layout": "B,C,T,H,W",
            "shape": ["batch", *example[name].shape[1:]],
            "dtype": "float32",
        }
        for name, stream in zip(input_names(model), model.streams, strict=True)
    }
    metadata = {
        "dymsta.format": ONNX_FORMAT,
        "dymsta.class_names": json.dumps(predictor.class_names),
        "dymsta.inputs": json.dumps(inputs),
        "dymsta.input_layout": "B,C,T,H,W float32: RGB images normalised (x / 255 - mean) / std",
        "dymsta.num_frames": str(spec.num_frames),
        "dymsta.size": str(spec.size),
        "dymsta.resize": str(spec.resize or round(spec.size * 256 / 224)),
        "dymsta.sampling": (
            f"TSN: the video cut into {spec.num_frames} equal segments, the centre frame of each; frames resized "
            f"to short side dymsta.resize, centre crop dymsta.size"
        ),
        "dymsta.mean": json.dumps(list(spec.mean)),
        "dymsta.std": json.dumps(list(spec.std)),
        "dymsta.calibration_temperature": repr(predictor.temperature),
        "dymsta.preprocessing": json.dumps(spec.to_json()),
    }
    written = export_onnx(model, out, num_frames=spec.num_frames, size=spec.size, metadata=metadata)
    return written, check_onnx(model, written, example)


def _data_like(spec: InputSpec) -> DataConfig:
    return DataConfig(
        num_frames=spec.num_frames, size=spec.size, resize=spec.resize, modalities=spec.modalities, motion=spec.motion
    )
