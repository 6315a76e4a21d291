"""Typed configuration shared by the CLI, the library and (later) the Prefect flows."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from .sam.config import SamConfig
from .tiling import MAX_TILE_SIDE
from .vocab import category_name


class PrepareConfig(BaseModel):
    """Everything ``prepare`` needs besides the sources and the output folder.

    Attributes:
        format: annotation format (``isaid``, ``coco``, ``dota``, ``boxes``, ``geojson``, ``raster``).
        tile_size: tile side in px (800 as in iSAID/GeoPixelD; 0 keeps whole images up to 4096 px).
        overlap: px shared by neighbouring tiles (200 as in iSAID).
        min_area: visible pieces under this many px are dropped (10, like the iSAID devkit).
        min_visible_fraction: pieces showing less than this share of their object are dropped (0 = keep).
        bands: 1-based bands to render as RGB (default 1,2,3, or 1 for single-band rasters).
        stretch: ``auto`` (uint8 as is, other types percentile-stretched), ``percentile`` or ``none``.
        percentiles: low/high percentiles of the stretch.
        gsd: metres per pixel to use when the source does not say (overrides nothing it does say).
        masks: ``annotation`` (the labels' own outlines) or ``sam``: box labels become SAM box-prompted
            masks, and imagery without labels (``raster``) gets SAM automatic masks.
        sam: SAM weights and settings when ``masks == "sam"``.
        sam_mask_model: the checkpoint's identity (model type and sha256), filled in by ``prepare`` so a
            rerun with other weights never reuses masks of the old ones.
        cluster_categories: category name → ``only`` (always described as groups, never marked, like
            small vehicles in GeoPixelD) or ``dense`` (groups of ``min_cluster_size``+ become clusters,
            the rest are marked one by one). Names are matched after normalisation (``Small_Vehicle``,
            ``small-vehicle`` → ``small vehicle``).
        min_cluster_size: smallest group that counts as a cluster for ``dense`` categories.
        cluster_link: link distance for clustering, in median object sizes.
        marks_grid, marks_contours: draw the 3×3 grid / instance outlines on set-of-marks images.
        options: adapter options (``images`` for COCO, ``annotations``/``geojson_crs``/``label_field``
            for GeoJSON).
    """

    format: str = "isaid"
    tile_size: int = Field(800, ge=0, le=MAX_TILE_SIDE)
    overlap: int = Field(200, ge=0)
    min_area: int = Field(10, ge=0)
    min_visible_fraction: float = Field(0.0, ge=0.0, le=1.0)
    bands: list[int] | None = None
    stretch: str = "auto"
    percentiles: tuple[float, float] = (2.0, 98.0)
    gsd: float | None = Field(None, gt=0)
    cluster_categories: dict[str, str] = Field(default_factory=lambda: {"small vehicle": "only"})
    min_cluster_size: int = Field(3, ge=1)
    cluster_link: float = Field(2.5, gt=0)
    marks_grid: bool = False
    marks_contours: bool = False
    options: dict[str, str] = Field(default_factory=dict)
    masks: str = "annotation"
    sam: SamConfig | None = None
    sam_mask_model: str | None = None

    @model_validator(mode="after")
    def _sam_needs_weights(self) -> PrepareConfig:
        if self.masks not in ("annotation", "sam"):
            raise ValueError("masks must be 'annotation' or 'sam'")
        if self.masks == "sam" and self.sam is None:
            raise ValueError("--masks sam needs --sam-checkpoint (the weights are yours; nothing is downloaded)")
        if self.sam is not None and self.sam.naming is not None and self.format != "raster":
            raise ValueError(
                "naming (--name-categories) is for SAM automatic masks of imagery without labels (--format raster); "
                f"{self.format} labels already name their objects"
            )
        return self

    @field_validator("overlap")
    @classmethod
    def _overlap_below_tile(cls, v: int, info: ValidationInfo) -> int:
        size = info.data.get("tile_size", 800)
        if size and v >= size:
            raise ValueError(f"overlap {v} must be smaller than the tile size {size}")
        return v

    @field_validator("stretch")
    @classmethod
    def _stretch_mode(cls, v: str) -> str:
        if v not in ("auto", "percentile", "none"):
            raise ValueError("stretch must be auto, percentile or none")
        return v

    @field_validator("cluster_categories")
    @classmethod
    def _modes(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: m for k, m in v.items() if m not in ("only", "dense")}
        if bad:
            raise ValueError(f"cluster modes must be 'only' or 'dense': {bad}")
        return {category_name(k): m for k, m in v.items()}

    def digest(self) -> str:
        """A short hash of every setting: outputs made with other settings are never reused."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
