"""Backbones (torch side) and their summary."""

from bnncl.models.backbone import (
    PRESETS,
    BackboneConfig,
    BinaryResNet,
    build_model,
    normalize_tensor,
    preset_config,
    preset_for_shape,
)

__all__ = ["PRESETS", "BackboneConfig", "BinaryResNet", "build_model", "normalize_tensor", "preset_config",
           "preset_for_shape"]
