"""SAM (segment-anything) built from settings: registry presets, local checkpoint or random weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import TrainerSamConfig

log = logging.getLogger("geopixel")


def build_sam(cfg: TrainerSamConfig) -> Any:
    """A ``segment_anything.modeling.Sam`` built by the library's builder (:func:`pipeline.sam.model.build_sam`)
    from ``cfg.spec()``; weights from ``cfg.checkpoint`` (read by :func:`pipeline.sam.model.read_state_dict`)
    or random."""
    from pipeline.sam.model import build_sam as build_library_sam
    from pipeline.sam.model import read_state_dict

    sam = build_library_sam(cfg.spec()).train()
    if tuple(cfg.mean) != tuple(sam.pixel_mean.flatten().tolist()) or tuple(cfg.std) != tuple(
        sam.pixel_std.flatten().tolist()
    ):
        sam.pixel_mean.copy_(torch.tensor(cfg.mean).view(-1, 1, 1))
        sam.pixel_std.copy_(torch.tensor(cfg.std).view(-1, 1, 1))
    if cfg.checkpoint:
        if not Path(cfg.checkpoint).is_file():
            raise FileNotFoundError(f"SAM checkpoint {cfg.checkpoint} does not exist (nothing is downloaded)")
        sam.load_state_dict(read_state_dict(Path(cfg.checkpoint)))
    else:
        log.warning("RANDOM INIT: SAM (%s) has random weights — no checkpoint given", cfg.preset or "custom")
    if cfg.sdpa:
        from pipeline.sam.attention import use_sdpa

        use_sdpa(sam.image_encoder)
    return sam


def postprocess_masks(low_res: torch.Tensor, img_size: int, resized: tuple[int, int],
                      original: tuple[int, int]) -> torch.Tensor:
    """SAM decoder logits ``(N, 1, h, w)`` → ``(N, H, W)`` logits at the original image size.

    Upsample to SAM's input size, remove the bottom/right padding, resize to the original size.
    """
    x = F.interpolate(low_res.float(), (img_size, img_size), mode="bilinear", align_corners=False)
    x = x[..., : resized[0], : resized[1]]
    return F.interpolate(x, original, mode="bilinear", align_corners=False)[:, 0]


__all__ = ["build_sam", "postprocess_masks"]
