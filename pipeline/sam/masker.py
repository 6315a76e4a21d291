"""The fast SAM path: batched image encoding, one decoder call per image, bf16 autocast on CUDA.

``SamMasker`` differs from segment-anything's ``SamPredictor`` (one image at a time, fp32) in what it
batches, not in what it computes:

1. Each tile is resized with ``ResizeLongestSide`` (long side → the encoder's input size; the next batch
   is resized in a worker thread while the device works on the current one), normalised and padded by
   ``Sam.preprocess``, and ``batch_size`` tiles go through the image encoder together.
2. For each tile, all of its prompts (every box, or ``points_per_batch`` grid points) go through the
   prompt encoder and mask decoder in one call, reusing the tile's embedding.
3. Low-resolution logits are upsampled to the tile in chunks of ``decode_chunk`` masks (memory stays
   bounded on 4096² tiles) and cropped to each mask's extent (``LocalMask``) on the device; the crops
   leave it in one transfer.

On CUDA the encoder and decoder run under ``torch.autocast(dtype=torch.bfloat16)`` (``bf16=True``);
logits are upsampled and thresholded in float32. With ``sdpa=True`` (default) the image encoder's
attention runs through PyTorch's fused attention (:mod:`pipeline.sam.attention`; the model passed in is
switched in place). The CPU works too, slowly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops import batched_nms

from ..rle import LocalMask
from .attention import use_sdpa
from .config import AutoMaskConfig, SamConfig
from .model import SamModelInfo, load_sam
from .types import MaskPrediction


@dataclass
class EncodedImage:
    """One image's encoder output.

    Attributes:
        embedding: ``1×C×E×E`` image embedding on the model's device (C = prompt dim, E = 64 for SAM).
        input_size: ``(h, w)`` of the resized image before padding, px.
        original_size: ``(H, W)`` of the image, px.
    """

    embedding: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"SAM needs H×W×3 uint8 RGB images, got shape {image.shape} {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image {image.shape}")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class SamMasker:
    """Box-prompted and automatic SAM masks (implements ``BoxMasker`` and ``AutoMasker``).

    Args:
        model: a SAM model in eval mode, on its device.
        info: what the model is (recorded as ``mask_model``).
        config: batching, precision and quality settings.
    """

    def __init__(self, model: Sam, info: SamModelInfo, config: SamConfig) -> None:
        self.model = model
        self.info = info
        self.config = config
        self.device = model.device
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        if config.sdpa:
            use_sdpa(model.image_encoder)
        self._pe: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: SamConfig) -> SamMasker:
        """Load the checkpoint named by ``config`` (see :func:`pipeline.sam.model.load_sam`)."""
        model, info = load_sam(config)
        return cls(model, info, config)

    @property
    def mask_model(self) -> str:
        return self.info.mask_model

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- encoder ---------------------------------------------------------------------------------

    def _resize_all(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each ``H×W×3`` uint8 image resized so its long side is the encoder's input size (host side)."""
        for image in images:
            _check_image(image)
        return [self.transform.apply_image(image) for image in images]

    def _prefetch(self, groups: Sequence[Sequence[np.ndarray]]) -> Iterator[list[np.ndarray]]:
        """The resized images of each group, in order; the next group is resized in a worker thread while
        the caller works on the current one (PIL releases the GIL), so host resizing overlaps device work."""
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-resize") as pool:
            future = pool.submit(self._resize_all, groups[0])
            for k in range(len(groups)):
                current = future.result()
                if k + 1 < len(groups):
                    future = pool.submit(self._resize_all, groups[k + 1])
                yield current

    def _encode_resized(self, resized: Sequence[np.ndarray], originals: Sequence[np.ndarray]) -> list[EncodedImage]:
        """One encoder call over already-resized images (normalised and padded by ``Sam.preprocess``)."""
        if not resized:
            return []
        batch = [self.model.preprocess(torch.as_tensor(r, device=self.device).permute(2, 0, 1).float()) for r in resized]
        with self._autocast():
            embeddings = self.model.image_encoder(torch.stack(batch))
        return [
            EncodedImage(emb[None], (int(r.shape[0]), int(r.shape[1])), (int(o.shape[0]), int(o.shape[1])))
            for r, o, emb in zip(resized, originals, embeddings, strict=True)
        ]

    @torch.inference_mode()
    def encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """Image embeddings, ``batch_size`` images per encoder call."""
        parts = [list(images[part]) for part in _chunks(len(images), self.config.batch_size)]
        out: list[EncodedImage] = []
        for group, resized in zip(parts, self._prefetch(parts), strict=True):
            out.extend(self._encode_resized(resized, group))
        return out

    # -- decoder ---------------------------------------------------------------------------------

    def _decode(
        self,
        enc: EncodedImage,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits ``N×K×4E×4E`` and predicted IoUs ``N×K`` (float32; K = 3 if multimask else 1).

        ``boxes``: ``N×4`` in the model's input frame; ``points``: ``N×1×2`` in the input frame.
        """
        point_input = None
        if points is not None:
            point_input = (points, torch.ones(points.shape[:2], dtype=torch.int, device=self.device))
        # Prompt positions are encoded in float32 (sin/cos of projected coordinates lose pixels in
        # bf16); only the decoder's transformer runs under autocast.
        sparse, dense = self.model.prompt_encoder(points=point_input, boxes=boxes, masks=None)
        with self._autocast():
            low_res, iou = self.model.mask_decoder(
                image_embeddings=enc.embedding,
                image_pe=self._dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        return low_res.float(), iou.float()

    def _dense_pe(self) -> torch.Tensor:
        """The positional encoding of the image embedding grid, ``1×C×E×E`` (constant: computed once)."""
        if self._pe is None:
            self._pe = self.model.prompt_encoder.get_dense_pe()
        return self._pe

    def _upsample(self, low_res: torch.Tensor, enc: EncodedImage) -> torch.Tensor:
        """``N×1×4E×4E`` low-res logits → ``N×H×W`` logits at the image's size (float32)."""
        logits: torch.Tensor = self.model.postprocess_masks(low_res, enc.input_size, enc.original_size)
        return logits[:, 0]

    def _to_local(self, masks: torch.Tensor) -> list[LocalMask]:
        """``N×H×W`` bool on the device → tight crops on the CPU (empty masks → ``0×0`` at the origin).

        Extents are found on the device; the crops are packed into one buffer and copied to the host in
        one transfer, so only the masks' own pixels cross the bus (not ``N×H×W``), and the host does no
        per-pixel work. Each crop owns its memory (no view keeps a large buffer alive).
        """
        n, h, w = masks.shape
        if n == 0:
            return []
        rows, cols = masks.any(dim=2), masks.any(dim=1)  # N×H, N×W
        ys = torch.arange(h, device=masks.device)
        xs = torch.arange(w, device=masks.device)
        extent = torch.stack(
            [
                rows.any(dim=1).long(),
                torch.where(cols, xs, w).amin(dim=1),
                torch.where(rows, ys, h).amin(dim=1),
                torch.where(cols, xs, -1).amax(dim=1),
                torch.where(rows, ys, -1).amax(dim=1),
            ],
            dim=1,
        ).tolist()  # the one synchronisation
        pieces = [masks[i, y0 : y1 + 1, x0 : x1 + 1].reshape(-1) for i, (ok, x0, y0, x1, y1) in enumerate(extent) if ok]
        flat = torch.cat(pieces).cpu().numpy() if pieces else np.zeros(0, dtype=bool)
        out, pos = [], 0
        for ok, x0, y0, x1, y1 in extent:
            if not ok:
                out.append(LocalMask(0, 0, np.zeros((0, 0), dtype=bool)))
                continue
            size = (y1 - y0 + 1) * (x1 - x0 + 1)
            out.append(LocalMask(x0, y0, flat[pos : pos + size].reshape(y1 - y0 + 1, x1 - x0 + 1).copy()))
            pos += size
        return out

    @torch.inference_mode()
    def predict_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[MaskPrediction]]:
        """One mask per box prompt (see :class:`pipeline.sam.types.BoxMasker`).

        Args:
            images: ``H×W×3`` uint8 RGB tiles.
            boxes: per tile an ``N×4`` array of ``x0, y0, x1, y1`` in tile px.

        Returns:
            Per tile, ``N`` predictions (masks in tile px, clipped to the tile by construction).
        """
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box arrays")
        arrays = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
        results: list[list[MaskPrediction]] = []
        offset = self.config.thresholds.stability_offset
        threshold = self.model.mask_threshold
        parts = list(_chunks(len(images), self.config.batch_size))
        needs = [[i for i in range(part.start, part.stop) if len(arrays[i])] for part in parts]
        groups = [[images[i] for i in need] for need in needs]
        for part, need, group, resized in zip(parts, needs, groups, self._prefetch(groups), strict=True):
            encoded = dict(zip(need, self._encode_resized(resized, group), strict=True))
            for i in range(part.start, part.stop):
                preds: list[MaskPrediction] = []
                if i in encoded:
                    enc = encoded[i]
                    box_t = torch.as_tensor(
                        self.transform.apply_boxes(arrays[i], enc.original_size), dtype=torch.float, device=self.device
                    )
                    for call in _chunks(len(box_t), self.config.max_prompts_per_call):
                        low_res, iou = self._decode(enc, boxes=box_t[call], multimask=self.config.multimask_boxes)
                        if low_res.shape[1] > 1:  # keep the best-scored of the 3 candidates
                            best = iou.argmax(dim=1)
                            rows = torch.arange(len(best), device=self.device)
                            low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
                        for chunk in _chunks(len(low_res), self.config.decode_chunk):
                            logits = self._upsample(low_res[chunk], enc)
                            stab = calculate_stability_score(logits, threshold, offset)
                            masks = self._to_local(logits > threshold)
                            for m, p, s in zip(masks, iou[chunk, 0].tolist(), stab.tolist(), strict=True):
                                preds.append(MaskPrediction(m, float(p), float(s)))
                results.append(preds)
        return results

    @torch.inference_mode()
    def generate(self, images: Sequence[np.ndarray], settings: AutoMaskConfig) -> list[list[MaskPrediction]]:
        """Masks of everything in each image from a point grid (SAM's automatic generator, one crop layer).

        Per image: ``points_per_side²`` points, ``points_per_batch`` per decoder call, 3 masks per point;
        masks below ``pred_iou_thresh``/``stability_score_thresh``, under ``min_mask_area`` px or over
        ``max_mask_fraction`` of the image are dropped, then duplicates inside the image are removed by
        box NMS (``box_nms_thresh``, higher predicted IoU wins).

        Returns:
            Per image, the kept masks (image px) with their scores and point prompts, best first.
        """
        offset = self.config.thresholds.stability_offset
        threshold = self.model.mask_threshold
        grid = build_point_grid(settings.points_per_side)
        results: list[list[MaskPrediction]] = []
        groups = [list(images[part]) for part in _chunks(len(images), self.config.batch_size)]
        for group, resized in zip(groups, self._prefetch(groups), strict=True):
            for enc in self._encode_resized(resized, group):
                h, w = enc.original_size
                points = grid * np.array([[w, h]], dtype=np.float64)
                kept: list[MaskPrediction] = []
                kept_boxes: list[torch.Tensor] = []
                for call in _chunks(len(points), settings.points_per_batch):
                    pts = points[call]
                    coords = torch.as_tensor(
                        self.transform.apply_coords(pts, enc.original_size), dtype=torch.float, device=self.device
                    )[:, None, :]
                    low_res, iou = self._decode(enc, points=coords, multimask=True)
                    low_res, iou = low_res.flatten(0, 1)[:, None], iou.flatten()
                    src = np.repeat(np.arange(len(pts)), low_res.shape[0] // max(len(pts), 1))
                    if settings.pred_iou_thresh > 0:  # as SamAutomaticMaskGenerator: 0 disables the filter
                        keep = (iou > settings.pred_iou_thresh).nonzero().flatten()
                    else:
                        keep = torch.arange(len(iou), device=self.device)
                    iou_list = iou.tolist()
                    for chunk in _chunks(len(keep), self.config.decode_chunk):
                        sel = keep[chunk]
                        logits = self._upsample(low_res[sel], enc)
                        stab = calculate_stability_score(logits, threshold, offset)
                        masks = logits > threshold
                        area = masks.flatten(1).sum(1)
                        ok = (
                            (stab >= settings.stability_score_thresh)
                            & (area >= max(settings.min_mask_area, 1))
                            & (area <= settings.max_mask_fraction * h * w)
                        )
                        if not bool(ok.any()):
                            continue
                        kept_boxes.append(batched_mask_to_box(masks[ok]).float())
                        sel_ok = sel[ok].tolist()
                        for m, j, s in zip(self._to_local(masks[ok]), sel_ok, stab[ok].tolist(), strict=True):
                            x, y = pts[src[j]]
                            kept.append(MaskPrediction(m, iou_list[j], float(s), (float(x), float(y))))
                if kept:
                    boxes = torch.cat(kept_boxes)
                    scores = torch.tensor([k.predicted_iou for k in kept], device=boxes.device)
                    order = batched_nms(boxes, scores, torch.zeros_like(scores), settings.box_nms_thresh)
                    kept = [kept[int(i)] for i in order.tolist()]
                results.append(kept)
        return results


_MASKERS: dict[str, SamMasker] = {}


def get_masker(config: SamConfig) -> SamMasker:
    """A masker for ``config``, loaded once per process (prepare workers call this per image)."""
    key = config.model_dump_json()
    if key not in _MASKERS:
        _MASKERS[key] = SamMasker.from_config(config)
    return _MASKERS[key]
