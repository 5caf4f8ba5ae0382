"""Every benchmark script still runs: each in its smoke mode (``--smoke``: tiny inputs, seconds), as CI would.

A benchmark nobody runs breaks silently (issue 18 found ``bench_data.py`` crashing on the stream-dict batches).
Here each script in ``benchmarks/`` runs as a user would start it, in a fresh process; it must exit 0, write its
JSON where ``--out`` says, record the machine (CPU model, class, vector extensions, whether bf16 is native) and
leave ``benchmarks/results`` untouched (smoke figures measure nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh") and p.name != "common.py")
MACHINE_KEYS = {"cpu", "cpu_class", "vector_extensions", "native_bf16", "cores", "torch_threads"}


def results_state() -> dict[str, int]:
    return {str(p.relative_to(BENCH)): p.stat().st_mtime_ns for p in (BENCH / "results").rglob("*") if p.is_file()}


def run_smoke(script: str, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("OMP_NUM_THREADS", None)
    cmd = ["bash"] if script.endswith(".sh") else [sys.executable]
    return subprocess.run(
        [*cmd, str(BENCH / script), "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_every_script_is_covered() -> None:
    """The list is the folder's: a new script is smoke-run without anyone adding it here."""
    assert {"bench_data.py", "bench_precision.py", "bench_threads.py", "gpu_check.py", "gpu_r2plus1d.sh"} <= set(
        SCRIPTS
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke(script: str, tmp_path: Path) -> None:
    before = results_state()
    folder_out = script.startswith("gpu_")  # the GPU scripts write a folder
    out = tmp_path / ("out" if folder_out else f"{Path(script).stem}.json")
    proc = run_smoke(script, out)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}:\n{tail}"
    assert results_state() == before, f"{script} --smoke wrote into benchmarks/results"
    if script == "gpu_r2plus1d.sh":  # a training run: its summary holds the test metrics
        summary = json.loads((out / "r2plus1d_s0" / "summary.json").read_text())
        assert 0.0 <= summary["test"]["accuracy"] <= 1.0
        return
    record = json.loads((out / "gpu_check.json" if folder_out else out).read_text())
    assert MACHINE_KEYS <= set(record["machine"]), (
        f"{script}: machine record lacks {MACHINE_KEYS - set(record['machine'])}"
    )
    assert record["machine"]["cpu_class"] in {"AVX2", "AVX-512", "AVX-512 bf16", "AMX", "ARM", "ARM bf16", "other"}
    failed = {k: v["error"] for k, v in record.items() if isinstance(v, dict) and "error" in v and v["error"]}
    assert not failed, f"{script}: sections failed: {failed}"
