"""Run configuration: dataclasses loaded from YAML with dotted ``key=value`` overrides.

A config file mirrors :class:`Config`::

    model: {arch: dymsta, dim: 256}
    data: {kind: ucf101, root: /data/UCF101, num_frames: 16}
    train: {epochs: 100}

Unknown keys and values of the wrong type fail with :class:`ConfigError`, naming the dotted key. The resolved config is
written to the run folder (``config.yaml``) and into every checkpoint, so a run can be repeated or resumed exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dymsta.data.motion import MotionSettings, check_modalities
from dymsta.models import ModelConfig

__all__ = [
    "CacheConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "apply_overrides",
    "dump_config",
    "recipe_path",
]

RECIPES = Path(__file__).resolve().parent / "configs"  # the recipes shipped with dymsta


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted key."""


@dataclass
class DataConfig:
    kind: str = "ucf101"  # ucf101 | hmdb51 | kinetics | folder
    root: str = ""  # dataset folder (UCF101: holds UCF-101/ and ucfTrainTestlist/)
    annotations: str | None = None  # split files / CSV; None = the dataset's standard place under root
    split: int = 1  # official split number (UCF101, HMDB51: 1-3)
    val_fraction: float = 0.1  # share of training *groups* held out for validation (group-aware, no leakage)
    num_frames: int = 16  # T frames per clip (TSN segments)
    size: int | None = None  # crop size; None = the backbone's native input size
    resize: int | None = None  # short side before cropping; None = size * 256 / 224
    hflip: bool = True  # random horizontal flips when training; false where left/right is the label (synthetic)
    crop_scale: tuple[float, float] = (0.4, 1.0)  # area range of the random resized crop when training
    test_clips: int = 1  # temporal clips per test video (multi-view testing)
    test_crops: int = 1  # spatial crops per test clip (1 = centre, 3 = left/centre/right)
    workers: int = 2  # DataLoader worker processes (0 = decode in the main process)
    max_videos_per_class: int | None = None  # cap for quick experiments; None = all
    seed: int = 0  # seed of the validation split and of the cached augmentations
    modalities: tuple[str, ...] = ("rgb",)  # input streams: rgb, rgbdiff (frame differences), mv (codec motion)
    motion: MotionSettings = field(default_factory=MotionSettings)  # how rgbdiff and mv are made
    # a truncated/corrupt file decoding less than this share of its header's frames is skipped (counted, logged);
    # above it, its clips are sampled from the frames that decode, with a one-line warning
    min_decoded_fraction: float = 0.5
    label_map: str | None = None  # labels.txt / labels.json fixing class ids (folder, kinetics); None = sorted names


@dataclass
class CacheConfig:
    enabled: bool = True  # cache backbone features when the backbone is frozen (the CPU-practical path)
    dir: str | None = None  # None = RUN_DIR/../cache (shared by runs beside each other)
    train_views: int = 4  # augmented views cached per training video; one is drawn per epoch
    dtype: str = "float16"  # float16 halves disk and memory; uint8 (per row and channel) halves it again; float32 exact
    batch_size: int = 16  # clips per backbone batch while building
    check_space: bool = True  # refuse to build a cache the disk under cache.dir cannot hold (dymsta.engine.sizing)
    grid: str | int = "auto"  # auto: store the grid the head reads (frame mean, DyMSTA-Net's spatial_pool) | full | N


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # AdamW on a small head: 1e-3 converges in tens of epochs
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    scheduler: str = "plateau"  # plateau (the paper's adaptive LR) | cosine | none
    plateau_factor: float = 0.5
    plateau_patience: int = 5  # epochs without val-loss improvement before the LR is cut
    min_lr: float = 1e-6
    warmup_epochs: int = 0  # cosine only
    backbone_lr_scale: float = 1.0  # lr of the pretrained layers that train (model.head_conv=trained,
    # model.trainable_stages), relative to optim.lr
    backbone_weight_decay: float = 0.05  # their weight decay, apart from the head's optim.weight_decay


