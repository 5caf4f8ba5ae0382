"""Inference runtimes for the frozen frame backbone: PyTorch, OpenVINO, ONNX Runtime.

A frozen backbone is a fixed function of each frame, so it can run on whichever engine computes it fastest.
:meth:`FrameBackbone.set_runtime <dymsta.models.backbone.FrameBackbone.set_runtime>` picks one; this module
resolves the name, exports the per-frame network once and runs it.

``model.runtime`` (:data:`RUNTIMES`):

* ``torch``: the module itself, exactly as without a runtime (the caller's autocast decides the precision).
* ``openvino``: OpenVINO on the CPU, ``THROUGHPUT`` hint, chunks of :data:`BATCH` frames in flight on its streams,
  at the caller's precision: bf16 inside a bf16 autocast (which :func:`dymsta.hardware.resolve_precision` turns on
  only where the CPU computes bf16 natively: AMX, AVX-512 bf16), fp32 otherwise. OpenVINO's own default would
  pick bf16 on such CPUs even for an fp32 caller; an explicit precision keeps one policy for every runtime.
* ``onnxruntime``: ONNX Runtime's CPUExecutionProvider in fp32, non-spinning worker threads.
* ``auto``: on a CPU the first installed of :data:`AUTO_CPU_ORDER` (OpenVINO, ONNX Runtime, PyTorch); on CUDA
  (or any other device) PyTorch. On a CPU without native bf16 (a 2-core AMD EPYC Zen 3, AVX2 only; issue 18's
  measurement, Lite0, batch 32, 2 threads): OpenVINO fp32 166 frames/s, ONNX Runtime 164, PyTorch fp32 92 (and
  PyTorch under bf16 autocast 4.3), so the order holds there too. Measured in one process on the 2-core AMX CPU of this project, Lite0 at 224, 32
  frames per call (``benchmarks/bench_model.py --quick``, 2 threads, machine idle at the start): OpenVINO bf16 341
  frames/s, ONNX Runtime fp32 201, PyTorch bf16 autocast + channels_last + inference mode 113 (Lite2 at 260: 188 /
  80 / 53). With a neighbour on one core: OpenVINO ~200, ONNX Runtime ~110, PyTorch bf16 27-110 on one thread and
  7-17 on two (its OpenMP threads wait for the busy core). So ONNX Runtime, exact fp32 and never slower here, is
  the fallback before PyTorch (the design notes' quiet-machine figures, ONNX Runtime 188 vs PyTorch 225, were
  not reproduced).

Files: the per-frame network (``(N, 3, H, W) -> (N, C, h, w)``, fixed H and W, dynamic N) is exported to ONNX
once per weights and frame size, ``<cache_dir>/runtimes/<fingerprint>-<H>x<W>-torch<version>-opset17.onnx``, and
for OpenVINO converted to ``...-<H>x<W>-openvino<version>.xml`` / ``.bin``; both are written atomically and
reused by every later backbone with the same weights. Without a ``cache_dir``: :func:`default_cache_dir`.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
import threading
import time
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dymsta.models.errors import ModelConfigError, RuntimeUnavailableError
from dymsta.models.export import ExportError
from dymsta.utils import atomic_path, get_logger

__all__ = [
    "AUTO_CPU_ORDER",
    "BATCH",
    "RUNTIMES",
    "FrameRunner",
    "OnnxRuntimeRunner",
    "OpenVINORunner",
    "build_runner",
    "default_cache_dir",
    "export_frames_onnx",
    "installed",
    "openvino_precision",
    "resolve_runtime",
    "runtime_id",
]

log = get_logger(__name__)

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
AUTO_CPU_ORDER = ("openvino", "onnxruntime", "torch")  # fastest first (see the module docstring)
# frames per inference request, measured with Lite0 at 224 on this CPU (frames/s): quiet, 2 threads: OpenVINO
# 1/4/8/16: 341/360/330/345, ONNX Runtime 1/4/8: 152/199/177; a neighbour busy: OpenVINO 4 ~ 8 > 1 (-20%) > 32
# (-30%), ONNX Runtime 1 ~ 4 > 8 (-10%) > 32 (-40%). Small chunks stay in cache.
BATCH = {"openvino": 4, "onnxruntime": 4}
ONNX_OPSET = 17
_MODULES = {"openvino": ("openvino", "onnx"), "onnxruntime": ("onnxruntime", "onnx")}  # onnx: torch.onnx.export


# ---------------------------------------------------------------------- resolution


def installed(runtime: str) -> bool:
    """Whether ``runtime`` (``torch``, ``openvino``, ``onnxruntime``) and the ``onnx`` exporter import here."""
    if runtime == "torch":
        return True
    try:
        for module in _MODULES[runtime]:
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def resolve_runtime(name: str, device: torch.device | str = "cpu") -> str:
    """The runtime ``name`` means on ``device``: ``auto`` becomes a concrete runtime; the others are checked.

    Args:
        name: ``model.runtime``: ``auto``, ``torch``, ``openvino`` or ``onnxruntime``.
        device: where the model runs; ``auto`` means PyTorch on anything but the CPU.

    Returns:
        ``torch``, ``openvino`` or ``onnxruntime``.

    Raises:
        ModelConfigError: unknown name, or a CPU runtime asked for a model on another device.
        RuntimeUnavailableError: the runtime asked for is not installed (the message has the ``pip install``).
    """
    if name not in RUNTIMES:
        raise ModelConfigError(f"model.runtime: must be one of {', '.join(RUNTIMES)}; got {name!r}")
    device = torch.device(device)
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        return next(r for r in AUTO_CPU_ORDER if installed(r))
    if name != "torch" and device.type != "cpu":
        raise ModelConfigError(
            f"model.runtime={name}: runs the backbone on the CPU, the model is on {device}; use torch or auto"
        )
    if not installed(name):
        raise RuntimeUnavailableError(f'model.runtime={name} needs `pip install "dymsta[{name}]"`')
    return name


PRECISIONS = ("fp32", "bf16")  # what a caller asks an export runtime for (the autocast it runs under)


@cache
def _openvino_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_precision(precision: str) -> str:
    """The precision OpenVINO computes when ``precision`` is asked for: bf16 only where its CPU plugin has it."""
    if precision not in PRECISIONS:
        raise ValueError(f"runtime precision: must be one of {PRECISIONS}; got {precision!r}")
    return "bf16" if precision == "bf16" and _openvino_bf16() else "fp32"


def _precision_name(ov_type: str) -> str:
    return {"bf16": "bf16", "f32": "fp32", "f16": "fp16"}.get(ov_type, ov_type)


def runtime_id(runtime: str, precision: str = "fp32") -> str:
    """Id of the features a (non-torch) runtime computes at ``precision`` (``fp32``, ``bf16``): ``openvino-bf16``,
    ``openvino-fp32``, ``onnxruntime-fp32`` (ONNX Runtime always computes fp32).

    Feature caches put it in their key: runtimes round differently (see ``tests/test_runtime.py``).
    """
    if runtime == "openvino":
        return f"openvino-{openvino_precision(precision)}"
    if runtime == "onnxruntime":
        return "onnxruntime-fp32"
    raise ValueError(f"runtime_id: {runtime!r} is not an export runtime (torch ids come from FrameBackbone)")


# ---------------------------------------------------------------------- files


def default_cache_dir() -> Path:
    """Per-user cache folder: ``$DYMSTA_CACHE_DIR``, else ``$XDG_CACHE_HOME/dymsta``, else ``~/.cache/dymsta``.

    Falls back to ``<tmp>/dymsta-<user>`` when the home folder is not writable.
    """
    env = os.environ.get("DYMSTA_CACHE_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dymsta"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    user = re.sub(r"[^A-Za-z0-9_.-]", "_", os.environ.get("USER") or str(os.getuid()))
    return Path(tempfile.gettempdir()) / f"dymsta-{user}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _torch_tag() -> str:
    return f"torch{torch.__version__.split('+')[0]}-opset{ONNX_OPSET}"


def _openvino_tag() -> str:
    import openvino as ov

    return f"openvino{ov.__version__.split('-')[0]}"


def export_frames_onnx(net: nn.Module, path: str | Path, *, height: int, width: int) -> Path:
    """Export a per-frame network ``(N, 3, H, W) -> (N, C, h, w)`` to ONNX: fixed H and W, dynamic N.

    Input ``frames``, output ``features``; float32, opset 17 (TorchScript exporter). Written atomically: a failed
    export leaves no file. Raises :class:`ExportError` (one line, names the file) on failure.
    """
    path = Path(path)
    example = torch.randn(2, 3, height, width)
    t0 = time.perf_counter()
    try:
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter; the tests check the numbers
            torch.onnx.export(
                net.eval(),
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["frames"],
                output_names=["features"],
                dynamic_axes={"frames": {0: "n"}, "features": {0: "n"}},
            )
    except Exception as e:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"ONNX export to {path} failed: {type(e).__name__}: {e}".split("\n")[0][:400]) from None
    log.info("exported the frame backbone to %s (%dx%d) in %.1f s", path, height, width, time.perf_counter() - t0)
    return path


def _ensure_onnx(net: nn.Module, path: Path, height: int, width: int) -> Path:
    if path.is_file():
        return path
    return export_frames_onnx(net, path, height=height, width=width)


def _ensure_openvino_ir(net: nn.Module, folder: Path, stem: str, height: int, width: int) -> Path:
    """``<stem>-<openvino tag>.xml`` (+ ``.bin``), converted from the ONNX file, exported first if needed."""
    import openvino as ov

    xml = folder / f"{stem}-{_openvino_tag()}.xml"
    bin_ = xml.with_suffix(".bin")
    if xml.is_file() and bin_.is_file():
        return xml
    onnx_path = _ensure_onnx(net, folder / f"{stem}-{_torch_tag()}.onnx", height, width)
    tmp_bin = None
    try:
        with atomic_path(xml, suffix=".xml") as tmp_xml:
            tmp_bin = tmp_xml.with_suffix(".bin")  # where save_model puts the weights
            model = ov.Core().read_model(str(onnx_path))
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)  # fp16 weights would change the numbers
            os.replace(tmp_bin, bin_)  # the .bin first: an .xml is only ever beside its complete .bin
    except Exception as e:  # noqa: BLE001 - OpenVINO raises its own types
        raise ExportError(
            f"OpenVINO conversion to {xml} failed: {type(e).__name__}: {e}".split("\n")[0][:400]
        ) from None
    finally:
        if tmp_bin is not None and tmp_bin.exists():
            tmp_bin.unlink()
    log.info("converted %s to OpenVINO IR %s", onnx_path.name, xml)
    return xml


# ---------------------------------------------------------------------- runners


class FrameRunner:
    """A compiled per-frame network: ``(N, 3, H, W)`` float frames -> ``(N, C, h, w)`` float32 features (CPU).

    Calls are split into chunks of :attr:`batch_size` frames. Thread-safe (one call at a time).

    Attributes:
        runtime: ``openvino`` or ``onnxruntime``.
        runtime_id: the id of the features it computes (:func:`runtime_id`).
        path: the model file it runs.
        batch_size: frames per inference request.
    """

    runtime = ""

    def __init__(self, path: Path, *, batch_size: int | None) -> None:
        self.path = path
        self.batch_size = batch_size or BATCH[self.runtime]
        self._lock = threading.Lock()

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.detach().to(dtype=torch.float32).contiguous().numpy()  # (N, 3, H, W)
        if len(x) == 0:  # no frames: run one to learn the output shape
            return self(torch.zeros(1, *frames.shape[1:]))[:0]
        with self._lock:
            chunks = self._run([x[i : i + self.batch_size] for i in range(0, len(x), self.batch_size)])
        return torch.from_numpy(chunks[0] if len(chunks) == 1 else np.concatenate(chunks))

    def _run(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeRunner(FrameRunner):
    """ONNX Runtime, CPUExecutionProvider, fp32: ``threads`` intra-op threads that sleep rather than spin.

    Spinning worker threads lost ~40% of the frames/s here when another process held one of the two cores.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (the backbone passes ``torch.get_num_threads()``).
        batch_size: frames per ``session.run`` (default :data:`BATCH`).
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, *, threads: int, batch_size: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(path, batch_size=batch_size)
        self.runtime_id = runtime_id("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise ExportError(f"onnxruntime could not load {path}: {e}".split("\n")[0][:400]) from None

    def _run(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        return [self.session.run(["features"], {"frames": c})[0] for c in chunks]


class OpenVINORunner(FrameRunner):
    """OpenVINO on the CPU at an explicit precision, ``THROUGHPUT`` hint: chunks run in parallel on its streams.

    Args:
        path: the OpenVINO IR ``.xml`` file (its ``.bin`` beside it).
        threads: CPU threads (``INFERENCE_NUM_THREADS``) the streams share (the backbone passes
            ``torch.get_num_threads()``).
        batch_size: frames per inference request (default :data:`BATCH`).
        precision: ``fp32`` or ``bf16`` (:func:`openvino_precision`: fp32 where the CPU plugin lacks bf16).
    """

    runtime = "openvino"

    def __init__(self, path: Path, *, threads: int, batch_size: int | None = None, precision: str = "fp32") -> None:
        import openvino as ov

        super().__init__(path, batch_size=batch_size)
        hint = {"bf16": "bf16", "fp32": "f32"}[openvino_precision(precision)]
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint}
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own types
            raise ExportError(f"OpenVINO could not compile {path}: {e}".split("\n")[0][:400]) from None
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.runtime_id = f"openvino-{_precision_name(precision)}"
        self.num_requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self.compiled, self.num_requests)
        self._results: dict[int, np.ndarray] = {}
        self._queue.set_callback(self._done)

    def _done(self, request: object, index: int) -> None:
        self._results[index] = request.get_output_tensor(0).data.copy()

    def _run(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        self._results = {}
        for i, chunk in enumerate(chunks):
            self._queue.start_async({0: chunk}, i)
        self._queue.wait_all()
        return [self._results[i] for i in range(len(chunks))]


def build_runner(
    runtime: str,
    net: nn.Module,
    *,
    key: str,
    height: int,
    width: int,
    cache_dir: str | Path | None = None,
    precision: str = "fp32",
) -> FrameRunner:
    """A runner of ``net`` (per-frame ``(N, 3, H, W) -> (N, C, h, w)``, float32 on the CPU) on ``runtime``.

    Args:
        runtime: ``openvino`` or ``onnxruntime`` (already resolved, see :func:`resolve_runtime`).
        net: the eager per-frame network; exported only when no file for ``key`` and this size exists yet.
        key: identifies the weights (``FrameBackbone.fingerprint(include_grid=False)``).
        height, width: the frame size the files are made for.
        cache_dir: the feature-cache folder; files go to ``<cache_dir>/runtimes`` (None: :func:`default_cache_dir`).
        precision: ``fp32`` or ``bf16``: what the caller computes at (OpenVINO follows it; ONNX Runtime is fp32).

    Raises:
        ExportError: export, conversion or compilation failed (one line, names the file).
    """
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "runtimes"
    stem = f"{_safe(key)}-{height}x{width}"
    threads = torch.get_num_threads()
    if runtime == "onnxruntime":
        path = _ensure_onnx(net, folder / f"{stem}-{_torch_tag()}.onnx", height, width)
        return OnnxRuntimeRunner(path, threads=threads)
    if runtime == "openvino":
        xml = _ensure_openvino_ir(net, folder, stem, height, width)
        return OpenVINORunner(xml, threads=threads, precision=precision)
    raise ValueError(f"build_runner: {runtime!r} is not an export runtime")
