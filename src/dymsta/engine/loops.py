"""The two loops: one training epoch and one evaluation pass. Plain functions, DDP-aware.

Batches are dicts ``{"inputs", "label", "video_id", "num_skipped"}`` where ``inputs`` maps each stream to either
clips (B, C, T, H, W) (training through the backbone) or cached backbone features (B, Cb, T, h, w) (training the
head).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dymsta.engine import distributed as D
from dymsta.engine.averaging import WeightEMA
from dymsta.hardware import autocast
from dymsta.utils import progress

__all__ = [
    "NonFiniteLossError",
    "EpochBatchSampler",
    "train_one_epoch",
    "evaluate",
    "collate_features",
    "as_batch",
    "mixup_params",
    "to_device",
]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class EpochBatchSampler:
    """Global batches in a (seed, epoch)-determined order; each rank yields its strided share of every batch.

    Splitting each *global* batch across ranks (rather than splitting the dataset) makes one DDP step see exactly
    the samples that one single-process step would, which is what lets a 2-process run reproduce a 1-process run.
    Global batches smaller than the world size are dropped (every rank must take part in every step).
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        batches = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return [b for b in batches if len(b) >= D.world_size()]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[D.rank() :: D.world_size()]

    def __len__(self) -> int:
        return len(self.global_batches())


def collate_features(items: list[tuple[dict[str, torch.Tensor], int, str]]) -> dict[str, Any]:
    """Collate cached ``({stream: features}, label, video_id)`` items into the common batch dict."""
    return {
        "inputs": {name: torch.stack([f[name] for f, _, _ in items]) for name in items[0][0]},
        "label": torch.tensor([label for _, label, _ in items], dtype=torch.long),
        "video_id": [vid for _, _, vid in items],
        "num_skipped": 0,
    }


def as_batch(batch: dict[str, Any] | None) -> dict[str, Any] | None:
    """Map a clip batch from :func:`dymsta.data.collate_clips` (``video`` key) onto the common batch dict."""
    if batch is not None and "video" in batch:
        batch = dict(batch)
        batch["inputs"] = batch.pop("video")
    return batch


Inputs = dict[str, torch.Tensor] | torch.Tensor


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    """Every stream of a batch (or a bare tensor) on ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


def mix(inputs: Inputs, lam: float, perm: torch.Tensor) -> Inputs:
    """``lam * x + (1 - lam) * x[perm]`` for every stream, with the same partner and weight."""
    if isinstance(inputs, torch.Tensor):
        return lam * inputs + (1.0 - lam) * inputs[perm]
    return {k: lam * v + (1.0 - lam) * v[perm] for k, v in inputs.items()}


def train_one_epoch(
    net: torch.nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    global_batch_size: int,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 0.0,
    label_smoothing: float = 0.0,
    mixup: float = 0.0,
    rng: np.random.Generator | None = None,
    ema: WeightEMA | None = None,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``loader``; returns ``{"loss", "acc", "samples", "skipped"}`` summed over ranks.

    The loss of a step is the per-sample loss summed on this rank and divided by ``global_batch_size / world``, so
    DDP's gradient average equals the mean over the whole global batch, as in a single process.

    ``mixup > 0`` mixes every batch with a shuffled copy of itself (Zhang et al. 2018): inputs
    ``lam * x + (1 - lam) * x[perm]``, loss ``lam * CE(y) + (1 - lam) * CE(y[perm])``, ``lam ~ Beta(mixup, mixup)``
    drawn from ``rng``; under DDP each rank mixes within its share of the batch. Accuracy counts the labels ``y``.
    ``ema`` (if given) folds the weights into its average after every optimiser step.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    net.train()
    amp = autocast(device, amp_dtype)  # bf16 only where native (dymsta.hardware)
    loss_sum = correct = samples = skipped = 0.0
    for raw in progress(loader, desc=desc, enabled=D.is_main(), leave=False):
        batch = as_batch(raw)
        if batch is None:
            continue
        skipped += batch["num_skipped"]
        x = to_device(batch["inputs"], device)
        y = batch["label"].to(device, non_blocking=True)
        lam, perm = mixup_params(len(y), mixup, rng)
        if perm is not None:
            x = mix(x, lam, perm.to(device))
        with amp:
            logits = net(x)
        losses = F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=label_smoothing)
        if perm is not None:
            mixed = F.cross_entropy(
                logits.float(), y[perm.to(device)], reduction="none", label_smoothing=label_smoothing
            )
            losses = lam * losses + (1.0 - lam) * mixed
        loss = losses.sum() * D.world_size() / global_batch_size
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} (non-finite); stopping. The last good checkpoint "
                "is kept; lower optim.lr or set train.amp=none"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update()
        loss_sum += float(losses.detach().sum())
        correct += float((logits.argmax(1) == y).sum())
        samples += len(y)
    loss_sum, correct, samples, skipped = D.all_reduce_sum([loss_sum, correct, samples, skipped], device)
    return {
        "loss": loss_sum / max(samples, 1),
        "acc": correct / max(samples, 1),
        "samples": samples,
        "skipped": skipped,
    }


def mixup_params(n: int, alpha: float, rng: np.random.Generator) -> tuple[float, torch.Tensor | None]:
    """``(lam, perm)`` for one batch of ``n``; ``(1.0, None)`` when mixup is off or the batch has one sample."""
    if alpha <= 0 or n < 2:
        return 1.0, None
    lam = float(rng.beta(alpha, alpha))
    return lam, torch.from_numpy(rng.permutation(n))


@torch.no_grad()
def evaluate(
    net: torch.nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    desc: str = "eval",
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Predict every item of ``loader`` (this rank's shard), then gather all ranks' results on every rank.

    Returns:
        ``{"loss", "acc"}`` at clip level (cross-entropy without smoothing), plus ``probs`` (N, K) float64
        (``softmax(logits / temperature)``), the raw ``logits`` (N, K) float64, ``labels`` (N,), ``video_ids``
        (N,) for video-level aggregation, and ``skipped`` (clips not decodable).
    """
    net.eval()
    amp = autocast(device, amp_dtype)  # bf16 only where native (dymsta.hardware)
    probs, logit_rows, labels, ids, skipped = [], [], [], [], 0
    for raw in progress(loader, desc=desc, enabled=D.is_main(), leave=False):
        batch = as_batch(raw)
        if batch is None:
            continue
        skipped += batch["num_skipped"]
        with amp:
            logits = net(to_device(batch["inputs"], device))
        probs.append(torch.softmax(logits.float() / temperature, dim=1).cpu().double().numpy())
        logit_rows.append(logits.float().cpu().double().numpy())
        labels.append(batch["label"].numpy())
        ids.extend(batch["video_id"])
    parts = D.all_gather_objects((probs, logit_rows, labels, ids, skipped))
    probs = [p for part in parts for p in part[0]]
    logit_rows = [z for part in parts for z in part[1]]
    labels = [a for part in parts for a in part[2]]
    ids = [i for part in parts for i in part[3]]
    skipped = sum(part[4] for part in parts)
    if not probs:
        return {
            "loss": math.nan,
            "acc": math.nan,
            "probs": np.zeros((0, 0)),
            "logits": np.zeros((0, 0)),
            "labels": np.zeros(0, dtype=int),
            "video_ids": [],
            "skipped": skipped,
        }
    p, y = np.concatenate(probs), np.concatenate(labels).astype(np.int64)
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return {
        "loss": loss,
        "acc": float((p.argmax(1) == y).mean()),
        "probs": p,
        "logits": np.concatenate(logit_rows),
        "labels": y,
        "video_ids": ids,
        "skipped": skipped,
    }
