"""The fused-attention image encoder computes what segment-anything's own attention computes.

RANDOM weights (the relative-position tables, zero at SAM's init, are drawn too so the bias matters):
this checks the function, not mask quality.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from segment_anything.modeling.image_encoder import Attention  # noqa: E402

from pipeline.sam.attention import sdpa_forward, use_sdpa  # noqa: E402
from pipeline.sam.model import SAM_SPECS, build_sam  # noqa: E402


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_sam(SAM_SPECS["vit_tiny_test"]).eval()
    for module in model.image_encoder.modules():
        if isinstance(module, Attention) and module.use_rel_pos:
            torch.nn.init.normal_(module.rel_pos_h, std=0.5)
            torch.nn.init.normal_(module.rel_pos_w, std=0.5)
    return model


def test_sdpa_encoder_matches_the_stock_encoder() -> None:
    stock = _model()
    fused = copy.deepcopy(stock)
    # the tiny spec has one windowed and one global-attention block: both kinds are switched
    assert use_sdpa(fused.image_encoder) == 2
    assert use_sdpa(fused.image_encoder) == 0  # already switched
    size = SAM_SPECS["vit_tiny_test"].image_size
    x = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        a, b = stock.image_encoder(x), fused.image_encoder(x)
    assert a.abs().max() > 1.0  # not a trivially small output
    torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-5)


def test_one_block_with_rel_pos_and_odd_grid() -> None:
    torch.manual_seed(1)
    attn = Attention(dim=48, num_heads=3, use_rel_pos=True, input_size=(5, 7)).eval()
    torch.nn.init.normal_(attn.rel_pos_h)
    torch.nn.init.normal_(attn.rel_pos_w)
    x = torch.randn(2, 5, 7, 48)
    with torch.inference_mode():
        torch.testing.assert_close(sdpa_forward(attn, x), attn(x), rtol=1e-5, atol=1e-5)
    plain = Attention(dim=48, num_heads=3, use_rel_pos=False).eval()
    with torch.inference_mode():
        torch.testing.assert_close(sdpa_forward(plain, x), plain(x), rtol=1e-5, atol=1e-5)


def test_masker_switches_only_when_asked(tiny_checkpoint: object) -> None:
    from pipeline.sam.config import SamConfig
    from pipeline.sam.masker import SamMasker

    off = SamMasker.from_config(SamConfig(checkpoint=tiny_checkpoint, device="cpu", sdpa=False))
    assert not any(getattr(m, "_geopixeld_sdpa", False) for m in off.model.image_encoder.modules())
    on = SamMasker.from_config(SamConfig(checkpoint=tiny_checkpoint, device="cpu"))
    assert sum(getattr(m, "_geopixeld_sdpa", False) for m in on.model.image_encoder.modules()) == 2


def test_device_side_crops_equal_host_crops(tiny_masker: object) -> None:
    """Masks leave the device as tight crops; the same crops ``LocalMask.tight`` cuts on the host."""
    import numpy as np

    from pipeline.rle import LocalMask

    rng = np.random.default_rng(3)
    masks = np.zeros((6, 40, 50), dtype=bool)
    masks[0, 5:9, 7:20] = True
    masks[1] = rng.random((40, 50)) > 0.7  # scattered pixels
    masks[3, 39, 49] = True  # one corner pixel
    masks[4, :, :] = True  # everything
    masks[5, 10:12, 0] = True  # on the left edge; masks[2] stays empty
    crops = tiny_masker._to_local(torch.as_tensor(masks))  # type: ignore[attr-defined]
    assert len(crops) == 6
    for got, full in zip(crops, masks, strict=True):
        want = LocalMask(0, 0, full).tight()
        assert (got.x0, got.y0, got.array.shape) == (want.x0, want.y0, want.array.shape)
        assert np.array_equal(got.array, want.array) and got.array.flags.owndata
    assert tiny_masker._to_local(torch.zeros((0, 4, 4), dtype=torch.bool)) == []  # type: ignore[attr-defined]
