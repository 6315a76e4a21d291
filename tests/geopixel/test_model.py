"""Data processing and the model's forward/generate on the tiny config (RANDOM weights, nothing loaded)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("segment_anything")

from tiny_gcg import tiny_rows  # noqa: E402

from geopixel.data import GCGProcessor, collate  # noqa: E402
from geopixel.model.tokenizer import SEG_TOKEN  # noqa: E402
from geopixel.train import TrainConfig, build  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "geopixel" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def built() -> tuple[Any, Any, TrainConfig]:
    cfg = TrainConfig.from_yaml(CONFIG)
    model, tok = build(cfg)  # random weights
    model.prepare_for_device(torch.device("cpu"))
    return model, tok, cfg


def processor(built: tuple[Any, Any, TrainConfig], **data: Any) -> GCGProcessor:
    model, tok, cfg = built
    return GCGProcessor(tok, cfg.model, cfg.data.model_copy(update=data), model.vision.patch_size)


def test_special_tokens_are_single_ids(built: tuple[Any, Any, TrainConfig]) -> None:
    _, tok, _ = built
    ids = tok("<p> plane-1 </p> [SEG]", add_special_tokens=False).input_ids
    assert ids.count(tok.convert_tokens_to_ids(SEG_TOKEN)) == 1
    assert tok.convert_tokens_to_ids("<p>") in ids and tok.convert_tokens_to_ids("</p>") in ids


def test_labels_mask_the_human_turn_and_image(built: tuple[Any, Any, TrainConfig]) -> None:
    model, tok, _ = built
    proc = processor(built)
    row = tiny_rows(3)[1]  # two objects
    ex = proc(row)
    n_vis = ex.input_ids.count(model.image_token_id)
    assert n_vis == 27  # 64×64 → 2×2 crops of 56 px, 2×2 tokens per crop: 2·3 + 1 + 4·5
    first = next(i for i, v in enumerate(ex.labels) if v != -100)
    assert all(v == -100 for v in ex.labels[:first])
    assert tok.decode(ex.input_ids[first:]).startswith(row["gcg_caption"])
    assert ex.labels[first:] == ex.input_ids[first:] and ex.input_ids[-1] == tok.eos_token_id
    from pycocotools import mask as mask_utils

    assert ex.masks.shape == (2, 64, 64)
    for m, rle in zip(ex.masks, row["masks"], strict=True):
        assert np.array_equal(m, mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool))
    assert ex.crops.shape == (5, 56, 56, 3) and ex.grid == (2, 2)


def test_truncation_drops_cut_masks_and_mismatch_raises(built: tuple[Any, Any, TrainConfig]) -> None:
    row = tiny_rows(3)[1]
    full = processor(built)(row)
    seg = full.input_ids.index(built[0].seg_token_id)
    cut = processor(built, max_length=seg + 1)(row)  # keeps the first [SEG] only
    assert len(cut.input_ids) == seg + 1 and cut.masks.shape[0] == 1
    with pytest.raises(ValueError, match="2 \\[SEG\\] tokens but 1 masks"):
        processor(built)({**row, "masks": row["masks"][:1]})
    with pytest.raises(ValueError, match="prompt alone"):
        processor(built, max_length=10)(row)


def test_forward_batch_with_and_without_seg(built: tuple[Any, Any, TrainConfig]) -> None:
    model, _, _ = built
    proc = processor(built)
    rows = tiny_rows(3)
    batch = collate([proc(rows[0]), proc(rows[1])], model.pad_token_id)  # 0 and 2 [SEG], padded
    assert batch["attention_mask"].sum(1).tolist() == [len(proc(rows[0]).input_ids), len(proc(rows[1]).input_ids)]
    out = model(batch)
    assert out.n_masks == 2 and torch.isfinite(out.loss) and float(out.bce) > 0 and float(out.dice) > 0
    out.loss.backward()
    grads = {n: p.grad for n, p in model.trainable_named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "mask_decoder" in n)
    model.zero_grad(set_to_none=True)
    no_seg = model(collate([proc(rows[0])], model.pad_token_id))
    assert no_seg.n_masks == 0 and float(no_seg.bce) == 0.0 and float(no_seg.dice) == 0.0
    assert float(no_seg.loss.detach()) == pytest.approx(float(no_seg.ce))


def test_trainable_groups(built: tuple[Any, Any, TrainConfig]) -> None:
    model, _, _ = built
    names = [n for n, _ in model.trainable_named_parameters()]
    for part in ("lora_A", "lora_B", "embed_tokens", "lm_head", "vision.projector", "vision.row_sep",
                 "seg_mlp", "sam.mask_decoder"):
        assert any(part in n for n in names), part
    for frozen in ("vision.encoder.", "sam.image_encoder.", "sam.prompt_encoder."):
        assert not any(frozen in n for n in names), frozen
    assert not any("base_layer" in n for n in names)


def test_generate_returns_one_mask_per_seg(built: tuple[Any, Any, TrainConfig]) -> None:
    model, tok, _ = built
    proc = processor(built)
    row = tiny_rows(2)[1]
    ex = proc(row)
    first = next(i for i, v in enumerate(ex.labels) if v != -100)
    # force [SEG] as the most likely next token: add a large logit through a hook on the LM head
    seg = model.seg_token_id

    def favour_seg(_m: Any, _i: Any, out: Any) -> Any:
        out = out.clone()
        out[..., seg] += 1e4
        return out

    hook = model.llm.get_output_embeddings().register_forward_hook(favour_seg)
    model.eval()
    try:
        image = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
        res = model.generate(image, ex.input_ids[:first], max_new_tokens=3)
    finally:
        hook.remove()
        model.train()
    assert res["token_ids"] == [model.seg_token_id] * 3
    assert res["masks"].shape == (3, 64, 64) and res["masks"].dtype == bool


def test_trainer_sam_uses_the_library_specs_and_builder() -> None:
    """One SAM: the trainer's settings resolve to the library's specs and builder (prepare's masker's)."""
    from geopixel.model.config import TrainerSamConfig
    from pipeline.sam.model import SAM_SPECS, SamSpec

    for preset in ("vit_b", "vit_l", "vit_h"):
        assert TrainerSamConfig(preset=preset).spec() == SAM_SPECS[preset]  # type: ignore[arg-type]
    tiny = TrainerSamConfig(img_size=256, encoder={"embed_dim": 32, "depth": 2, "num_heads": 2,
                                                   "global_attn_indexes": [1], "window_size": 4},
                            prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2, iou_head_hidden_dim=32)
    spec = tiny.spec()
    assert isinstance(spec, SamSpec) and spec.embedding_size == 16 and spec.encoder_global_attn_indexes == (1,)
    with pytest.raises(ValueError, match="encoder settings missing"):
        TrainerSamConfig().spec()
