"""Model speed on this machine: frame backbone, head training step, full forward, all in one process run.

1. Frame backbone (EfficientNet-Lite0, 224 x 224, frozen, inference): frames/s of fp32 NCHW eager (the naive
   baseline) against channels-last, bf16 autocast, bf16 weights, ``torch.inference_mode``, a larger batch and
   (unless ``--quick`` or ``--no-compile``) ``torch.compile``; ratio to the baseline; achieved GFLOP/s against a
   bf16 (and fp32) matmul peak measured in the same run. On a CPU also each installed backbone runtime
   (``FrameBackbone.set_runtime``: OpenVINO at its default precision, ONNX Runtime fp32) for Lite0 at 224 and,
   with its weights package, Lite2 at 260 beside PyTorch bf16 on the same input: ratio to PyTorch bf16 autocast
   + channels_last + inference_mode of the same backbone and size. The runtime files go to the per-user cache
   (``dymsta.models.runtime.default_cache_dir``); the first run exports them (``prepare_s``).
2. Head training step (forward + backward + AdamW on cached-size features, 16 frames, batch 32): clips/s in fp32
   and bf16 autocast for the default head and the ablation/option variants, with achieved GFLOP/s.
3. Full forward (video -> logits, batch 2 x 16 frames x 224 x 224, bf16 autocast + channels-last +
   inference mode): DyMSTA-Net against TSN on the same backbone and input (target <= 1.25x), R(2+1)D-18 at its
   native 16 x 112 x 112 for reference.

Within a section the variants run round-robin, repeat by repeat (a busy neighbour on a shared CPU slows them
alike), after a warm-up; the median is reported and ratios are computed within this run. The load average before
and after is recorded: a loaded machine makes every figure lower. JSON: ``benchmarks/results/bench_model.json``.
``--smoke`` runs every section in seconds (8 frames at 64 px, batch 2, one repeat; figures meaningless).

    python benchmarks/bench_model.py [--quick] [--repeats 5] [--no-compile] [--threads N] [--sections head]
    python benchmarks/bench_model.py --smoke --out /tmp/bench_model.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import RESULTS, busy_cores, machine
from dymsta.models import FrameBackbone, ModelConfig, build_model
from dymsta.models import runtime as backbone_runtime
from dymsta.utils import atomic_write_json

T, SIZE, HEAD_BATCH = 16, 224, 32
SMOKE = False  # --smoke: 8 frames at 64 px, batch 2, the quick variant lists, no Lite2, no compile


# ---------------------------------------------------------------------- helpers


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


DEVICE = torch.device("cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def round_robin(fns: dict[str, Callable[[], None]], *, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function; the functions take turns, one call each per repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def autocast(enabled: bool = True):  # noqa: ANN201
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16) if enabled else nullcontext()


def count_flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of an n^3 matmul (median of repeats; n = 2048 on CPU, 8192 on GPU): the practical peak for ``dtype``."""
    n = 8192 if DEVICE.type == "cuda" else 256 if SMOKE else 2048
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    sec = round_robin({"mm": lambda: torch.mm(a, b)}, warmup=2, repeats=repeats)["mm"]
    return 2 * n**3 / sec / 1e9


def table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


# ---------------------------------------------------------------------- 1. backbone


def _backbone(name: str = "efficientnet_lite0", **kw: object) -> FrameBackbone:
    return FrameBackbone(name=name, **kw).eval().to(DEVICE)


TORCH_BEST = "bf16 autocast + channels_last + inference_mode"  # the runtimes' reference row


