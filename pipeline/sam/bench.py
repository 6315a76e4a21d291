"""SAM box-prompt throughput: our batched path vs segment-anything's stock ``SamPredictor``.

Both paths get the same tiles and the same boxes and must hand masks back to the host:

* ``ours``: :class:`pipeline.sam.masker.SamMasker` — ``batch_size`` tiles per image-encoder call, the
  encoder's attention fused (SDPA with the relative-position bias as mask), all of a tile's boxes in one
  decoder call, bf16 autocast on CUDA, masks cropped to their extent before they are kept.
* ``stock``: ``SamPredictor`` — one tile at a time in fp32: ``set_image`` then ``predict_torch`` with all
  of the tile's boxes (the stock path at its best; per-box ``predict`` calls would be slower still).

Weights are random (built from the registry, nothing loaded or downloaded): throughput does not depend
on the weights' values. Each path gets its own copy of the same weights (ours switches its copy's
attention modules). The table gives tiles/s of each path end to end and the ratio ours / stock, our
image encoder alone in images/s, and the mean IoU between the two paths' masks (bf16 vs fp32 on the same
random weights; a sanity check, not quality).

Run: ``python -m pipeline.sam.bench [--models vit_b,vit_h] [--tiles 32] [--boxes 50]``. Without a CUDA
device it prints ``no CUDA device: skipped`` and runs a tiny CPU smoke version of both paths
(``vit_tiny_test``), so the code path is exercised everywhere; ``--smoke`` forces that version.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SamUnavailableError, require_sam


def make_tiles(n: int, size: int, boxes_per_tile: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` synthetic ``size × size`` RGB uint8 tiles (smooth noise with bright rectangles) and per tile a
    ``boxes_per_tile × 4`` array of boxes (x0, y0, x1, y1 px, 8–15 % of the side), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    tiles, boxes = [], []
    for _ in range(n):
        coarse = rng.integers(0, 255, size=(size // 32 + 1, size // 32 + 1, 3)).astype(np.float32)
        img = np.kron(coarse, np.ones((32, 32, 1), dtype=np.float32))[:size, :size]
        b = []
        for _ in range(boxes_per_tile):
            w, h = rng.uniform(0.08, 0.15, size=2) * size
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            img[int(y0) : int(y0 + h), int(x0) : int(x0 + w)] = rng.integers(150, 255, size=3)
            b.append([x0, y0, x0 + w, y0 + h])
        tiles.append(np.clip(img, 0, 255).astype(np.uint8))
        boxes.append(np.asarray(b, dtype=np.float64))
    return tiles, boxes


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(masker: Any, tiles: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> tuple[float, list[Any]]:
    """Seconds for ``masker.predict_boxes`` over all tiles, and its masks (per tile, full-size bool arrays)."""
    _sync(masker.device)
    start = time.perf_counter()
    preds = masker.predict_boxes(list(tiles), list(boxes))
    _sync(masker.device)
    seconds = time.perf_counter() - start
    h, w = tiles[0].shape[:2]
    return seconds, [[p.mask.to_full(h, w) for p in tile] for tile in preds]


def run_encoder(masker: Any, tiles: Sequence[np.ndarray]) -> float:
    """Seconds for our image encoder alone over ``tiles`` (preprocessing included, embeddings kept on the device)."""
    _sync(masker.device)
    start = time.perf_counter()
    masker.encode(list(tiles))
    _sync(masker.device)
    return time.perf_counter() - start


def run_stock(model: Any, tiles: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> tuple[float, list[Any]]:
    """Seconds for ``SamPredictor`` (fp32, one tile at a time, all boxes per call), and its masks."""
    import torch
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    device = model.device
    out = []
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for tile, b in zip(tiles, boxes, strict=True):
            predictor.set_image(tile)
            box_t = predictor.transform.apply_boxes_torch(torch.as_tensor(b, device=device), tile.shape[:2])
            masks, _, _ = predictor.predict_torch(None, None, boxes=box_t, multimask_output=False)
            out.append(masks[:, 0].cpu().numpy())
    _sync(device)
    return time.perf_counter() - start, [list(m) for m in out]


def mean_iou(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> float:
    """Mean IoU of corresponding masks (pairs where both are empty count as 1)."""
    ious = []
    for ta, tb in zip(a, b, strict=True):
        for ma, mb in zip(ta, tb, strict=True):
            union = np.count_nonzero(ma | mb)
            ious.append(np.count_nonzero(ma & mb) / union if union else 1.0)
    return float(np.mean(ious)) if ious else float("nan")


def bench_model(
    model_type: str, device: str, n_tiles: int, boxes_per_tile: int, tile_size: int, batch_size: int
) -> dict[str, Any]:
    """Both paths on one random-weight model; one warm-up tile each before timing."""
    import torch

    from .config import SamConfig
    from .masker import SamMasker
    from .model import SAM_SPECS, SamModelInfo, build_sam

    torch.manual_seed(0)
    model = build_sam(SAM_SPECS[model_type]).to(device).eval()
    stock_model = copy.deepcopy(model)  # the stock path keeps segment-anything's own attention
    info = SamModelInfo(model_type, "0" * 64, "random-weights", str(device), SAM_SPECS[model_type].image_size)
    config = SamConfig(checkpoint=Path("random-weights"), model_type=model_type, device=device, batch_size=batch_size)
    masker = SamMasker(model, info, config)
    tiles, boxes = make_tiles(n_tiles, tile_size, boxes_per_tile)
    run_ours(masker, tiles[:1], boxes[:1])
    run_stock(stock_model, tiles[:1], boxes[:1])
    t_ours, m_ours = run_ours(masker, tiles, boxes)
    t_stock, m_stock = run_stock(stock_model, tiles, boxes)
    t_encoder = run_encoder(masker, tiles)
    result = {
        "model": model_type,
        "device": torch.cuda.get_device_name(0) if str(device).startswith("cuda") else "cpu",
        "tiles": n_tiles,
        "boxes_per_tile": boxes_per_tile,
        "tile_px": tile_size,
        "batch_size": batch_size,
        "ours_s": t_ours,
        "stock_s": t_stock,
        "ours_tiles_per_s": n_tiles / t_ours,
        "stock_tiles_per_s": n_tiles / t_stock,
        "ratio": t_stock / t_ours,
        "encoder_images_per_s": n_tiles / t_encoder,
        "mask_agreement_iou": mean_iou(m_ours, m_stock),
    }
    del model, stock_model, masker
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a fixed-width table."""
    head = (
        f"{'model':14s} {'device':28s} {'tiles':>5s} {'boxes':>5s} {'ours t/s':>9s} {'stock t/s':>9s} {'ratio':>7s} "
        f"{'enc img/s':>9s} {'mask IoU':>8s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:14s} {r['device'][:28]:28s} {r['tiles']:5d} {r['boxes_per_tile']:5d} "
            f"{r['ours_tiles_per_s']:9.2f} {r['stock_tiles_per_s']:9.2f} {r['ratio']:6.2f}x "
            f"{r.get('encoder_images_per_s', float('nan')):9.2f} {r['mask_agreement_iou']:8.3f}"
        )
    return "\n".join(lines)