@dataclass
class TrainConfig:
    epochs: int = 100  # the paper's budget
    batch_size: int = 32
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(a, a) mixup of inputs/labels within each batch (cached features or clips); 0 = off
    ema: float = 0.0  # per-step decay of an average of the head's weights, used for validation and checkpoints; 0 = off
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    amp: str = "auto"  # auto: bf16 where the device computes it natively (AMX, AVX-512 bf16, ARM bf16, CUDA >= 8.0),
    # else fp32 (fp16 + GradScaler on older CUDA) | bf16 (emulated on other CPUs: several times slower) | fp16 | none
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (exact resume/DDP checks)
    early_stop: int = 0  # stop after this many epochs without val improvement; 0 = never
    select: str = "val_acc"  # the epoch whose weights become best.safetensors (tested, predicted, served):
    # val_acc = the highest validation accuracy (ties: lower loss); last = the latest epoch, as group CV scores a
    # recipe (the mean of its last epochs), immune to a lucky epoch on a small validation group
    eval_batch_size: int = 64
    threads: int = 0  # torch intra-op threads; 0 = one per idle core (dymsta.hardware.choose_threads)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Check cross-field settings; raises :class:`ConfigError` naming the key."""
        _check_choice("data.kind", self.data.kind, ("ucf101", "hmdb51", "kinetics", "folder"))
        _check_choice("optim.name", self.optim.name, ("adamw", "sgd"))
        _check_choice("optim.scheduler", self.optim.scheduler, ("plateau", "cosine", "none"))
        _check_choice("train.amp", self.train.amp, ("auto", "bf16", "fp16", "none"))
        _check_choice("train.select", self.train.select, ("val_acc", "last"))
        _check_choice("cache.dtype", self.cache.dtype, ("float16", "float32", "uint8"))
        if self.cache.grid not in ("auto", "full") and not str(self.cache.grid).isdigit():
            raise ConfigError(f"cache.grid must be auto, full or a grid size such as 4, got {self.cache.grid!r}")
        positive = {
            "data.num_frames": self.data.num_frames,
            "data.test_clips": self.data.test_clips,
            "data.test_crops": self.data.test_crops,
            "cache.train_views": self.cache.train_views,
            "cache.batch_size": self.cache.batch_size,
            "train.epochs": self.train.epochs,
            "train.batch_size": self.train.batch_size,
            "train.eval_batch_size": self.train.eval_batch_size,
            "optim.lr": self.optim.lr,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if not 0.0 <= self.data.min_decoded_fraction <= 1.0:
            raise ConfigError(f"data.min_decoded_fraction must be in [0, 1], got {self.data.min_decoded_fraction}")
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.data.val_fraction}")
        for key in ("backbone_lr_scale", "backbone_weight_decay"):
            if getattr(self.optim, key) < 0:
                raise ConfigError(f"optim.{key} must be >= 0, got {getattr(self.optim, key)}")
        if self.train.mixup < 0:
            raise ConfigError(f"train.mixup must be >= 0 (0 = off), got {self.train.mixup}")
        if not 0.0 <= self.train.ema < 1.0:
            raise ConfigError(f"train.ema must be in [0, 1) (0 = off; e.g. 0.99), got {self.train.ema}")
        if not 0.0 <= self.train.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.train.label_smoothing}")
        if self.model.num_frames != self.data.num_frames:
            raise ConfigError(
                f"model.num_frames ({self.model.num_frames}) must equal data.num_frames ({self.data.num_frames})"
            )
        try:
            self.data.motion.validate()
            modalities = check_modalities(self.data.modalities)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if tuple(self.model.streams) != modalities:
            raise ConfigError(
                f"model.streams ({list(self.model.streams)}) must equal data.modalities ({list(modalities)})"
            )
        if self.model.hist_channels != model_hist_channels(self.data):
            raise ConfigError(
                f"model.hist_channels ({self.model.hist_channels}) must be {model_hist_channels(self.data)} for "
                f"data.modalities={list(modalities)} and data.motion.mv_encoding={self.data.motion.mv_encoding!r}"
            )
        try:
            self.model.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None


def model_hist_channels(data: DataConfig) -> int:
    """``model.hist_channels`` for these data settings: ``bins + 1`` for an mv histogram stream, else 0."""
    if "mv" in data.modalities and data.motion.mv_encoding == "hist":
        return data.motion.mv_bins + 1
    return 0


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


# ---------------------------------------------------------------- dict <-> dataclass


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (tuples become lists, YAML/JSON friendly)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = config_to_dict(value) if dataclasses.is_dataclass(value) else plain(value)
    return out


def config_from_dict(d: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and value type."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in d.items():
        dotted = prefix + str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"unknown config key {dotted!r}{suggestion}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type hint ``tp`` (dataclass, Optional, tuple, scalars)."""
    if dataclasses.is_dataclass(tp):
        return config_from_dict(value, tp, key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
        items = [
            _coerce(v, item_tp if origin is list or args[-1] is Ellipsis else args[i], key) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp in (str, float) and not isinstance(value, tp):
        raise ConfigError(f"{key} must be a {tp.__name__}, got {value!r}")
    return value


# ---------------------------------------------------------------- files and overrides


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else None
        node = d
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (safe loader), apply overrides, resolve relative paths, validate."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    d = apply_overrides(d, overrides or [])
    data = d.get("data")
    # model.num_frames follows data.num_frames unless set explicitly
    if isinstance(data, dict) and "num_frames" in data:
        d.setdefault("model", {})
        if isinstance(d["model"], dict):
            d["model"].setdefault("num_frames", data["num_frames"])
    cfg = config_from_dict(d)
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    # model.streams and model.hist_channels follow the data's streams unless set explicitly
    if "streams" not in model and "hist_channels" not in model:
        try:
            streams = check_modalities(cfg.data.modalities)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        cfg.model = dataclasses.replace(cfg.model, streams=streams, hist_channels=model_hist_channels(cfg.data))
    cfg.validate()
    return cfg


def recipe_path(name: str) -> Path:
    """A config path, or the name of a recipe shipped with dymsta (``ucf101_split1``, ``demo``, ...)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise FileNotFoundError(f"config {name!r} not found (a YAML path, or one of the shipped recipes: {known})")


def dump_config(cfg: Config) -> str:
    """YAML text of a resolved config (what the run folder and checkpoints keep)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
