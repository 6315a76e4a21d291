"""The GeoPixel-style model: vision tower + projector + causal LM (LoRA) + [SEG] MLP + SAM mask decoder.

Forward pass (training, teacher forcing) on a batch from :func:`geopixel.data.collate`:

1. crops → :class:`~geopixel.model.vision.VisionTower` → one visual token sequence per image, written over
   the ``<image>`` placeholders of ``input_ids`` (same count by construction);
2. the LM runs on the embeddings; text loss = cross-entropy of next-token prediction where labels ≠ −100;
3. for every ``[SEG]`` token, the LM's last hidden state at the position that *predicts* it (the token
   before; the LISA/GLaMM/GeoPixel convention, which is the state available when ``[SEG]`` is generated)
   → MLP (``D → D → prompt_dim``) → one sparse prompt embedding for SAM's mask decoder, over the frozen SAM
   image encoder's embedding of the image;
4. mask logits are resized to the image's original size; loss = BCE (mean per pixel, mean over masks) and
   Dice (mean over masks). Total = ``ce·CE + bce·BCE + dice·Dice``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import GeoPixelConfig
from .hd import hd_views, sam_view
from .losses import mask_bce, mask_dice
from .sam import build_sam, postprocess_masks
from .tokenizer import IMAGE_TOKEN, SEG_TOKEN
from .vision import VisionTower

log = logging.getLogger("geopixel")


def build_llm(cfg: Any, vocab_needed: int) -> Any:
    """Causal LM from a local folder or, with random weights, from ``cfg.config``; embeddings resized."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model: Any

    if cfg.path:
        if not Path(cfg.path).is_dir():
            raise FileNotFoundError(f"LM folder {cfg.path} does not exist (nothing is downloaded)")
        model = AutoModelForCausalLM.from_pretrained(cfg.path, local_files_only=True)
    else:
        kwargs = dict(cfg.config)
        hf_cfg = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
        hf_cfg.vocab_size = max(int(getattr(hf_cfg, "vocab_size", 0) or 0), vocab_needed)
        log.warning("RANDOM INIT: language model %s built from its config with random weights", type(hf_cfg).__name__)
        model = AutoModelForCausalLM.from_config(hf_cfg)
    if int(model.get_input_embeddings().weight.shape[0]) < vocab_needed:
        model.resize_token_embeddings(vocab_needed)
    return model


@dataclass
class GeoPixelOutput:
    """Losses (scalars) and counts of one forward pass."""

    loss: torch.Tensor
    ce: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor
    n_masks: int
    n_tokens: int


