"""What every benchmark script shares: the machine record, the smoke mode's tiny inputs, busy-core readings.

Each script in ``benchmarks/`` takes ``--smoke``: the same code on tiny inputs (a synthetic UCF101-layout set of a
few 64-px clips, small batches, one repeat), seconds long, its JSON written where ``--out`` says. The test suite
runs every script that way (``tests/test_benchmarks.py``), so a benchmark that stops running fails CI. Smoke
figures measure nothing; they are never written to ``benchmarks/results``.

Every results JSON holds :func:`machine`: the CPU model, its class (AVX2 / AVX-512 / AVX-512 bf16 / AMX / ARM),
its vector extensions, whether bf16 is native there (:mod:`dymsta.hardware`), PyTorch's threads and the load.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from dymsta.hardware import busy_cores, machine_record

__all__ = ["EMULATE_AVX2", "REPO", "RESULTS", "busy_cores", "machine", "rerun_as_avx2", "smoke_dataset"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# what an AVX2-only CPU (most laptops, desktops, cloud VMs) gives PyTorch and oneDNN; OpenVINO ignores these caps
EMULATE_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def rerun_as_avx2(out: Path | None, default_name: str) -> None:
    """``--emulate-avx2``: run this script again in a child capped to AVX2 (the caps are read at start-up), its
    JSON at ``out`` or ``results/<default_name>``, and exit with the child's status. No-op inside that child."""
    if all(os.environ.get(k) == v for k, v in EMULATE_AVX2.items()):
        return
    argv = [a for a in sys.argv if a != "--emulate-avx2"]
    if out is None:
        argv += ["--out", str(RESULTS / default_name)]
    sys.exit(subprocess.call([sys.executable, *argv], env={**os.environ, **EMULATE_AVX2}))


def machine(device: str | torch.device = "cpu") -> dict:
    """The record of the machine a result comes from (:func:`dymsta.hardware.machine_record` and the run's
    threads, load average, platform and versions); the GPU's name on CUDA."""
    info = {"device": str(device), **machine_record(), "torch_threads": torch.get_num_threads()}
    capped = all(os.environ.get(k) == v for k, v in EMULATE_AVX2.items())
    # the class the figures stand for: the CPU's own, or AVX2 where PyTorch and oneDNN are capped to it
    info["measured_as"] = (
        f"AVX2 (emulated on {info['cpu_class']}; OpenVINO not capped)" if capped else info["cpu_class"]
    )
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["loadavg_at_start"] = None
    info.update(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__)
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def smoke_dataset(folder: str | os.PathLike, *, groups: int = 4, num_frames: int = 16, size: int = 64) -> Path:
    """A tiny synthetic set in the UCF101 layout (8 classes x ``groups`` clips, the first group for test): the
    stand-in for ucf101-mini in smoke mode. Reused when already complete in ``folder``."""
    from dymsta.data.synth import generate_synthetic

    folder = Path(folder)
    if not (folder / "synth_meta.json").is_file():
        generate_synthetic(
            folder, groups=groups, clips_per_group=1, test_groups=1, num_frames=num_frames, size=size, seed=0
        )
    return folder
