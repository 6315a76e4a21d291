"""iSAID: ``P.png`` with ``P_instance_id_RGB.png`` (instance id = R + 256·G + 65536·B, 0 = background)
and ``P_instance_color_RGB.png`` (the class is the colour of the same pixels).

Each mask is decoded once. A first pass over row strips gathers per-instance statistics (total area,
full extent, class by majority colour); the id codes it decoded are kept (as ``uint32``, 4 bytes per
pixel) when they fit ``KEEP_CODES_MB``, and tiles are cut from them. Larger images keep nothing: the
id mask is read a second time band by band with the tiles, so memory follows the tile band, not the
image. The image itself is decoded once either way (the devkit decodes everything three times).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError, Skip
from ..raster import RowBandReader, read_info
from ..records import TileInstance
from ..rle import LocalMask
from ..tiling import Tile
from .items import ImageItem, LoadedAnnotations, image_files

# iSAID class colours (RGB) → class name, from the iSAID devkit.
ISAID_CLASSES: dict[tuple[int, int, int], str] = {
    (0, 0, 63): "ship",
    (0, 63, 63): "storage_tank",
    (0, 63, 0): "baseball_diamond",
    (0, 63, 127): "tennis_court",
    (0, 63, 191): "basketball_court",
    (0, 63, 255): "Ground_Track_Field",
    (0, 127, 63): "Bridge",
    (0, 127, 127): "Large_Vehicle",
    (0, 0, 127): "Small_Vehicle",
    (0, 0, 191): "Helicopter",
    (0, 0, 255): "Swimming_pool",
    (0, 191, 127): "Roundabout",
    (0, 127, 191): "Soccer_ball_field",
    (0, 127, 255): "plane",
    (0, 100, 155): "Harbor",
}
_CODE_TO_CLASS = {r + 256 * g + 65536 * b: name for (r, g, b), name in ISAID_CLASSES.items()}
ID_SUFFIX = "_instance_id_RGB"
COLOR_SUFFIX = "_instance_color_RGB"
STRIP_ROWS = 512
KEEP_CODES_MB = 64  # id codes of images up to 16 MP are kept after the first pass (no second decode)


def _rgb_code(rgb: np.ndarray) -> np.ndarray:
    """``3×H×W`` uint8 → ``H×W`` uint32 code ``R + 256·G + 65536·B``.

    The bands are interleaved with a zero fourth byte (OpenCV's merge, one pass) and read as little-endian
    32-bit words: byte 0 is R, byte 1 G, byte 2 B.
    """
    zero = np.zeros(rgb.shape[1:], dtype=np.uint8)
    return cv2.merge([rgb[0], rgb[1], rgb[2], zero]).view("<u4")[..., 0]


def _label_boxes(fg: np.ndarray, inverse: np.ndarray, n: int) -> np.ndarray:
    """Bounding boxes ``[y0, y1, x0, x1)`` (end-exclusive) of labels ``0..n-1`` of the pixels ``fg``.

    ``inverse`` holds each foreground pixel's label, in row-major order (as ``ids[fg]``); every label
    in ``0..n-1`` occurs. The same boxes ``scipy.ndimage.find_objects`` gives, without a label image.
    """
    ys, xs = np.nonzero(fg)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    if len(starts) != n:
        raise AssertionError("every label must occur")
    ys, xs = ys[order], xs[order]
    return np.stack(
        [
            np.minimum.reduceat(ys, starts),
            np.maximum.reduceat(ys, starts) + 1,
            np.minimum.reduceat(xs, starts),
            np.maximum.reduceat(xs, starts) + 1,
        ],
        axis=1,
    )


class IsaidMasks:
    """Instance masks of one iSAID image: statistics from one pass, then tiles cut from the id codes."""

    def __init__(self, id_path: str, color_path: str, width: int, height: int) -> None:
        self.id_path, self.color_path = id_path, color_path
        for p in (id_path, color_path):
            info = read_info(p)
            if (info.width, info.height) != (width, height):
                raise InputError(p, f"mask is {info.width}×{info.height} but the image is {width}×{height}")
            if info.count < 3:
                raise InputError(p, f"expected an RGB mask, found {info.count} band(s)")
        self.width, self.height = width, height
        self.total_area: dict[int, int] = {}
        self.extent: dict[int, list[int]] = {}  # id -> [xmin, ymin, xmax, ymax] (inclusive)
        self.category: dict[int, str] = {}
        self.recoloured = 0  # pixels whose colour disagreed with their instance's class
        self._codes: np.ndarray | None = None  # H×W uint32 id codes, when small enough to keep
        self._stats(keep=width * height * 4 <= KEEP_CODES_MB * 2**20)
        self._ids = None if self._codes is not None else RowBandReader(id_path, [1, 2, 3])

    def _stats(self, keep: bool) -> None:
        area: Counter[int] = Counter()
        colours: dict[int, Counter[int]] = defaultdict(Counter)
        extent: dict[int, list[int]] = {}
        kept: list[np.ndarray] = []
        with RowBandReader(self.id_path, [1, 2, 3]) as ids_r, RowBandReader(self.color_path, [1, 2, 3]) as col_r:
            for y0 in range(0, self.height, STRIP_ROWS):
                y1 = min(self.height, y0 + STRIP_ROWS)
                ids = _rgb_code(ids_r.rows(y0, y1)[0])
                if keep:
                    kept.append(ids)
                cols = _rgb_code(col_r.rows(y0, y1)[0])
                fg = ids > 0
                if not fg.any():
                    continue
                fg_ids = ids[fg]
                uid, inverse, counts = np.unique(fg_ids, return_inverse=True, return_counts=True)
                inverse = inverse.reshape(-1)
                for u, c in zip(uid.tolist(), counts.tolist(), strict=True):
                    area[u] += c
                pair, pair_counts = np.unique(fg_ids.astype(np.int64) * (1 << 24) + cols[fg], return_counts=True)
                for p, c in zip(pair.tolist(), pair_counts.tolist(), strict=True):
                    colours[p >> 24][p & 0xFFFFFF] += c
                boxes = _label_boxes(fg, inverse, len(uid))
                for u, (by0, by1, bx0, bx1) in zip(uid.tolist(), boxes.tolist(), strict=True):
                    box = [bx0, y0 + by0, bx1 - 1, y0 + by1 - 1]
                    if u in extent:
                        e = extent[u]
                        extent[u] = [min(e[0], box[0]), min(e[1], box[1]), max(e[2], box[2]), max(e[3], box[3])]
                    else:
                        extent[u] = box
        unknown: Counter[int] = Counter()
        for inst, counter in colours.items():
            known = {c: n for c, n in counter.items() if c in _CODE_TO_CLASS}
            if not known:
                unknown.update(counter)
                continue
            best = max(known, key=lambda c: known[c])
            self.category[inst] = _CODE_TO_CLASS[best]
            self.recoloured += sum(counter.values()) - known[best]
        if unknown:
            shown = ", ".join(
                f"RGB({c & 255},{(c >> 8) & 255},{c >> 16})×{n}" for c, n in unknown.most_common(5)
            )
            raise InputError(self.color_path, f"unknown iSAID class colour(s) for whole instances: {shown}")
        self.total_area = dict(area)
        self.extent = extent
        if keep:
            self._codes = np.concatenate(kept, axis=0) if len(kept) > 1 else kept[0]

    def instances_in(self, tile: Tile) -> list[TileInstance]:
        if self._codes is not None:
            ids = self._codes[tile.y0 : tile.y1, tile.x0 : tile.x1]
        else:
            assert self._ids is not None
            rows, _ = self._ids.rows(tile.y0, tile.y1)
            ids = _rgb_code(rows[:, :, tile.x0 : tile.x1])
        fg = ids > 0
        if not fg.any():
            return []
        uid, inverse, counts = np.unique(ids[fg], return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        labels = np.zeros(ids.shape, dtype=np.int32)
        labels[fg] = inverse + 1
        boxes = _label_boxes(fg, inverse, len(uid))
        out = []
        name = Path(self.id_path).name
        for k, (inst, visible, (y0, y1, x0, x1)) in enumerate(zip(uid.tolist(), counts.tolist(), boxes.tolist(), strict=True)):
            crop = labels[y0:y1, x0:x1] == k + 1
            total = self.total_area.get(inst, visible)
            ex = self.extent[inst]
            inside = ex[0] >= tile.x0 and ex[1] >= tile.y0 and ex[2] < tile.x1 and ex[3] < tile.y1
            out.append(
                TileInstance(
                    instance_id=inst,
                    category=self.category[inst],
                    mask=LocalMask(x0, y0, crop),
                    visible_fraction=min(1.0, visible / total) if total else 0.0,
                    truncated=not inside,
                    geometry_kind="mask",
                    source_ref=f"{name}#{inst}",
                )
            )
        return out

    def close(self) -> None:
        if self._ids is not None:
            self._ids.close()
        self._codes = None


class IsaidAdapter:
    name = "isaid"
    help = "iSAID: P.png + P_instance_id_RGB.png + P_instance_color_RGB.png (folders or image paths)"

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]:
        items, skips = [], []
        for path in image_files(sources):
            stem = path.stem
            if stem.endswith(ID_SUFFIX) or stem.endswith(COLOR_SUFFIX):
                continue
            id_path = path.with_name(f"{stem}{ID_SUFFIX}{path.suffix}")
            color_path = path.with_name(f"{stem}{COLOR_SUFFIX}{path.suffix}")
            missing = [p.name for p in (id_path, color_path) if not p.exists()]
            if not path.exists():
                skips.append(Skip(str(path), "discover", "file not found"))
            elif missing:
                skips.append(Skip(str(path), "discover", f"missing iSAID mask(s): {', '.join(missing)}"))
            else:
                items.append(
                    ImageItem(stem, str(path), self.name, {"id_mask": str(id_path), "color_mask": str(color_path)})
                )
        return items, skips

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations:
        masks = IsaidMasks(item.annotations["id_mask"], item.annotations["color_mask"], width, height)
        return LoadedAnnotations(source=masks)
