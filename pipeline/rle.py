"""COCO run-length encoding for masks stored as a crop plus an offset.

Masks inside a tile are kept cropped to their bounding box (``LocalMask``), so memory follows the
objects, not the tile: hundreds of masks on a 4096² tile stay small. Encoding to COCO RLE (column-major,
compressed ``counts`` string) works from the crop directly, without building a full-size array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _coco() -> Any:
    """pycocotools' mask module, imported on first use (LocalMask needs none of it)."""
    from pycocotools import mask

    return mask


@dataclass
class LocalMask:
    """A boolean mask cropped to its bounding box.

    Attributes:
        x0, y0: the crop's top-left corner in tile pixels.
        array: ``H×W`` bool array; pixel ``(r, c)`` is tile pixel ``(y0 + r, x0 + c)``.
    """

    x0: int
    y0: int
    array: np.ndarray

    @property
    def area(self) -> int:
        return int(self.array.sum())

    def bbox(self) -> tuple[float, float, float, float]:
        """Tight ``(x, y, w, h)`` in tile pixels."""
        rows = np.flatnonzero(self.array.any(axis=1))
        cols = np.flatnonzero(self.array.any(axis=0))
        if rows.size == 0:
            return (float(self.x0), float(self.y0), 0.0, 0.0)
        return (
            float(self.x0 + cols[0]),
            float(self.y0 + rows[0]),
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        )

    def tight(self) -> LocalMask:
        """The same mask cropped to its true extent."""
        rows = np.flatnonzero(self.array.any(axis=1))
        cols = np.flatnonzero(self.array.any(axis=0))
        if rows.size == 0:
            return LocalMask(self.x0, self.y0, self.array[:0, :0])
        sub = self.array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return LocalMask(self.x0 + int(cols[0]), self.y0 + int(rows[0]), np.ascontiguousarray(sub))

    def to_full(self, height: int, width: int) -> np.ndarray:
        full = np.zeros((height, width), dtype=bool)
        h, w = self.array.shape
        full[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.array
        return full


def encode_local(mask: LocalMask, height: int, width: int) -> dict[str, Any]:
    """COCO compressed RLE (``{"size": [h, w], "counts": str}``) of a cropped mask in an ``h×w`` tile."""
    arr = mask.array
    ch, cw = arr.shape
    if ch == 0 or cw == 0 or not arr.any():
        counts = [height * width]
    else:
        # Column-major walk over the crop, one zero row added above and below each column so runs
        # never join across columns; change points are then mapped to full-tile flat indices.
        padded = np.zeros((ch + 2, cw), dtype=np.int8)
        padded[1:-1] = arr
        flat = padded.T.reshape(-1)
        change = np.flatnonzero(np.diff(flat)) + 1  # index in padded flat of the first pixel after a change
        col = change // (ch + 2)
        row = change % (ch + 2) - 1  # row within the crop
        full_idx = (mask.x0 + col) * height + (mask.y0 + row)
        # A crop spanning the full height makes a run continue into the next column: its end and the
        # next start fall on the same index and cancel. The walk is in increasing order, so such pairs
        # are neighbours (no sort needed).
        if full_idx.size > 1:
            same = np.flatnonzero(full_idx[1:] == full_idx[:-1])
            if same.size:
                keep = np.ones(full_idx.size, dtype=bool)
                keep[same] = False
                keep[same + 1] = False
                full_idx = full_idx[keep]
        full_idx = full_idx[full_idx < height * width]
        bounds = np.concatenate(([0], full_idx, [height * width]))
        counts = np.diff(bounds).astype(np.int64).tolist()
    rle = _coco().frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def encode_full(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a full-size ``H×W`` bool mask."""
    rle = _coco().encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def counts_to_runs(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE ``counts`` string, in pure Python (pycocotools' ``rleFrString``):
    what a validator needs to check a mask without decoding it. Raises ``ValueError`` on a malformed string."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value = shift = 0
        more = True
        while more:
            if pos >= len(counts):
                raise ValueError("truncated RLE string")
            char = ord(counts[pos]) - 48
            if char < 0 or char > 63:
                raise ValueError(f"invalid RLE character {counts[pos]!r}")
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            pos += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def to_coco(rle: Any) -> dict[str, Any]:
    """A COCO RLE in the form pycocotools' C functions take (``counts`` as bytes).

    Accepts compressed ``counts`` (str or bytes) and uncompressed ones (a list of run lengths). Raises
    ``ValueError`` naming the problem for anything else.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"not a COCO RLE (needs 'size' and 'counts'): {type(rle).__name__}")
    try:
        h, w = (int(v) for v in rle["size"])
    except (TypeError, ValueError):
        raise ValueError(f"RLE size must be [height, width], got {rle['size']!r}") from None
    counts = rle["counts"]
    if isinstance(counts, list):
        return dict(_coco().frPyObjects({"size": [h, w], "counts": counts}, h, w))
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise ValueError(f"RLE counts must be a string, bytes or a list, got {type(counts).__name__}")
    return {"size": [h, w], "counts": counts}


def decode(rle: dict[str, Any], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Full-size bool ``H×W`` mask from a COCO RLE (compressed str/bytes or uncompressed list counts).

    Raises ``ValueError`` when the RLE is malformed or, with ``shape`` (H, W), of another size.
    """
    obj = to_coco(rle)
    if shape is not None and tuple(obj["size"]) != tuple(shape):
        raise ValueError(f"mask is {obj['size'][0]}×{obj['size'][1]}, expected {shape[0]}×{shape[1]}")
    mask = _coco().decode(obj)
    return np.asarray(mask, dtype=bool)


def area(rle: dict[str, Any]) -> int:
    """Foreground pixel count of a mask."""
    return int(_coco().area(to_coco(rle)))


def iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Intersection over union of two masks of the same size."""
    return float(_coco().iou([to_coco(a)], [to_coco(b)], [0])[0][0])


def merge(rles: list[dict[str, Any]]) -> dict[str, Any]:
    """Union of several RLEs of the same size (a cluster's mask)."""
    objs = [to_coco(r) for r in rles]
    merged = _coco().merge(objs, intersect=False)
    return {"size": [int(merged["size"][0]), int(merged["size"][1])], "counts": merged["counts"].decode("ascii")}
