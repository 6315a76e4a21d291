"""IoU matrices and the Hungarian / GLaMM matchings on tiny masks with known IoUs."""

from __future__ import annotations

import numpy as np
import pytest

from geopixel.eval.matching import glamm_greedy_pairs, iou_matrix, match_gt_ious, recall_matches, to_rle


def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_matrix_known_values() -> None:
    a = box(4, 4, 0, 2, 0, 2)  # 4 px
    b = box(4, 4, 0, 2, 0, 1)  # 2 px inside a → IoU 2/4
    c = box(4, 4, 2, 4, 2, 4)  # disjoint from a and b
    m = iou_matrix([to_rle(a), to_rle(b)], [to_rle(a), to_rle(c)])
    assert m.shape == (2, 2)
    np.testing.assert_allclose(m, [[1.0, 0.0], [0.5, 0.0]])
    d, e = box(6, 6, 0, 3, 0, 3), box(6, 6, 1, 3, 1, 4)  # |d|=9, |e|=6, |d∩e|=4 → IoU 4/11
    assert iou_matrix([to_rle(d)], [to_rle(e)])[0, 0] == pytest.approx(4 / 11)


def test_string_counts_and_uncompressed_rles_are_accepted() -> None:
    a = box(5, 3, 1, 4, 0, 2)
    rle = to_rle(a)
    as_str = {"size": rle["size"], "counts": rle["counts"].decode()}
    # uncompressed: column-major runs starting with background
    flat = a.T.reshape(-1).astype(int)
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    raw = {"size": [5, 3], "counts": runs}
    assert iou_matrix([as_str], [raw])[0, 0] == 1.0
    with pytest.raises(ValueError, match="differs from the image size"):
        to_rle(rle, 4, 3)


def test_hungarian_beats_greedy_and_unmatched_gt_score_zero() -> None:
    ious = np.array([[0.9, 0.8], [0.85, 0.0]])  # pred × gt
    # greedy takes 0.9 (p0-g0) and then nothing (p1-g1 = 0)
    assert glamm_greedy_pairs(ious) == [(0, 0)]
    np.testing.assert_allclose(match_gt_ious(ious, "hungarian"), [0.85, 0.8])  # 0.85 + 0.8 > 0.9
    glamm = match_gt_ious(ious, "glamm")
    assert glamm[0] == 0.9 and np.isnan(glamm[1])
    # three GT, one prediction: two GT unmatched count 0
    np.testing.assert_allclose(match_gt_ious(np.array([[0.2, 0.7, 0.1]]), "hungarian"), [0.0, 0.7, 0.0])


def test_recall_matching_rules() -> None:
    ious = np.array([[0.9, 0.6], [0.0, 0.0]])  # gt × pred
    sims = np.array([[0.1, 1.0], [1.0, 1.0]])
    # the best-IoU pair fails the phrase test: GLaMM stops there, Hungarian takes (0, 1)
    assert recall_matches(ious, sims, rule="glamm") == []
    assert recall_matches(ious, sims, rule="hungarian") == [(0, 1)]
    # maximum number of matches wins over a larger IoU on one pair
    ious2 = np.array([[0.95, 0.6], [0.55, 0.0]])
    sims2 = np.ones((2, 2))
    assert recall_matches(ious2, sims2) == [(0, 1), (1, 0)]
    assert recall_matches(ious2, sims2, rule="glamm") == [(0, 0)]
    assert recall_matches(np.zeros((0, 3)), np.zeros((0, 3))) == []
