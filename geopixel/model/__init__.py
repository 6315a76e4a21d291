"""GeoPixel-style model (needs torch, transformers, peft, segment-anything); :mod:`.hd` and :mod:`.config`
are torch-free."""

from .config import GeoPixelConfig, LLMConfig, LoraSettings, LossWeights, TrainerSamConfig, VisionConfig

__all__ = ["GeoPixelConfig", "LLMConfig", "LoraSettings", "LossWeights", "TrainerSamConfig", "VisionConfig"]
