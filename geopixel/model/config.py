"""Typed model configuration, read from YAML (``geopixel/configs/*.yaml``); validated up front.

Every sub-model comes from a local path or from a config dict (random initialisation, logged loudly);
nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VisionConfig(_Strict):
    """The CLIP/SigLIP vision tower and GeoPixel's any-resolution (HD) cropping.

    Attributes:
        path: local HF folder of a vision model (``CLIPVisionModel``, ``SiglipVisionModel``, or a full CLIP
            model whose vision part is used); ``None`` builds ``config`` with random weights.
        config: kwargs of the HF config, with ``model_type`` (``clip_vision_model``, ``siglip_vision_model``).
        crop_size: side of each square crop and of the global view, in pixels (560 in GeoPixel).
        hd_num: the most crops per image (9 in GeoPixel's training); the global view is extra.
        merge: 2 concatenates 2×2 neighbouring patch features before the projector (as IXC-2.5), 1 keeps
            every patch.
        select_layer: hidden-state index used as the patch features (-1: last layer).
        freeze: keep the tower frozen (as GeoPixel).
        mean, std: per-channel normalisation of [0, 1] pixels.
    """

    path: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    crop_size: int = 560
    hd_num: int = 9
    merge: int = 2
    select_layer: int = -1
    freeze: bool = True
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @model_validator(mode="after")
    def _check(self) -> VisionConfig:
        if self.path is None and "model_type" not in self.config:
            raise ValueError("vision: give a local `path` or a `config` with `model_type`")
        if self.hd_num < 1 or self.merge < 1:
            raise ValueError("vision: hd_num and merge must be ≥ 1")
        patch = int(self.config.get("patch_size", 14))
        if self.crop_size % (patch * self.merge):
            raise ValueError(f"vision: crop_size {self.crop_size} must be a multiple of patch_size × merge "
                             f"({patch} × {self.merge})")
        return self


class LLMConfig(_Strict):
    """The causal LM.

    Attributes:
        path: local HF folder (any ``AutoModelForCausalLM``); ``None`` builds ``config`` with random weights.
        tokenizer: local tokenizer folder; ``None`` uses ``path``'s, else the built-in byte-level tokenizer.
        config: kwargs of the HF config with ``model_type`` (``llama`` for InternLM2-like dimensions).
        dtype: dtype of the frozen LM weights on CUDA (``bfloat16``); trainable parameters stay float32.
    """

    path: str | None = None
    tokenizer: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        if self.path is None and "model_type" not in self.config:
            raise ValueError("llm: give a local `path` or a `config` with `model_type`")
        return self


class TrainerSamConfig(_Strict):
    """SAM (segment-anything) image encoder (frozen) and mask decoder (trainable) of the trainer.

    The architecture comes from the library's SAM specs (:data:`pipeline.sam.model.SAM_SPECS`,
    :meth:`spec`), and the model from the library's builder, so prepare's masker and the trainer build
    the same SAM.

    Attributes:
        preset: ``vit_h``, ``vit_l``, ``vit_b`` (SAM's encoder sizes) or ``None`` to use ``encoder``.
        checkpoint: local SAM ``.pth`` state dict; ``None`` means random weights.
        img_size: SAM's input side in pixels (1024 for the released checkpoints).
        patch_size: encoder patch size; the image embedding is ``img_size / patch_size`` on a side.
        encoder: ``embed_dim``, ``depth``, ``num_heads``, ``global_attn_indexes``, ``window_size`` when no preset.
        prompt_embed_dim: prompt/decoder width (256 in SAM).
        decoder_depth, decoder_mlp_dim, decoder_heads, iou_head_hidden_dim: decoder transformer sizes.
        train_prompt_encoder: also train the prompt encoder (its no-mask dense embedding).
        sdpa: run the frozen image encoder's attention through PyTorch's fused attention (the same
            function, far less memory traffic; :mod:`pipeline.sam.attention`).
    """

    preset: Literal["vit_h", "vit_l", "vit_b"] | None = None
    checkpoint: str | None = None
    img_size: int = 1024
    patch_size: int = 16
    encoder: dict[str, Any] = Field(default_factory=dict)
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    train_prompt_encoder: bool = False
    sdpa: bool = True
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def spec(self) -> Any:
        """The library's :class:`pipeline.sam.model.SamSpec` for these settings (preset dimensions, then
        ``encoder`` overrides, then the sizes given here)."""
        from pipeline.sam.model import SAM_SPECS, SamSpec

        enc = dict(self.encoder)
        if self.preset:
            base = SAM_SPECS[self.preset]
            enc = {"embed_dim": base.encoder_embed_dim, "depth": base.encoder_depth,
                   "num_heads": base.encoder_num_heads, "global_attn_indexes": base.encoder_global_attn_indexes,
                   "window_size": base.window_size, **enc}
        missing = {"embed_dim", "depth", "num_heads", "global_attn_indexes"} - set(enc)
        if missing:
            raise ValueError(f"sam: encoder settings missing {sorted(missing)} (or choose a preset)")
        if self.img_size % self.patch_size:
            raise ValueError(f"sam: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        return SamSpec(
            encoder_embed_dim=int(enc["embed_dim"]), encoder_depth=int(enc["depth"]),
            encoder_num_heads=int(enc["num_heads"]),
            encoder_global_attn_indexes=tuple(int(i) for i in enc["global_attn_indexes"]),
            image_size=self.img_size, patch_size=self.patch_size, window_size=int(enc.get("window_size", 14)),
            prompt_embed_dim=self.prompt_embed_dim, decoder_depth=self.decoder_depth,
            decoder_mlp_dim=self.decoder_mlp_dim, decoder_num_heads=self.decoder_heads,
            iou_head_hidden_dim=self.iou_head_hidden_dim,
        )


class LoraSettings(_Strict):
    """LoRA on the LM (peft): ``target_modules`` ``"auto"`` = every Linear inside the decoder layers."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | Literal["auto"] = "auto"
    enabled: bool = True


class LossWeights(_Strict):
    """Weights of the text cross-entropy and the mask BCE and Dice losses (GeoPixel: 1, 2, 0.5)."""

    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5


class GeoPixelConfig(_Strict):
    """Everything that defines the model.

    Attributes:
        seg_mlp_hidden: hidden width of the [SEG] MLP (``None``: the LM's hidden size; 4096→4096→256).
        projector_hidden: hidden width of the vision projector (``None``: the LM's hidden size).
    """

    vision: VisionConfig
    llm: LLMConfig
    sam: TrainerSamConfig = Field(default_factory=TrainerSamConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    loss: LossWeights = Field(default_factory=LossWeights)
    seg_mlp_hidden: int | None = None
    projector_hidden: int | None = None
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"


__all__ = ["GeoPixelConfig", "LLMConfig", "LoraSettings", "LossWeights", "TrainerSamConfig", "VisionConfig"]
