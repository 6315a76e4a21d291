"""The fast paths of prepare give the same numbers as the SciPy code they replaced, bit for bit.

Depths for marks (OpenCV's exact distance transform vs ``scipy.ndimage.distance_transform_edt``), the
minimum-area rectangle (OpenCV's hull vs Qhull's), single-linkage clusters (numpy vs ``cKDTree`` +
``connected_components``) and the iSAID label boxes (numpy vs ``ndimage.find_objects``), on random
shapes including the symmetric ones where the calipers tie.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from pipeline import priors
from pipeline.config import PrepareConfig
from pipeline.ingest import isaid
from pipeline.marks import depth_map
from pipeline.prepare import prepare
from pipeline.rle import LocalMask


def _random_mask(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(1, 60, 2))
    m = np.zeros((h + 10, w + 10), np.uint8)
    kind = rng.random()
    if kind < 0.3:  # axis-aligned rectangles: the calipers tie on their sides
        x0, y0 = (int(v) for v in rng.integers(0, 5, 2))
        m[y0 : y0 + int(rng.integers(1, 20)), x0 : x0 + int(rng.integers(1, 20))] = 1
    elif kind < 0.35:  # a line: collinear corners
        m[2, 1 : int(rng.integers(2, 20))] = 1
    else:
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, w + 10)), int(rng.integers(0, h + 10)))
            axes = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _qhull_rects(points: np.ndarray) -> set[tuple[float, float, float]] | None:
    """The rotating calipers written over ``scipy.spatial.ConvexHull``: every tied smallest rectangle."""
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return None
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    u = hull[None, :, 0] * cos[:, None] + hull[None, :, 1] * sin[:, None]
    v = -hull[None, :, 0] * sin[:, None] + hull[None, :, 1] * cos[:, None]
    du = u.max(axis=1) - u.min(axis=1)
    dv = v.max(axis=1) - v.min(axis=1)
    area = du * dv
    out = set()
    for k in np.flatnonzero(area == area.min()):
        a, b = float(du[k]), float(dv[k])
        theta = float(angles[k]) if a >= b else float(angles[k]) + math.pi / 2
        angle = math.degrees(math.atan2(-math.sin(theta), math.cos(theta))) % 180.0
        out.add((max(a, b), min(a, b), angle))
    return out


def _qhull_rect(points: np.ndarray) -> tuple[float, float, float] | None:
    """Qhull's calipers with ties settled by value (the smallest result), as ``min_area_rect`` does."""
    rects = _qhull_rects(points)
    return min(rects) if rects else None


def _scipy_clusters(points: np.ndarray, sizes: np.ndarray, tile_side: int, link: float = 2.5) -> list[list[int]]:
    n = len(points)
    if n == 0:
        return []
    if n == 1:
        return [[0]]
    eps = float(np.clip(link * np.median(sizes), 8.0, tile_side / 4.0))
    pairs = cKDTree(points).query_pairs(eps, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else coo_matrix((n, n))
    k, labels = connected_components(graph, directed=False)
    groups: list[list[int]] = [[] for _ in range(k)]
    for i, lab in enumerate(labels):
        groups[int(lab)].append(i)
    return groups


def test_depths_equal_scipy_edt() -> None:
    rng = np.random.default_rng(0)
    for _ in range(1500):
        m = _random_mask(rng)
        expected = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        assert np.array_equal(depth_map(m), expected)


def test_min_area_rect_equals_qhull_calipers_including_ties() -> None:
    """Same hull, same edges, same numbers as Qhull's; exact ties go to the smallest result, so the
    answer does not depend on which vertex either hull algorithm lists first."""
    rng = np.random.default_rng(1)
    tied = 0
    for _ in range(3000):
        m = _random_mask(rng)
        if not m.any():
            continue
        points = priors._boundary_points(m)
        rects = _qhull_rects(points)
        got = priors.min_area_rect(points)
        assert rects is not None and got in rects and got == min(rects)
        tied += int(len(rects) > 1)
    assert tied > 10  # ties with different results were exercised


def test_clusters_equal_kdtree_and_connected_components() -> None:
    rng = np.random.default_rng(2)
    for k in range(1500):
        n = int(rng.integers(0, 80))
        points = rng.uniform(0, 800, (n, 2)) if k % 2 else rng.integers(0, 120, (n, 2)).astype(float) + 0.5
        sizes = rng.uniform(1, 30, n)
        assert priors.cluster_points(points, sizes, 800) == _scipy_clusters(points, sizes, 800)


def test_label_boxes_equal_find_objects() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        ids = rng.integers(0, 6, size=(int(rng.integers(1, 40)), int(rng.integers(1, 40))))
        ids[rng.random(ids.shape) < 0.5] = 0
        fg = ids > 0
        if not fg.any():
            continue
        uid, inverse = np.unique(ids[fg], return_inverse=True)
        labels = np.zeros(ids.shape, dtype=np.int32)
        labels[fg] = inverse.reshape(-1) + 1
        expected = [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in ndimage.find_objects(labels)]
        got = [tuple(b) for b in isaid._label_boxes(fg, inverse.reshape(-1), len(uid)).tolist()]
        assert got == expected


def test_isaid_streamed_and_kept_codes_give_the_same_instances(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images too large to keep their id codes read the id mask a second time: same rows either way."""
    kept = tmp_path / "kept"
    prepare([data_dir / "isaid"], PrepareConfig(format="isaid"), kept, progress=False)
    monkeypatch.setattr(isaid, "KEEP_CODES_MB", 0)
    streamed = tmp_path / "streamed"
    prepare([data_dir / "isaid"], PrepareConfig(format="isaid"), streamed, progress=False)
    for name in ("instances", "clusters", "tiles"):
        a = pq.read_table(kept / f"{name}.parquet").drop_columns(["source_path"] if name == "tiles" else [])
        b = pq.read_table(streamed / f"{name}.parquet").drop_columns(["source_path"] if name == "tiles" else [])
        assert a.equals(b), name


def _old_measure(mask: np.ndarray) -> tuple[float, float, float, float, float | None]:
    ys, xs = np.nonzero(mask)
    cx, cy = float(3 + xs.mean() + 0.5), float(5 + ys.mean() + 0.5)
    rect = _qhull_rect(priors._boundary_points(mask))
    assert rect is not None
    return cx, cy, *rect


def test_measure_equals_the_qhull_and_nonzero_version() -> None:
    rng = np.random.default_rng(4)
    for _ in range(3000):
        m = _random_mask(rng)
        if not m.any():
            continue
        s = priors.measure(LocalMask(3, 5, m))
        assert (s.cx, s.cy, s.length_px, s.width_px, s.angle_deg) == _old_measure(m)


def test_measure_all_equals_measure_one_by_one() -> None:
    rng = np.random.default_rng(5)
    masks = [LocalMask(int(rng.integers(0, 700)), int(rng.integers(0, 700)), _random_mask(rng)) for _ in range(2000)]
    masks.append(LocalMask(3, 4, np.zeros((0, 0), dtype=bool)))
    assert priors.measure_all(masks) == [priors.measure(m) for m in masks]
    assert priors.measure_all([]) == []
