"""Vision tower (any HF CLIP/SigLIP vision model), projector and the HD token layout (see :mod:`.hd`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import VisionConfig

log = logging.getLogger("geopixel")


def build_vision_model(cfg: VisionConfig) -> Any:
    """The HF vision model from ``cfg.path`` (local only) or, with random weights, from ``cfg.config``."""
    from transformers import AutoConfig, AutoModel

    if cfg.path:
        if not Path(cfg.path).is_dir():
            raise FileNotFoundError(f"vision model folder {cfg.path} does not exist (nothing is downloaded)")
        model = AutoModel.from_pretrained(cfg.path, local_files_only=True)
        if hasattr(model, "vision_model") and not type(model).__name__.endswith("VisionModel"):
            model = model.vision_model  # a full CLIP/SigLIP model: keep its vision half
        return model
    kwargs = dict(cfg.config)
    hf_cfg = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    log.warning("RANDOM INIT: vision tower %s built from its config with random weights", type(hf_cfg).__name__)
    return AutoModel.from_config(hf_cfg)


class VisionTower(nn.Module):
    """Crops → patch features → 2×2 merge → projector → GeoPixel's visual token sequence.

    Args:
        cfg: vision settings.
        llm_hidden: the LM's hidden size (projector output).
        projector_hidden: projector hidden width (``None``: ``llm_hidden``).
    """

    def __init__(self, cfg: VisionConfig, llm_hidden: int, projector_hidden: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder: Any = build_vision_model(cfg)
        vcfg = self.encoder.config
        self.patch_size = int(vcfg.patch_size)
        self.image_size = int(vcfg.image_size)
        if cfg.crop_size % (self.patch_size * cfg.merge):
            raise ValueError(f"crop_size {cfg.crop_size} is not a multiple of patch {self.patch_size} × merge {cfg.merge}")
        width = int(vcfg.hidden_size) * cfg.merge**2
        hidden = projector_hidden or llm_hidden
        self.projector = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, llm_hidden))
        # Row separator after every token row and one separator between the global and local views.
        self.row_sep = nn.Parameter(torch.zeros(llm_hidden))
        self.view_sep = nn.Parameter(torch.zeros(llm_hidden))
        nn.init.normal_(self.row_sep, std=0.02)
        nn.init.normal_(self.view_sep, std=0.02)
        if cfg.freeze:
            self.encoder.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @property
    def n(self) -> int:
        """Visual tokens per crop side after merging."""
        return self.cfg.crop_size // self.patch_size // self.cfg.merge

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 3, crop, crop)`` uint8 crops → ``(N, n, n, D_llm)`` projected features."""
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        x = (crops.float() / 255.0 - mean) / std
        x = x.to(next(self.encoder.parameters()).dtype)
        kwargs = {}
        if self.cfg.crop_size != self.image_size:
            kwargs["interpolate_pos_encoding"] = True
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze):
            out = self.encoder(pixel_values=x, output_hidden_states=True, **kwargs)
        feats = out.hidden_states[self.cfg.select_layer]  # (N, [CLS] + g², Dv)
        g = self.cfg.crop_size // self.patch_size
        feats = feats[:, -g * g :, :]  # drop CLS (CLIP); SigLIP has none
        m = self.cfg.merge
        n_img, dv = feats.shape[0], feats.shape[-1]
        feats = feats.reshape(n_img, g // m, m, g // m, m, dv).permute(0, 1, 3, 2, 4, 5)
        feats = feats.reshape(n_img, g // m, g // m, m * m * dv)
        proj_dtype = self.projector[0].weight.dtype
        return self.projector(feats.to(proj_dtype))

    def forward(self, crops: torch.Tensor, grids: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Visual token sequences, one per image.

        Args:
            crops: ``(Σ (1 + rows·cols), 3, crop, crop)`` uint8: per image its global view then its crops.
            grids: ``(rows, cols)`` per image.

        Returns:
            Per image a ``(visual_token_count(rows, cols, n), D_llm)`` tensor (layout in :mod:`.hd`).
        """
        feats = self.crop_features(crops)
        n, d = self.n, feats.shape[-1]
        out, at = [], 0
        for rows, cols in grids:
            glb = feats[at]
            loc = feats[at + 1 : at + 1 + rows * cols]
            at += 1 + rows * cols
            glb = torch.cat([glb, self.row_sep.to(glb.dtype).expand(n, 1, d)], dim=1).reshape(-1, d)
            loc = loc.reshape(rows, cols, n, n, d).permute(0, 2, 1, 3, 4).reshape(rows * n, cols * n, d)
            loc = torch.cat([loc, self.row_sep.to(loc.dtype).expand(rows * n, 1, d)], dim=1).reshape(-1, d)
            out.append(torch.cat([glb, self.view_sep.to(glb.dtype)[None], loc], dim=0))
        if at != feats.shape[0]:
            raise ValueError(f"{feats.shape[0]} crops given, grids account for {at}")
        return out


__all__ = ["VisionTower", "build_vision_model"]
