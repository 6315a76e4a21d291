"""Mask losses of GeoPixel/LISA: per-pixel sigmoid BCE and Dice, averaged over masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over masks of the per-pixel mean sigmoid BCE. ``logits``, ``targets``: ``(N, H, W)``."""
    if logits.numel() == 0:
        return logits.sum()
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return loss.flatten(1).mean(1).sum()


def mask_dice(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Sum over masks of ``1 − (2 Σ p·t + ε) / (Σ p + Σ t + ε)`` with ``p = sigmoid(logits)``.

    ``ε = 1`` (pixels) keeps empty targets finite and scale-independent, as LISA's ``scale=1000`` variant
    intends. ``logits``, ``targets``: ``(N, H, W)``.
    """
    if logits.numel() == 0:
        return logits.sum()
    p = logits.float().sigmoid().flatten(1)
    t = targets.float().flatten(1)
    return (1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)).sum()


__all__ = ["mask_bce", "mask_dice"]
