"""``dymsta train``: data -> (feature cache) -> epochs with validation -> best checkpoint -> test report and plots.

One call gives the paper's whole result in ``RUN_DIR``::

    config.yaml          the resolved config
    index.json           the scanned video index (reused by later runs on the same data)
    metrics.csv          one row per epoch (train/val loss and accuracy, learning rate, time)
    checkpoints/         best.safetensors, last.safetensors (weights + config), state.safetensors (resume)
    report.json/.md      test results in the paper's Table 1 layout (+ top-5, per class, confusion matrix,
                         calibration: temperature, ECE before and after)
    plots/               accuracy, loss, learning rate, confusion matrix, per-class F1, reliability diagram
    labels.txt/.json     the class names in id order (MMAction2 / SlowFast-PyTorchVideo label maps)
    MODEL_CARD.md        Hugging Face model card: results and test protocol, data, recipe, limitations
    summary.json         times, sample counts, skipped videos, best epoch, calibration temperature

After training, the best checkpoint is calibrated: a temperature fitted on the validation split
(:mod:`dymsta.engine.calibration`) is stored in its metadata, and the test report uses it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dymsta.config import Config, config_from_dict, config_to_dict, dump_config
from dymsta.data import DatasetSplits, VideoClipDataset, VideoRecord, collate_clips, load_splits
from dymsta.data.labels import write_label_map
from dymsta.data.motion import stream_settings
from dymsta.data.splits import check_root, list_dataset
from dymsta.data.transforms import frames_to_input
from dymsta.engine import distributed as D
from dymsta.engine.averaging import WeightEMA
from dymsta.engine.cache import (
    CachedClips,
    CacheSpec,
    FeatureStore,
    StreamSpec,
    cache_folder,
    get_or_build_cache,
    missing_streams,
    zero_clips,
)
from dymsta.engine.calibration import TEMPERATURE_KEY, fit_temperature, softmax
from dymsta.engine.checkpoint import load_training_state, save_training_state
from dymsta.engine.input_norm import fit_input_norm
from dymsta.engine.loops import (
    EpochBatchSampler,
    NonFiniteLossError,
    as_batch,
    collate_features,
    evaluate,
    to_device,
    train_one_epoch,
)
from dymsta.engine.optim import LRSchedule, build_optimizer
from dymsta.engine.sizing import (
    CachePart,
    CachePlan,
    check_free_space,
    format_plan,
    measure_seconds_per_row,
    plan_cache,
)
from dymsta.hardware import autocast, guard_model_precision, resolve_precision, set_threads
from dymsta.models import build_model, load_model, save_model
from dymsta.reports import (
    ECE_BINS,
    MetricsLogger,
    aggregate_by_video,
    classification_metrics,
    expected_calibration_error,
    plot_reliability,
    read_metrics,
    reliability_bins,
    write_all_plots,
    write_report,
)
from dymsta.reports.model_card import write_model_card
from dymsta.utils import atomic_write_json, atomic_write_text

__all__ = [
    "train",
    "extract_features",
    "Pipeline",
    "resolve_device",
    "build_pipeline",
    "calibrate",
    "evaluate_records",
]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present (this rank's GPU under torchrun), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


class HeadNet(torch.nn.Module):
    """``forward(features) = model.forward_head(features)``, so DDP can wrap the trainable head alone."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(feats)


