"""SAM (segment-anything) built from settings: registry presets, local checkpoint or random weights."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamConfig

log = logging.getLogger("geopixel")

# Encoder sizes of the released SAM checkpoints (segment_anything.build_sam).
SAM_PRESETS: dict[str, dict[str, Any]] = {
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
}


def build_sam(cfg: SamConfig) -> Any:
    """A ``segment_anything.modeling.Sam`` with the configured sizes; weights from ``cfg.checkpoint`` or random."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    enc = {"window_size": 14, **(SAM_PRESETS[cfg.preset] if cfg.preset else {}), **cfg.encoder}
    missing = {"embed_dim", "depth", "num_heads", "global_attn_indexes"} - set(enc)
    if missing:
        raise ValueError(f"sam: encoder settings missing {sorted(missing)} (or choose a preset)")
    if cfg.img_size % cfg.patch_size:
        raise ValueError(f"sam: img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}")
    emb = cfg.img_size // cfg.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=enc["depth"], embed_dim=enc["embed_dim"], img_size=cfg.img_size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=enc["num_heads"], patch_size=cfg.patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=enc["global_attn_indexes"],
            window_size=enc["window_size"], out_chans=cfg.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=cfg.prompt_embed_dim, image_embedding_size=(emb, emb),
                                     input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                                          mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=list(cfg.mean), pixel_std=list(cfg.std),
    )
    if cfg.checkpoint:
        if not Path(cfg.checkpoint).is_file():
            raise FileNotFoundError(f"SAM checkpoint {cfg.checkpoint} does not exist (nothing is downloaded)")
        state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
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


__all__ = ["SAM_PRESETS", "build_sam", "postprocess_masks"]
