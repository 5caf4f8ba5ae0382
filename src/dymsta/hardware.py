"""What this machine computes fast, and the one precision policy that follows from it.

``train.amp`` (and ``--amp`` of ``predict``/``eval``/``serve``) means the same everywhere: training, evaluation,
prediction, serving, attention maps and feature extraction, for PyTorch's autocast and for the frozen backbone's
runtime (:mod:`dymsta.models.runtime`):

* ``auto``: bf16 where the device computes it natively, fp32 elsewhere.
  - x86 CPU: native with AMX (``amx_bf16``) or AVX-512 bf16 (``avx512_bf16``), and only while PyTorch and oneDNN
    are allowed to use those instructions (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA`` can cap them).
  - ARM CPU: native with the bf16 instructions (``bf16`` in ``/proc/cpuinfo``, ``FEAT_BF16`` on macOS).
  - CUDA: compute capability 8.0 or newer gives bf16; older GPUs get fp16 with a gradient scaler.
  - anything else: fp32.
* ``bf16``: bf16 autocast wherever asked; on a CPU without native bf16 it is emulated, and a warning says so.
* ``fp16``: CUDA only (with a gradient scaler in training).
* ``none``: fp32.

Why: without native bf16, PyTorch emulates it. On a 2-core AMD EPYC Zen 3 (AVX2 only) a 1024 x 1024
``nn.Linear`` on a batch of 256 ran at 87 GFLOP/s in fp32 and 10 GFLOP/s under bf16 autocast (one thread), a head
epoch of the demo 4.1x slower, the Lite0 backbone 20x slower (issue 18). On AVX-512-bf16 and AMX CPUs bf16 is
the faster one (``benchmarks/bench_precision.py``).

:func:`cpu_info` also names the CPU's class (``AVX2``, ``AVX-512``, ``AVX-512 bf16``, ``AMX``, ``ARM bf16``,
``ARM``) for benchmark records (:func:`machine_record`). Tests replace the probe with :func:`set_cpu_probe`.

Threads (:func:`choose_threads`, ``train.threads: 0`` and the default of ``predict``/``eval``/``serve``): one
intra-op thread per idle core. PyTorch's OpenMP threads wait for each other at every operator, so a thread on a
core another process keeps busy stalls the rest: measured by ``benchmarks/bench_threads.py`` on a 2-core AMD
EPYC, a head epoch with 2 threads took 9.0 s alone and 22.3 s beside a busy process (AVX2), 4.2 s and 12.4 s
(AVX-512 bf16), where 1 thread took 12.7 s and 7.3 s either way. OpenMP's passive wait policy
(``OMP_WAIT_POLICY=passive``) helped beside the busy process (13.9 s) but made head epochs up to 29% longer
alone, so the lever is the thread count, taken from the cores idle when the job starts.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dymsta.utils import get_logger

__all__ = [
    "AMP_CHOICES",
    "autocast",
    "CpuInfo",
    "Precision",
    "cpu_info",
    "bf16_conv3d_grad_ok",
    "busy_cores",
    "choose_threads",
    "guard_model_precision",
    "machine_record",
    "probe_cpu",
    "resolve_precision",
    "set_cpu_probe",
    "set_threads",
    "usable_cores",
]

log = get_logger(__name__)

AMP_CHOICES = ("auto", "bf16", "fp16", "none")
# ONEDNN_MAX_CPU_ISA values (oneDNN's names) that still allow its AVX-512 bf16 or AMX kernels
_ONEDNN_BF16_ISAS = {
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "ALL",
    "DEFAULT",
}
# the extensions a benchmark record lists (x86 from PyTorch's cpuinfo / /proc/cpuinfo, ARM from /proc/cpuinfo)
_VECTOR_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "avx_vnni",
    "asimd",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)

_TORCH_FLAG_NAMES = {"avx512_f": "avx512f", "fma3": "fma"}  # PyTorch's cpuinfo names -> /proc/cpuinfo's


@dataclass(frozen=True)
class CpuInfo:
    """The CPU, as far as precision is concerned.

    Attributes:
        model: the model name (``/proc/cpuinfo``, else ``platform.processor()``).
        arch: ``platform.machine()`` (``x86_64``, ``aarch64``, ``arm64``, ...).
        capability: the kernels PyTorch dispatches to (``torch.backends.cpu.get_cpu_capability()``: ``AVX2``,
            ``AVX512``, ``DEFAULT``, ``SVE256``, ...).
        features: the vector extensions found, of :data:`_VECTOR_FLAGS`.
        native_bf16: whether bf16 matrix products run natively (see the module docstring).
        isa_class: ``AMX``, ``AVX-512 bf16``, ``AVX-512``, ``AVX2``, ``x86 (no AVX2)``, ``ARM bf16``, ``ARM``, ``other``.
        reason: one line: why bf16 is or is not native here.
    """

    model: str
    arch: str
    capability: str
    features: tuple[str, ...]
    native_bf16: bool
    isa_class: str
    reason: str


@dataclass(frozen=True)
class Precision:
    """What ``train.amp`` resolves to on one device.

    Attributes:
        name: ``bf16``, ``fp16`` or ``fp32``.
        dtype: the autocast dtype; None: no autocast (fp32).
        grad_scaler: training needs a gradient scaler (fp16 on CUDA).
        reason: one line, for the log.
    """

    name: str
    dtype: Any  # torch.dtype | None (kept untyped: this module imports torch lazily)
    grad_scaler: bool
    reason: str


# ---------------------------------------------------------------------- the CPU probe


def _cpuinfo_text() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo_field(text: str, *names: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in names:
            return value.strip()
    return ""


def _darwin_has(feature: str) -> bool:
    try:
        out = subprocess.run(["sysctl", "-n", feature], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return out.strip() == "1"


def _cpu_flags(text: str) -> set[str]:
    """Lower-case feature flags: PyTorch's cpuinfo where it answers (x86), plus /proc/cpuinfo (x86 and ARM)."""
    flags = set(_cpuinfo_field(text, "flags", "features").lower().split())
    try:
        import torch

        caps = torch._C._cpu._get_cpu_capability()  # private, but portable: {'avx2': True, 'avx512_bf16': ...}
        flags |= {_TORCH_FLAG_NAMES.get(name, name) for name, on in caps.items() if on is True}
    except (AttributeError, ImportError, RuntimeError, TypeError):
        pass
    if platform.system() == "Darwin" and _darwin_has("hw.optional.arm.FEAT_BF16"):
        flags.add("bf16")
    return flags


