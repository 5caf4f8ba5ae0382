"""Feature-cache build throughput on ucf101-mini, decode included, in one process run (issue 12's target).

Builds the ``ucf101_mini`` recipe's caches (every training view, validation and test clips: what ``dymsta
extract`` builds) from nothing, into a fresh folder per method, with the same settings (backbone, frames, size,
views) and reports the clip frames per second of the whole build:

- ``baseline``: the build as it was before issue 12 -- the frozen backbone on PyTorch (bf16 autocast,
  channels-last) and DataLoader workers that send normalised float32 clips;
- ``runtime + uint8``: ``model.runtime=auto`` (OpenVINO here) and workers that send uint8 frames, normalised
  in the main process (:func:`dymsta.data.transforms.frames_to_input`);
- the same with every motion stream (``rgb + rgbdiff + mv``: three images per frame through the backbone).

Each method runs once (a build takes minutes); the load average is recorded before and after, because a busy
neighbour slows every figure. JSON: ``benchmarks/results/bench_cache.json``. ``--smoke`` builds every method's
caches in seconds from a tiny synthetic set (32 clips of 8 frames at 64 px, one training view; figures meaningless).

    python benchmarks/bench_cache.py [--backbone efficientnet_lite0] [--methods baseline,runtime,motion]
    python benchmarks/bench_cache.py --smoke --out /tmp/bench_cache.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS, machine, smoke_dataset
from dymsta.config import load_config, recipe_path
from dymsta.engine import train as train_module
from dymsta.engine.cache import FeatureStore
from dymsta.engine.train import extract_features
from dymsta.utils import atomic_write_json

# smoke mode: tiny clips, one cached training view, the backbone in the main process
SMOKE = ["data.num_frames=8", "data.size=64", "data.workers=0", "cache.train_views=1", "cache.batch_size=8"]


def build(overrides: list[str], *, float_workers: bool, root: Path, tmp: str | None = None) -> dict:
    """Build the recipe's caches into a fresh folder (under ``tmp``); seconds, frames and frames/s."""
    folder = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=tmp))
    original = train_module.Pipeline.clip_dataset
    if float_workers:  # the pre-issue-12 pipeline: normalised float32 clips from the workers

        def clip_dataset(self, *a, uint8: bool = False, **k):  # noqa: ANN001, ANN202
            return original(self, *a, uint8=False, **k)

        train_module.Pipeline.clip_dataset = clip_dataset
    try:
        cfg = load_config(recipe_path("ucf101_mini"), [f"data.root={root}", f"cache.dir={folder}", *overrides])
        t0 = time.perf_counter()
        stores = extract_features(cfg, folder / "run")
        seconds = time.perf_counter() - t0
    finally:
        train_module.Pipeline.clip_dataset = original
    rows = sum(len(FeatureStore(path)) for path in stores.values())
    frames = rows * cfg.data.num_frames
    size = sum(f.stat().st_size for f in folder.rglob("*.npy") if "runtimes" not in f.parts)
    shutil.rmtree(folder, ignore_errors=True)
    return {"seconds": seconds, "rows": rows, "clip_frames": frames, "frames_per_s": frames / seconds, "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "ucf101-mini")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--methods", default="baseline,runtime,motion")
    ap.add_argument("--smoke", action="store_true", help="seconds: a tiny synthetic set, 8 frames at 64 px")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_cache.json")
    args = ap.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench-cache-smoke-") as tmp:
            results = run(args, smoke_dataset(Path(tmp) / "ucf101-mini"), SMOKE, tmp)
    else:
        results = run(args, args.root, [], None)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")


def run(args: argparse.Namespace, root: Path, extra: list[str], tmp: str | None) -> dict:
    """Build the caches of every method in ``args.methods`` (with ``extra`` overrides); the results record."""
    rgb = [f"model.backbone={args.backbone}", "data.modalities=[rgb]"]
    methods = {
        "baseline": (rgb + ["model.runtime=torch"], True),
        "runtime": (rgb + ["model.runtime=auto"], False),
        "motion": (
            [f"model.backbone={args.backbone}", "data.modalities=[rgb,rgbdiff,mv]", "model.runtime=auto"],
            False,
        ),
    }
    results = {"machine": machine(), "backbone": args.backbone, "smoke": bool(extra), "methods": {}}
    for name in args.methods.split(","):
        overrides, float_workers = methods[name]
        print(f"building the ucf101-mini caches: {name} ...", flush=True)
        r = build([*overrides, *extra], float_workers=float_workers, root=root, tmp=tmp)
        r["loadavg_after"] = list(os.getloadavg())
        results["methods"][name] = r
        print(f"  {r['rows']} rows, {r['seconds']:.0f} s, {r['frames_per_s']:.1f} clip frames/s", flush=True)
    if "baseline" in results["methods"]:
        base = results["methods"]["baseline"]["frames_per_s"]
        for r in results["methods"].values():
            r["x_baseline"] = r["frames_per_s"] / base
    return results


if __name__ == "__main__":
    main()
