"""iSAID: ``P.png`` with ``P_instance_id_RGB.png`` (instance id = R + 256·G + 65536·B, 0 = background)
and ``P_instance_color_RGB.png`` (the class is the colour of the same pixels).

The masks are read twice in row strips — once for per-instance statistics (total area, full
extent, class by majority colour), once band by band with the tiles — so memory follows the tile
band, not the image, and the image itself is decoded once (the devkit decodes everything three times).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError, Skip
from ..raster import RowBandReader, read_info
from ..records import TileInstance
from ..rle import LocalMask
from ..tiling import Tile
from .base import ImageItem, LoadedAnnotations, image_files

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


def _rgb_code(rgb: np.ndarray) -> np.ndarray:
    """``3×H×W`` uint8 → ``H×W`` int64 code ``R + 256·G + 65536·B``."""
    r, g, b = (rgb[i].astype(np.int64) for i in range(3))
    return r + 256 * g + 65536 * b


class IsaidMasks:
    """Instance masks of one iSAID image, streamed in row bands."""

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
        self._stats()
        self._ids = RowBandReader(id_path, [1, 2, 3])

    def _stats(self) -> None:
        area: Counter[int] = Counter()
        colours: dict[int, Counter[int]] = defaultdict(Counter)
        extent: dict[int, list[int]] = {}
        with RowBandReader(self.id_path, [1, 2, 3]) as ids_r, RowBandReader(self.color_path, [1, 2, 3]) as col_r:
            for y0 in range(0, self.height, STRIP_ROWS):
                y1 = min(self.height, y0 + STRIP_ROWS)
                ids = _rgb_code(ids_r.rows(y0, y1)[0])
                cols = _rgb_code(col_r.rows(y0, y1)[0])
                fg = ids > 0
                if not fg.any():
                    continue
                uid, inverse, counts = np.unique(ids[fg], return_inverse=True, return_counts=True)
                for u, c in zip(uid.tolist(), counts.tolist(), strict=True):
                    area[u] += c
                pair, pair_counts = np.unique(ids[fg] * (1 << 24) + cols[fg], return_counts=True)
                for p, c in zip(pair.tolist(), pair_counts.tolist(), strict=True):
                    colours[p >> 24][p & 0xFFFFFF] += c
                labels = np.zeros(ids.shape, dtype=np.int32)
                labels[fg] = inverse.reshape(-1) + 1
                for k, sl in enumerate(ndimage.find_objects(labels)):
                    if sl is None:
                        continue
                    u = int(uid[k])
                    box = [sl[1].start, y0 + sl[0].start, sl[1].stop - 1, y0 + sl[0].stop - 1]
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

    def instances_in(self, tile: Tile) -> list[TileInstance]:
        rows, _ = self._ids.rows(tile.y0, tile.y1)
        ids = _rgb_code(rows[:, :, tile.x0 : tile.x1])
        fg = ids > 0
        if not fg.any():
            return []
        uid, inverse = np.unique(ids[fg], return_inverse=True)
        labels = np.zeros(ids.shape, dtype=np.int32)
        labels[fg] = inverse.reshape(-1) + 1
        out = []
        for k, sl in enumerate(ndimage.find_objects(labels)):
            if sl is None:
                continue
            inst = int(uid[k])
            crop = labels[sl] == k + 1
            visible = int(crop.sum())
            total = self.total_area.get(inst, visible)
            ex = self.extent[inst]
            inside = ex[0] >= tile.x0 and ex[1] >= tile.y0 and ex[2] < tile.x1 and ex[3] < tile.y1
            out.append(
                TileInstance(
                    instance_id=inst,
                    category=self.category[inst],
                    mask=LocalMask(sl[1].start, sl[0].start, crop),
                    visible_fraction=min(1.0, visible / total) if total else 0.0,
                    truncated=not inside,
                    geometry_kind="mask",
                    source_ref=f"{Path(self.id_path).name}#{inst}",
                )
            )
        return out

    def close(self) -> None:
        self._ids.close()


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