def _torch_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, ImportError, RuntimeError):
        return "unknown"


def probe_cpu() -> CpuInfo:
    """Read this CPU: model, extensions, PyTorch's kernel level, and whether bf16 is native (uncached)."""
    text = _cpuinfo_text()
    arch = platform.machine().lower()
    model = _cpuinfo_field(text, "model name", "hardware", "cpu model") or platform.processor() or arch or "unknown"
    flags = _cpu_flags(text)
    capability = _torch_capability()
    features = tuple(f for f in _VECTOR_FLAGS if f in flags)
    if arch in ("x86_64", "amd64", "i686", "x86"):
        native, isa_class, reason = _x86_bf16(flags, capability)
    elif arch in ("aarch64", "arm64") or arch.startswith("arm"):
        native = "bf16" in flags
        isa_class = "ARM bf16" if native else "ARM"
        reason = "ARM CPU with bf16 instructions" if native else "ARM CPU without bf16 instructions"
    else:
        native, isa_class, reason = False, "other", f"{arch or 'unknown'} CPU: bf16 not known to be native"
    return CpuInfo(model, arch, capability, features, native, isa_class, reason)


def _x86_bf16(flags: set[str], capability: str) -> tuple[bool, str, str]:
    """``(native_bf16, isa_class, reason)`` of an x86 CPU with these flags and PyTorch kernel level."""
    if "amx_bf16" in flags:
        hw, isa_class = "AMX", "AMX"
    elif "avx512_bf16" in flags:
        hw, isa_class = "AVX-512 bf16", "AVX-512 bf16"
    else:
        isa_class = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "x86 (no AVX2)"
        return False, isa_class, f"CPU without native bf16 ({isa_class})"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in _ONEDNN_BF16_ISAS:
        return False, isa_class, f"CPU with {hw}, but ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN from it (emulated)"
    if not capability.upper().startswith("AVX512"):
        return False, isa_class, f"CPU with {hw}, but PyTorch runs its {capability} kernels (ATEN_CPU_CAPABILITY)"
    return True, isa_class, f"CPU with native bf16 ({hw})"


