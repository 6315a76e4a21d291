"""The SAM model registry and checkpoint loading.

``SAM_SPECS`` names each architecture by its dimensions (segment-anything's ``vit_h``, ``vit_l`` and
``vit_b``, plus ``vit_tiny_test``, a tiny model that only exists to exercise the code path in tests with
random weights); ``sam_model_registry`` maps the same names to builders, like segment-anything's own.
``load_sam(config)`` reads the user's checkpoint, checks that it is a SAM state dict of the requested
type, and returns the model with a ``SamModelInfo`` recording the file's sha256, which every mask carries
as ``mask_model`` (``sam:vit_b:sha256:<first 16 hex>``). Nothing is ever downloaded.

This module imports torch only inside the functions that need it, so the registry can be read (and a
config validated) without torch installed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, SamError, require_sam

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

    from .config import SamConfig

#: Where the weights come from (shown when a checkpoint is missing; we never fetch them).
WEIGHTS_HINT = (
    "SAM weights are not downloaded by geopixeld; pass the .pth file you have "
    "(e.g. sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, sam_vit_b_01ec64.pth from facebookresearch/segment-anything)"
)
#: SAM's pixel normalisation (ImageNet mean/std in 0..255 units, RGB order).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamSpec:
    """Dimensions of one SAM architecture.

    Attributes:
        encoder_embed_dim: ViT width (channels per token).
        encoder_depth: number of ViT blocks.
        encoder_num_heads: attention heads per block.
        encoder_global_attn_indexes: blocks with global attention (the others use windows).
        image_size: encoder input side in px (images are resized so the long side is this, then padded).
        patch_size: ViT patch side in px; the image embedding is ``image_size / patch_size`` square.
        window_size: side of the attention windows, in tokens.
        prompt_embed_dim: channels of the image embedding, prompt tokens and decoder.
        decoder_depth, decoder_mlp_dim, decoder_num_heads: the two-way transformer of the mask decoder.
        iou_head_hidden_dim: width of the IoU prediction head.
        mask_in_chans: hidden channels of the mask-prompt encoder.
        note: what the entry is for.
    """

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    note: str = field(default="", compare=False)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding in tokens (64 for the released models)."""
        return self.image_size // self.patch_size


SAM_SPECS: dict[str, SamSpec] = {
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31), note="SAM ViT-H (636 M parameters)"),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23), note="SAM ViT-L (308 M parameters)"),
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11), note="SAM ViT-B (91 M parameters)"),
    # Random weights only: tests the code path (shapes, records, errors), never mask quality.
    "vit_tiny_test": SamSpec(
        encoder_embed_dim=64,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        image_size=256,
        patch_size=16,
        window_size=4,
        prompt_embed_dim=64,
        decoder_depth=2,
        decoder_mlp_dim=256,
        decoder_num_heads=2,
        iou_head_hidden_dim=64,
        mask_in_chans=16,
        note="tiny test architecture (random weights; exercises the code path, not quality)",
    ),
}


def build_sam(spec: SamSpec) -> Sam:
    """A SAM model of the given dimensions with random weights, in eval mode, on the CPU."""
    require_sam()
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    e = spec.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth,
            embed_dim=spec.encoder_embed_dim,
            img_size=spec.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.encoder_num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(e, e),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam.eval()


#: name → builder of a randomly initialised model, like ``segment_anything.sam_model_registry``.
sam_model_registry: dict[str, Callable[[], Sam]] = {name: partial(build_sam, spec) for name, spec in SAM_SPECS.items()}


@dataclass(frozen=True)
class SamModelInfo:
    """What a loaded model is, recorded with every mask it makes.

    Attributes:
        model_type: registry name (``vit_h``...).
        sha256: hex sha256 of the checkpoint file.
        checkpoint: the file's path.
        device: the torch device the model runs on (``cpu``, ``cuda:0``...).
        image_size: encoder input side in px.
    """

    model_type: str
    sha256: str
    checkpoint: str
    device: str
    image_size: int

    @property
    def mask_model(self) -> str:
        """``sam:<type>:sha256:<first 16 hex of the checkpoint's sha256>``."""
        return f"sam:{self.model_type}:sha256:{self.sha256[:16]}"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed in ``chunk_bytes`` pieces; memoised per (path, size, mtime)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk_bytes):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


@dataclass(frozen=True)
class CheckpointShape:
    """Dimensions read from a state dict's tensor shapes (enough to tell the registered models apart)."""

    encoder_embed_dim: int
    encoder_depth: int
    patch_size: int
    image_size: int
    prompt_embed_dim: int

    def describe(self) -> str:
        return (
            f"encoder width {self.encoder_embed_dim}, {self.encoder_depth} blocks, patch {self.patch_size}, "
            f"input {self.image_size} px, prompt dim {self.prompt_embed_dim}"
        )


