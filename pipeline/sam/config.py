"""Settings of the SAM stage: which weights, where to run, how to batch, and when to flag a mask.

One ``SamConfig`` drives box refinement (``--masks sam`` with box/OBB labels), automatic masks (imagery
without labels) and the benchmark. It is plain data (no torch), so it pickles into worker processes and
hashes into prepare's settings digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..lmm.types import EndpointConfig

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class QualityThresholds(BaseModel):
    """Below these a SAM mask is kept but flagged for review (see :mod:`pipeline.sam.quality`).

    Attributes:
        min_predicted_iou: SAM's own IoU estimate, in [0, 1]; lower → ``sam_low_iou``.
        min_stability: stability score (IoU of the mask thresholded at logit ``+offset`` and ``-offset``),
            in [0, 1]; lower → ``sam_unstable``.
        stability_offset: the logit offset of the stability score (SAM's default 1.0).
        min_box_iou: IoU of the mask's minimum rotated rectangle with the (tile-clipped) prompt box;
            lower → ``sam_box_disagreement``.
        min_box_fill: share of the prompt box's pixels the mask covers, in [0, 1]; lower →
            ``sam_box_disagreement``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_predicted_iou: float = Field(0.7, ge=0.0, le=1.0)
    min_stability: float = Field(0.8, ge=0.0, le=1.0)
    stability_offset: float = Field(1.0, gt=0.0)
    min_box_iou: float = Field(0.5, ge=0.0, le=1.0)
    min_box_fill: float = Field(0.5, ge=0.0, le=1.0)


class AutoMaskConfig(BaseModel):
    """Automatic mask generation over tiles (SAM's point-grid generator, our batching and dedup).

    Attributes:
        points_per_side: the tile gets a ``points_per_side × points_per_side`` grid of point prompts.
        points_per_batch: point prompts decoded per decoder call (GPU memory grows with it: each point
            gives 3 masks upsampled to the tile size).
        pred_iou_thresh: masks whose predicted IoU is lower are dropped (SAM's default 0.88).
        stability_score_thresh: masks whose stability score is lower are dropped (SAM's default 0.95).
        box_nms_thresh: box-IoU threshold of the non-maximum suppression inside one tile (SAM's 0.7).
        tile_nms_thresh: mask-IoU threshold of the deduplication across overlapping tiles, measured on
            the part of the image both tiles see.
        edge_margin_px: a mask whose box comes within this many px of a tile edge that is not an image
            edge counts as cut by that edge (SAM's ``is_box_near_crop_edge`` uses 20).
        min_mask_area: masks with fewer pixels are dropped (px).
        max_mask_fraction: masks covering more than this share of their tile are dropped (the
            "background" mask SAM often returns); 1.0 keeps them.
        category: the category given to every automatic mask (named later by
            :func:`pipeline.sam.naming.name_objects` when asked).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    points_per_side: int = Field(32, ge=1, le=256)
    points_per_batch: int = Field(64, ge=1)
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0)
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    box_nms_thresh: float = Field(0.7, gt=0.0, le=1.0)
    tile_nms_thresh: float = Field(0.5, gt=0.0, le=1.0)
    edge_margin_px: float = Field(20.0, ge=0.0)
    min_mask_area: int = Field(10, ge=0)
    max_mask_fraction: float = Field(0.95, gt=0.0, le=1.0)
    category: str = "object"


class SamNamingConfig(EndpointConfig):
    """Naming automatic masks with an LMM (the ``category`` prompt tier, :mod:`pipeline.sam.naming`).

    Attributes:
        categories: the allowed category names; an answer outside the list never renames an object.
        (endpoint): ``base_url`` (``None``: the embedded offline describer on 127.0.0.1, which sees no
            appearance and answers ``unknown``: useful to test the wiring, not to name), ``model``,
            ``api_key_env``, ``concurrency``, ``timeout_s``, ``max_retries``, ``prompts`` (whose
            ``category`` template is used), ``cache_dir`` (default ``OUT/lmm_cache``, shared with describe),
            ``send_facts``: see :class:`~pipeline.lmm.types.EndpointConfig`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: list[str] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _valid_list(cls, v: list[str]) -> list[str]:
        from .naming import check_candidates

        return check_candidates([c.strip() for c in v])


class SamConfig(BaseModel):
    """Everything the SAM stage needs.

    Attributes:
        checkpoint: the user's SAM weights (a ``.pth`` state dict, e.g. ``sam_vit_h_4b8939.pth``). Never
            downloaded: a missing or wrong file is an error naming it.
        model_type: registry name (``vit_h``, ``vit_l``, ``vit_b``, ``vit_tiny_test``) or ``auto`` to read
            it from the checkpoint's tensor shapes. A named type that does not match the checkpoint is an
            error naming both.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: images per image-encoder call (the encoder dominates the cost; batches amortise it).
        bf16: run encoder and decoder under bfloat16 autocast on CUDA (ignored on other devices).
        sdpa: run the image encoder's attention through PyTorch's fused ``scaled_dot_product_attention``
            with the relative-position terms as its additive mask (same function, far less memory traffic;
            see :mod:`pipeline.sam.attention`).
        multimask_boxes: ask for SAM's 3 candidate masks per box and keep the best-scored one (False: the
            single-mask output, SAM's recommendation for unambiguous box prompts).
        max_prompts_per_call: most box prompts of one image in one decoder call (the decoder repeats the
            image embedding per prompt, so this bounds its memory; tiles with more boxes take more calls).
        decode_chunk: masks upsampled to tile size at once (bounds memory on large tiles).
        thresholds: when a mask is flagged for review.
        auto: automatic mask generation (imagery without labels).
        naming: ask an LMM to name the automatic masks from a category list (``None``: they stay ``object``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path
    model_type: str = "auto"
    device: str = "auto"
    batch_size: int = Field(4, ge=1, le=256)
    bf16: bool = True
    sdpa: bool = True
    multimask_boxes: bool = False
    max_prompts_per_call: int = Field(256, ge=1)
    decode_chunk: int = Field(64, ge=1)
    thresholds: QualityThresholds = Field(default_factory=QualityThresholds)
    auto: AutoMaskConfig = Field(default_factory=AutoMaskConfig)
    naming: SamNamingConfig | None = None

    @field_validator("model_type")
    @classmethod
    def _known_model_type(cls, v: str) -> str:
        from .model import SAM_SPECS

        if v != "auto" and v not in SAM_SPECS:
            raise ValueError(f"unknown SAM model type {v!r}; choose auto or one of: {', '.join(SAM_SPECS)}")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        base = v.split(":", 1)[0]
        if base not in DEVICE_CHOICES or (":" in v and (base != "cuda" or not v.split(":", 1)[1].isdigit())):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {v!r}")
        return v

    @model_validator(mode="after")
    def _checkpoint_named(self) -> SamConfig:
        if not str(self.checkpoint).strip() or str(self.checkpoint) == ".":
            raise ValueError("checkpoint must name a SAM weights file")
        return self

    def digest(self) -> str:
        """A short hash of every setting (the checkpoint's content hash is in ``mask_model``, not here)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