@dataclass
class Pipeline:
    """Everything a run needs besides the optimiser: splits, model, and how to feed it."""

    cfg: Config
    run_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    splits: DatasetSplits
    model: torch.nn.Module
    use_cache: bool
    size: int
    _feature_grid: tuple[int, int] | None = None

    def clip_dataset(
        self,
        records: list[VideoRecord],
        *,
        mode: str,
        views: int = 1,
        crops: int = 1,
        modalities: tuple[str, ...] | None = None,
        uint8: bool = False,
    ) -> VideoClipDataset:
        """Decoded clips of ``records`` with the run's streams (or ``modalities``), one decode per view."""
        d = self.cfg.data
        modalities = modalities or tuple(d.modalities)
        hist = "mv" in modalities and d.motion.mv_encoding == "hist"
        return VideoClipDataset(
            records,
            num_frames=d.num_frames,
            size=self.size,
            mean=self.model.mean,
            std=self.model.std,
            mode=mode,
            views=views,
            crops=crops,
            resize=d.resize,
            seed=d.seed,
            hflip=d.hflip,
            crop_scale=d.crop_scale,
            modalities=modalities,
            motion=d.motion,
            feature_grid=self.feature_grid() if hist else None,
            uint8=uint8,
            min_decoded_fraction=d.min_decoded_fraction,
        )

    def feature_grid(self) -> tuple[int, int]:
        """``(h, w)`` of the backbone's feature grid at the run's frame size."""
        if self._feature_grid is None:
            with torch.no_grad():
                probe = self.model.backbone(torch.zeros(1, 3, 1, self.size, self.size, device=self.device))
            self._feature_grid = tuple(probe.shape[-2:])
        return self._feature_grid

    def cache_dir(self) -> Path:
        return Path(self.cfg.cache.dir) if self.cfg.cache.dir else self.run_dir.parent / "cache"

    def runtime_id(self) -> str:
        """The backbone's runtime as the feature cache sees it (read under the build's autocast)."""
        with autocast(self.device, self.amp_dtype):
            return self.model.backbone.runtime_id

    def stream_specs(self) -> list[StreamSpec]:
        """The cached streams of this run: each with its settings, the cache's storage type and stored grid."""
        d, c = self.cfg.data, self.cfg.cache
        grid = self.read_grid() if c.grid == "auto" else 0 if c.grid == "full" else int(c.grid)
        return [StreamSpec(m, stream_settings(m, d.motion), c.dtype, grid) for m in self.model.streams]

    def read_grid(self) -> int:
        """How far cached grids are pooled when read: DyMSTA-Net's ``spatial_pool``, 1 for TSN and the probe."""
        return self.model.read_grid

    def cache_parts(self) -> list[tuple[str, list[VideoRecord], str, int, int]]:
        """The caches a run reads, ``(name, records, mode, views, crops)``: train views, validation, test."""
        d, s = self.cfg.data, self.splits
        test_views = d.test_clips * d.test_crops
        return [
            ("train", s.train, "augment", self.cfg.cache.train_views, 1),
            ("val", s.val, "eval", 1, 1),
            (f"test-v{d.test_clips}x{d.test_crops}", s.test, "eval", test_views, d.test_crops),
        ]

    def cache_plan(self, counts: dict[str, int] | None = None) -> CachePlan:
        """The caches' size and build time (:mod:`dymsta.engine.sizing`); a cache already complete costs 0.

        ``counts``: videos per part (``train``, ``val``, ``test``) instead of the splits' (none counts as built).
        """
        parts, built_folder = [], None
        for name, records, mode, views, crops in self.cache_parts():
            if counts is not None:
                parts.append(CachePart(name, counts[name.split("-")[0]], views))
            elif records:
                folder, _ = cache_folder(name, self.cache_dir(), self.cache_spec(mode, views, crops), records)
                built = not missing_streams(folder, self.stream_specs())
                parts.append(CachePart(name, len(records), views, built))
                built_folder = folder if built else built_folder
        if parts and all(p.built for p in parts):  # nothing to build: the shapes are on disk, no backbone call
            shapes, seconds = FeatureStore(built_folder, self.stream_specs()).shapes, 0.0
        else:
            shapes, seconds = self._probe_backbone()
        c = self.cfg.cache
        return plan_cache(parts, shapes, dtype=c.dtype, seconds_per_row=seconds, cache_dir=self.cache_dir())

    def _probe_backbone(self) -> tuple[dict[str, tuple[int, ...]], float]:
        """Row shapes per stream (as stored) and the backbone's seconds per clip-view of every stream, on zero
        clips."""
        records = self.splits.train[:1] or self.splits.test[:1] or [_PROBE_RECORD]
        zeros = zero_clips(self.clip_dataset(records, mode="eval"))
        shapes: dict[str, tuple[int, ...]] = {}

        def run(rows: int) -> None:
            batch = {k: v.expand(rows, *v.shape[1:]).to(self.device) for k, v in zeros.items()}
            with torch.inference_mode(), autocast(self.device, self.amp_dtype):
                feats = self.model.extract(batch, partial=True)
            specs = {s.name: s for s in self.stream_specs()}
            shapes.update({k: specs[k].stored_shape(tuple(v.shape[1:])) for k, v in feats.items()})

        return shapes, measure_seconds_per_row(run)

    def check_cache_space(self) -> CachePlan | None:
        """Log the caches' size and build time; stop (one line) when the disk cannot hold what is to build."""
        if not self.use_cache or not D.is_main():
            return None
        plan = self.cache_plan()
        for line in format_plan(plan).splitlines():
            log.info("%s", line)
        if self.cfg.cache.check_space:
            check_free_space(plan)
        return plan

    def cache_spec(self, mode: str, views: int, crops: int = 1) -> CacheSpec:
        """What the cache of ``mode`` x ``views`` x ``crops`` depends on, besides the videos."""
        d = self.cfg.data
        backbone = self.model.backbone
        return CacheSpec(
            backbone=backbone.fingerprint(),
            num_frames=d.num_frames,
            size=self.size,
            resize=d.resize,
            mode=mode,
            views=views,
            crops=crops,
            seed=d.seed,
            augment=f"hflip={d.hflip},scale={list(d.crop_scale)}" if mode == "augment" else "",
            runtime=self.runtime_id(),
        )

    def feature_store(
        self, name: str, records: list[VideoRecord], *, mode: str, views: int, crops: int = 1
    ) -> FeatureStore:
        d, c = self.cfg.data, self.cfg.cache
        spec = self.cache_spec(mode, views, crops)

        def extract(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # workers send uint8 frames
            return self.model.extract(frames_to_input(batch, mean=self.model.mean, std=self.model.std), partial=True)

        return get_or_build_cache(
            name,
            extract,
            lambda modalities: self.clip_dataset(
                records, mode=mode, views=views, crops=crops, modalities=modalities, uint8=True
            ),
            records,
            self.cache_dir(),
            spec=spec,
            streams=self.stream_specs(),
            batch_size=c.batch_size,
            workers=d.workers,
            device=self.device,
            amp_dtype=self.amp_dtype,
        )

    def loader(
        self, records: list[VideoRecord], *, split: str, train: bool, batch_size: int, views: int = 1, crops: int = 1
    ) -> tuple[DataLoader, EpochBatchSampler, Any]:
        """A DataLoader over cached features or decoded clips; train: shuffled global batches sharded by rank."""
        d = self.cfg.data
        if self.use_cache:
            if train:
                store = self.feature_store(split, records, mode="augment", views=self.cfg.cache.train_views)
            else:
                store = self.feature_store(split, records, mode="eval", views=views * crops, crops=crops)
            dataset: Any = CachedClips(store, per_video=train, seed=d.seed, grid=self.read_grid())
            collate, workers = collate_features, 0
        else:
            mode = "train" if train else "eval"
            dataset = self.clip_dataset(records, mode=mode, views=views * crops, crops=crops)
            collate, workers = collate_clips, d.workers
        sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=train, seed=self.cfg.train.seed)
        if not train:  # evaluation: every item exactly once, strided over ranks
            sampler = _ShardedSequential(len(dataset), batch_size)
        loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate, persistent_workers=False
        )
        return loader, sampler, dataset

    def net(self) -> torch.nn.Module:
        return HeadNet(self.model) if self.use_cache else self.model


