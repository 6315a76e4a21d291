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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .auto import SamAutoAnnotations, deduplicate
    from .boxes import refine_batches, refine_tiles_with_boxes, refine_with_boxes
    from .config import AutoMaskConfig, QualityThresholds, SamConfig, SamNamingConfig
    from .errors import CheckpointError, SamError, SamUnavailableError, require_sam
    from .masker import SamMasker, get_masker
    from .model import SAM_SPECS, SamModelInfo, check_checkpoint, load_sam, sam_model_registry
    from .naming import name_objects, name_tile_instances
    from .quality import MaskQuality
    from .types import AutoMasker, BoxMasker, MaskPrediction

# Names are imported on first use, so that importing one module of this package (the benchmark on a
# bare GPU machine, say) does not import them all (rasterio, shapely, ...).
_WHERE = {
    "SamAutoAnnotations": "auto", "deduplicate": "auto",
    "refine_batches": "boxes", "refine_tiles_with_boxes": "boxes", "refine_with_boxes": "boxes",
    "AutoMaskConfig": "config", "QualityThresholds": "config", "SamConfig": "config", "SamNamingConfig": "config",
    "CheckpointError": "errors", "SamError": "errors", "SamUnavailableError": "errors", "require_sam": "errors",
    "SamMasker": "masker", "get_masker": "masker",
    "SAM_SPECS": "model", "SamModelInfo": "model", "check_checkpoint": "model", "load_sam": "model",
    "sam_model_registry": "model",
    "name_objects": "naming", "name_tile_instances": "naming",
    "MaskQuality": "quality",
    "AutoMasker": "types", "BoxMasker": "types", "MaskPrediction": "types",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "masker":
        from .errors import require_sam

        require_sam()
    return getattr(import_module(f".{module}", __name__), name)


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
    "SamNamingConfig",
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