def run_bench(
    models: Sequence[str] = ("vit_b", "vit_h"),
    n_tiles: int = 32,
    boxes_per_tile: int = 50,
    tile_size: int = 800,
    batch_size: int = 8,
    smoke: bool = False,
) -> dict[str, Any]:
    """Run the benchmark and print its table; returns ``{"status": ..., "rows": [...]}``."""
    try:
        require_sam()
    except SamUnavailableError as exc:
        print(f"SAM benchmark skipped: {exc}")
        return {"status": "skipped: torch/segment-anything not installed"}
    import torch

    rows = []
    if torch.cuda.is_available() and not smoke:
        for model_type in models:
            rows.append(bench_model(model_type, "cuda", n_tiles, boxes_per_tile, tile_size, batch_size))
        status = "cuda"
        print("SAM box prompts, random weights: ours (batched, bf16) vs stock SamPredictor (fp32, one tile at a time)")
    else:
        if not smoke:
            print("no CUDA device: skipped")
        print("CPU smoke run (vit_tiny_test, random weights): exercises both paths, not a benchmark")
        rows.append(bench_model("vit_tiny_test", "cpu", 2, 8, 256, 2))
        status = "cpu smoke"
    print(table(rows))
    return {"status": status, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_b,vit_h", help="comma-separated registry names")
    parser.add_argument("--tiles", type=int, default=32, help="tiles per path")
    parser.add_argument("--boxes", type=int, default=50, help="boxes per tile")
    parser.add_argument("--tile-size", type=int, default=800, help="tile side in px")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per encoder call (ours)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU version even when CUDA is available")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    run_bench(models, args.tiles, args.boxes, args.tile_size, args.batch_size, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