class _ShardedSequential:
    """Batches of this rank's strided share of ``range(n)``, in order."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.items = D.shard(list(range(n)))
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for i in range(0, len(self.items), self.batch_size):
            yield self.items[i : i + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)


def build_pipeline(
    cfg: Config, run_dir: Path, *, model: torch.nn.Module | None = None, splits: DatasetSplits | None = None
) -> Pipeline:
    """Device, data splits (index scanned once, rank 0 first; or ``splits`` as given), and the model (built for
    the dataset's classes, or ``model`` as loaded from a checkpoint)."""
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.amp, device)  # bf16 only where the device computes it natively
    d = cfg.data
    index_cache = run_dir / "index.json"

    def load() -> DatasetSplits:
        return load_splits(
            d.kind,
            d.root,
            split=d.split,
            val_fraction=d.val_fraction,
            seed=d.seed,
            annotations=d.annotations,
            index_cache=index_cache,
            max_videos_per_class=d.max_videos_per_class,
            label_map=d.label_map,
        )

    if splits is None and D.is_main():
        splits = load()
    D.barrier()
    if splits is None:
        splits = load()
    if model is None:
        cfg.model = dataclasses.replace(cfg.model, num_classes=len(splits.class_names))
        model = build_model(cfg.model)
    model = model.to(device)
    precision = guard_model_precision(precision, model, device)
    size = d.size or model.input_size
    use_cache = bool(cfg.cache.enabled and model.uses_frame_backbone and model.cfg.trainable_stages == 0)
    if model.uses_frame_backbone:  # after the weights are loaded: set_runtime exports them
        cache_dir = Path(cfg.cache.dir) if cfg.cache.dir else run_dir.parent / "cache"
        model.backbone.set_runtime(cfg.model.runtime, cache_dir=cache_dir, device=device, size=size)
    return Pipeline(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        amp_dtype=precision.dtype,
        splits=splits,
        model=model,
        use_cache=use_cache,
        size=size,
    )


