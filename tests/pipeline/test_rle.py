"""RLE from cropped masks agrees with pycocotools on full masks."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_one_rle_home_for_every_reader() -> None:
    """The library's decoders agree with pycocotools, and the review app and evaluator use them."""
    from pycocotools import mask as mask_utils

    from annotations.validate import rle_counts
    from geopixel.eval.matching import to_rle
    from pipeline.rle import counts_to_runs, decode, encode_full, to_coco

    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6
    rle = encode_full(mask)
    runs = counts_to_runs(rle["counts"])
    assert sum(runs) == 37 * 53 and sum(runs[1::2]) == int(mask.sum())
    assert rle_counts is counts_to_runs
    assert np.array_equal(decode(rle), mask) and np.array_equal(decode({"size": rle["size"], "counts": runs}), mask)
    assert to_rle(rle) == to_coco(rle) and np.array_equal(mask_utils.decode(to_coco(rle)).astype(bool), mask)
    with pytest.raises(ValueError, match="invalid RLE character"):
        counts_to_runs("\x01")
