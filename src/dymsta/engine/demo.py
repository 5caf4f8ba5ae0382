"""``dymsta demo``: the whole job on the embedded default, offline, on a CPU, in minutes.

synthetic temporal set (real AVI files) -> DyMSTA-Net on the offline ImageNet EfficientNet-Lite0 (frozen, cached
features) -> best-on-validation checkpoint -> test report + plots -> top-5 prediction for one test clip.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from dymsta.config import load_config, recipe_path

__all__ = ["run_demo", "DEMO_SYNTH"]

log = logging.getLogger(__name__)

# The synthetic set the demo trains on: 8 classes (4 time-reversal / speed pairs) x 72 groups x 2 clips.
# Appearance diversity is what generalises: the same 1,152 clips as 24 groups x 6 clips gave test top-1 0.52 (the
# head memorised the training groups' looks), and 10 groups x 4 clips gave 0.25 (docs/RESULTS.md, section 6).
DEMO_SYNTH = {"groups": 72, "clips_per_group": 2, "test_groups": 9, "num_frames": 32, "size": 112, "seed": 0}


def _ensure_synthetic(root: Path) -> None:
    from dymsta.data.synth import generate_synthetic

    stamp = root / "synth.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == DEMO_SYNTH:
        log.info("demo: reusing the synthetic set in %s", root)
        return
    shutil.rmtree(root, ignore_errors=True)
    generate_synthetic(root, progress=True, **DEMO_SYNTH)
    stamp.write_text(json.dumps(DEMO_SYNTH))


def run_demo(out: Path, *, epochs: int | None = None) -> dict:
    """Run the demo into ``out`` (``data/``, ``cache/``, ``run/``); returns the training summary."""
    from dymsta.engine.predict import Predictor
    from dymsta.engine.train import train

    t0 = time.time()
    data_root = out / "data"
    _ensure_synthetic(data_root)
    t_synth = time.time() - t0
    overrides = [f"data.root={data_root}"] + ([f"train.epochs={epochs}"] if epochs else [])
    cfg = load_config(recipe_path("demo"), overrides)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own previous run; the feature cache in out/cache stays
    summary = train(cfg, run_dir)
    test_list = (data_root / "ucfTrainTestlist" / "testlist01.txt").read_text().split()
    clip = data_root / "UCF-101" / test_list[0]
    predictor = Predictor.from_checkpoint(run_dir)
    pred = next(predictor.predict_files([clip], top_k=5, workers=0))
    predictor.explain(clip, run_dir / "plots")
    total = time.time() - t0
    t = summary.get("test", {})
    print(f"\n== dymsta demo finished in {total / 60:.1f} min (synthetic data {t_synth:.0f} s) ==")
    print(
        f"test top-1 {t.get('accuracy', float('nan')):.4f}  top-5 {t.get('top5_accuracy', float('nan')):.4f}  "
        f"macro F1 {t.get('macro_f1', float('nan')):.4f} on {t.get('num_videos', 0)} videos "
        f"(chance {1 / len(json.loads((run_dir / 'report.json').read_text())['class_names']):.3f})"
    )
    print(f"report: {run_dir / 'report.md'}   plots: {run_dir / 'plots'}")
    print(f"predict {clip.name}:")
    for p in pred["predictions"]:
        print(f"  {p['score']:7.2%}  {p['label']}")
    summary["demo_seconds"] = round(total, 1)
    return summary
