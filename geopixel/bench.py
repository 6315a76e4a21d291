"""Benchmark one training step of the GeoPixel-scale model on a CUDA GPU (random weights).

``python -m geopixel.bench`` or ``geopixel bench``: builds ``geopixel/configs/geopixel_7b.yaml`` with random
weights on the GPU (frozen weights bf16, trainable float32, bf16 autocast, fused AdamW, SDPA attention
everywhere), makes one synthetic sample of ``tokens`` tokens (an 800 × 800 image → 4,081 visual tokens,
the rest text with 32 ``[SEG]`` and their 800 × 800 masks), and times ``steps`` optimizer steps after 2
warm-up steps, once with gradient checkpointing of the LM's layers and once without (a setting that
does not fit in memory is reported as such).

Reported:

* step time (median) and tokens/s per setting;
* **model TFLOP/s**: the FLOPs one step needs — counted with ``torch.utils.flop_counter`` (matmuls,
  convolutions, attention) over the forward and backward of a step *without* recomputation; the frozen
  layers' weights get no gradient, so their backward is the input gradient only — divided by the step
  time. The same number of FLOPs is used for both settings, so checkpointing's recomputation counts as
  overhead, never as work. It is given as a share of the reference H200 peak (775 bf16 TFLOP/s, from the
  issue) and of the bf16 matmul rate measured on this device in the same run;
* *executed* TFLOP/s (everything run, recomputation included) and peak GPU memory.

Without CUDA it prints ``no CUDA: skipped`` (pass ``device="cpu"`` to :func:`run_bench` to exercise it
on a small config).
"""

from __future__ import annotations

import re
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


#: The H200's dense bf16 matmul rate measured in the issue's reference run (TFLOP/s).
REFERENCE_PEAK_TFLOPS = 775.0
LLM_LAYER = re.compile(r"\.llm\..*\.layers\.\d+$")  # the LM's decoder layers: what checkpointing recomputes


def measure_matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """This device's bf16 matmul rate in TFLOP/s (``n³`` products, best of ``reps`` after warm-up)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def _count(fn: Any) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return {k: float(sum(v.values())) for k, v in fc.get_flop_counts().items()}


def run_bench(config: str | Path | None = None, tokens: int = 8192, steps: int = 5, device: str | None = None,
              warmup: int = 2, n_seg: int = 32, image_size: int = 800,
              checkpointing: tuple[bool, ...] = (True, False)) -> str:
    """Build, warm up, time each checkpointing setting; returns the report text (module docstring)."""
    if device is None:
        if not torch.cuda.is_available():
            return "no CUDA: skipped"
        device = "cuda"
    return report(measure(config, tokens, steps, device, warmup, n_seg, image_size, checkpointing))


def measure(config: str | Path | None, tokens: int, steps: int, device: str, warmup: int, n_seg: int,
            image_size: int, checkpointing: tuple[bool, ...]) -> dict[str, Any]:
    """The measurements behind :func:`report`: per setting its step times, executed FLOPs and memory."""
    dev = torch.device(device)
    cfg = TrainConfig.from_yaml(config or DEFAULT_CONFIG)
    with torch.device(dev):
        model, _ = build(cfg)
    model.prepare_for_device(dev)
    model.train()
    batch = to_device(synthetic_batch(model, tokens, n_seg, image_size), dev)
    params = [p for _, p in model.trainable_named_parameters()]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=dev.type == "cuda")
    bf16 = dev.type == "cuda"

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> float:
        with autocast():
            out = model(batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    def train_pass() -> None:
        with autocast():
            model(batch).loss.backward()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad(), autocast():
        fwd = _count(lambda: model(batch))
    frozen = sum(fwd.get(m, 0.0) for m in FROZEN_MODULES)
    recompute = sum(v for k, v in fwd.items() if LLM_LAYER.search(k))
    rows: list[dict[str, Any]] = []
    for ckpt in checkpointing:
        model.set_checkpointing(ckpt)
        row: dict[str, Any] = {"checkpointing": ckpt}
        try:
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
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
            row["times"] = times
            row["executed"] = _count(train_pass)["Global"]
        except torch.OutOfMemoryError as exc:
            row["error"] = f"out of memory ({str(exc).splitlines()[0][:120]})"
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    # The work a step needs: everything counted in a step without recomputation. With checkpointing only,
    # that is the executed count minus one forward pass of the LM's layers (what checkpointing repeats).
    plain = [r for r in rows if not r["checkpointing"] and "executed" in r]
    if plain:
        required, how = plain[0]["executed"], "counted in a step without checkpointing"
    else:
        done = [r for r in rows if "executed" in r]
        required = done[0]["executed"] - recompute if done else float("nan")
        how = "executed count minus the recomputed LM forward"
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "config": Path(config or DEFAULT_CONFIG).name, "counts": model.parameter_counts(), "tokens": tokens,
        "n_seg": n_seg, "image_size": image_size, "steps": steps, "warmup": warmup, "rows": rows,
        "required": required, "how": how, "frozen": frozen, "recompute": recompute,
        "peak": measure_matmul_peak(dev) if dev.type == "cuda" else float("nan"),
    }  # fmt: skip


def report(m: dict[str, Any]) -> str:
    """The benchmark's text: settings, FLOP accounting, one line per checkpointing setting."""
    name, counts, tokens, required, peak, rows = m["device"], m["counts"], m["tokens"], m["required"], m["peak"], m["rows"]
    n_seg, image_size, steps, warmup, how, frozen = m["n_seg"], m["image_size"], m["steps"], m["warmup"], m["how"], m["frozen"]
    lines = [
        f"device {name}; config {m['config']}; random weights",
        f"parameters {counts['total'] / 1e9:.2f} B total, {counts['trainable'] / 1e6:.1f} M trainable",
        f"tokens/step {tokens} (1 sample, {n_seg} [SEG] masks at {image_size}²); steps {steps} after {warmup} warm-up",
        f"model FLOPs/step {required / 1e12:.2f} T ({how}; frozen encoders' forward {frozen / 1e12:.2f} T, "
        f"weights of frozen layers get no gradient)",
        f"bf16 matmul peak measured now {peak:.0f} TFLOP/s; reference peak {REFERENCE_PEAK_TFLOPS:.0f} TFLOP/s",
    ]
    for r in rows:
        label = "checkpointing on " if r["checkpointing"] else "checkpointing off"
        if "error" in r:
            lines.append(f"{label}: {r['error']}")
            continue
        t = statistics.median(r["times"])
        model_tflops = required / t / 1e12
        lines.append(
            f"{label}: step time median {t * 1e3:.1f} ms (min {min(r['times']) * 1e3:.1f}, max "
            f"{max(r['times']) * 1e3:.1f}); {tokens / t:,.0f} tokens/s; model TFLOP/s {model_tflops:.1f} "
            f"= {model_tflops / REFERENCE_PEAK_TFLOPS:.1%} of {REFERENCE_PEAK_TFLOPS:.0f}"
            + (f", {model_tflops / peak:.1%} of the measured peak" if peak == peak else "")
            + f"; executed {r['executed'] / 1e12:.2f} T → {r['executed'] / t / 1e12:.1f} TFLOP/s; "
            f"peak memory {r['peak_gib']:.1f} GiB"
        )
    return "\n".join(lines)


def main() -> None:
    """``python -m geopixel.bench``."""
    print(run_bench())


if __name__ == "__main__":
    main()