def _setup(cfg: Config) -> None:
    set_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)


def _model_metadata(p: Pipeline, **extra: Any) -> dict[str, str]:
    meta = {"run_config": json.dumps(config_to_dict(p.cfg)), "class_names": json.dumps(p.splits.class_names)}
    meta.update({k: json.dumps(v) for k, v in extra.items()})
    return meta


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train, keep the best checkpoint on validation, evaluate it on the test list, write report and plots.

    Returns the run summary (also written to ``RUN_DIR/summary.json``).
    """
    check_root(cfg.data.root, cfg.data.kind)  # before anything is scanned or written
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device)
    D.init_distributed(device)
    _setup(cfg)
    ckpt_dir = run_dir / "checkpoints"
    state_file = ckpt_dir / "state.safetensors"
    if D.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and state_file.exists():
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose --out")
    D.barrier()
    t_start = time.time()
    p = build_pipeline(cfg, run_dir)
    if D.is_main():
        atomic_write_text(run_dir / "config.yaml", dump_config(p.cfg))
        for name in ("labels.txt", "labels.json"):
            write_label_map(run_dir / name, p.splits.class_names)
    log.info(
        "data: %d classes, %d train / %d val / %d test videos, %d unreadable",
        len(p.splits.class_names),
        len(p.splits.train),
        len(p.splits.val),
        len(p.splits.test),
        len(p.splits.skipped),
    )
    p.check_cache_space()  # before any row is written: the size, the build time, and whether the disk holds it

    t_cache = time.time()
    train_loader, train_sampler, train_set = p.loader(
        p.splits.train, split="train", train=True, batch_size=cfg.train.batch_size
    )
    val_loader = None
    if p.splits.val:
        val_loader, _, _ = p.loader(p.splits.val, split="val", train=False, batch_size=cfg.train.eval_batch_size)
    cache_seconds = time.time() - t_cache

    model = p.model
    if getattr(model, "input_norm", None) is not None and not (resume and state_file.exists()):
        fit_input_norm(model, input_norm_batches(p, train_set, train_loader))  # a resumed run has its buffers
    optimizer = build_optimizer(model.trainable_parameters(), cfg.optim, pretrained=model.pretrained_parameters())
    schedule = LRSchedule(optimizer, cfg.optim, cfg.train.epochs)
    scaler = torch.amp.GradScaler("cuda") if p.amp_dtype == torch.float16 else None  # fp16 is CUDA-only
    ema = WeightEMA(model, cfg.train.ema) if cfg.train.ema else None
    averaged = ema.applied if ema else nullcontext  # validation and checkpoints see the averaged head
    net = p.net()
    if D.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)

    start_epoch, best, best_epoch, bad_epochs = 0, {"val_acc": -1.0, "val_loss": math.inf}, -1, 0
    selected_epoch = -1  # the epoch of best.safetensors: best_epoch, or with train.select=last the latest
    selected = dict(best)  # that epoch's validation scores
    if resume and state_file.exists():
        info = load_training_state(state_file, model=model, optimizer=optimizer, ema=ema)
        schedule.load_state_dict(info["schedule"])
        start_epoch, best, best_epoch, bad_epochs = info["epoch"] + 1, info["best"], info["best_epoch"], info["bad"]
        selected_epoch = info.get("selected_epoch", best_epoch)
        selected = info.get("selected", best)
        log.info("resumed from %s at epoch %d", state_file, start_epoch)
    logger = (
        MetricsLogger(run_dir / "metrics.csv", tensorboard_dir=run_dir / "tb", resume=resume) if D.is_main() else None
    )

    stopped = None
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.time()
        torch.manual_seed(cfg.train.seed * 1000 + epoch)  # dropout etc.: resumable without replaying RNG history
        model.set_epoch(epoch)
        train_sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        schedule.start_epoch(epoch)
        lr = schedule.lr
        try:
            tr = train_one_epoch(
                net,
                train_loader,
                optimizer,
                device=device,
                global_batch_size=cfg.train.batch_size,
                amp_dtype=p.amp_dtype,
                scaler=scaler,
                grad_clip=cfg.train.grad_clip,
                label_smoothing=cfg.train.label_smoothing,
                mixup=cfg.train.mixup,
                rng=np.random.default_rng([cfg.train.seed, epoch, D.rank()]),
                ema=ema,
                desc=f"epoch {epoch + 1}",
            )
        except NonFiniteLossError as e:
            stopped = str(e)
            log.error("%s", e)
            break
        with averaged():
            va = evaluate(net, val_loader, device=device, amp_dtype=p.amp_dtype, desc="val") if val_loader else None
        val_loss = va["loss"] if va else tr["loss"]
        val_acc = va["acc"] if va else tr["acc"]
        schedule.end_epoch(val_loss)
        improved = val_acc > best["val_acc"] or (val_acc == best["val_acc"] and val_loss < best["val_loss"])
        if improved:
            best, best_epoch, bad_epochs = {"val_acc": val_acc, "val_loss": val_loss}, epoch, 0
        else:
            bad_epochs += 1
        row = {
            "epoch": epoch + 1,
            "train_loss": tr["loss"],
            "train_acc": tr["acc"],
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "seconds": round(time.time() - t0, 3),
            "skipped": int(tr["skipped"]),
        }
        if D.is_main():
            # Order matters for a kill at any point: the metrics row first (a resumed run rewrites rows from its
            # first epoch on), the training state last (it alone decides where --resume starts).
            logger.log(row)
            if improved or cfg.train.select == "last":
                selected_epoch, selected = epoch, {"val_acc": val_acc, "val_loss": val_loss}
            with averaged():
                if selected_epoch == epoch:
                    save_model(
                        model,
                        ckpt_dir / "best.safetensors",
                        metadata=_model_metadata(p, epoch=epoch + 1, val_acc=val_acc, val_loss=val_loss),
                    )
                save_model(model, ckpt_dir / "last.safetensors", metadata=_model_metadata(p, epoch=epoch + 1))
            save_training_state(
                state_file,
                model=model,
                optimizer=optimizer,
                ema=ema,
                info={
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "selected_epoch": selected_epoch,
                    "selected": selected,
                    "bad": bad_epochs,
                    "schedule": schedule.state_dict(),
                    "config": config_to_dict(p.cfg),
                    "classes": p.splits.class_names,
                },
            )
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs",
                epoch + 1,
                cfg.train.epochs,
                tr["loss"],
                tr["acc"],
                val_loss,
                val_acc,
                lr,
                row["seconds"],
            )
        D.barrier()
        if cfg.train.early_stop and bad_epochs >= cfg.train.early_stop:
            log.info("early stop: %d epochs without validation improvement", bad_epochs)
            break
    if logger is not None:
        logger.close()
    train_seconds = time.time() - t_start - cache_seconds

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "best_epoch": selected_epoch + 1,  # the epoch of best.safetensors (train.select)
        "best_val": best,  # the best validation scores seen (with train.select=last, not the kept epoch's)
        "selected_val": selected,  # the validation scores of best.safetensors' epoch
        "stopped": stopped,
        "cache_seconds": round(cache_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "world_size": D.world_size(),
        "device": str(device),
        "num_train": len(p.splits.train),
        "num_val": len(p.splits.val),
        "num_test": len(p.splits.test),
        "num_unreadable": len(p.splits.skipped),
        "unreadable": p.splits.skipped[:50],
        "feature_cache": p.use_cache,
    }
    best_file = ckpt_dir / "best.safetensors"
    report, calibration = None, None
    if best_file.exists() and not stopped:
        best_model, _ = load_model(best_file, map_location=device)
        model.load_state_dict(best_model.state_dict())
        calibration = calibrate(p, val_loader, best_file)
        summary["calibration_temperature"] = calibration["temperature"]
    if p.splits.test and calibration is not None:
        temperature = calibration["temperature"] or 1.0
        report = evaluate_records(
            p, p.splits.test, views=cfg.data.test_clips, crops=cfg.data.test_crops, temperature=temperature
        )
        report["calibration"] = {**calibration, **report.pop("calibration_test")}
        summary["test"] = {
            k: report[k] for k in ("accuracy", "top5_accuracy", "clip_accuracy", "num_videos", "num_skipped")
        }
        summary["test"].update({"macro_f1": report["macro_avg"]["f1"], "weighted_f1": report["weighted_avg"]["f1"]})
        if D.is_main():
            write_reliability_plot(report["calibration"], run_dir / "plots" / "reliability.png")
            write_report(report, run_dir, title=f"{cfg.data.kind} split {cfg.data.split}: test results")
            write_all_plots(run_dir, read_metrics(run_dir / "metrics.csv"), report)
    if D.is_main():
        counts = {
            "train": len(p.splits.train),
            "val": len(p.splits.val),
            "test": len(p.splits.test),
            "unreadable": len(p.splits.skipped),
        }
        write_model_card(
            run_dir / "MODEL_CARD.md",
            name=run_dir.resolve().name,
            config=config_to_dict(p.cfg),
            class_names=p.splits.class_names,
            counts=counts,
            report=report,
            calibration=report["calibration"] if report else calibration,
            best_epoch=selected_epoch + 1 if selected_epoch >= 0 else None,
        )
    summary["total_seconds"] = round(time.time() - t_start, 2)
    if D.is_main():
        atomic_write_json(run_dir / "summary.json", summary)
    D.barrier()
    if stopped:
        raise NonFiniteLossError(stopped)
    return summary


INPUT_NORM_ROWS = 4096  # cached rows (clip-views) the statistics are taken from, spread over the training set
INPUT_NORM_BATCHES = 32  # training batches through the backbone when there is no feature cache


def input_norm_batches(p: Pipeline, train_set: Any, train_loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Training features ``{stream: (B, C, T, h, w)}`` for :func:`fit_input_norm`: every cached view of every
    training video (at most ``INPUT_NORM_ROWS``, evenly spaced; split over ranks), or without a cache the first
    ``INPUT_NORM_BATCHES`` training batches through the frozen backbone."""
    if isinstance(train_set, CachedClips):
        store = train_set.store
        rows = [v * store.views + k for v in train_set.items for k in store.valid_views(v)]
        step = max(1, math.ceil(len(rows) / INPUT_NORM_ROWS))
        rows = D.shard(rows[::step])
        for i in range(0, len(rows), 64):
            feats = [train_set.features(r) for r in rows[i : i + 64]]
            yield {name: torch.stack([f[name] for f in feats]) for name in feats[0]}
        return
    for n, raw in enumerate(train_loader):
        if n >= INPUT_NORM_BATCHES:
            break
        batch = as_batch(raw)
        if batch is not None:
            with autocast(p.device, p.amp_dtype):
                yield p.model.extract(to_device(batch["inputs"], p.device))