_probe: Callable[[], CpuInfo] = probe_cpu
_info: CpuInfo | None = None
_lock = threading.Lock()


def cpu_info() -> CpuInfo:
    """This CPU (probed once per process)."""
    global _info
    with _lock:
        if _info is None:
            _info = _probe()
        return _info


def set_cpu_probe(probe: Callable[[], CpuInfo] | None) -> None:
    """Replace the CPU probe (tests; None restores :func:`probe_cpu`) and forget what was probed and logged."""
    global _probe, _info
    with _lock:
        _probe, _info = probe or probe_cpu, None
    _logged.clear()


# ---------------------------------------------------------------------- the precision policy

_logged: set[tuple[str, str, str]] = set()


def resolve_precision(amp: str, device: Any) -> Precision:
    """What ``amp`` (``auto``, ``bf16``, ``fp16``, ``none``) means on ``device`` (a ``torch.device`` or name).

    The choice and its reason are logged once per process (a warning where bf16 is asked for and emulated).

    Raises:
        ValueError: unknown ``amp``, or ``fp16`` off CUDA.
    """
    import torch

    if amp not in AMP_CHOICES:
        raise ValueError(f"train.amp: must be one of {', '.join(AMP_CHOICES)}; got {amp!r}")
    device = torch.device(device)
    if amp == "none":
        p = Precision("fp32", None, False, "no autocast")
    elif device.type == "cuda":
        p = _cuda_precision(amp, device)
    elif amp == "fp16":
        raise ValueError(f"train.amp=fp16 needs CUDA (on {device.type} use auto, bf16 or none)")
    elif device.type == "cpu":
        info = cpu_info()
        if amp == "auto":
            p = Precision("bf16", torch.bfloat16, False, info.reason) if info.native_bf16 else None
            p = p or Precision("fp32", None, False, info.reason)
        else:
            p = Precision("bf16", torch.bfloat16, False, info.reason)
    else:
        p = Precision("bf16", torch.bfloat16, False, f"asked for on {device}") if amp == "bf16" else None
        p = p or Precision("fp32", None, False, f"no native-bf16 rule for {device.type}")
    _log_once(amp, device, p)
    return p


_conv3d_probe: dict[str, bool] = {}


def bf16_conv3d_grad_ok() -> bool:
    """Whether PyTorch's CPU bf16 ``Conv3d`` weight gradient is right where the temporal kernel is longer than the
    clip it slides over (R(2+1)D's deepest layers see 2 frames under a 3-frame kernel).

    oneDNN's AVX-512 kernels in torch 2.14 return NaN or values near 1e32 there (measured on an AMD EPYC Zen 4, AVX-512
    bf16; the AVX2 path is right), so a 16-channel probe is compared with fp32 once per process (milliseconds).
    """
    if "ok" not in _conv3d_probe:
        import torch
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 16, 2, 3, 3, generator=g)
        w = torch.randn(16, 16, 3, 1, 1, generator=g) * 0.1
        gy = torch.randn(2, 16, 2, 3, 3, generator=g)
        grads = []
        for dtype in (torch.float32, torch.bfloat16):
            wd = w.to(dtype).clone().requires_grad_()
            with torch.enable_grad():
                F.conv3d(x.to(dtype), wd, None, 1, (1, 0, 0)).backward(gy.to(dtype))
            grads.append(wd.grad.float())
        err = (grads[1] - grads[0]).abs().max() / grads[0].abs().max()
        _conv3d_probe["ok"] = bool(torch.isfinite(err) and err < 0.05)
    return _conv3d_probe["ok"]


