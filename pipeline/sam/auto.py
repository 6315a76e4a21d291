"""Imagery without labels → SAM's automatic masks, deduplicated across overlapping tiles.

``SamAutoAnnotations`` is an ``AnnotationSource`` (``instances_in(tile)``, ``close()``). On the first
request it makes one pass over the image, top to bottom with windowed reads (``RowBandReader``: memory
follows one band of tile rows, not the image), rendering every tile as prepare does and running SAM's
point-grid generator on ``batch_size`` tiles at a time. Masks are moved to image pixels, pixels on
nodata are removed, and duplicates across overlapping tiles are suppressed (:func:`deduplicate`). The
kept masks are numbered in reading order and each tile then gets the kept masks that reach into it,
clipped to the tile: category ``object`` (unless named, see :meth:`SamAutoAnnotations.name_objects`),
``geometry_kind`` ``mask``, ``mask_source`` ``sam``.

Deduplication across tiles. A mask is *cut* when its box comes within ``edge_margin_px`` of an edge of
its tile that is not an edge of the image. Masks are visited cut-last, then by predicted IoU ×
stability, then by area (largest first); a mask is a duplicate of an already kept one from another tile
when their IoU, measured only over the pixels both of their tiles saw, reaches ``tile_nms_thresh``.
So an object whole in one tile keeps that tile's mask and drops the cut pieces the neighbours saw; an
object too large for any tile (cut everywhere) has its pieces merged into one mask instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..raster import RowBandReader, Stretch
from ..records import TileInstance
from ..rle import LocalMask
from ..tiling import Tile
from .config import AutoMaskConfig, QualityThresholds
from .naming import naming_extras
from .quality import MaskQuality
from .types import AutoMasker, MaskPrediction

if TYPE_CHECKING:
    from ..prompts import PromptSet
    from .naming import CategoryClient, NamingOutcome

BUCKET_PX = 256  # side of the spatial hash cells used to find overlapping masks


@dataclass
class AutoMask:
    """One automatic mask in image pixels.

    Attributes:
        mask: the mask, image px (tight crop).
        predicted_iou, stability: SAM's scores (of the first mask when pieces were merged).
        tile: the tile it was generated on.
        cut: whether it touches an edge of that tile that is not an image edge.
        point: the point prompt ``(x, y)``, image px.
        windows: ``(x0, y0, x1, y1)`` of every tile whose mask was merged into this one (image px).
        category: ``object`` until named.
        instance_id: 1-based number in reading order, set after deduplication.
        naming: the LMM's answer when the object was named (:meth:`SamAutoAnnotations.name_objects`).
    """

    mask: LocalMask
    predicted_iou: float
    stability: float
    tile: Tile
    cut: bool
    point: tuple[float, float] | None = None
    windows: list[tuple[int, int, int, int]] = field(default_factory=list)
    category: str = "object"
    instance_id: int = 0
    naming: NamingOutcome | None = None

    @property
    def score(self) -> float:
        return self.predicted_iou * self.stability

    @property
    def tile_ids(self) -> list[str]:
        return [f"{self.tile.image_id}_{y0}_{y1}_{x0}_{x1}" for (x0, y0, x1, y1) in self.windows]

    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``, image px, end-exclusive."""
        h, w = self.mask.array.shape
        return self.mask.x0, self.mask.y0, self.mask.x0 + w, self.mask.y0 + h


def is_cut(box: tuple[float, float, float, float], tile: Tile, width: int, height: int, margin: float) -> bool:
    """Whether ``box`` (x0, y0, x1, y1 in image px) lies within ``margin`` px of an inner edge of ``tile``.

    An inner edge is one that is not on the border of the ``width × height`` image.
    """
    x0, y0, x1, y1 = box
    return bool(
        (tile.x0 > 0 and x0 <= tile.x0 + margin)
        or (tile.y0 > 0 and y0 <= tile.y0 + margin)
        or (tile.x1 < width and x1 >= tile.x1 - margin)
        or (tile.y1 < height and y1 >= tile.y1 - margin)
    )


