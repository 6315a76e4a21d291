"""RLE from cropped masks agrees with pycocotools on full masks."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.rle import LocalMask, area, decode, encode_full, encode_local, merge


def test_encode_local_matches_full_encoding() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = rng.integers(5, 60, size=2)
        ch, cw = rng.integers(1, h + 1), rng.integers(1, w + 1)
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = rng.random((ch, cw)) < rng.random()
        local = LocalMask(int(x0), int(y0), crop)
        full = local.to_full(int(h), int(w))
        a, b = encode_local(local, int(h), int(w)), encode_full(full)
        assert a == b
        assert np.array_equal(decode(a), full)
        assert area(a) == int(full.sum())


def test_empty_and_edge_masks() -> None:
    empty = LocalMask(0, 0, np.zeros((0, 0), bool))
    assert area(encode_local(empty, 10, 12)) == 0
    edge = LocalMask(9, 7, np.ones((3, 3), bool))  # touching the bottom-right corner of a 10×12 tile
    full = edge.to_full(10, 12)
    assert np.array_equal(decode(encode_local(edge, 10, 12)), full)
    assert edge.bbox() == (9.0, 7.0, 3.0, 3.0)


def test_merge_is_a_union() -> None:
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[2:5, 2:5] = True
    b[4:9, 4:9] = True
    u = decode(merge([encode_full(a), encode_full(b)]))
    assert np.array_equal(u, a | b)
    assert mask_utils.area(mask_utils.encode(np.asfortranarray(u.astype(np.uint8)))) == (a | b).sum()
