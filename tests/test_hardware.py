"""The precision policy (dymsta.hardware): bf16 only where the device computes it natively, with the probe replaced."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import torch

from dymsta import hardware as hw
from dymsta.config import load_config

AVX2 = hw.CpuInfo(
    "AMD EPYC 7B13", "x86_64", "AVX2", ("avx", "avx2", "fma"), False, "AVX2", "CPU without native bf16 (AVX2)"
)
AMX = hw.CpuInfo(
    "Intel Xeon",
    "x86_64",
    "AVX512",
    ("avx2", "avx512f", "avx512_bf16", "amx_bf16"),
    True,
    "AMX",
    "CPU with native bf16 (AMX)",
)


@pytest.fixture
def probe() -> Iterator[callable]:
    """``probe(info)`` makes ``info`` the CPU for the test; the real probe comes back afterwards."""
    yield lambda info: hw.set_cpu_probe(lambda: info)
    hw.set_cpu_probe(None)


def test_auto_is_fp32_without_native_bf16_and_says_why_once(probe, caplog: pytest.LogCaptureFixture) -> None:
    probe(AVX2)
    with caplog.at_level(logging.INFO, logger="dymsta.hardware"):
        first = hw.resolve_precision("auto", "cpu")
        again = hw.resolve_precision("auto", torch.device("cpu"))
    assert first == again and first.name == "fp32" and first.dtype is None and not first.grad_scaler
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fp32" in lines[0] and "CPU without native bf16 (AVX2)" in lines[0]


def test_auto_is_bf16_where_native(probe) -> None:
    probe(AMX)
    p = hw.resolve_precision("auto", "cpu")
    assert (p.name, p.dtype, p.reason) == ("bf16", torch.bfloat16, "CPU with native bf16 (AMX)")


def test_explicit_bf16_stays_available_and_warns_where_emulated(probe, caplog: pytest.LogCaptureFixture) -> None:
    probe(AVX2)
    with caplog.at_level(logging.INFO, logger="dymsta.hardware"):
        p = hw.resolve_precision("bf16", "cpu")
    assert p.dtype == torch.bfloat16
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "emulates" in record.getMessage()
    probe(AMX)
    with caplog.at_level(logging.INFO, logger="dymsta.hardware"):
        caplog.clear()
        assert hw.resolve_precision("bf16", "cpu").dtype == torch.bfloat16
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_none_fp16_and_unknown_values(probe) -> None:
    probe(AMX)
    assert hw.resolve_precision("none", "cpu").dtype is None
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        hw.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="train.amp: must be one of"):
        hw.resolve_precision("float16", "cpu")


@pytest.mark.parametrize(
    ("capability", "amp", "expected"),
    [((8, 0), "auto", ("bf16", False)), ((9, 0), "auto", ("bf16", False)), ((7, 5), "auto", ("fp16", True)),
     ((7, 5), "fp16", ("fp16", True)), ((8, 6), "fp16", ("fp16", True))],
)  # fmt: skip
def test_cuda_rule(monkeypatch: pytest.MonkeyPatch, capability: tuple, amp: str, expected: tuple) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    p = hw.resolve_precision(amp, "cuda:0")
    assert (p.name, p.grad_scaler) == expected
    assert p.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[p.name]


@pytest.mark.parametrize(
    ("flags", "capability", "env", "native", "isa_class"),
    [
        ({"avx", "avx2", "fma"}, "AVX2", "", False, "AVX2"),
        ({"avx2", "avx512f"}, "AVX512", "", False, "AVX-512"),
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", "", True, "AVX-512 bf16"),
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, "AVX512", "", True, "AMX"),
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX2", "", False, "AVX-512 bf16"),  # ATEN_CPU_CAPABILITY=avx2
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", "AVX2", False, "AVX-512 bf16"),  # ONEDNN_MAX_CPU_ISA=AVX2
        ({"avx2", "avx512f", "amx_bf16"}, "AVX512", "avx512_core_amx", True, "AMX"),
        ({"sse4_2"}, "DEFAULT", "", False, "x86 (no AVX2)"),
    ],
)
def test_x86_rule(
    monkeypatch: pytest.MonkeyPatch, flags: set, capability: str, env: str, native: bool, isa_class: str
) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", env)
    got_native, got_class, reason = hw._x86_bf16(flags, capability)
    assert (got_native, got_class) == (native, isa_class)
    assert reason and "\n" not in reason


def test_arm_probe_reads_the_bf16_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hw.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(hw.platform, "system", lambda: "Linux")
    monkeypatch.setattr(hw, "_torch_capability", lambda: "SVE256")
    monkeypatch.setattr(hw, "_cpu_flags", lambda text: set(hw._cpuinfo_field(text, "features").split()))
    monkeypatch.setattr(hw, "_cpuinfo_text", lambda: "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    info = hw.probe_cpu()
    assert info.native_bf16 and info.isa_class == "ARM bf16" and {"sve", "bf16"} <= set(info.features)
    monkeypatch.setattr(hw, "_cpuinfo_text", lambda: "processor\t: 0\nFeatures\t: fp asimd\n")
    info = hw.probe_cpu()
    assert not info.native_bf16 and info.isa_class == "ARM"


def test_this_machine_is_probed_consistently() -> None:
    info = hw.probe_cpu()
    record = hw.machine_record()
    assert record["cpu"] == info.model and record["native_bf16"] == info.native_bf16
    assert record["cpu_class"] == info.isa_class and record["cores"] >= 1
    uncapped = info.capability.startswith("AVX512") and not os.environ.get("ONEDNN_MAX_CPU_ISA")
    if info.arch == "x86_64" and uncapped:  # what /proc/cpuinfo says decides
        assert info.native_bf16 == bool({"avx512_bf16", "amx_bf16"} & set(info.features))


def test_pipeline_and_predictor_follow_the_policy(probe, colour_run: dict) -> None:
    """A stored run (train.amp=auto in its config) loads under both answers of the probe, with the matching dtype."""
    from dymsta.engine.predict import Predictor
    from dymsta.engine.train import build_pipeline

    cfg = load_config(colour_run["run"] / "config.yaml", ["train.amp=auto"])  # what every shipped recipe stores
    for info, dtype in ((AVX2, None), (AMX, torch.bfloat16)):
        probe(info)
        assert build_pipeline(cfg, colour_run["run"]).amp_dtype is dtype
        predictor = Predictor.from_checkpoint(colour_run["run"], device="cpu", amp="auto")
        assert predictor.amp_dtype is dtype and predictor.runner.amp_dtype is dtype
        result = next(predictor.predict_files(colour_run["test_videos"][:1], workers=0))
        assert result["error"] is None and result["label"] == "blue"


def test_conv3d_probe_matches_a_real_r2plus1d_gradient() -> None:
    """The probe's answer holds for R(2+1)D's deepest temporal conv (3-frame kernel over 2 frames): where it says
    bf16 is right the gradient is within bf16 rounding of fp32, where it says wrong it is not."""
    torch.manual_seed(0)
    x, w = torch.randn(4, 64, 2, 7, 7), torch.randn(64, 64, 3, 1, 1) * 0.05
    gy = torch.randn(4, 64, 2, 7, 7)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        wd = w.to(dtype).clone().requires_grad_()
        torch.nn.functional.conv3d(x.to(dtype), wd, None, 1, (1, 0, 0)).backward(gy.to(dtype))
        grads.append(wd.grad.float())
    err = ((grads[1] - grads[0]).abs().max() / grads[0].abs().max()).item()
    assert hw.bf16_conv3d_grad_ok() == (err == err and err < 0.05)  # err == err: not NaN


@pytest.mark.parametrize("probe_ok", [True, False])
def test_guard_keeps_frame_heads_and_moves_3d_cnns_to_fp32(monkeypatch: pytest.MonkeyPatch, probe_ok: bool) -> None:
    from dymsta.models import ModelConfig, build_model

    monkeypatch.setitem(hw._conv3d_probe, "ok", probe_ok)
    bf16 = hw.Precision("bf16", torch.bfloat16, False, "test")
    head = build_model(ModelConfig(pretrained=False, num_classes=3))
    cnn = build_model(ModelConfig(arch="r2plus1d_18", pretrained=False, num_classes=3))
    assert hw.guard_model_precision(bf16, head, "cpu") is bf16
    assert hw.guard_model_precision(bf16, cnn, "cpu").name == ("bf16" if probe_ok else "fp32")
    fp32 = hw.Precision("fp32", None, False, "test")
    assert hw.guard_model_precision(fp32, cnn, "cpu") is fp32


# --- threads: one per idle core -----------------------------------------------------------------------------------


def test_threads_are_one_per_idle_core_and_never_zero(monkeypatch):
    monkeypatch.setattr(hw, "usable_cores", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert hw.choose_threads(0, busy=0.1)[0] == 2
    assert hw.choose_threads(0, busy=1.0)[0] == 1
    assert hw.choose_threads(0, busy=2.0)[0] == 1
    assert hw.choose_threads(0, busy=float("nan"))[0] == 2
    assert hw.choose_threads(3, busy=2.0) == (3, "3 thread(s) as set")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's ranks share the machine
    assert hw.choose_threads(0, busy=0.0)[0] == 1


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy cores are read from Linux's /proc/stat")
def test_busy_cores_sees_a_process_spinning_on_a_core():
    import subprocess
    import sys
    import time

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = hw.busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.7


def test_set_threads_applies_the_choice(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert hw.set_threads(1, what="test") == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
