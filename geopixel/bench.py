"""Benchmark one training step of the GeoPixel-scale model on a CUDA GPU (random weights).

``python -m geopixel.bench`` or ``geopixel bench``: builds ``geopixel/configs/geopixel_7b.yaml`` with random
weights on the GPU (frozen weights bf16, trainable float32, bf16 autocast, gradient checkpointing), makes
one synthetic sample of ``tokens`` tokens (an 800 × 800 image → 4,081 visual tokens, the rest text with
32 ``[SEG]`` and their 800 × 800 masks), and times ``steps`` optimizer steps after 2 warm-up steps.

Reported:

* step time (median) and tokens/s;
* **model TFLOP/s**: forward FLOPs counted with ``torch.utils.flop_counter`` (matmuls, convolutions,
  attention), × 3 for everything on the gradient path (LM, projector, [SEG] MLP, mask decoder: the usual
  "forward + 2 × forward for backward" convention) and × 1 for the frozen encoders run without gradients
  (CLIP tower, SAM image encoder); divided by the step time. Recomputation by gradient checkpointing is
  not counted (it is in *executed* TFLOP/s, counted over a whole training step);
* peak GPU memory.

Without CUDA it prints ``no CUDA: skipped`` (pass ``device="cpu"`` to :func:`run_bench` to exercise it
on a small config).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import collate
from .model.hd import hd_views, sam_view, tokens_per_side, visual_token_count
from .train import TrainConfig, build, to_device

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "geopixel_7b.yaml"
FROZEN_MODULES = ("GeoPixelModel.vision.encoder", "GeoPixelModel.sam.image_encoder")


def synthetic_batch(model: Any, tokens: int, n_seg: int = 32, image_size: int = 800, seed: int = 0) -> dict[str, Any]:
    """A collated one-sample batch of exactly ``tokens`` tokens with ``n_seg`` ``[SEG]`` and masks."""
    from .data import Example

    rng = np.random.default_rng(seed)
    cfg = model.cfg
    image = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
    crops, grid = hd_views(image, cfg.vision.crop_size, cfg.vision.hd_num)
    n_vis = visual_token_count(*grid, tokens_per_side(cfg.vision.crop_size, model.vision.patch_size, cfg.vision.merge))
    n_text = tokens - 1 - n_vis
    if n_text < 2 * n_seg + 2:
        raise ValueError(f"{tokens} tokens leave {n_text} for text after {n_vis} visual tokens")
    text = rng.integers(0, 250, size=n_text).tolist()  # plain byte ids, valid for every vocabulary
    for k in range(n_seg):
        text[(k + 1) * n_text // (n_seg + 1)] = model.seg_token_id
    ids = [model.pad_token_id] + [model.image_token_id] * n_vis + text
    labels = [-100] * (1 + n_vis) + text
    masks = np.zeros((n_seg, image_size, image_size), dtype=bool)
    side = max(1, image_size // 12)
    for k in range(n_seg):
        y, x = rng.integers(0, image_size - side + 1, size=2)
        masks[k, y : y + side, x : x + side] = True
    sam_img, sam_size = sam_view(image, cfg.sam.img_size)
    ex = Example("bench", ids, labels, crops, grid, sam_img, sam_size, (image_size, image_size), masks)
    return collate([ex], model.pad_token_id)


def forward_flops(model: Any, batch: dict[str, Any]) -> tuple[float, float]:
    """``(frozen-encoder FLOPs, other FLOPs)`` of one forward pass without gradients."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(batch)
    counts = {k: float(sum(v.values())) for k, v in fc.get_flop_counts().items()}
    frozen = sum(counts.get(m, 0.0) for m in FROZEN_MODULES)
    return frozen, counts.get("Global", 0.0) - frozen


def run_bench(config: str | Path | None = None, tokens: int = 8192, steps: int = 5, device: str | None = None,
              warmup: int = 2, n_seg: int = 32, image_size: int = 800) -> str:
    """Build, warm up, time; returns the report text (module docstring)."""
    if device is None:
        if not torch.cuda.is_available():
            return "no CUDA: skipped"
        device = "cuda"
    dev = torch.device(device)
    cfg = TrainConfig.from_yaml(config or DEFAULT_CONFIG)
    with torch.device(dev):
        model, _ = build(cfg)
    model.prepare_for_device(dev)
    model.train()
    batch = to_device(synthetic_batch(model, tokens, n_seg, image_size), dev)
    params = [p for _, p in model.trainable_named_parameters()]
    opt = torch.optim.AdamW(params, lr=1e-5)
    bf16 = dev.type == "cuda"

    def step() -> float:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        frozen, rest = forward_flops(model, batch)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        model(batch).loss.backward()
    opt.zero_grad(set_to_none=True)
    executed = float(sum(fc.get_flop_counts()["Global"].values()))
    t = statistics.median(times)
    model_flops = frozen + 3 * rest
    counts = model.parameter_counts()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return "\n".join([
        f"device {name}; config {Path(config or DEFAULT_CONFIG).name}; random weights",
        f"parameters {counts['total'] / 1e9:.2f} B total, {counts['trainable'] / 1e6:.1f} M trainable",
        f"tokens/step {tokens} (1 sample, {n_seg} [SEG] masks at {image_size}²); steps {steps} after {warmup} warm-up",
        f"step time median {t * 1e3:.1f} ms (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}); "
        f"{tokens / t:,.0f} tokens/s",
        f"model FLOPs/step {model_flops / 1e12:.2f} T (frozen encoders {frozen / 1e12:.2f} T fwd, rest {rest / 1e12:.2f} T "
        f"fwd × 3) → model TFLOP/s {model_flops / t / 1e12:.1f}",
        f"executed FLOPs/step {executed / 1e12:.2f} T (incl. recomputation) → executed TFLOP/s {executed / t / 1e12:.1f}",
        f"peak memory {peak:.1f} GiB",
    ])


def main() -> None:
    """``python -m geopixel.bench``."""
    print(run_bench())


if __name__ == "__main__":
    main()