def calibrate(p: Pipeline, val_loader: DataLoader | None, checkpoint: Path) -> dict[str, Any]:
    """Fit the temperature of ``p.model`` on the validation split and store it in ``checkpoint``'s metadata.

    Returns:
        ``{"temperature", "fitted_on", "fitted_videos", "bins", "ece_val_before", "ece_val_after"}``, or
        ``{"temperature": None, "note": ...}`` when there is no validation split (the checkpoint is left as it is).
    """
    if val_loader is None:
        return {"temperature": None, "note": "no validation split"}
    out = evaluate(p.net(), val_loader, device=p.device, amp_dtype=p.amp_dtype, desc="calibrate")
    if len(out["labels"]) == 0:
        return {"temperature": None, "note": "no validation video could be decoded"}
    temperature = fit_temperature(out["logits"], out["labels"])
    before, after = softmax(out["logits"]), softmax(out["logits"], temperature)  # one view per video: clip = video
    result = {
        "temperature": temperature,
        "fitted_on": "val",
        "fitted_videos": len(out["labels"]),
        "bins": ECE_BINS,
        "ece_val_before": expected_calibration_error(before, out["labels"]),
        "ece_val_after": expected_calibration_error(after, out["labels"]),
    }
    if (out["probs"].argmax(1) == out["labels"]).all():
        result["note"] = (
            "the validation split has no errors, so the fit only sharpens the scores; "
            "a larger validation split calibrates more honestly"
        )
        log.warning("calibration: %s", result["note"])
    log.info(
        "calibration: temperature %.4f on %d validation videos; ECE %.4f -> %.4f",
        temperature,
        len(out["labels"]),
        result["ece_val_before"],
        result["ece_val_after"],
    )
    if D.is_main():
        _, meta = load_model(checkpoint)
        save_model(p.model, checkpoint, metadata={**meta, TEMPERATURE_KEY: json.dumps(temperature)})
    D.barrier()
    return result