def _runtime_variants(frames: int, run: Callable) -> tuple[dict, dict]:
    """Rows of the installed runtimes (CPU): Lite0 at 224, Lite2 at 260 with a PyTorch bf16 row of its own.

    Returns ``(variants, meta)``: name -> (fn, frames per call); name -> {backbone, size, reference row, ...}.
    """
    if DEVICE.type != "cpu":
        return {}, {}
    runtimes = [r for r in ("openvino", "onnxruntime") if backbone_runtime.installed(r)]
    models = [("efficientnet_lite0", SIZE, "")]
    try:
        if SMOKE:
            raise RuntimeError("smoke mode")
        lite2 = _backbone("efficientnet_lite2")
        models.append(("efficientnet_lite2", 260, "Lite2 260: "))
    except Exception as e:  # noqa: BLE001 - its weights package is optional
        print(f"skipping the Lite2 rows: {e}", flush=True)
    variants, meta = {}, {}
    for name, size, prefix in models:
        video = torch.randn(1, 3, frames, size, size, device=DEVICE)
        reference = f"{prefix}{TORCH_BEST}"
        if prefix:  # Lite0's torch rows are the section's own
            variants[reference] = (run(lite2, video, bf16=True, inference=True), frames)
            meta[reference] = {"backbone": name, "size": size, "reference": reference, "runtime_id": "torch-bf16-cl"}
        for runtime in runtimes:
            backbone = _backbone(name)
            t0 = time.perf_counter()
            backbone.set_runtime(runtime)
            prepare = time.perf_counter() - t0
            row = f"{prefix}runtime {backbone.runtime_id} (batch {backbone_runtime.BATCH[runtime]})"
            variants[row] = (run(backbone, video, inference=True), frames)
            meta[row] = {
                "backbone": name,
                "size": size,
                "reference": reference,
                "runtime_id": backbone.runtime_id,
                "prepare_s": prepare,
            }
    return variants, meta


def bench_backbone(args: argparse.Namespace, peaks: dict[str, float]) -> dict:
    # 32 frames: the batch of the naive-baseline probe in DESIGN.md (CPU NCHW fp32 falls off a cliff above 8)
    frames = 256 if DEVICE.type == "cuda" else 4 if SMOKE else 32
    video = torch.randn(1, 3, frames, SIZE, SIZE, device=DEVICE)
    big = torch.randn(1, 3, 2 * frames, SIZE, SIZE, device=DEVICE)
    nchw, cl = _backbone(channels_last=False), _backbone()
    cl_bf16 = _backbone().to(torch.bfloat16)
    flops_per_frame = count_flops(lambda: nchw(video[:, :, :1]))

    def run(
        net: torch.nn.Module, x: torch.Tensor, *, bf16: bool = False, inference: bool = False, cast: bool = False
    ) -> Callable[[], None]:
        def fn() -> None:
            with torch.inference_mode() if inference else torch.no_grad(), autocast(bf16):
                net(x.to(torch.bfloat16) if cast else x)

        return fn

    variants = {
        "fp32 NCHW eager (naive baseline)": (run(nchw, video), frames),
        "fp32 channels_last": (run(cl, video), frames),
        "bf16 autocast NCHW": (run(nchw, video, bf16=True), frames),
        "bf16 autocast + channels_last": (run(cl, video, bf16=True), frames),
        "bf16 autocast + channels_last + inference_mode": (run(cl, video, bf16=True, inference=True), frames),
        "bf16 weights + channels_last + inference_mode": (run(cl_bf16, video, inference=True, cast=True), frames),
        f"bf16 autocast + channels_last + inference_mode, {2 * frames} frames": (
            run(cl, big, bf16=True, inference=True),
            2 * frames,
        ),
    }
    runtime_rows, runtime_meta = _runtime_variants(frames, run)
    variants.update(runtime_rows)
    flops = {name: flops_per_frame for name in variants}
    per_model = {("efficientnet_lite0", SIZE): flops_per_frame}
    for name, meta in runtime_meta.items():
        key = (meta["backbone"], meta["size"])
        if key not in per_model:
            lite, s = _backbone(key[0], channels_last=False), key[1]
            per_model[key] = count_flops(lambda lite=lite, s=s: lite(torch.randn(1, 3, 1, s, s, device=DEVICE)))
        flops[name] = per_model[key]
    if not args.quick and not args.no_compile:
        compiled = _backbone().compile_features(freezing=True)
        print("compiling the backbone (torch.compile, inductor, freezing) ...", flush=True)
        t0 = time.perf_counter()
        run(compiled, video, bf16=True, inference=True)()
        print(f"  compiled in {time.perf_counter() - t0:.0f} s", flush=True)
        name = "torch.compile(freezing) + bf16 autocast + channels_last + inference_mode"
        variants[name] = (run(compiled, video, bf16=True, inference=True), frames)
        flops[name] = flops_per_frame
    sec = round_robin({k: v[0] for k, v in variants.items()}, warmup=args.warmup, repeats=args.repeats)
    base = frames / sec["fp32 NCHW eager (naive baseline)"]
    rows, out = [], {}
    for name, (_, n) in variants.items():
        fps = n / sec[name]
        gflops = fps * flops[name] / 1e9
        peak = peaks["bf16"] if "bf16" in name else peaks["fp32"]
        out[name] = {
            "frames_per_s": fps,
            "x_naive": fps / base,
            "gflop_per_s": gflops,
            "pct_of_peak": 100 * gflops / peak,
        }
        reference = runtime_meta.get(name, {}).get("reference", TORCH_BEST)
        x_torch = fps / (variants[reference][1] / sec[reference])
        out[name]["x_torch_bf16_cl"] = x_torch  # vs PyTorch bf16 + channels_last + inference mode, same model/size
        out[name].update(runtime_meta.get(name, {"backbone": "efficientnet_lite0", "size": SIZE}))
        rows.append(
            [
                name,
                f"{fps:.1f}",
                f"{fps / base:.1f}x",
                f"{x_torch:.2f}x",
                f"{gflops:.0f}",
                f"{100 * gflops / peak:.1f}%",
            ]
        )
    table(
        f"1. Frame backbone on {DEVICE.type}: EfficientNet-Lite0, {SIZE}x{SIZE}, {frames} frames/call "
        f"({flops_per_frame / 1e9:.2f} GFLOP/frame); 'Lite2 260' rows: EfficientNet-Lite2 at 260x260",
        ["path", "frames/s", "vs naive", "vs torch bf16", "GFLOP/s", "% peak"],
        rows,
    )
    lite0 = [k for k in out if out[k]["backbone"] == "efficientnet_lite0"]
    best = max(lite0, key=lambda k: out[k]["frames_per_s"])
    return {
        "frames_per_call": frames,
        "gflop_per_frame": flops_per_frame / 1e9,
        "variants": out,
        "best": best,
        "best_x_naive": out[best]["x_naive"],
        "target_x_naive": 15.0,
    }


