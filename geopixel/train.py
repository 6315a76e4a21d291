"""Training loop: a release split → GeoPixel model, with exact resume.

``train(cfg, name, version, store, out)``:

* reads ``pipeline.release.load(name, version, store)[split]`` and processes rows on the fly
  (:mod:`geopixel.data`); batches of ``batch_size`` padded samples, ``grad_accum`` of them per step;
* AdamW over the trainable parameters (LoRA, embeddings, LM head, projector and separators, [SEG] MLP,
  SAM mask decoder), linear warm-up then cosine decay to 0 at ``max_steps`` (or ``epochs`` worth of
  steps), gradient clipping; bf16 autocast and gradient checkpointing on CUDA;
* logs every ``log_every`` steps to the console and appends every step to ``OUT/train_log.csv``
  (``step, epoch, samples, lr, loss, ce, bce, dice, masks, tokens, seconds``); tqdm progress bar;
* checkpoints ``OUT/checkpoints/step_{N:07d}/state.pt`` every ``save_every`` steps and at the end: the
  trainable weights, optimizer, scheduler, Python/NumPy/torch (CPU and CUDA) RNG states, the data position
  ``(epoch, offset)`` and a fingerprint of the frozen weights (a resumed run must rebuild the same frozen
  model: same paths, or the same seed for random weights). ``resume=True`` continues from the newest one:
  the next step's loss equals that of an uninterrupted run (on CPU; cuDNN/atomics may differ on GPU).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .data import DataConfig, GCGProcessor, ReleaseDataset, ResumableSampler, collate
from .model.config import GeoPixelConfig

log = logging.getLogger("geopixel")
LOG_FIELDS = ["step", "epoch", "samples", "lr", "loss", "ce", "bce", "dice", "masks", "tokens", "seconds"]


class OptimConfig(BaseModel):
    """Optimisation settings (GeoPixel: lr 3e-4, warm-up 150, 9 epochs, batch 1 × accumulation 10)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 150
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 1
    grad_accum: int = 10
    max_grad_norm: float | None = 1.0
    num_workers: int = 0
    shuffle: bool = True
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 3
    bf16: bool | None = None  # None: on CUDA only

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("train: give max_steps or epochs")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train: batch_size and grad_accum must be ≥ 1")
        return self


class TrainConfig(BaseModel):
    """The whole YAML file: ``model``, ``data``, ``train``."""

    model_config = ConfigDict(extra="forbid")

    model: GeoPixelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    train: OptimConfig

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


def lr_lambda(warmup: int, total: int) -> Any:
    """Multiplier of the base lr at step ``s``: linear warm-up to 1 over ``warmup`` steps, cosine to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def frozen_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over names, shapes and a few values of every frozen parameter (cheap, order-stable)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        flat = p.detach().reshape(-1)
        picks = flat[:: max(1, flat.numel() // 16)][:16].float().cpu().numpy()
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(np.round(picks, 4).tobytes())
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(out: Path) -> Path | None:
    """The newest ``OUT/checkpoints/step_*/state.pt``, if any."""
    ckpts = sorted((out / "checkpoints").glob("step_*/state.pt"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``step_{N}/state.pt`` atomically (temporary folder, then rename); keep the newest ``keep``."""
    root = out / "checkpoints"
    final = root / f"step_{state['step']:07d}"
    tmp = root / f".tmp_step_{state['step']:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final / "state.pt"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
            else [t.to(device, non_blocking=True) for t in v] if k == "masks" else v for k, v in batch.items()}


def build(cfg: TrainConfig) -> tuple[Any, Any]:
    """``(model, tokenizer)`` with the seed set first, so random weights are reproducible."""
    from .model.geopixel import GeoPixelModel
    from .model.tokenizer import load_tokenizer

    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.llm.tokenizer, cfg.model.llm.path)
    return GeoPixelModel(cfg.model, tokenizer), tokenizer


