"""One prepared script for a CUDA machine: AMP training steps, feature-extraction speed, a short train/eval.

    python benchmarks/gpu_check.py --out OUT_DIR

Sections (each recorded even if another fails):
1. head training step on cached-size Lite0 features (B, 1280, 16, 7, 7): fp32, bf16 autocast, fp16 autocast +
   GradScaler; clips/s and loss finiteness;
2. frame backbone (EfficientNet-Lite0, 224x224) frames/s: fp32, bf16 + channels_last;
3. a short end-to-end run on the synthetic set with ``dymsta train`` on CUDA (bf16, feature cache), and one with
   the cache off and fp16 + GradScaler through the backbone; test accuracy and wall-clock.
Results go to OUT_DIR/gpu_check.json (and are printed). ``--smoke`` runs the same sections on the CPU in seconds
(batch 2, 8 frames at 64 px, a 1-epoch run on a tiny synthetic set; fp16 left out, as it is CUDA's), so that the
script CI cannot run on a GPU still runs.

    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch

from common import machine
from dymsta.utils import atomic_write_json

DEV = "cuda"  # --smoke: "cpu"
SMOKE = False


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(fn, warmup: int = 3, repeats: int = 10) -> float:
    """Median seconds of ``fn()`` with CUDA synchronisation."""
    warmup, repeats = (0, 1) if SMOKE else (warmup, repeats)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def head_steps() -> dict:
    from dymsta.engine.train import HeadNet
    from dymsta.models import ModelConfig, build_model

    out = {}
    batch = 2 if SMOKE else 64
    feats = torch.randn(batch, 1280, 16, 7, 7, device=DEV)
    labels = torch.randint(0, 101, (batch,), device=DEV)
    precisions = [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)][: 2 if SMOKE else 3]
    for name, dtype in precisions:
        torch.manual_seed(0)
        model = build_model(ModelConfig(num_classes=101, pretrained=False)).to(DEV).train()
        net = HeadNet(model)
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        losses = []

        def step(net=net, opt=opt, scaler=scaler, dtype=dtype, losses=losses):
            with torch.autocast(DEV, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(net(feats).float(), labels)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(loss.detach())

        sec = timed(step, warmup=5, repeats=20)
        out[name] = {
            "clips_per_s": round(batch / sec, 1),
            "step_ms": round(sec * 1e3, 2),
            "loss_finite": bool(torch.isfinite(torch.stack(losses)).all()),
            "loss_first_last": [round(float(losses[0]), 4), round(float(losses[-1]), 4)],
        }
        print("head", name, out[name], flush=True)
    return out


def backbone_speed() -> dict:
    from dymsta.models.backbone import FrameBackbone

    out = {}
    x = torch.randn(1, 3, 8, 64, 64, device=DEV) if SMOKE else torch.randn(8, 3, 16, 224, 224, device=DEV)
    frames = x.shape[0] * x.shape[2]
    nchw = FrameBackbone(name="efficientnet_lite0", pretrained=True, channels_last=False).to(DEV).eval()
    cl = FrameBackbone(name="efficientnet_lite0", pretrained=True, channels_last=True).to(DEV).eval()
    with torch.inference_mode():
        out["fp32_nchw"] = round(frames / timed(lambda: nchw(x)), 1)
        out["fp32_channels_last"] = round(frames / timed(lambda: cl(x)), 1)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            out["bf16_channels_last"] = round(frames / timed(lambda: cl(x)), 1)
        if not SMOKE:
            with torch.autocast(DEV, dtype=torch.float16):
                out["fp16_channels_last"] = round(frames / timed(lambda: cl(x)), 1)
    print("backbone frames/s", out, flush=True)
    return out


def short_runs(work: Path) -> dict:
    from dymsta.cli import main

    out = {}
    data = work / "synth"
    t0 = time.time()
    size = ["--frames", "16", "--size", "64"] if SMOKE else []
    size = [*size, "--test-groups", "1"] if SMOKE else size
    main(["synth", str(data), "--groups", "3" if SMOKE else "10", "--clips-per-group", "1" if SMOKE else "4", *size])
    out["synth_seconds"] = round(time.time() - t0, 1)
    common = [
        "--config",
        "demo",
        "--set",
        f"data.root={data}",
        "--set",
        f"train.device={DEV}",
        "--set",
        f"data.workers={0 if SMOKE else 8}",
        "--set",
        f"cache.dir={work / 'cache'}",
    ]
    runs = {
        "bf16_cached": ["--set", "train.amp=bf16", "--set", "train.epochs=30"],
        "fp16_through_backbone": ["--set", "train.amp=fp16", "--set", "cache.enabled=false", "--set", "train.epochs=3"],
    }
    if SMOKE:
        runs = {"bf16_cached": ["--set", "train.amp=bf16", "--set", "train.epochs=1", "--set", "data.size=64"]}
    for name, extra in runs.items():
        t0 = time.time()
        rc = main(["train", *common, *extra, "--out", str(work / name)])
        if rc:
            raise RuntimeError(f"dymsta train ({name}) exited {rc}")
        summary = json.loads((work / name / "summary.json").read_text())
        out[name] = {
            "rc": rc,
            "seconds": round(time.time() - t0, 1),
            "test": summary.get("test"),
            "cache_seconds": summary.get("cache_seconds"),
            "train_seconds": summary.get("train_seconds"),
        }
        print("run", name, out[name], flush=True)
    return out


def main_() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="a folder (gpu_check.json is written there)")
    ap.add_argument("--smoke", action="store_true", help="seconds, on the CPU: tiny batches, one repeat")
    args = ap.parse_args()
    global DEV, SMOKE
    if args.smoke:
        DEV, SMOKE = "cpu", True
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (--smoke runs it on the CPU)")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    result = {"machine": machine(DEV), "smoke": SMOKE}
    for name, fn in [
        ("head_step", head_steps),
        ("backbone_frames_per_s", backbone_speed),
        ("short_runs", lambda: short_runs(out_dir / "work" if SMOKE else Path("/tmp/dymsta_gpu"))),
    ]:
        try:
            result[name] = fn()
        except Exception as e:  # record and go on: one failing section must not lose the others
            result[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            print(name, "FAILED", e, flush=True)
        atomic_write_json(out_dir / "gpu_check.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main_()
