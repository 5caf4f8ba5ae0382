"""Does a trained model use the order of frames? Test accuracy with the frames as recorded, reversed, shuffled.

    python scripts/time_order_test.py runs/results/dymsta/s0 runs/results/tsn/s0 [--json OUT]

Loads each run's best checkpoint and its config, and evaluates the test list from the run's feature cache with
the time axis of every clip's features permuted (the same permutation for every clip and every stream; the motion
streams' own content still says which way things move within a frame pair). A model that ignores
order (TSN, the linear probe) scores the same under every permutation. A model that relies on order loses
accuracy when the order is broken; on the synthetic set, reversing the frames swaps the labels of three pairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dymsta.engine.train import build_pipeline, config_from_checkpoint, evaluate_records
from dymsta.models import load_model
from dymsta.models.base import as_streams


def orders(t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "as recorded": torch.arange(t),
        "reversed": torch.arange(t - 1, -1, -1),
        "shuffled": torch.randperm(t, generator=g),
    }


def permuted(feats: torch.Tensor | dict[str, torch.Tensor], perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stream's features ``(B, C, T, h, w)`` with the time axis in ``perm`` order."""
    return {k: v[:, :, perm] for k, v in as_streams(feats).items()}


def accuracy_by_order(run: Path) -> dict[str, float]:
    model, meta = load_model(run / "checkpoints" / "best.safetensors")
    cfg = config_from_checkpoint(meta)
    p = build_pipeline(cfg, run, model=model)
    forward_head = p.model.forward_head
    out = {}
    for name, perm in orders(cfg.data.num_frames).items():
        p.model.forward_head = lambda feats, *a, _perm=perm, **k: forward_head(permuted(feats, _perm), *a, **k)
        out[name] = evaluate_records(p, p.splits.test, views=1, crops=1)["accuracy"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = {str(run): accuracy_by_order(run) for run in args.runs}
    print("| run | as recorded | reversed | shuffled |")
    print("|---|---|---|---|")
    for run, acc in results.items():
        print(f"| {run} | {acc['as recorded']:.3f} | {acc['reversed']:.3f} | {acc['shuffled']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
