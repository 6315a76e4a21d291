"""A tiny synthetic GCG dataset in the exporter's layout (rows, EXPORT folder) for the geopixel tests."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.export.formats import write_coco
from pipeline.export.hf import dataset_card, write_shards

SIZE = 64
COLOURS = {"red": (220, 40, 40), "yellow": (230, 220, 40), "blue": (40, 80, 230)}


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def tiny_rows(n: int = 6, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
    """``n`` exporter-style rows: 64×64 tiles with 0–2 coloured squares, one ``[SEG]`` per square.

    Sample 0 has no object (a caption without ``[SEG]``); squares are 12–20 px at random places.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = rng.integers(20, 60, size=(SIZE, SIZE, 3), dtype=np.uint8)
        phrases, masks, parts = [], [], []
        n_obj = 0 if i == 0 else 1 + i % 2
        names = list(COLOURS)
        for k in range(n_obj):
            colour = names[(i + k) % len(names)]
            s = int(rng.integers(12, 21))
            y, x = int(rng.integers(0, SIZE - s)), int(rng.integers(0, SIZE - s))
            m = np.zeros((SIZE, SIZE), dtype=bool)
            m[y : y + s, x : x + s] = True
            img[m] = COLOURS[colour]
            text = f"{colour} square-{k + 1}"
            phrases.append({"text": text, "start": 0, "end": len(text), "instance_ids": [100 * i + k],
                            "category": f"{colour} square", "kind": "instance"})
            masks.append(_rle(m))
            parts.append(f"a <p> {text} </p> [SEG]")
        gcg = ("The tile shows " + " and ".join(parts) + ".") if parts else "The tile shows bare ground only."
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        tile = f"S{i:03d}_0_64_0_64"
        rows.append({
            "id": tile, "tile_id": tile, "image": {"bytes": buf.getvalue(), "path": f"{tile}.png"},
            "width": SIZE, "height": SIZE,
            "caption": gcg.replace("<p> ", "").replace(" </p> [SEG]", ""), "gcg_caption": gcg,
            "phrases": phrases, "masks": masks, "categories": [p["category"] for p in phrases],
            "crs": None, "transform": None, "gsd": None, "source_image": f"S{i:03d}", "image_id": f"S{i:03d}",
            "split": split, "review_status": "unreviewed", "reviewer": None, "decided_at": None, "flags": [],
            "max_severity": None, "lmm_model": "synthetic", "prompt_version": "tiny-v1",
        })
    return rows


def write_tiny_export(root: Path, n: int = 6, seed: int = 0) -> Path:
    """An EXPORT folder (Parquet shards, COCO ground truth, card, export.json) of :func:`tiny_rows`."""
    rows = tiny_rows(n, seed)
    write_shards(rows, "train", root / "data", 1 << 30)
    write_coco(rows, "train", root / "coco")
    (root / "README.md").write_text(dataset_card("tiny-gcg", {"train": n}, {}))
    (root / "export.json").write_text(json.dumps({"name": "tiny-gcg", "splits": {"train": n},
                                                  "lmm_models": ["synthetic"], "prompt_versions": ["tiny-v1"]}))
    return root
