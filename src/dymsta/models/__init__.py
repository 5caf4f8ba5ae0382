"""DyMSTA-Net and its baselines: frame backbones, the three modules, build/save/load, export.

Everything here takes float video ``(B, 3, T, H, W)`` normalised with ``model.mean``/``model.std``; nothing here
imports the data, engine or CLI packages.
"""

from dymsta.models.attention import SpatioTemporalAttention
from dymsta.models.backbone import BackboneWeightsError, FrameBackbone
from dymsta.models.baselines import TSN, LinearProbe, VideoResNet
from dymsta.models.config import ARCHS, ModelConfig, ModelConfigError, ModelInputError
from dymsta.models.dymsta_net import DyMSTANet, annealed_temperature
from dymsta.models.dynamic_conv import DynamicConv3d
from dymsta.models.export import ExportError, check_onnx, export_onnx
from dymsta.models.factory import ModelFileError, build_model, load_model, save_model
from dymsta.models.temporal import MultiScaleTemporalBlock

__all__ = [
    "ARCHS",
    "BackboneWeightsError",
    "DyMSTANet",
    "DynamicConv3d",
    "ExportError",
    "FrameBackbone",
    "LinearProbe",
    "ModelConfig",
    "ModelConfigError",
    "ModelFileError",
    "ModelInputError",
    "MultiScaleTemporalBlock",
    "SpatioTemporalAttention",
    "TSN",
    "VideoResNet",
    "annealed_temperature",
    "build_model",
    "check_onnx",
    "export_onnx",
    "load_model",
    "save_model",
]
