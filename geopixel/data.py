"""Training data: release rows → token ids with loss labels, HD crops, SAM input and target masks.

A row of a release split (``pipeline.release.load``) carries ``id, image{bytes,path}, width, height,
gcg_caption, masks`` (COCO RLE per ``[SEG]``). Each becomes an :class:`Example`:

* text: ``<bos> user_prefix <image>×V question user_suffix`` (labels −100: the human turn and the image are
  not learned) followed by ``gcg_caption answer_suffix <eos>`` (learned). ``V`` placeholders are replaced
  by the visual embeddings in the model; ``V`` follows from the image size (:mod:`geopixel.model.hd`).
* longer than ``max_length``: the answer is cut; masks whose ``[SEG]`` was cut are dropped.
* ``[SEG]`` count ≠ mask count raises (the release is inconsistent); samples without ``[SEG]`` are fine.

:func:`collate` pads a batch (right padding, labels −100, attention mask 0) and concatenates crops.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict

from .model.config import GeoPixelConfig
from .model.hd import hd_views, sam_view, tokens_per_side, visual_token_count
from .model.tokenizer import IMAGE_TOKEN, SEG_TOKEN

COLUMNS = ["id", "image", "width", "height", "gcg_caption", "masks"]


class DataConfig(BaseModel):
    """Text layout and length limit.

    Attributes:
        max_length: most tokens per sample, visual placeholders included.
        question: fixed question; ``None`` picks one of the exporter's GCG questions
            (``pipeline.export.formats.GCG_QUESTIONS``) from the sample id, by the exporter's rule.
        user_prefix, user_suffix, answer_suffix: chat markers around the human turn and after the answer.
    """

    model_config = ConfigDict(extra="forbid")

    max_length: int = 16384
    question: str | None = None
    user_prefix: str = "<|user|>\n"
    user_suffix: str = "<|end|>\n<|assistant|>\n"
    answer_suffix: str = "<|end|>"


@dataclass
class Example:
    """One processed sample.

    Attributes:
        input_ids, labels: ``(L,)`` token ids and loss targets (−100 = not learned).
        crops: ``(1 + rows·cols, crop, crop, 3)`` uint8, global view first.
        grid: ``(rows, cols)``.
        sam_image: ``(S, S, 3)`` uint8 SAM input; ``sam_size`` its unpadded ``(h, w)``.
        image_size: original ``(H, W)``; ``masks`` ``(n_seg, H, W)`` bool, in ``[SEG]`` order.
    """

    id: str
    input_ids: list[int]
    labels: list[int]
    crops: np.ndarray
    grid: tuple[int, int]
    sam_image: np.ndarray
    sam_size: tuple[int, int]
    image_size: tuple[int, int]
    masks: np.ndarray


def decode_masks(rles: Sequence[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """``(n, H, W)`` bool masks from COCO RLEs (``counts`` str or bytes); :func:`pipeline.rle.decode`."""
    from pipeline.rle import decode  # on first use: the benchmark's synthetic batch needs none

    out = np.zeros((len(rles), height, width), dtype=bool)
    for k, r in enumerate(rles):
        try:
            out[k] = decode(r, (height, width))
        except ValueError as exc:
            raise ValueError(f"mask {k}: {exc}") from None
    return out


class GCGProcessor:
    """Turns release rows into :class:`Example` objects (see the module docstring)."""

    def __init__(self, tokenizer: Any, model_cfg: GeoPixelConfig, data_cfg: DataConfig, patch_size: int) -> None:
        self.tok = tokenizer
        self.vision = model_cfg.vision
        self.sam_size = model_cfg.sam.img_size
        self.data = data_cfg
        self.n = tokens_per_side(self.vision.crop_size, patch_size, self.vision.merge)
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids) if text else []

    def question(self, sample_id: str) -> str:
        if self.data.question is not None:
            return self.data.question
        from pipeline.export.formats import GCG_QUESTIONS

        # the rule write_geopixel uses, so a sample gets the question of its GeoPixel-format export
        return GCG_QUESTIONS[int.from_bytes(sample_id.encode()[-2:], "big") % len(GCG_QUESTIONS)]

    def text(self, sample_id: str, caption: str, n_visual: int) -> tuple[list[int], list[int], int]:
        """``(input_ids, labels, prompt length)`` before truncation."""
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        prompt = (bos + self._ids(self.data.user_prefix) + [self.image_id] * n_visual
                  + self._ids("\n" + self.question(sample_id)) + self._ids(self.data.user_suffix))
        answer = self._ids(caption) + self._ids(self.data.answer_suffix) + eos
        return prompt + answer, [-100] * len(prompt) + answer, len(prompt)

    def __call__(self, row: dict[str, Any]) -> Example:
        image = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
        h, w = image.shape[:2]
        crops, grid = hd_views(image, self.vision.crop_size, self.vision.hd_num)
        n_visual = visual_token_count(grid[0], grid[1], self.n)
        ids, labels, prompt_len = self.text(str(row["id"]), row["gcg_caption"] or "", n_visual)
        rles = list(row.get("masks") or [])
        n_seg = ids.count(self.seg_id)
        if n_seg != len(rles):
            raise ValueError(f"sample {row['id']}: {n_seg} [SEG] tokens but {len(rles)} masks")
        if prompt_len >= self.data.max_length:
            raise ValueError(f"sample {row['id']}: the prompt alone has {prompt_len} tokens ≥ max_length "
                             f"{self.data.max_length} (lower hd_num or raise max_length)")
        ids, labels = ids[: self.data.max_length], labels[: self.data.max_length]
        kept = ids.count(self.seg_id)
        masks = decode_masks(rles[:kept], h, w)
        sam_img, sam_size = sam_view(image, self.sam_size)
        return Example(str(row["id"]), ids, labels, crops, grid, sam_img, sam_size, (h, w), masks)


class ReleaseDataset(torch.utils.data.Dataset):
    """Random access to one split of a release (a ``pyarrow.dataset.Dataset``), processed on the fly."""

    def __init__(self, dataset: Any, processor: GCGProcessor) -> None:
        self.dataset = dataset
        self.processor = processor
        self.length = int(dataset.count_rows())

    def __len__(self) -> int:
        return self.length

    def row(self, index: int) -> dict[str, Any]:
        rows: list[dict[str, Any]] = self.dataset.take([index], columns=COLUMNS).to_pylist()
        return rows[0]

    def __getitem__(self, index: int) -> Example:
        return self.processor(self.row(index))


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Per-epoch permutations from ``seed + epoch``, started at any ``(epoch, offset)``.

    Yields indices forever, epoch after epoch. The trainer counts the samples it consumed and stores
    ``(epoch, offset)`` in its checkpoints; a sampler built with them continues exactly there.
    """

    def __init__(self, length: int, seed: int, epoch: int = 0, offset: int = 0, shuffle: bool = True) -> None:
        self.length, self.seed, self.epoch, self.offset, self.shuffle = length, seed, epoch, offset, shuffle

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.length, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, offset = self.epoch, self.offset
        while True:
            yield from self.order(epoch)[offset:]
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # an endless sampler; the trainer stops by steps
        return 2**62


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Pad and stack a batch.

    Returns:
        ``input_ids``, ``labels``, ``attention_mask``: ``(B, L)`` long; ``crops``: ``(Σ views, 3, c, c)`` uint8;
        ``grids``: list of ``(rows, cols)``; ``sam_images``: ``(B, 3, S, S)`` uint8; ``sam_sizes``,
        ``image_sizes``: lists of ``(h, w)``; ``masks``: list of ``(n_i, H_i, W_i)`` bool tensors; ``ids``.
    """
    length = max(len(e.input_ids) for e in examples)
    b = len(examples)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), -100, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention[i, :n] = 1
    return {
        "ids": [e.id for e in examples],
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention,
        "crops": torch.from_numpy(np.concatenate([e.crops for e in examples])).permute(0, 3, 1, 2).contiguous(),
        "grids": [e.grid for e in examples],
        "sam_images": torch.from_numpy(np.stack([e.sam_image for e in examples])).permute(0, 3, 1, 2).contiguous(),
        "sam_sizes": [e.sam_size for e in examples],
        "image_sizes": [e.image_size for e in examples],
        "masks": [torch.from_numpy(e.masks) for e in examples],
    }


__all__ = ["COLUMNS", "DataConfig", "Example", "GCGProcessor", "ReleaseDataset",
           "ResumableSampler", "collate", "decode_masks"]