def guard_model_precision(precision: Precision, model: Any, device: Any) -> Precision:
    """``precision``, or fp32 where bf16 would train ``model`` wrongly on this CPU: a 3D CNN on raw clips
    (``uses_frame_backbone`` false, ``Conv3d`` with a temporal kernel) while :func:`bf16_conv3d_grad_ok` is false.
    The frame-backbone heads never slide a temporal kernel past their 8+ frames and keep bf16."""
    import torch

    if precision.name != "bf16" or torch.device(device).type != "cpu" or getattr(model, "uses_frame_backbone", True):
        return precision
    temporal = any(isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1 for m in model.modules())
    if not temporal or bf16_conv3d_grad_ok():
        return precision
    reason = "this CPU's bf16 Conv3d weight gradient is wrong (oneDNN AVX-512 kernels, torch 2.14): fp32 for 3D CNNs"
    log.warning("precision: fp32 instead of bf16 for %s: %s", type(model).__name__, reason)
    return Precision("fp32", None, False, reason)


def _cuda_precision(amp: str, device: Any) -> Precision:
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    name = f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}"
    if amp == "fp16" or (amp == "auto" and major < 8):
        return Precision("fp16", torch.float16, True, f"{name}: fp16 with a gradient scaler")
    if major < 8:
        return Precision("bf16", torch.bfloat16, False, f"{name} has no native bf16 (emulated)")
    return Precision("bf16", torch.bfloat16, False, f"{name}: native bf16")


def _log_once(amp: str, device: Any, p: Precision) -> None:
    key = (amp, str(device), p.name)
    if key in _logged:
        return
    _logged.add(key)
    emulated = device.type == "cpu" and not cpu_info().native_bf16 or "emulated" in p.reason
    if p.name == "bf16" and emulated:
        log.warning(
            "precision: bf16 (train.amp=%s) on %s: %s; PyTorch emulates bf16 here, expect it several times slower "
            "than fp32 (train.amp=auto picks fp32)",
            amp,
            device,
            p.reason,
        )
    else:
        log.info("precision: %s on %s (train.amp=%s: %s)", p.name, device, amp, p.reason)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def busy_cores(seconds: float = 0.25) -> float:
    """Cores kept busy by anything (other processes included) over ``seconds``, from /proc/stat (NaN elsewhere)."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def choose_threads(requested: int = 0, *, busy: float | None = None) -> tuple[int, str]:
    """PyTorch intra-op threads and why: ``requested`` when > 0, else one per core not kept busy by others.

    Args:
        requested: a thread count the user set (``train.threads``, ``--threads``); 0 chooses.
        busy: cores busy with other work (None: :func:`busy_cores` measures it for a quarter of a second).
    """
    cores = usable_cores()
    if requested > 0:
        return requested, f"{requested} thread(s) as set"
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local_ranks > 1:  # torchrun: the ranks on this machine share its cores (and keep each other busy)
        return max(1, cores // local_ranks), f"{cores} cores shared by {local_ranks} ranks"
    busy = busy_cores() if busy is None else busy
    if busy != busy:  # NaN: no /proc/stat
        return cores, f"one per core ({cores}); busy cores unknown"
    taken = min(int(busy + 0.5), cores - 1)
    if taken <= 0:
        return cores, f"one per core ({cores}), all idle"
    return cores - taken, f"{cores - taken} of {cores} cores: other processes keep {busy:.1f} busy"


def set_threads(requested: int = 0, *, what: str = "train.threads") -> int:
    """Sets PyTorch's intra-op threads by :func:`choose_threads` and logs the choice once per count; the count."""
    import torch

    threads, reason = choose_threads(requested)
    torch.set_num_threads(threads)
    key = ("threads", what, str(threads))
    if key not in _logged:
        _logged.add(key)
        log.info("threads: %d (%s=%d: %s)", threads, what, requested, reason)
    return threads


def machine_record() -> dict[str, Any]:
    """The CPU fields every benchmark result records: model, class, extensions, native bf16, PyTorch's kernels."""
    info = asdict(cpu_info())
    return {
        "cpu": info["model"],
        "cpu_class": info["isa_class"],
        "vector_extensions": list(info["features"]),
        "native_bf16": info["native_bf16"],
        "native_bf16_reason": info["reason"],
        "torch_cpu_capability": info["capability"],  # AVX2 here where ATEN_CPU_CAPABILITY=avx2 caps PyTorch
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "arch": info["arch"],
        "cores": os.cpu_count(),
    }


def autocast(device: Any, dtype: Any) -> Any:
    """``torch.autocast`` on ``device`` (a ``torch.device`` or its type) at ``dtype``; a no-op context for None."""
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(getattr(device, "type", str(device)), dtype=dtype)
