"""The data a masker returns and the two masker interfaces the SAM stage is written against.

``SamMasker`` (torch) implements both; tests and other mask engines can implement them with no torch at
all, which keeps :mod:`pipeline.sam.boxes` and :mod:`pipeline.sam.auto` torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..rle import LocalMask
from .config import AutoMaskConfig


@dataclass
class MaskPrediction:
    """One predicted mask for one prompt, in the pixel frame of the image it was predicted on.

    Attributes:
        mask: the mask as a tight crop (``LocalMask``; ``0×0`` when SAM predicted no pixel).
        predicted_iou: SAM's own estimate of the mask's IoU with the object, nominally in [0, 1].
        stability: IoU of the mask thresholded at ``+offset`` and ``-offset`` around the mask threshold,
            in [0, 1] (1 = the outline does not move when the cutoff does).
        point: the point prompt ``(x, y)`` in px that produced it (automatic masks), else ``None``.
    """

    mask: LocalMask
    predicted_iou: float
    stability: float
    point: tuple[float, float] | None = None


class BoxMasker(Protocol):
    """Masks from box prompts."""

    @property
    def mask_model(self) -> str:
        """Recorded with every mask, e.g. ``sam:vit_b:sha256:0123456789abcdef``."""
        ...

    def predict_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[MaskPrediction]]:
        """One mask per box.

        Args:
            images: ``H×W×3`` uint8 RGB arrays (sizes may differ).
            boxes: per image an ``N×4`` float array of ``x0, y0, x1, y1`` in that image's px (``N`` may be 0).

        Returns:
            Per image, ``N`` predictions in box order.
        """
        ...


class AutoMasker(Protocol):
    """Masks of everything in an image, from a grid of point prompts."""

    @property
    def mask_model(self) -> str: ...

    def generate(self, images: Sequence[np.ndarray], settings: AutoMaskConfig) -> list[list[MaskPrediction]]:
        """Per ``H×W×3`` uint8 image, the masks that passed ``settings``' quality filters and in-image NMS."""
        ...
