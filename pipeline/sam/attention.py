"""SAM's image-encoder attention through ``torch.nn.functional.scaled_dot_product_attention``.

segment-anything's ``Attention.forward`` writes out the whole attention matrix, adds the decomposed
relative-position terms to it, runs softmax (in float32 under autocast) and multiplies by ``V``: for the
global-attention blocks of ViT-H (4,096 tokens, 16 heads) that is several full ``N × N`` tensors per
image, read and written in turn. :func:`sdpa_forward` computes the same function with the relative-position
terms passed as the additive ``attn_mask`` of PyTorch's fused attention, so only the bias is written out
and the softmax never leaves the kernel (memory-efficient or cuDNN kernel on CUDA; the math kernel on CPU).

Exactness: the bias is built from the unscaled queries exactly as ``add_decomposed_rel_pos`` builds it,
and SDPA's default scale equals ``Attention.scale`` (``head_dim ** -0.5``); in float32 on the CPU the
encoder's output matches the stock forward to float rounding (tested).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def sdpa_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` through fused attention: ``x`` is ``B × H × W × C``, so is the result."""
    b, h, w, _ = x.shape
    heads = self.num_heads
    # (3, B, heads, H*W, head_dim)
    qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = None
    if self.use_rel_pos:
        dim = q.shape[-1]
        rel_h_table = get_rel_pos(h, h, self.rel_pos_h)  # (H, H, head_dim)
        rel_w_table = get_rel_pos(w, w, self.rel_pos_w)  # (W, W, head_dim)
        r_q = q.reshape(b * heads, h, w, dim)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h_table)  # (B*heads, H, W, kH)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w_table)  # (B*heads, H, W, kW)
        bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b, heads, h * w, h * w)
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    result: torch.Tensor = self.proj(out)
    return result


def use_sdpa(image_encoder: Any) -> int:
    """Switch every ``Attention`` module of ``image_encoder`` to :func:`sdpa_forward`, in place.

    Returns:
        The number of modules switched (0 when there are none, e.g. an encoder of another family).
    """
    n = 0
    for module in image_encoder.modules():
        if isinstance(module, Attention) and not getattr(module, "_geopixeld_sdpa", False):
            module.forward = types.MethodType(sdpa_forward, module)
            module._geopixeld_sdpa = True
            n += 1
    return n
