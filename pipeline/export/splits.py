"""Deterministic train/val/test splits by source image (never tiles of one image in two splits).

* ``image`` (default): each source image goes to a split by a seeded hash of its id, so adding images
  never moves the others.
* ``block``: georeferenced images are grouped by the ``block_size`` × ``block_size`` cell (CRS units,
  e.g. metres) holding their centre, and whole cells go to one split — neighbouring scenes do not leak
  across splits. Images without a CRS fall back to ``image``.
* an explicit list (CSV ``image_id,split`` or JSON ``{image_id: split}``) wins over both for the
  images it names.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_SPLITS = ("train", "val", "test")


def unit_hash(key: str, seed: int) -> float:
    """A stable number in [0, 1) for a key."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(u: float, ratios: Sequence[float], names: Sequence[str]) -> str:
    total = float(sum(ratios))
    acc = 0.0
    for r, name in zip(ratios, names, strict=True):
        acc += r / total
        if u < acc:
            return name
    return names[-1]


def read_split_file(path: str | Path) -> dict[str, str]:
    p = Path(path)
    if p.suffix.lower() == ".json":
        data = json.loads(p.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a JSON object image_id → split")
        return {str(k): str(v) for k, v in data.items()}
    with p.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0][:2] == ["image_id", "split"]:
        rows = rows[1:]
    return {r[0]: r[1] for r in rows if len(r) >= 2}


def assign_splits(
    images: dict[str, dict[str, Any]],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    names: Sequence[str] = DEFAULT_SPLITS,
    seed: int = 0,
    by: str = "image",
    block_size: float | None = None,
    explicit: dict[str, str] | None = None,
) -> dict[str, str]:
    """Split name for every image id.

    Args:
        images: image id → ``{"crs": ..., "center": (x, y) in CRS units or None}``.
        ratios: shares of the splits (normalised), in the order of ``names``.
        by: ``image`` or ``block``.
        block_size: cell side for ``block`` (CRS units).
        explicit: image id → split, applied first.
    """
    if len(ratios) != len(names):
        raise ValueError(f"{len(ratios)} ratios for {len(names)} split names")
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError("split ratios must be non-negative and not all zero")
    if by not in ("image", "block"):
        raise ValueError("split-by must be 'image' or 'block'")
    if by == "block" and not block_size:
        raise ValueError("a block split needs --block-size (in CRS units, e.g. metres)")
    out = {}
    for image_id, meta in sorted(images.items()):
        if explicit and image_id in explicit:
            out[image_id] = explicit[image_id]
            continue
        key = image_id
        center = meta.get("center")
        if by == "block" and meta.get("crs") and center is not None and block_size:
            key = f"{meta['crs']}|{math.floor(center[0] / block_size)}|{math.floor(center[1] / block_size)}"
        out[image_id] = pick(unit_hash(key, seed), ratios, names)
    return out
