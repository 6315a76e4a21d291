"""SAM masks for prepare: box labels → masks, and automatic masks for imagery without labels.

Modules (one concept each):

* :mod:`~pipeline.sam.config`: ``SamConfig`` (weights, device, batching, thresholds, generation).
* :mod:`~pipeline.sam.model`: the registry of architectures and ``load_sam`` (checkpoint checks, sha256).
* :mod:`~pipeline.sam.masker`: ``SamMasker``, the batched fast path (torch).
* :mod:`~pipeline.sam.boxes`: ``refine_with_boxes`` and its batched variants.
* :mod:`~pipeline.sam.auto`: ``SamAutoAnnotations``, automatic masks deduplicated across tiles.
* :mod:`~pipeline.sam.quality`: predicted IoU, stability, box agreement, review flags.
* :mod:`~pipeline.sam.naming`: the optional LMM ``category`` tier.
* :mod:`~pipeline.sam.bench`: our path vs ``SamPredictor`` on a CUDA GPU.

torch is optional: importing this package never imports it. ``SamMasker``, ``get_masker`` and
``load_sam`` import it when used and raise ``SamUnavailableError`` ("install geopixeld[sam]") without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auto import SamAutoAnnotations, deduplicate
from .boxes import refine_batches, refine_tiles_with_boxes, refine_with_boxes
from .config import AutoMaskConfig, QualityThresholds, SamConfig
from .errors import CheckpointError, SamError, SamUnavailableError, require_sam
from .model import SAM_SPECS, SamModelInfo, check_checkpoint, load_sam, sam_model_registry
from .naming import name_objects, name_tile_instances
from .quality import MaskQuality
from .types import AutoMasker, BoxMasker, MaskPrediction

if TYPE_CHECKING:
    from .masker import SamMasker, get_masker

_LAZY = {"SamMasker", "get_masker"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        require_sam()
        from . import masker

        return getattr(masker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SAM_SPECS",
    "AutoMaskConfig",
    "AutoMasker",
    "BoxMasker",
    "CheckpointError",
    "MaskPrediction",
    "MaskQuality",
    "QualityThresholds",
    "SamAutoAnnotations",
    "SamConfig",
    "SamError",
    "SamMasker",
    "SamModelInfo",
    "SamUnavailableError",
    "deduplicate",
    "get_masker",
    "check_checkpoint",
    "load_sam",
    "name_objects",
    "name_tile_instances",
    "refine_batches",
    "refine_tiles_with_boxes",
    "refine_with_boxes",
    "require_sam",
    "sam_model_registry",
]