class GeoPixelModel(nn.Module):
    """See the module docstring.

    Args:
        cfg: model configuration.
        tokenizer: a tokenizer with ``[SEG]``, ``<p>``, ``</p>``, ``<image>`` added
            (:func:`~geopixel.model.tokenizer.load_tokenizer`).
    """

    def __init__(self, cfg: GeoPixelConfig, tokenizer: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.seg_token_id = int(tokenizer.convert_tokens_to_ids(SEG_TOKEN))
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.eos_token_id = tokenizer.eos_token_id
        llm = build_llm(cfg.llm, len(tokenizer))
        hidden = int(llm.config.hidden_size)
        self.vision = VisionTower(cfg.vision, hidden, cfg.projector_hidden)
        self.sam: Any = build_sam(cfg.sam)
        self.sam.image_encoder.requires_grad_(False)
        self.sam.prompt_encoder.requires_grad_(cfg.sam.train_prompt_encoder)
        mid = cfg.seg_mlp_hidden or hidden
        self.seg_mlp = nn.Sequential(nn.Linear(hidden, mid), nn.ReLU(inplace=True),
                                     nn.Linear(mid, cfg.sam.prompt_embed_dim))
        if cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            targets = "all-linear" if cfg.lora.target_modules == "auto" else list(cfg.lora.target_modules)
            lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=targets, bias="none", task_type="CAUSAL_LM")
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                llm = get_peft_model(llm, lora)
        # Trainable besides LoRA: token embeddings and LM head (new special tokens), as GeoPixel.
        llm.get_input_embeddings().weight.requires_grad_(True)
        llm.get_output_embeddings().weight.requires_grad_(True)
        self.llm: Any = llm

    # ------------------------------------------------------------------------------------------- set-up

    def prepare_for_device(self, device: torch.device, cast_frozen: bool | None = None) -> None:
        """Move to ``device``; cast frozen weights to ``llm.dtype`` (bf16) when ``cast_frozen`` (default: on
        CUDA; the forward pass must then run under autocast) and enable gradient checkpointing per config
        (``auto``: on CUDA only). Trainable parameters stay float32."""
        self.to(device)
        if cast_frozen if cast_frozen is not None else device.type == "cuda":
            dtype = getattr(torch, self.cfg.llm.dtype)
            for p in self.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(dtype)
        gc = self.cfg.gradient_checkpointing
        if gc == "on" or (gc == "auto" and device.type == "cuda"):
            self.set_checkpointing(True)

    def set_checkpointing(self, on: bool) -> None:
        """Activation (gradient) checkpointing of the LM's layers on or off; non-reentrant."""
        llm = self.llm
        kwargs = {"use_reentrant": False}
        if hasattr(llm, "activation_checkpointing_enable"):  # transformers ≥ 5 name; the old one warns
            if on:
                llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                llm.activation_checkpointing_disable()
        elif on:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            llm.gradient_checkpointing_disable()
        llm.config.use_cache = False

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of everything the optimiser updates, in a fixed order."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts."""
        return {"total": sum(p.numel() for p in self.parameters()),
                "trainable": sum(p.numel() for _, p in self.trainable_named_parameters())}

    # ------------------------------------------------------------------------------------------- pieces

    def embed(self, input_ids: torch.Tensor, crops: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """``(B, L, D)`` input embeddings with the visual tokens written over the ``<image>`` placeholders."""
        visual = torch.cat(self.vision(crops, grids), dim=0)
        placeholders = input_ids == self.image_token_id
        if int(placeholders.sum()) != visual.shape[0]:
            raise ValueError(f"{int(placeholders.sum())} <image> placeholders for {visual.shape[0]} visual tokens")
        emb = self.llm.get_input_embeddings()(input_ids.masked_fill(placeholders, self.pad_token_id))
        return emb.masked_scatter(placeholders.unsqueeze(-1), visual.to(emb.dtype))

    def sam_embeddings(self, sam_images: torch.Tensor, sam_sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Frozen SAM image embeddings ``(B, C, S/16, S/16)`` of ``(B, 3, S, S)`` uint8 padded images."""
        enc = self.sam.image_encoder
        x = (sam_images.float() - self.sam.pixel_mean) / self.sam.pixel_std
        for i, (h, w) in enumerate(sam_sizes):  # SAM pads after normalising: padding is 0
            x[i, :, h:, :] = 0
            x[i, :, :, w:] = 0
        with torch.no_grad():
            return enc(x.to(next(enc.parameters()).dtype))

    def decode_masks(self, prompts: torch.Tensor, image_embedding: torch.Tensor, sam_size: tuple[int, int],
                     image_size: tuple[int, int]) -> torch.Tensor:
        """Mask logits ``(N, H, W)`` for ``(N, prompt_dim)`` prompts on one image's ``(1, C, h, w)`` embedding."""
        dec = self.sam.mask_decoder
        dtype = next(dec.parameters()).dtype
        pe = self.sam.prompt_encoder
        h, w = image_embedding.shape[-2:]
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w).to(dtype)
        low, _ = dec(image_embeddings=image_embedding.to(dtype), image_pe=pe.get_dense_pe().to(dtype),
                     sparse_prompt_embeddings=prompts.to(dtype)[:, None, :], dense_prompt_embeddings=dense,
                     multimask_output=False)
        return postprocess_masks(low, self.cfg.sam.img_size, sam_size, image_size)

    # ------------------------------------------------------------------------------------------- forward

    def forward(self, batch: dict[str, Any]) -> GeoPixelOutput:
        """Losses of a collated batch (tensors already on the model's device)."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        emb = self.embed(input_ids, batch["crops"], batch["grids"])
        out = self.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"], output_hidden_states=True,
                       use_cache=False)
        logits = out.logits[:, :-1].float()
        targets = labels[:, 1:]
        n_tokens = int((targets != -100).sum())
        ce = (F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
              if n_tokens else logits.sum() * 0.0)

        seg = input_ids == self.seg_token_id
        before = torch.zeros_like(seg)
        before[:, :-1] = seg[:, 1:]
        counts = seg.sum(1).tolist()
        prompts = self.seg_mlp(out.hidden_states[-1][before].float())
        bce = dice = prompts.sum() * 0.0  # keeps the graph connected when the batch has no [SEG]
        n_masks = int(sum(counts))
        if n_masks:
            image_emb = self.sam_embeddings(batch["sam_images"], batch["sam_sizes"])
            at = 0
            for i, n in enumerate(counts):
                if not n:
                    continue
                target = batch["masks"][i]
                if target.shape[0] != n:
                    raise ValueError(f"sample {i}: {n} [SEG] tokens but {target.shape[0]} masks")
                pred = self.decode_masks(prompts[at : at + n], image_emb[i : i + 1], batch["sam_sizes"][i],
                                         batch["image_sizes"][i])
                at += n
                bce = bce + mask_bce(pred, target)
                dice = dice + mask_dice(pred, target)
            bce, dice = bce / n_masks, dice / n_masks
        w = self.cfg.loss
        return GeoPixelOutput(w.ce * ce + w.bce * bce + w.dice * dice, ce.detach(), bce.detach(), dice.detach(),
                              n_masks, n_tokens)

    # ------------------------------------------------------------------------------------------- inference

    @torch.no_grad()
    def generate(self, image: np.ndarray, prompt_ids: list[int], max_new_tokens: int = 512) -> dict[str, Any]:
        """Greedy decoding with a KV cache; masks for every generated ``[SEG]``.

        Args:
            image: ``H × W × 3`` uint8.
            prompt_ids: the prompt with exactly the right number of ``<image>`` placeholders
                (:meth:`geopixel.data.GCGProcessor.text` with an empty caption, minus the answer part).

        Returns:
            ``{"token_ids": [...], "masks": (n_seg, H, W) bool array}``.
        """
        device = next(self.parameters()).device
        crops, grid = hd_views(image, self.cfg.vision.crop_size, self.cfg.vision.hd_num)
        crops_t = torch.from_numpy(crops).permute(0, 3, 1, 2).to(device)
        ids = torch.tensor([prompt_ids], device=device)
        emb = self.embed(ids, crops_t, [grid])
        embed_tokens = self.llm.get_input_embeddings()
        import inspect

        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        # transformers ≥ 5.x names the KV cache `cache`, earlier versions `past_key_values`
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        past, generated, seg_states = None, [], []
        for _ in range(max_new_tokens):
            out = self.llm(inputs_embeds=emb, use_cache=True, output_hidden_states=True, **{cache_arg: past})
            past = getattr(out, cache_arg, None)
            nxt = int(out.logits[0, -1].argmax())
            if nxt == self.seg_token_id:
                seg_states.append(out.hidden_states[-1][0, -1])
            if self.eos_token_id is not None and nxt == self.eos_token_id:
                break
            generated.append(nxt)
            emb = embed_tokens(torch.tensor([[nxt]], device=device))
        h, w = image.shape[:2]
        masks = np.zeros((0, h, w), dtype=bool)
        if seg_states:
            sam_img, sam_size = sam_view(image, self.cfg.sam.img_size)
            sam_t = torch.from_numpy(sam_img).permute(2, 0, 1)[None].to(device)
            image_emb = self.sam_embeddings(sam_t, [sam_size])
            prompts = self.seg_mlp(torch.stack(seg_states).float())
            masks = (self.decode_masks(prompts, image_emb, sam_size, (h, w)) > 0).cpu().numpy()
        return {"token_ids": generated, "masks": masks}


__all__ = ["GeoPixelModel", "GeoPixelOutput", "build_llm"]