def checkpoint_shape(state: Mapping[str, Any]) -> CheckpointShape | None:
    """Dimensions of a SAM state dict, or ``None`` when the keys SAM always has are missing."""
    try:
        proj = state["image_encoder.patch_embed.proj.weight"]  # (D, 3, p, p)
        pos = state["image_encoder.pos_embed"]  # (1, S/p, S/p, D)
        iou_token = state["mask_decoder.iou_token.weight"]  # (1, prompt dim)
    except KeyError:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    patch = int(proj.shape[-1])
    return CheckpointShape(
        encoder_embed_dim=int(proj.shape[0]),
        encoder_depth=len(blocks),
        patch_size=patch,
        image_size=int(pos.shape[1]) * patch,
        prompt_embed_dim=int(iou_token.shape[-1]),
    )


def detect_model_type(shape: CheckpointShape) -> str | None:
    """The registry name whose dimensions match ``shape``, or ``None``."""
    for name, spec in SAM_SPECS.items():
        if (
            spec.encoder_embed_dim,
            spec.encoder_depth,
            spec.patch_size,
            spec.image_size,
            spec.prompt_embed_dim,
        ) == (shape.encoder_embed_dim, shape.encoder_depth, shape.patch_size, shape.image_size, shape.prompt_embed_dim):
            return name
    return None


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU; others checked for availability."""
    require_sam()
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SamError(f"device {name!r} requested but torch sees no CUDA device (use --device cpu or auto)")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SamError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SamError("device 'mps' requested but it is not available")
    return torch.device(name)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a checkpoint file (a plain state dict, or one under ``model``/``state_dict``).

    Loaded with ``weights_only=True`` (a checkpoint cannot run code) and memory-mapped when the file's
    format allows it (reading the shapes of a 2.5 GB checkpoint then costs almost nothing).

    Raises:
        CheckpointError: not a readable PyTorch file, or no state dict inside.
    """
    import torch

    def load(mmap: bool) -> Any:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = load(mmap=False)  # legacy (non-zip) format: no memory map
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {detail})") from None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, f"not a SAM checkpoint: expected a state dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def _checked(config: SamConfig) -> tuple[Path, str, str, dict[str, Any]]:
    """``(path, model type, sha256, state dict)`` of the configured checkpoint, validated."""
    path = Path(config.checkpoint).expanduser()
    if not path.exists():
        raise CheckpointError(path, f"SAM checkpoint not found. {WEIGHTS_HINT}")
    if path.is_dir():
        raise CheckpointError(path, "is a folder; give the SAM checkpoint file (.pth)")
    require_sam()
    state = read_state_dict(path)
    shape = checkpoint_shape(state)
    if shape is None:
        raise CheckpointError(path, "not a SAM checkpoint: no image_encoder/mask_decoder weights in it")
    detected = detect_model_type(shape)
    if detected is None:
        raise CheckpointError(path, f"a SAM checkpoint of an unregistered architecture ({shape.describe()})")
    if config.model_type not in ("auto", detected):
        raise CheckpointError(
            path, f"checkpoint is a {detected} SAM model ({shape.describe()}), not the requested {config.model_type}"
        )
    return path, detected, file_sha256(path), state


def check_checkpoint(config: SamConfig) -> tuple[str, str]:
    """Validate the configured checkpoint without building the model or touching a GPU.

    For a command line to fail fast before any image is processed (and before worker processes start:
    a parent that initialised CUDA cannot fork CUDA workers). Reads tensor shapes through a memory map
    and hashes the file.

    Returns:
        ``(model_type, mask_model)``, e.g. ``("vit_h", "sam:vit_h:sha256:0123456789abcdef")``.

    Raises:
        CheckpointError, SamUnavailableError: as :func:`load_sam`.
    """
    _, model_type, sha, _ = _checked(config)
    return model_type, f"sam:{model_type}:sha256:{sha[:16]}"


def load_sam(config: SamConfig) -> tuple[Sam, SamModelInfo]:
    """Load the checkpoint named by ``config`` onto ``config.device``.

    Returns:
        ``(model, info)``: the model in eval mode on its device, and what it is (type, sha256, device).

    Raises:
        CheckpointError: the file is missing, a folder, unreadable, not a SAM state dict, or of another
            model type than ``config.model_type`` (the message names the file and both types).
        SamUnavailableError: torch or segment-anything is not installed.
        SamError: the requested device does not exist.
    """
    path, model_type, sha, state = _checked(config)
    device = resolve_device(config.device)
    model = build_sam(SAM_SPECS[model_type])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(path, f"weights do not fit {model_type}: {' '.join(first[:3])[:300]}") from None
    del state
    model.to(device).eval()
    info = SamModelInfo(model_type, sha, str(path), str(device), SAM_SPECS[model_type].image_size)
    return model, info
