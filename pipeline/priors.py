"""Spatial priors: where an object is, how big, which way it points, and groups of small objects.

Rules (all in tile coordinates; documented in the README too):

* Position word: the mask centroid on a 3×3 grid of equal thirds: ``top left, top, top right, left,
  center, right, bottom left, bottom, bottom right``.
* Relative size class, from the visible area as a share of the tile's area: ``small`` < 0.1 %,
  ``medium`` < 2 %, ``large`` otherwise (on an 800² tile: < 640 px, < 12,800 px).
* Length × width: the sides of the minimum rotated rectangle of the visible mask; in metres when
  the GSD is known. Orientation: the long side's angle in degrees in [0, 180), counter-clockwise
  from the image's x axis (east on north-up imagery); elongation = length / width. Objects with an
  elongation under 1.2 have no orientation word.
* Clusters: instances of a cluster category are grouped by single-linkage on their centroids with
  a link distance of ``cluster_link`` × the median object size (√area) of that category in the
  tile, bounded to [8 px, tile side / 4]. Count words: 1 ``a single``, 2 ``two``, 3–5 ``a few``,
  6–10 ``several``, 11–20 ``many``, more ``numerous``.
* Cluster position, refined: a cluster that fills all three columns and rows is ``across the
  image``; one confined to one column (row) of the 3×3 grid and spanning at least two rows (columns)
  is ``left side``/``right side`` (``top side``/``bottom side``; the middle column/row gives
  ``center``); otherwise the word of its members' mean centroid on the 3×3 grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .rle import LocalMask

POSITION_WORDS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
SIZE_THRESHOLDS = (0.001, 0.02)  # share of tile area: small below the first, medium below the second
COUNT_WORDS = ((1, "a single"), (2, "two"), (5, "a few"), (10, "several"), (20, "many"))


def grid_cell(x: float, y: float, width: int, height: int) -> tuple[int, int]:
    """(row, column) of a point on the 3×3 grid."""
    col = min(2, max(0, int(3 * x / width)))
    row = min(2, max(0, int(3 * y / height)))
    return row, col


def position_word(x: float, y: float, width: int, height: int) -> str:
    row, col = grid_cell(x, y, width, height)
    return POSITION_WORDS[row][col]


def size_class(area: float, width: int, height: int) -> str:
    share = area / float(width * height)
    if share < SIZE_THRESHOLDS[0]:
        return "small"
    if share < SIZE_THRESHOLDS[1]:
        return "medium"
    return "large"


def count_word(n: int) -> str:
    for limit, word in COUNT_WORDS:
        if n <= limit:
            return word
    return "numerous"


def orientation_word(angle_deg: float | None, elongation: float) -> str | None:
    """``horizontal``, ``vertical`` or a diagonal, for elongated objects; ``None`` for compact ones."""
    if angle_deg is None or elongation < 1.2:
        return None
    a = angle_deg % 180
    if a < 22.5 or a >= 157.5:
        return "horizontal"
    if a < 67.5:
        return "diagonal, rising to the right"
    if a < 112.5:
        return "vertical"
    return "diagonal, falling to the right"


@dataclass
class Shape:
    """Measured shape of a mask: centroid (tile px), rotated-rectangle sides (px) and long-side angle."""

    cx: float
    cy: float
    length_px: float
    width_px: float
    angle_deg: float | None

    @property
    def elongation(self) -> float:
        return self.length_px / self.width_px if self.width_px > 0 else float("inf")


def _boundary_points(arr: np.ndarray) -> np.ndarray:
    """Corner points of the mask's boundary pixels (x, y), enough for a rotated rectangle."""
    padded = np.pad(arr, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    ys, xs = np.nonzero(arr & ~interior)
    corners = np.empty((4, xs.size, 2), dtype=np.float64)
    for k, (dx, dy) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        corners[k, :, 0] = xs + dx
        corners[k, :, 1] = ys + dy
    return corners.reshape(-1, 2)


def _hull(points: np.ndarray) -> np.ndarray | None:
    """Convex hull vertices of integer-valued points, counter-clockwise in (x, y), without collinear points.

    The same vertices in the same cyclic order as Qhull's (``scipy.spatial.ConvexHull(points).vertices``),
    possibly starting at another vertex (which changes no result of the calipers: ties are settled by
    value); ``None`` when the points are collinear.
    """
    if len(points) < 3:
        return None
    hull = cv2.convexHull(points.astype(np.float32), clockwise=False)[:, 0, :].astype(np.float64)
    if len(hull) < 3:
        return None
    return hull


def min_area_rect(points: np.ndarray) -> tuple[float, float, float] | None:
    """Sides and long-side angle of the minimum-area rectangle around ``points`` (N×2, x right, y down).

    Rotating calipers over the convex hull's edges: the best rectangle has a side on one of them.
    Returns ``(long_side, short_side, angle_deg)`` or ``None`` for degenerate (collinear) input.

    When several edges give exactly the same smallest area with different results (symmetric shapes: a
    square's two sides, or a rectangle's, where angles can differ in the last bit), the smallest
    ``(long, short, angle)`` is taken: the answer depends on the shape alone, not on where the hull
    algorithm happens to start its vertex list.
    """
    hull = _hull(points)
    return _calipers(hull) if hull is not None else None


def _calipers(hull: np.ndarray) -> tuple[float, float, float]:
    edges = np.concatenate([hull[1:], hull[:1]]) - hull  # each vertex to the next (np.roll, cheaper)
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    # Project every hull point on each edge direction (u) and its normal (v).
    u = hull[None, :, 0] * cos[:, None] + hull[None, :, 1] * sin[:, None]
    v = -hull[None, :, 0] * sin[:, None] + hull[None, :, 1] * cos[:, None]
    du = u.max(axis=1) - u.min(axis=1)
    dv = v.max(axis=1) - v.min(axis=1)
    area = du * dv
    tied = np.flatnonzero(area == area.min())
    return min(_rect(float(du[k]), float(dv[k]), float(angles[k])) for k in tied)


def _rect(a: float, b: float, edge_angle: float) -> tuple[float, float, float]:
    theta = edge_angle if a >= b else edge_angle + math.pi / 2
    # Image y grows downwards; flip it so angles read counter-clockwise as on a map.
    angle = math.degrees(math.atan2(-math.sin(theta), math.cos(theta))) % 180.0
    return max(a, b), min(a, b), angle


def _row_extreme_corners(arr: np.ndarray) -> np.ndarray:
    """Corners (x, y) of the first and last mask pixel of every row: the same convex hull as all pixels'."""
    rows = np.flatnonzero(arr.any(axis=1))
    sub = arr[rows]
    first = sub.argmax(axis=1)
    last = arr.shape[1] - sub[:, ::-1].argmax(axis=1)  # one past the last pixel: its right edge
    xs = np.concatenate([first, first, last, last])
    ys = np.concatenate([rows, rows + 1, rows, rows + 1])
    return np.stack([xs, ys], axis=1).astype(np.float64)


def _calipers_many(hulls: list[np.ndarray]) -> list[tuple[float, float, float]]:
    """``_calipers`` of many hulls in one set of array operations (hulls padded to the longest).

    Each edge's numbers are computed by the same elementwise operations as in ``_calipers``, so the
    results are the same bit for bit, ties settled the same way (the smallest result).
    """
    if not hulls:
        return []
    n, width = len(hulls), max(len(h) for h in hulls)
    lengths = np.array([len(h) for h in hulls])
    pts = np.empty((n, width, 2), dtype=np.float64)
    for i, h in enumerate(hulls):
        pts[i, : len(h)] = h
        pts[i, len(h) :] = h[0]  # repeated vertices change no maximum or minimum
    j = np.arange(width)
    valid = j[None, :] < lengths[:, None]
    nxt = np.where(j[None, :] + 1 < lengths[:, None], j[None, :] + 1, 0)
    rows = np.arange(n)[:, None]
    edges = pts[rows, nxt] - pts  # each vertex to the next, wrapping at each hull's own length
    angles = np.arctan2(edges[:, :, 1], edges[:, :, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    x, y = pts[:, None, :, 0], pts[:, None, :, 1]
    u = x * cos[:, :, None] + y * sin[:, :, None]
    v = -x * sin[:, :, None] + y * cos[:, :, None]
    du = u.max(axis=2) - u.min(axis=2)
    dv = v.max(axis=2) - v.min(axis=2)
    area = np.where(valid, du * dv, np.inf)
    best = area.argmin(axis=1)
    ties = ((area == area[np.arange(n), best][:, None]) & valid).sum(axis=1) > 1
    out: list[tuple[float, float, float]] = []
    for i in range(n):
        k = int(best[i])
        if ties[i]:
            tied = np.flatnonzero((area[i] == area[i, k]) & valid[i])
            out.append(min(_rect(float(du[i, t]), float(dv[i, t]), float(angles[i, t])) for t in tied))
        else:
            out.append(_rect(float(du[i, k]), float(dv[i, k]), float(angles[i, k])))
    return out


def measure_all(masks: Sequence[LocalMask]) -> list[Shape]:
    """``measure`` of every mask, with the rotating calipers of all of them computed together."""
    centroids: list[tuple[float, float] | None] = []
    hulls: list[np.ndarray] = []
    hull_of: list[int] = []
    for m in masks:
        arr = m.array
        n = int(np.count_nonzero(arr))
        if n == 0:
            centroids.append(None)
            hull_of.append(-1)
            continue
        h, w = arr.shape
        sx = int(arr.sum(axis=0, dtype=np.int64) @ np.arange(w, dtype=np.int64))
        sy = int(arr.sum(axis=1, dtype=np.int64) @ np.arange(h, dtype=np.int64))
        centroids.append((float(m.x0 + sx / n + 0.5), float(m.y0 + sy / n + 0.5)))
        hull = _hull(_row_extreme_corners(arr))
        hull_of.append(len(hulls) if hull is not None else -1)
        if hull is not None:
            hulls.append(hull)
    rects = _calipers_many(hulls)
    shapes = []
    for m, c, k in zip(masks, centroids, hull_of, strict=True):
        if c is None:
            shapes.append(Shape(float(m.x0), float(m.y0), 0.0, 0.0, None))
            continue
        rect = rects[k] if k >= 0 else None
        if rect is None:  # a degenerate hull (cannot happen for pixel corners; kept as a guard)
            arr = m.array
            shapes.append(Shape(c[0], c[1], float(max(arr.shape)), float(min(arr.shape)), None))
        else:
            shapes.append(Shape(c[0], c[1], *rect))
    return shapes


def measure(mask: LocalMask) -> Shape:
    """Centroid, minimum-area rectangle sides and orientation of a mask (pixel edges, not centres).

    The centroid is the mean pixel position (sums of integer coordinates are exact, so this equals
    ``np.nonzero(...).mean()``); the rectangle comes from the hull of each row's end pixels, which is the
    hull of all boundary corners, so it equals ``min_area_rect(_boundary_points(...))``.
    """
    arr = mask.array
    n = int(np.count_nonzero(arr))
    if n == 0:
        return Shape(float(mask.x0), float(mask.y0), 0.0, 0.0, None)
    h, w = arr.shape
    sx = int(arr.sum(axis=0, dtype=np.int64) @ np.arange(w, dtype=np.int64))
    sy = int(arr.sum(axis=1, dtype=np.int64) @ np.arange(h, dtype=np.int64))
    cx = float(mask.x0 + sx / n + 0.5)
    cy = float(mask.y0 + sy / n + 0.5)
    hull = _hull(_row_extreme_corners(arr))
    rect = _calipers(hull) if hull is not None else None
    if rect is None:  # a degenerate hull (cannot happen for pixel corners; kept as a guard)
        return Shape(cx, cy, float(max(arr.shape)), float(min(arr.shape)), None)
    length, width, angle = rect
    return Shape(cx, cy, length, width, angle)


@dataclass
class ClusterGroup:
    """Indexes (into the caller's list) of one cluster's members."""

    members: list[int]


def cluster_points(points: np.ndarray, sizes: np.ndarray, tile_side: int, link: float = 2.5) -> list[list[int]]:
    """Single-linkage groups of points, link distance from the median object size (see module doc).

    Groups are lists of indexes in increasing order, ordered by their first index. Pairs closer than the
    link distance (inclusive) are joined; distances are compared squared, in blocks of rows, so memory
    stays ``O(block × n)``.
    """
    n = len(points)
    if n == 0:
        return []
    if n == 1:
        return [[0]]
    eps = float(np.clip(link * np.median(sizes), 8.0, tile_side / 4.0))
    pts = np.asarray(points, dtype=np.float64)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    block = max(1, 2_000_000 // n)
    for start in range(0, n, block):
        diff = pts[start : start + block, None, :] - pts[None, :, :]
        close = (diff**2).sum(axis=2) <= eps * eps  # squared, as scipy's cKDTree.query_pairs compares
        rows, cols = np.nonzero(close)
        rows += start
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if j > i:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def cluster_position(points: np.ndarray, width: int, height: int) -> str:
    """Refined position of a group of centroids (see module doc)."""
    cells = [grid_cell(x, y, width, height) for x, y in points]
    rows = {r for r, _ in cells}
    cols = {c for _, c in cells}
    if len(rows) == 3 and len(cols) == 3:
        return "across the image"
    if len(cols) == 1 and len(rows) >= 2:
        return ("left side", "center", "right side")[next(iter(cols))]
    if len(rows) == 1 and len(cols) >= 2:
        return ("top side", "center", "bottom side")[next(iter(rows))]
    mx, my = points.mean(axis=0)
    return position_word(float(mx), float(my), width, height)