def _buckets(box: tuple[int, int, int, int]) -> Iterator[tuple[int, int]]:
    x0, y0, x1, y1 = box
    for by in range(y0 // BUCKET_PX, max(y0, y1 - 1) // BUCKET_PX + 1):
        for bx in range(x0 // BUCKET_PX, max(x0, x1 - 1) // BUCKET_PX + 1):
            yield bx, by


def shared_iou(kept: AutoMask, candidate: AutoMask) -> float:
    """IoU of two masks over the pixels seen both by the candidate's tile and by the kept mask's tiles."""
    kx0, ky0, kx1, ky1 = kept.box()
    cx0, cy0, cx1, cy1 = candidate.box()
    t = candidate.tile
    fx0, fy0 = max(min(kx0, cx0), t.x0), max(min(ky0, cy0), t.y0)
    fx1, fy1 = min(max(kx1, cx1), t.x1), min(max(ky1, cy1), t.y1)
    if fx1 <= fx0 or fy1 <= fy0:
        return 0.0
    seen = np.zeros((fy1 - fy0, fx1 - fx0), dtype=bool)
    for wx0, wy0, wx1, wy1 in kept.windows:
        ax0, ay0, ax1, ay1 = max(wx0, fx0), max(wy0, fy0), min(wx1, fx1), min(wy1, fy1)
        if ax1 > ax0 and ay1 > ay0:
            seen[ay0 - fy0 : ay1 - fy0, ax0 - fx0 : ax1 - fx0] = True
    if not seen.any():
        return 0.0

    def place(m: LocalMask) -> np.ndarray:
        out = np.zeros_like(seen)
        h, w = m.array.shape
        ax0, ay0, ax1, ay1 = max(m.x0, fx0), max(m.y0, fy0), min(m.x0 + w, fx1), min(m.y0 + h, fy1)
        if ax1 > ax0 and ay1 > ay0:
            out[ay0 - fy0 : ay1 - fy0, ax0 - fx0 : ax1 - fx0] = m.array[ay0 - m.y0 : ay1 - m.y0, ax0 - m.x0 : ax1 - m.x0]
        return out & seen

    a, b = place(kept.mask), place(candidate.mask)
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def union_masks(a: LocalMask, b: LocalMask) -> LocalMask:
    """Pixel union of two masks in the same frame."""
    ah, aw = a.array.shape
    bh, bw = b.array.shape
    x0, y0 = min(a.x0, b.x0), min(a.y0, b.y0)
    x1, y1 = max(a.x0 + aw, b.x0 + bw), max(a.y0 + ah, b.y0 + bh)
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    out[a.y0 - y0 : a.y0 - y0 + ah, a.x0 - x0 : a.x0 - x0 + aw] |= a.array
    out[b.y0 - y0 : b.y0 - y0 + bh, b.x0 - x0 : b.x0 - x0 + bw] |= b.array
    return LocalMask(x0, y0, out)


def deduplicate(masks: Sequence[AutoMask], nms_thresh: float) -> list[AutoMask]:
    """Masks left after suppressing duplicates across tiles (see the module doc), in visiting order.

    Masks from the same tile are never compared (the generator already ran NMS inside each tile). A
    duplicate of a kept mask that is itself cut is merged into it (pixel union) rather than dropped.

    Args:
        masks: candidates from all tiles, image px. Kept ones are updated in place (``windows`` filled,
            merged pixels added to ``mask``).
        nms_thresh: IoU over the commonly seen pixels at which two masks are the same object.
    """
    order = sorted(range(len(masks)), key=lambda i: (masks[i].cut, -masks[i].score, -masks[i].mask.area))
    kept: list[AutoMask] = []
    grid: dict[tuple[int, int], list[int]] = {}
    for i in order:
        cand = masks[i]
        if not cand.windows:
            cand.windows = [(cand.tile.x0, cand.tile.y0, cand.tile.x1, cand.tile.y1)]
        own = cand.windows[0]
        near = sorted({k for cell in _buckets(cand.box()) for k in grid.get(cell, [])})
        match = None
        for k in near:
            other = kept[k]
            if own in other.windows:
                continue
            bx0, by0, bx1, by1 = other.box()
            cx0, cy0, cx1, cy1 = cand.box()
            if bx1 <= cx0 or cx1 <= bx0 or by1 <= cy0 or cy1 <= by0:
                continue
            if shared_iou(other, cand) >= nms_thresh:
                match = k
                break
        if match is None:
            kept.append(cand)
            for cell in _buckets(cand.box()):
                grid.setdefault(cell, []).append(len(kept) - 1)
            continue
        other = kept[match]
        if other.cut:
            other.mask = union_masks(other.mask, cand.mask).tight()
            other.windows.append(own)
            for cell in _buckets(other.box()):
                if match not in grid.setdefault(cell, []):
                    grid[cell].append(match)
    return kept


def iter_tile_images(
    image_path: str | Path,
    tiles: Sequence[Tile],
    bands: list[int],
    stretch: Stretch,
    masked: bool = False,
) -> Iterator[tuple[Tile, np.ndarray, np.ndarray]]:
    """``(tile, rgb H×W×3 uint8, valid H×W bool)`` for each tile, rendered as prepare renders them.

    ``tiles`` must be in row-major order (as ``tile_grid`` makes them): rows are read once, top to bottom.
    """
    with RowBandReader(image_path, bands, masked=masked) as reader:
        for tile in tiles:
            data, valid = reader.rows(tile.y0, tile.y1)
            crop = data[:, :, tile.x0 : tile.x1]
            vcrop = valid[:, tile.x0 : tile.x1]
            rgb = stretch.apply(crop, vcrop if masked else None)
            if rgb.shape[2] == 1:
                rgb = np.repeat(rgb, 3, axis=2)
            yield tile, rgb, np.ascontiguousarray(vcrop)


def _without_nodata(mask: LocalMask, valid: np.ndarray) -> LocalMask:
    h, w = mask.array.shape
    return LocalMask(mask.x0, mask.y0, mask.array & valid[mask.y0 : mask.y0 + h, mask.x0 : mask.x0 + w]).tight()


class SamAutoAnnotations:
    """Automatic SAM masks as an ``AnnotationSource`` (see the module doc).

    Args:
        image_path: the raster.
        tiles: the image's tile grid in row-major order (``tile_grid``), the same one prepare uses.
        width, height: the image's size, px.
        masker: makes the masks (``SamMasker``, or anything with ``generate`` and ``mask_model``).
        bands: 1-based bands rendered as RGB.
        stretch: the stretch prepare uses for this image.
        masked: whether the raster has nodata (masks lose their nodata pixels).
        settings: generation and dedup settings; default: the masker's ``config.auto``.
        thresholds: when to flag; default: the masker's ``config.thresholds``.
        batch_size: tiles per generator call; default: the masker's ``config.batch_size`` (else 4).
    """

    def __init__(
        self,
        image_path: str | Path,
        tiles: Sequence[Tile],
        width: int,
        height: int,
        masker: AutoMasker,
        bands: list[int],
        stretch: Stretch,
        masked: bool = False,
        settings: AutoMaskConfig | None = None,
        thresholds: QualityThresholds | None = None,
        batch_size: int | None = None,
    ) -> None:
        config = getattr(masker, "config", None)
        self.image_path = str(image_path)
        self.tiles = list(tiles)
        self.width, self.height = width, height
        self.masker = masker
        self.bands, self.stretch, self.masked = bands, stretch, masked
        self.settings = settings or getattr(config, "auto", None) or AutoMaskConfig()
        self.thresholds = thresholds or getattr(config, "thresholds", None) or QualityThresholds()
        self.batch_size = batch_size or int(getattr(config, "batch_size", 4))
        self._objects: list[AutoMask] | None = None
        self._boxes = np.zeros((0, 4), dtype=np.int64)
        self.generated = 0  # masks the generator returned, before deduplication across tiles

    @property
    def objects(self) -> list[AutoMask]:
        """The kept masks, numbered in reading order (runs the generation pass on first use)."""
        if self._objects is None:
            self._objects = self._run()
            self._boxes = np.array([o.box() for o in self._objects], dtype=np.int64).reshape(-1, 4)
        return self._objects

    def _candidates(self, tile: Tile, preds: list[MaskPrediction], valid: np.ndarray) -> list[AutoMask]:
        out = []
        for p in preds:
            local = _without_nodata(p.mask, valid) if self.masked else p.mask
            if local.area < max(self.settings.min_mask_area, 1):
                continue
            m = LocalMask(local.x0 + tile.x0, local.y0 + tile.y0, local.array)
            box = (m.x0, m.y0, m.x0 + m.array.shape[1], m.y0 + m.array.shape[0])
            cut = is_cut(box, tile, self.width, self.height, self.settings.edge_margin_px)
            point = (p.point[0] + tile.x0, p.point[1] + tile.y0) if p.point is not None else None
            out.append(AutoMask(m, p.predicted_iou, p.stability, tile, cut, point))
        return out

    def _run(self) -> list[AutoMask]:
        found: list[AutoMask] = []
        batch: list[tuple[Tile, np.ndarray, np.ndarray]] = []

        def flush() -> None:
            preds = self.masker.generate([b[1] for b in batch], self.settings)
            for (tile, _, valid), tile_preds in zip(batch, preds, strict=True):
                self.generated += len(tile_preds)
                found.extend(self._candidates(tile, tile_preds, valid))
            batch.clear()

        for tile, rgb, valid in iter_tile_images(self.image_path, self.tiles, self.bands, self.stretch, self.masked):
            if not valid.any():
                continue
            batch.append((tile, rgb, valid))
            if len(batch) >= self.batch_size:
                flush()
        if batch:
            flush()
        kept = deduplicate(found, self.settings.tile_nms_thresh)
        kept.sort(key=lambda o: (o.mask.y0, o.mask.x0, -o.mask.area))
        for n, obj in enumerate(kept, start=1):
            obj.instance_id = n
            obj.category = self.settings.category
        return kept

    def instances_in(self, tile: Tile) -> list[TileInstance]:
        """The kept masks reaching into ``tile``, clipped to it (tile px), in instance-id order."""
        objects = self.objects
        if not objects:
            return []
        b = self._boxes
        hits = np.flatnonzero((b[:, 0] < tile.x1) & (b[:, 2] > tile.x0) & (b[:, 1] < tile.y1) & (b[:, 3] > tile.y0))
        out = []
        for k in hits.tolist():
            obj = objects[k]
            local = _clip_to(obj.mask, tile)
            full_area = obj.mask.area
            if local.area == 0:
                continue
            quality = MaskQuality(obj.predicted_iou, obj.stability)
            extras: dict[str, Any] = quality.extras(self.thresholds)
            extras["sam_tiles"] = obj.tile_ids
            if obj.naming is not None:
                extras.update(naming_extras(obj.naming))
            out.append(
                TileInstance(
                    instance_id=obj.instance_id,
                    category=obj.category,
                    mask=local,
                    visible_fraction=local.area / full_area,
                    truncated=local.area < full_area,
                    geometry_kind="mask",
                    source_ref=f"sam-auto:{obj.tile.tile_id}#{obj.instance_id}",
                    prompt_box=None,
                    mask_source="sam",
                    mask_model=self.masker.mask_model,
                    mask_score=round(float(obj.predicted_iou), 6),
                    extras=extras,
                )
            )
        return out

    def name_objects(
        self,
        client: CategoryClient,
        candidates: Sequence[str],
        progress: bool = False,
        prompts: PromptSet | None = None,
    ) -> list[NamingOutcome]:
        """Ask an LMM for each kept mask's category among ``candidates`` (see :mod:`pipeline.sam.naming`).

        Each object is shown on the tile it was generated on. Answers in the list rename the object;
        others leave it ``object``; every asked object's tile records carry the answer and its flag
        (``category_source``, ``lmm_category_answer``, ``category_flags`` extras). Returns one outcome
        per object, in instance-id order.
        """
        from .naming import name_objects

        by_tile: dict[Tile, list[AutoMask]] = {}
        for obj in self.objects:
            by_tile.setdefault(obj.tile, []).append(obj)
        outcomes: dict[int, NamingOutcome] = {}
        tiles = [t for t in self.tiles if t in by_tile]
        for tile, rgb, _ in iter_tile_images(self.image_path, tiles, self.bands, self.stretch, self.masked):
            objs = by_tile[tile]
            masks = [_clip_to(o.mask, tile) for o in objs]
            refs = [f"{tile.tile_id}#auto{o.instance_id}" for o in objs]
            answers = name_objects(rgb, masks, candidates, client, refs, progress=progress, prompts=prompts)
            for obj, outcome in zip(objs, answers, strict=True):
                if outcome.category is not None:
                    obj.category = outcome.category
                obj.naming = outcome
                outcomes[obj.instance_id] = outcome
        return [outcomes[o.instance_id] for o in self.objects if o.instance_id in outcomes]

    def close(self) -> None:
        return None


def _clip_to(mask: LocalMask, tile: Tile) -> LocalMask:
    """An image-px mask clipped to ``tile``, in tile px."""
    h, w = mask.array.shape
    x0, y0 = max(mask.x0, tile.x0), max(mask.y0, tile.y0)
    x1, y1 = min(mask.x0 + w, tile.x1), min(mask.y0 + h, tile.y1)
    if x1 <= x0 or y1 <= y0:
        return LocalMask(0, 0, np.zeros((0, 0), dtype=bool))
    return LocalMask(x0 - tile.x0, y0 - tile.y0, mask.array[y0 - mask.y0 : y1 - mask.y0, x0 - mask.x0 : x1 - mask.x0]).tight()
