"""What the backbone's last layer costs after the cache (``model.head_conv``, issue 19), in one process run.

1. The layer itself (Lite0: 1x1 conv 320 -> 1280, batch norm, ReLU6) on cached-size activations of three streams,
   forward + backward: :class:`dymsta.models.layers.FrameLayer` (one matmul over channels-last tokens, the
   eval-mode norm folded in) against the plain reference it replaced (``Conv2d`` + timm's ``BatchNormAct2d`` per
   frame), at the grids a cache may hold (4x4, 1x1, 7x7); ratio reference / fast.
2. A training step of each recipe's head from each cache layout (forward + backward + AdamW, batch 32, 16 frames,
   three streams): the linear probe and DyMSTA-Net on today's 1280-channel rows (the frame mean for the probe, 4x4
   for DyMSTA-Net) against the 320-channel rows before the last layer, that layer frozen or trained; clips/s and
   the ratio to the head on 1280-channel rows; and with Lite0's last stage trained too (``model.head_conv=stage``,
   its 192-channel input cached on the whole 7x7 grid), the recipe's head (DyMSTA-Net's modules off) included.
3. The last stage itself (one inverted residual, 192 -> 1152 -> 320 on 7x7), forward + backward:
   :class:`dymsta.models.layers.FrameBlock` (norms folded, matmuls and one grouped conv) against timm's block.

Precision: fp32, and bf16 autocast where the CPU computes bf16 natively (:func:`dymsta.hardware.resolve_precision`,
``auto``). Variants run round-robin after a warm-up; medians. JSON: ``benchmarks/results/bench_head_conv.json``.
``--smoke``: tiny batch, one repeat, seconds (figures meaningless). ``--emulate-avx2`` reruns it with PyTorch and
oneDNN capped to AVX2 (``benchmarks/results/bench_head_conv_avx2.json``; no bf16 there, so fp32 only).

    python benchmarks/bench_head_conv.py [--repeats 7] [--threads 2] [--emulate-avx2]
    python benchmarks/bench_head_conv.py --smoke --out /tmp/bench_head_conv.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from einops import rearrange

from common import RESULTS, machine, rerun_as_avx2
from dymsta.hardware import resolve_precision
from dymsta.models import ModelConfig, build_model
from dymsta.models.layers import FrameBlock, FrameLayer
from dymsta.utils import atomic_write_json

STREAMS = ("rgb", "rgbdiff", "mv")
FRAMES = 16


def round_robin(fns: dict[str, Callable[[], None]], *, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function; the functions take turns, one call each per repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def precisions() -> dict[str, torch.dtype | None]:
    """fp32 always; bf16 where ``train.amp=auto`` would pick it (native bf16 only)."""
    auto = resolve_precision("auto", torch.device("cpu")).dtype
    return {"fp32": None, **({"bf16": auto} if auto == torch.bfloat16 else {})}


def cast(dtype: torch.dtype | None):  # noqa: ANN201
    return torch.autocast("cpu", dtype=dtype) if dtype else nullcontext()


def lite0_last_layer() -> torch.nn.Sequential:
    cfg = ModelConfig(arch="linear", num_classes=8, streams=("rgb",), head_conv="trained", runtime="torch")
    return build_model(cfg).head_layers["rgb"].layer


def layer_step(kind: str, layer: torch.nn.Sequential, x: torch.Tensor, dtype: torch.dtype | None) -> Callable:
    """Forward + backward of the layer on ``x`` ``(B, 320, T, g, g)`` channels-last, three streams in turn."""
    if kind == "fast":
        mod: Callable = FrameLayer(*copy.deepcopy(layer), trainable=True)
    else:
        ref = copy.deepcopy(layer).eval()
        for p in ref.parameters():
            p.requires_grad_(True)

        def mod(v: torch.Tensor) -> torch.Tensor:
            frames = rearrange(v, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
            return rearrange(ref(frames), "(b t) c h w -> b c t h w", b=v.shape[0])

    def step() -> None:
        for _ in STREAMS:
            with cast(dtype):
                out = mod(x.to(dtype or torch.float32))
            out.float().mean().backward()

    return step


def bench_layer(args: argparse.Namespace) -> dict:
    layer, out, rows = lite0_last_layer(), {}, []
    for grid in (4, 1, 7):
        x = torch.randn(args.batch, 320, FRAMES, grid, grid).contiguous(memory_format=torch.channels_last_3d)
        for prec, dtype in precisions().items():
            fns = {k: layer_step(k, layer, x, dtype) for k in ("reference", "fast")}
            sec = round_robin(fns, warmup=args.warmup, repeats=args.repeats)
            key = f"{grid}x{grid} {prec}"
            out[key] = {**{f"{k}_s": round(v, 4) for k, v in sec.items()}, "speedup": sec["reference"] / sec["fast"]}
            rows.append(
                f"  {key:10s} reference {sec['reference']:.4f} s  fast {sec['fast']:.4f} s  "
                f"{sec['reference'] / sec['fast']:.2f}x"
            )
    print("1. Lite0's last layer, 3 streams, forward + backward, batch", args.batch, "x", FRAMES, "frames")
    print("\n".join(rows))
    return out


OFF = {"dynamic": False, "attention": False, "multiscale": False}  # the ucf101_mini recipe: DyMSTA-Net's modules off
HEADS = {  # name: (model overrides, cached channels, cached grid); "vs today": DyMSTA-Net's step on 1280 x 4x4
    "linear, 1280 x 1x1 (today)": ({"arch": "linear"}, 1280, 1),
    "linear, 320 x 4x4, frozen": ({"arch": "linear", "head_conv": "frozen"}, 320, 4),
    "linear, 320 x 4x4, trained": ({"arch": "linear", "head_conv": "trained"}, 320, 4),
    "dymsta, 1280 x 4x4 (today)": ({"arch": "dymsta"}, 1280, 4),
    "dymsta, 320 x 4x4, frozen": ({"arch": "dymsta", "head_conv": "frozen"}, 320, 4),
    "dymsta, 320 x 4x4, trained": ({"arch": "dymsta", "head_conv": "trained"}, 320, 4),
    "dymsta, 192 x 7x7, stage": ({"arch": "dymsta", "head_conv": "stage"}, 192, 7),
    "recipe, 320 x 4x4, trained": ({"arch": "dymsta", "head_conv": "trained", **OFF}, 320, 4),
    "recipe, 192 x 7x7, stage": ({"arch": "dymsta", "head_conv": "stage", **OFF}, 192, 7),
}


def head_step(name: str, batch: int, dtype: torch.dtype | None) -> Callable[[], None]:
    overrides, channels, grid = HEADS[name]
    base = ModelConfig(num_classes=8, streams=STREAMS, fusion="sum", pretrained=False, runtime="torch")
    model = build_model(dataclasses.replace(base, **overrides)).train()
    feats = {s: torch.randn(batch, channels, FRAMES, grid, grid).half() for s in STREAMS}  # fp16, as cached
    labels = torch.randint(0, 8, (batch,))
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)

    def step() -> None:
        with cast(dtype):
            loss = torch.nn.functional.cross_entropy(model.forward_head(feats).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_heads(args: argparse.Namespace) -> dict:
    out = {}
    print(f"\n2. Head training step from the cache, batch {args.batch}, {FRAMES} frames, 3 streams")
    for prec, dtype in precisions().items():
        fns = {name: head_step(name, args.batch, dtype) for name in HEADS}
        sec = round_robin(fns, warmup=args.warmup, repeats=args.repeats)
        for name, s in sec.items():
            arch = name.split(",")[0].replace("recipe", "dymsta")
            today = sec[next(k for k in HEADS if k.startswith(arch))]  # the arch's first row (the recipe: DyMSTA-Net's)
            out[f"{name} | {prec}"] = {"seconds": round(s, 4), "clips_per_s": args.batch / s, "vs_today": s / today}
            print(f"  {prec:4s} {name:28s} {args.batch / s:8.0f} clips/s  {s / today:5.2f}x today's step time")
    return out


def bench_block(args: argparse.Namespace) -> dict:
    cfg = ModelConfig(arch="linear", num_classes=8, streams=("rgb",), head_conv="stage", runtime="torch")
    block = build_model(cfg).head_stages["rgb"][0]
    out = {}
    print("\n3. Lite0's last stage, 3 streams, forward + backward, batch", args.batch, "x", FRAMES, "frames, 7x7")
    x = torch.randn(args.batch, 192, FRAMES, 7, 7).contiguous(memory_format=torch.channels_last_3d)
    for prec, dtype in precisions().items():
        fns = {k: block_step(k, block, x, dtype) for k in ("reference", "fast")}
        sec = round_robin(fns, warmup=args.warmup, repeats=args.repeats)
        out[prec] = {**{f"{k}_s": round(v, 4) for k, v in sec.items()}, "speedup": sec["reference"] / sec["fast"]}
        print(f"  {prec:4s} reference {sec['reference']:.4f} s  fast {sec['fast']:.4f} s  {out[prec]['speedup']:.2f}x")
    return out


def block_step(kind: str, block: FrameBlock, x: torch.Tensor, dtype: torch.dtype | None) -> Callable:
    """Forward + backward of the last stage on ``x`` ``(B, 192, T, 7, 7)``, three streams in turn; the reference is
    timm's block rebuilt from the same modules (its norms apply their activations; eval mode, weights trainable)."""
    fast = copy.deepcopy(block).train()
    ref = copy.deepcopy(torch.nn.Sequential(block.expand.layer, block.depthwise, block.project.layer)).eval()
    for p in ref.parameters():
        p.requires_grad_(True)

    def reference(v: torch.Tensor) -> torch.Tensor:
        frames = rearrange(v, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
        return rearrange(ref(frames), "(b t) c h w -> b c t h w", b=v.shape[0])

    mod = fast if kind == "fast" else reference

    def step() -> None:
        for _ in STREAMS:
            with cast(dtype):
                out = mod(x)
            out.float().mean().backward()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="seconds: batch 2, one repeat")
    ap.add_argument("--out", type=Path, default=None, help="default: results/bench_head_conv[_avx2].json")
    ap.add_argument("--emulate-avx2", action="store_true", help="rerun with PyTorch and oneDNN capped to AVX2")
    args = ap.parse_args()
    if args.emulate_avx2:
        rerun_as_avx2(args.out, "bench_head_conv_avx2.json")
    args.out = args.out or RESULTS / "bench_head_conv.json"
    if args.smoke:
        args.batch, args.repeats, args.warmup = 2, 1, 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    record = {"machine": machine(), "batch": args.batch, "repeats": args.repeats, "smoke": args.smoke}
    record["layer"] = bench_layer(args)
    record["heads"] = bench_heads(args)
    record["stage"] = bench_block(args)
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
