"""Choose a head recipe by group cross-validation on the *training* list only (the test list is never read).

The validation set of a single run on ucf101-mini is one actor group of 48 videos: a selection signal far too
noisy to compare recipes (issue 5: best validation 0.87, test 0.76). This script splits the training groups into
``--folds`` folds (whole groups, so no actor is on both sides), trains the recipe plus each variant on every fold
from the recipe's feature caches (held in memory), and prints the mean validation accuracy and loss
over the last ``--tail`` epochs of every fold: a steadier number than the maximum over epochs.

    python scripts/group_cv.py --config ucf101_mini --set cache.dir=runs/cache \\
        --variant base= --variant mixup=train.mixup=0.4 --variant tsn=model.arch=tsn

A variant is ``NAME=KEY=VALUE[,KEY=VALUE...]`` applied on top of the recipe and ``--set``. The features are read
once, with ``--set`` only, so a variant may change the head, its training and which cached streams it reads
(``data.modalities``), but not how features are made (``data.motion.*``, sizes, the backbone): those are refused
and go in ``--set``, one run per setting. Output: one JSON line per variant, and ``--out`` (JSON) with every
fold's curves.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from dymsta.config import load_config, recipe_path
from dymsta.data.splits import ucf101_group
from dymsta.engine.averaging import WeightEMA
from dymsta.engine.cache import dequantize, quantize
from dymsta.engine.input_norm import fit_input_norm
from dymsta.engine.loops import evaluate, train_one_epoch
from dymsta.engine.optim import LRSchedule, build_optimizer
from dymsta.engine.train import HeadNet, build_pipeline
from dymsta.hardware import resolve_precision
from dymsta.models import build_model
from dymsta.models.backbone import pool_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--tail", type=int, default=10, help="average validation over the last N epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--uint8",
        action="store_true",
        help="read every cached row as a cache.dtype=uint8 cache of the head's grid stores it (pooled, then "
        "quantised per channel): the accuracy cost of the smaller cache, from the same fp16 cache",
    )
    ap.add_argument("--out", default="runs/group_cv.json")
    return ap.parse_args(argv)


def load_all_features(
    cfg, run_dir: Path, *, uint8: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Every training-list video from the recipe's own caches: ``{stream: (V, views, C, T, h, w)}`` fp16 (pooled to
    the recipe's grid, as training reads them), labels, groups.

    Videos of the recipe's training split bring their ``cache.train_views`` cached views; videos of its validation
    group(s) have only the evaluation view cached, which stands in for all their views.
    """
    p = build_pipeline(cfg, run_dir)
    _, _, train_set = p.loader(p.splits.train, split="train", train=True, batch_size=cfg.train.batch_size)
    sets = [train_set]
    if p.splits.val:
        _, _, val_set = p.loader(p.splits.val, split="val", train=False, batch_size=cfg.train.eval_batch_size)
        sets.append(val_set)
    views = train_set.store.views
    feats: dict[str, list[torch.Tensor]] = {}
    labels, groups = [], []
    for data in sets:
        store = data.store
        for v, video_id in enumerate(store.video_ids):
            read = uint8_features(data) if uint8 else data.features
            rows = [read(v * store.views + min(k, store.views - 1)) for k in range(views)]
            for name in rows[0]:
                feats.setdefault(name, []).append(torch.stack([r[name] for r in rows]).half())
            labels.append(store.labels[v])
            groups.append(ucf101_group(video_id))
    return {k: torch.stack(v) for k, v in feats.items()}, torch.tensor(labels), groups


def uint8_features(data):
    """``data.features`` as a ``cache.dtype=uint8`` cache of the head's grid (``cache.grid: auto``) gives them:
    each stored row pooled to the grid the model reads, quantised per channel (:func:`dymsta.engine.cache.quantize`,
    as the writer does after pooling) and dequantised."""

    def read(row: int) -> dict[str, torch.Tensor]:
        out = {}
        for name, x in data.store.row(row).items():
            pooled = pool_grid(torch.from_numpy(x.astype(np.float32)), data.grid).numpy()
            out[name] = torch.from_numpy(dequantize(*quantize(pooled)))
        return out

    return read


def select(feats: dict[str, torch.Tensor], streams: tuple[str, ...], index, view=None) -> dict[str, torch.Tensor]:
    """The model's streams of videos ``index`` (and cached ``view`` per video, else view 0), float16 as cached: the
    head casts them to its compute dtype in one copy (as training from the cache does)."""
    return {s: feats[s][index, 0] if view is None else feats[s][index, view] for s in streams}


def split_overrides(sets: str) -> list[str]:
    """``"a=1,b=[x,y]"`` -> ``["a=1", "b=[x,y]"]``: commas inside brackets belong to a list value."""
    out, depth, current = [], 0, ""
    for ch in sets:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [s for s in [*out, current] if s]


FEATURE_KEYS = ("data.motion.", "data.size", "data.num_frames", "data.resize", "data.crop_scale", "data.hflip")
FEATURE_KEYS += ("data.seed", "model.backbone", "model.runtime", "model.pretrained", "model.head_conv_grid", "cache.")