def write_reliability_plot(calibration: dict[str, Any], path: Path) -> Path | None:
    """The reliability diagram of a report's ``calibration`` entry (before and after the temperature)."""
    if "reliability_before" not in calibration:
        return None
    tables = {"before (T = 1)": calibration["reliability_before"]}
    if calibration.get("temperature"):
        tables[f"after (T = {calibration['temperature']:.2f})"] = calibration["reliability_after"]
    return plot_reliability(tables, path, title=f"Reliability on the {calibration.get('split', 'test')} split")


def evaluate_records(
    p: Pipeline, records: list[VideoRecord], *, views: int, crops: int, temperature: float = 1.0, split: str = "test"
) -> dict[str, Any]:
    """Evaluate ``p.model`` on ``records`` with ``views x crops`` per video; video-level report dict.

    Scores are ``softmax(logits / temperature)`` averaged per video. The report adds ``skipped_videos`` (ids of
    the videos that could not be evaluated, first 50) and ``calibration_<split>``: ECE and reliability tables of
    the uncalibrated (T = 1) and the calibrated scores.
    """
    loader, _, _ = p.loader(
        records,
        split=f"test-v{views}x{crops}",
        train=False,
        batch_size=p.cfg.train.eval_batch_size,
        views=views,
        crops=crops,
    )
    out = evaluate(p.net(), loader, device=p.device, amp_dtype=p.amp_dtype, desc=split, temperature=temperature)
    if len(out["labels"]) == 0:
        raise RuntimeError(f"no {split} video could be decoded")
    ids, probs, labels = aggregate_by_video(out["video_ids"], out["probs"], out["labels"])
    _, raw, _ = aggregate_by_video(out["video_ids"], softmax(out["logits"]), out["labels"])
    decoded = set(ids)
    missing = [r.video_id for r in records if r.video_id not in decoded]
    report = classification_metrics(
        probs, labels, p.splits.class_names, num_skipped=len(missing), clip_accuracy=out["acc"]
    )
    report["skipped_videos"] = missing[:50]
    report[f"calibration_{split}"] = {
        "split": split,
        "bins": ECE_BINS,
        f"ece_{split}_before": expected_calibration_error(raw, labels),
        f"ece_{split}_after": expected_calibration_error(probs, labels),
        "reliability_before": reliability_bins(raw, labels),
        "reliability_after": reliability_bins(probs, labels),
    }
    return report