def train(
    cfg: TrainConfig,
    name: str,
    version: str = "latest",
    store: str | None = None,
    out: str | Path = "runs/geopixel",
    split: str = "train",
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train on ``name==version`` from ``store``; returns a summary (see the module docstring).

    Args:
        stop_after: stop (with a checkpoint) after this global step, as an interruption would; the
            schedule still spans ``max_steps``.
    """
    from pipeline.release import load

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not log.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    splits = load(name, version, store, cache_dir=cache_dir)
    if split not in splits:
        raise KeyError(f"release {name}=={version} has no split {split!r} (has {sorted(splits)})")
    t = cfg.train
    model, tokenizer = build(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = t.bf16 if t.bf16 is not None else device.type == "cuda"
    model.prepare_for_device(device, cast_frozen=use_bf16)
    processor = GCGProcessor(tokenizer, cfg.model, cfg.data, model.vision.patch_size)
    dataset = ReleaseDataset(splits[split], processor)
    per_step = t.batch_size * t.grad_accum
    max_steps = t.max_steps or max(1, math.ceil(float(t.epochs or 1) * len(dataset) / per_step))
    params = [p for _, p in model.trainable_named_parameters()]
    # fused: one kernel for all parameters on CUDA (same update, same state dict as the default)
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.warmup_steps, max_steps))
    counts = model.parameter_counts()
    log.info("parameters: %s total, %s trainable; %d samples, %d steps of %d samples",
             f"{counts['total']:,}", f"{counts['trainable']:,}", len(dataset), max_steps, per_step)

    step, samples, fingerprint = 0, 0, frozen_fingerprint(model)
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["fingerprint"] != fingerprint:
            raise RuntimeError(f"{ckpt} was written for other frozen weights (paths or seed changed)")
        named = dict(model.trainable_named_parameters())
        missing = set(named) ^ set(state["trainable"])
        if missing:
            raise RuntimeError(f"{ckpt}: trainable parameters differ from the model's: {sorted(missing)[:5]}")
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(state["trainable"][n])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, samples = state["step"], state["samples"]
        set_rng_state(state["rng"])
        log.info("resumed from %s (step %d, %d samples seen)", ckpt, step, samples)
    epoch, offset = divmod(samples, len(dataset))
    sampler = ResumableSampler(len(dataset), t.seed, epoch, offset, t.shuffle)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=t.batch_size, sampler=sampler, num_workers=t.num_workers,
        collate_fn=functools.partial(collate, pad_id=model.pad_token_id), pin_memory=device.type == "cuda",
        # its own generator: creating the iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(t.seed),
    )
    batches = iter(loader)
    log_path = out / "train_log.csv"
    new_log = not log_path.exists()
    history: list[dict[str, Any]] = []
    end = min(max_steps, stop_after) if stop_after is not None else max_steps
    model.train()
    bar = _progress(progress, total=max_steps, initial=step)
    with open(log_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        if new_log:
            writer.writeheader()
        while step < end:
            started = time.perf_counter()
            parts = {"loss": 0.0, "ce": 0.0, "bce": 0.0, "dice": 0.0, "masks": 0, "tokens": 0}
            for _ in range(t.grad_accum):
                batch = to_device(next(batches), device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    res = model(batch)
                (res.loss / t.grad_accum).backward()
                samples += len(batch["ids"])
                for k in ("loss", "ce", "bce", "dice"):
                    parts[k] += float(getattr(res, k).detach()) / t.grad_accum
                parts["masks"] += res.n_masks
                parts["tokens"] += res.n_tokens
            if t.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            row = {"step": step, "epoch": samples / len(dataset), "samples": samples, "lr": lr, **parts,
                   "seconds": time.perf_counter() - started}
            writer.writerow(row)
            fh.flush()
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.4f}", ce=f"{parts['ce']:.3f}", bce=f"{parts['bce']:.3f}",
                            dice=f"{parts['dice']:.3f}")
            if step % t.log_every == 0 or step == end:
                bar.write(f"step {step}/{max_steps} loss {parts['loss']:.4f} ce {parts['ce']:.4f} "
                          f"bce {parts['bce']:.4f} dice {parts['dice']:.4f} lr {lr:.2e} masks {parts['masks']}")
            if step % t.save_every == 0 or step == end:
                save_checkpoint(out, {
                    "step": step, "samples": samples, "fingerprint": fingerprint,
                    "trainable": {n: p.detach().cpu().clone() for n, p in model.trainable_named_parameters()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "config": cfg.model_dump(mode="json"),
                }, t.keep_checkpoints)
    bar.close()
    return {"steps": step, "max_steps": max_steps, "samples": samples, "device": str(device),
            "checkpoint": str(latest_checkpoint(out)), "log": str(log_path), "history": history}


def _progress(enabled: bool, total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", dynamic_ncols=True)


__all__ = ["OptimConfig", "TrainConfig", "build", "frozen_fingerprint", "latest_checkpoint", "lr_lambda", "train"]