def check_variant(name: str, overrides: list[str], head_conv: str) -> None:
    """Refuse a variant that changes how the (already read) features are made: it would silently not apply.

    ``model.head_conv`` may move between ``frozen`` and ``trained`` (the same cached activations before the
    backbone's last layer), not to or from ``backbone`` (1280 channels after it) or ``stage`` (the last stage's
    input); ``head_conv``: the recipe's.
    """
    cache_form = {"frozen": "trained"}  # head_conv -> the cached features it reads
    for item in overrides:
        key, _, value = item.partition("=")
        crosses = key == "model.head_conv" and cache_form.get(value, value) != cache_form.get(head_conv, head_conv)
        if key.startswith(FEATURE_KEYS) or crosses:
            raise SystemExit(f"--variant {name}: {key} changes the cached features; pass it with --set instead")


def fold_of_groups(groups: list[str], folds: int) -> list[list[int]]:
    """Indices of the videos of each fold: sorted groups dealt into ``folds`` contiguous blocks."""
    names = sorted(set(groups))
    per = math.ceil(len(names) / folds)
    blocks = [set(names[i : i + per]) for i in range(0, len(names), per)]
    return [[i for i, g in enumerate(groups) if g in block] for block in blocks]


def run_fold(cfg, feats, labels, train_idx, val_idx, *, epochs: int, seed: int) -> list[dict[str, float]]:
    """Train a fresh head on ``train_idx`` (a random cached view per video and epoch); validate on view 0 (with
    the averaged weights when ``train.ema`` is set, as a run does)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    if model.input_norm is not None:  # the fold's own training videos, every cached view (as a run does)
        fit_input_norm(
            model,
            (
                {s: feats[s][train_idx[i : i + 64]].flatten(0, 1) for s in model.streams}
                for i in range(0, len(train_idx), 64)
            ),
        )
    net = HeadNet(model)
    optimizer = build_optimizer(model.trainable_parameters(), cfg.optim, pretrained=model.pretrained_parameters())
    schedule = LRSchedule(optimizer, cfg.optim, epochs)
    device = torch.device("cpu")
    amp = resolve_precision(cfg.train.amp, device).dtype
    streams = tuple(cfg.model.streams)
    val_batches = [
        {
            "inputs": select(feats, streams, val_idx[i : i + 64]),
            "label": labels[val_idx[i : i + 64]],
            "num_skipped": 0,
            "video_id": [str(j) for j in val_idx[i : i + 64]],
        }
        for i in range(0, len(val_idx), 64)
    ]
    ema = WeightEMA(model, cfg.train.ema) if cfg.train.ema else None
    curve = []
    rng = np.random.default_rng(seed)
    views = next(iter(feats.values())).shape[1]
    for epoch in range(epochs):
        torch.manual_seed(seed * 1000 + epoch)
        model.set_epoch(epoch)
        schedule.start_epoch(epoch)
        order = rng.permutation(train_idx)
        view = rng.integers(views, size=len(order))
        bs = cfg.train.batch_size
        batches = [
            {
                "inputs": select(feats, streams, order[i : i + bs], view[i : i + bs]),
                "label": labels[order[i : i + bs]],
                "num_skipped": 0,
                "video_id": [],
            }
            for i in range(0, len(order), bs)
        ]
        tr = train_one_epoch(
            net,
            batches,
            optimizer,
            device=device,
            global_batch_size=bs,
            amp_dtype=amp,
            grad_clip=cfg.train.grad_clip,
            label_smoothing=cfg.train.label_smoothing,
            mixup=cfg.train.mixup,
            rng=rng,
            ema=ema,
        )
        with ema.applied() if ema else nullcontext():
            va = evaluate(net, val_batches, device=device, amp_dtype=amp)
        schedule.end_epoch(va["loss"])
        curve.append({"train_acc": tr["acc"], "val_acc": va["acc"], "val_loss": va["loss"], "lr": schedule.lr})
    return curve


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    path = recipe_path(args.config)
    base = load_config(path, args.set)
    for spec in args.variant:  # before the (minutes-long) read of the features
        name, _, sets = spec.partition("=")
        check_variant(name, split_overrides(sets), base.model.head_conv)
    feats, labels, groups = load_all_features(base, Path("runs/group_cv"), uint8=args.uint8)
    folds = fold_of_groups(groups, args.folds)
    results = {}
    for spec in args.variant or ["recipe="]:
        name, _, sets = spec.partition("=")
        cfg = load_config(path, args.set + split_overrides(sets))
        cfg.model.num_classes = int(labels.max()) + 1
        t0, curves = time.time(), []
        for k, val_idx in enumerate(folds):
            train_idx = np.array([i for f in folds if f is not val_idx for i in f])
            curves.append(
                run_fold(cfg, feats, labels, train_idx, np.array(val_idx), epochs=args.epochs, seed=args.seed * 100 + k)
            )
        tail = [c[-args.tail :] for c in curves]
        row = {
            "variant": name,
            "sets": sets,
            "val_acc_tail": float(np.mean([e["val_acc"] for t in tail for e in t])),
            "val_acc_tail_per_fold": [round(float(np.mean([e["val_acc"] for e in t])), 3) for t in tail],
            "val_loss_tail": float(np.mean([e["val_loss"] for t in tail for e in t])),
            "val_acc_best_mean": float(np.mean([max(e["val_acc"] for e in c) for c in curves])),
            "seconds": round(time.time() - t0, 1),
        }
        print(json.dumps(row), flush=True)
        results[name] = {**row, "curves": curves}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
