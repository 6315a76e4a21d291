"""Inference: a trained checkpoint → GLaMM-format GCG predictions that ``geopixel eval`` scores.

Each record is ``{"image_id": tile_id, "caption": generated text (markup kept), "phrases": [...],
"pred_masks": [RLE, ...]}`` with ``phrases[k]`` the ``<p> … </p>`` text right before the k-th ``[SEG]``
(empty when a ``[SEG]`` has no phrase) and ``pred_masks[k]`` its mask (COCO RLE, ``counts`` a string).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline import gcg

from .data import GCGProcessor
from .model.hd import plan_grid, tokens_per_side, visual_token_count
from .train import TrainConfig, build, frozen_fingerprint

seg_phrases = gcg.seg_phrases  # the phrase of every [SEG] of a generated caption ("" when none)


def load_trainable(model: Any, checkpoint: str | Path) -> dict[str, Any]:
    """Copy a training checkpoint's trainable weights into ``model`` (built from the same config and seed)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state["fingerprint"] != frozen_fingerprint(model):
        raise RuntimeError(f"{checkpoint} was written for other frozen weights (paths or seed changed)")
    named = dict(model.trainable_named_parameters())
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(state["trainable"][n])
    return state


def predict_rows(model: Any, processor: GCGProcessor, tokenizer: Any, rows: Iterable[dict[str, Any]],
                 max_new_tokens: int = 512) -> list[dict[str, Any]]:
    """Greedy GCG predictions for release rows (``id``/``tile_id``, ``image``)."""
    model.eval()
    records = []
    for row in rows:
        image = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
        h, w = image.shape[:2]
        rows_, cols = plan_grid(w, h, model.cfg.vision.hd_num)
        n_vis = visual_token_count(rows_, cols, tokens_per_side(model.cfg.vision.crop_size, model.vision.patch_size,
                                                                 model.cfg.vision.merge))
        key = str(row.get("tile_id") or row["id"])
        ids, _, prompt_len = processor.text(str(row["id"]), "", n_vis)
        prompt = ids[:prompt_len]
        res = model.generate(image, prompt, max_new_tokens)
        text = tokenizer.decode(res["token_ids"], skip_special_tokens=False)
        rles = []
        for m in res["masks"]:
            r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rles.append({"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()})
        records.append({"image_id": key, "caption": text, "phrases": seg_phrases(text), "pred_masks": rles})
    return records


def predict_release(cfg: TrainConfig, name: str, version: str, store: str | None, checkpoint: str | Path | None,
                    out: str | Path, split: str = "test", limit: int | None = None, max_new_tokens: int = 512,
                    cache_dir: str | Path | None = None) -> Path:
    """Predict a release split and write the records as JSON to ``out``; returns ``out``."""
    from pipeline.release import load

    dataset = load(name, version, store, cache_dir=cache_dir)[split]
    model, tokenizer = build(cfg)
    if checkpoint:
        load_trainable(model, checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.prepare_for_device(device)
    processor = GCGProcessor(tokenizer, cfg.model, cfg.data, model.vision.patch_size)
    table = dataset.to_table(columns=["id", "tile_id", "image"])
    rows = table.slice(0, limit).to_pylist() if limit else table.to_pylist()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        records = predict_rows(model, processor, tokenizer, rows, max_new_tokens)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


__all__ = ["load_trainable", "predict_release", "predict_rows", "seg_phrases"]