def config_from_checkpoint(meta: dict[str, str]) -> Config:
    """The run config stored in a model checkpoint's metadata."""
    if "run_config" not in meta:
        raise ValueError("checkpoint has no run config (was it written by dymsta train?)")
    return config_from_dict(json.loads(meta["run_config"]))


_PROBE_RECORD = VideoRecord(path="", label=0, video_id="", group="", num_frames=1, fps=25.0)


def plan_extract(cfg: Config, run_dir: str | Path, counts: dict[str, int] | None = None) -> CachePlan:
    """``dymsta extract --dry-run``: the caches a recipe would build, from its split lists (no video is probed;
    validation is its ``data.val_fraction`` of the training list) or from ``counts`` of train/val/test videos."""
    d = cfg.data
    if counts is None:
        check_root(d.root, d.kind)
        lists = list_dataset(d.kind, d.root, split=d.split, annotations=d.annotations)
        val = len(lists.val) if lists.val is not None else round(len(lists.train) * d.val_fraction)
        counts = {
            "train": len(lists.train) - (0 if lists.val is not None else val),
            "val": val,
            "test": len(lists.test),
        }
        classes = len(lists.class_names)
    else:
        classes = cfg.model.num_classes or 2
    cfg.model = dataclasses.replace(cfg.model, num_classes=classes)
    empty = DatasetSplits(class_names=[str(i) for i in range(classes)], train=[], val=[], test=[])
    p = build_pipeline(cfg, Path(run_dir), splits=empty)
    if not p.use_cache:
        raise ValueError(f"arch={cfg.model.arch!r} with trainable_stages={cfg.model.trainable_stages} uses no cache")
    return p.cache_plan(counts)


def extract_features(cfg: Config, run_dir: str | Path) -> dict[str, Path]:
    """Build (or find) the feature caches a ``train`` with this config would use; sharded over torchrun ranks."""
    check_root(cfg.data.root, cfg.data.kind)
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device)
    D.init_distributed(device)
    _setup(cfg)
    if D.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()
    p = build_pipeline(cfg, run_dir)
    if not p.use_cache:
        raise ValueError(
            "the feature cache needs a frozen frame backbone (model.trainable_stages=0, "
            f"model.arch in dymsta/tsn/linear; got arch={cfg.model.arch!r}) and cache.enabled=true"
        )
    p.check_cache_space()
    out = {}
    d = cfg.data
    parts = [
        ("train", p.splits.train, True, 1, 1),
        ("val", p.splits.val, False, 1, 1),
        (f"test-v{d.test_clips}x{d.test_crops}", p.splits.test, False, d.test_clips, d.test_crops),
    ]
    for name, records, is_train, views, crops in parts:
        if records:
            _, _, dataset = p.loader(records, split=name, train=is_train, batch_size=1, views=views, crops=crops)
            out[name] = dataset.store.path
    return out