# ---------------------------------------------------------------------- 2. head training step


HEADS = {
    "dymsta default (mixture, (3,1,1), 4x4 grid)": {},
    "dymsta modulate": {"dynamic_mode": "modulate"},
    "dymsta dynamic kernel (3,3,3)": {"dynamic_kernel": (3, 3, 3)},
    "dymsta 7x7 grid (spatial_pool=0)": {"spatial_pool": 0},
    "dymsta 3x3 grid (Lite2 at 260 px, the ucf101_mini recipe)": {"spatial_pool": 3},
    "dymsta 2x2 grid (spatial_pool=2)": {"spatial_pool": 2},
    "dymsta 1x1 grid (spatial_pool=1)": {"spatial_pool": 1},
    "dymsta dim 128": {"dim": 128},
    "dymsta dim 512": {"dim": 512},
    "dymsta temporal_center": {"temporal_center": True},
    "dymsta no dynamic conv": {"dynamic": False},
    "dymsta no attention": {"attention": False},
    "dymsta no multi-scale block": {"multiscale": False},
    "tsn head": {"arch": "tsn"},
}


def _train_step(model: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, *, bf16: bool) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)

    def step() -> None:
        with autocast(bf16):
            loss = torch.nn.functional.cross_entropy(model.forward_head(feats).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_head(args: argparse.Namespace, peaks: dict[str, float]) -> dict:
    batch = 256 if DEVICE.type == "cuda" else HEAD_BATCH if SMOKE else 16 if args.quick else HEAD_BATCH
    names = list(HEADS)[:3] + ["tsn head"] if args.quick else list(HEADS)
    labels = torch.randint(0, 101, (batch,), device=DEVICE)
    fns, flops, grids = {}, {}, {}
    for name in names:
        cfg = dataclasses.replace(ModelConfig(pretrained=False, spatial_pool=args.head_grid), **HEADS[name])
        model = build_model(cfg).train().to(DEVICE)
        # what the feature cache holds for this config: the backbone pools its 7x7 grid to the head's grid
        grid = {1: 1, 2: 2, 3: 3, 4: 4}.get(cfg.spatial_pool, 7) if cfg.arch == "dymsta" else 1
        feats = torch.randn(batch, model.backbone.out_channels, T, grid, grid, device=DEVICE)  # NCDHW fp32
        grids[name] = f"{grid}x{grid}"
        for bf16 in (False, True):
            fns[f"{name} | {'bf16' if bf16 else 'fp32'}"] = _train_step(model, feats, labels, bf16=bf16)
        flops[name] = count_flops(_train_step(model, feats, labels, bf16=False))
    # channels-last rows (a free view of the backbone's output) skip the head's one input transpose
    name = "dymsta default, channels-last input"
    model = build_model(ModelConfig(pretrained=False)).train().to(DEVICE)
    feats = torch.randn(batch, 1280, T, 4, 4, device=DEVICE).contiguous(memory_format=torch.channels_last_3d)
    fns[f"{name} | bf16"] = _train_step(model, feats, labels, bf16=True)
    flops[name], grids[name] = flops[names[0]], "4x4"
    sec = round_robin(fns, warmup=args.warmup, repeats=args.repeats)
    rows, out = [], {}
    for key, seconds in sec.items():
        name, prec = key.split(" | ")
        cps, gflops = batch / seconds, flops[name] / seconds / 1e9
        out[key] = {
            "clips_per_s": cps,
            "gflop_per_clip_step": flops[name] / batch / 1e9,
            "gflop_per_s": gflops,
            "pct_of_peak": 100 * gflops / peaks[prec],
            "grid": grids[name],
        }
        rows.append(
            [
                name,
                prec,
                grids[name],
                f"{cps:.0f}",
                f"{flops[name] / batch / 1e9:.2f}",
                f"{gflops:.0f}",
                f"{100 * gflops / peaks[prec]:.1f}%",
            ]
        )
    table(
        f"2. Head training step on {DEVICE.type} (forward+backward+AdamW), batch {batch}, {T} frames, cached "
        "Lite0 features (fp32 NCDHW unless said)",
        ["head", "precision", "grid", "clips/s", "GFLOP/clip", "GFLOP/s", "% peak"],
        rows,
    )
    return {"batch": batch, "frames": T, "variants": out, "target_clips_per_s": 130.0}


# ---------------------------------------------------------------------- 3. full forward


def bench_full(args: argparse.Namespace) -> dict:
    batch = 16 if DEVICE.type == "cuda" else 1 if args.quick else 2
    video = torch.randn(batch, 3, T, SIZE, SIZE, device=DEVICE)
    small = torch.randn(batch, 3, T, min(SIZE, 112), min(SIZE, 112), device=DEVICE)
    dymsta = build_model(ModelConfig()).eval().to(DEVICE)
    tsn = build_model(ModelConfig(arch="tsn")).eval().to(DEVICE)
    r2plus1d = build_model(ModelConfig(arch="r2plus1d_18", pretrained=False)).eval().to(DEVICE)

    def run(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
        def fn() -> None:
            with torch.inference_mode(), autocast():
                model(x)

        return fn

    fns = {"dymsta": run(dymsta, video), "tsn": run(tsn, video), "r2plus1d_18 (16x112x112)": run(r2plus1d, small)}
    sec = round_robin(fns, warmup=args.warmup, repeats=args.repeats)
    ratio = sec["dymsta"] / sec["tsn"]
    rows = [[k, f"{1000 * v:.1f}", f"{batch / v:.2f}", f"{v / sec['tsn']:.2f}x"] for k, v in sec.items()]
    table(
        f"3. Full forward on {DEVICE.type}, batch {batch} x {T} frames, {SIZE}x{SIZE} (R(2+1)D: 112x112), bf16 "
        "autocast + inference mode",
        ["model", "ms/call", "clips/s", "vs TSN"],
        rows,
    )
    print(f"DyMSTA-Net / TSN forward time: {ratio:.3f} (target <= 1.25)")
    return {"batch": batch, "seconds": sec, "dymsta_over_tsn": ratio, "target_ratio": 1.25}


# ---------------------------------------------------------------------- accelerator sanity check


def check_accelerator() -> dict:
    """On a GPU: the same weights give the CPU's logits (fp32), and bf16 / fp16 autocast training is finite."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out = {}
    torch.manual_seed(0)
    for kw in ({}, {"dynamic_mode": "modulate"}, {"dynamic_kernel": (3, 3, 3)}, {"arch": "tsn"}):
        cfg = dataclasses.replace(ModelConfig(num_classes=7), **kw)
        cpu_model = build_model(cfg).eval()
        gpu_model = build_model(dataclasses.replace(cfg, pretrained=False)).eval().to(DEVICE)
        gpu_model.load_state_dict(cpu_model.state_dict())
        video = torch.randn(2, 3, T, 112, 112)
        with torch.no_grad():
            diff = (gpu_model(video.to(DEVICE)).cpu() - cpu_model(video)).abs().max().item()
        finite = {}
        for dtype in (torch.bfloat16, torch.float16):
            gpu_model.train()
            with torch.autocast("cuda", dtype=dtype):
                logits = gpu_model(video.to(DEVICE))
            logits.float().sum().backward()
            grads = [p.grad for p in gpu_model.trainable_parameters()]
            finite[str(dtype)] = bool(torch.isfinite(logits).all() and all(torch.isfinite(g).all() for g in grads))
            gpu_model.zero_grad(set_to_none=True)
        key = ",".join(f"{k}={v}" for k, v in kw.items()) or "default"
        out[key] = {"max_abs_diff_vs_cpu_fp32": diff, "finite_autocast_train": finite}
        print(f"accelerator check {key}: |cuda - cpu| = {diff:.2e}, autocast training finite: {finite}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer variants, smaller batches, 3 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 7, quick 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile takes minutes)")
    p.add_argument(
        "--threads",
        default="auto",
        help="torch threads: a number, or 'auto' = the cores other work leaves idle at the start (>= 1)",
    )
    p.add_argument("--device", default="cpu", help="cpu (the reference machine) or cuda")
    p.add_argument(
        "--sections", default="backbone,head,full", help="comma-separated subset of backbone,head,full to run"
    )
    p.add_argument(
        "--head-grid",
        type=int,
        default=4,
        help="grid of the head rows that do not set their own (4: Lite0 at 224; 3: Lite2)",
    )
    p.add_argument("--smoke", action="store_true", help="seconds: 8 frames at 64 px, batch 2, one repeat")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench_model[_cuda].json)")
    args = p.parse_args()
    global DEVICE, SMOKE, T, SIZE, HEAD_BATCH
    DEVICE = torch.device(args.device)
    if args.smoke:
        SMOKE, T, SIZE, HEAD_BATCH = True, 8, 64, 2
        args.quick, args.no_compile, args.repeats, args.warmup = True, True, 1, 0
    if args.out is None:
        args.out = RESULTS / ("bench_model.json" if DEVICE.type == "cpu" else f"bench_model_{DEVICE.type}.json")
    args.repeats = args.repeats or (3 if args.quick else 7)
    torch.manual_seed(0)
    load_before, busy = loadavg(), busy_cores(1.0)
    cores = os.cpu_count() or 1
    threads = max(1, round(cores - busy)) if args.threads == "auto" else int(args.threads)
    if DEVICE.type == "cpu":
        torch.set_num_threads(threads)
    if busy > 0.5:
        print(
            f"WARNING: {busy:.1f} of {cores} cores are busy with other work; running on {torch.get_num_threads()} "
            "thread(s): OpenMP threads that compete with another process for a core slow down many-fold",
            flush=True,
        )
    t0 = time.perf_counter()
    peaks = {"fp32": matmul_peak(torch.float32, args.repeats), "bf16": matmul_peak(torch.bfloat16, args.repeats)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    result = {"machine": machine(DEVICE), "quick": args.quick, "smoke": SMOKE, "repeats": args.repeats}
    if DEVICE.type == "cuda":
        result["accelerator_check"] = check_accelerator()  # correctness first
    result["matmul_peak_gflop_per_s"] = peaks
    sections = set(args.sections.split(","))
    if "backbone" in sections:
        result["backbone"] = bench_backbone(args, peaks)
    if "head" in sections:
        result["head_train_step"] = bench_head(args, peaks)
    if "full" in sections:
        result["full_forward"] = bench_full(args)
    result["loadavg_1min"] = {"before": load_before, "after": loadavg()}
    result["busy_cores_before"] = busy
    result["torch_threads"] = torch.get_num_threads()
    result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
    result["seconds"] = time.perf_counter() - t0
    if "backbone" in result:
        b = result["backbone"]
        print(f"\nbest backbone path: {b['best']} = {b['best_x_naive']:.1f}x naive fp32 (target >= 15x)")
    print(
        f"load average before/after: {load_before:.2f} / {result['loadavg_1min']['after']:.2f}; "
        f"{result['seconds']:.0f} s"
    )
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
