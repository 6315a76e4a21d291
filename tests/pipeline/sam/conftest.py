"""Fixtures of the SAM tests: a tiny SAM checkpoint with random weights, its config and masker.

The ``vit_tiny_test`` architecture (256 px input, patch 16, width 64, 2 blocks, prompt dim 64) is built from
segment-anything's own classes and saved as an ordinary checkpoint. Its weights are RANDOM (seed 0): the
tests check the code path — shapes, records, flags, deduplication, errors — never mask quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.sam.config import AutoMaskConfig, SamConfig

if TYPE_CHECKING:
    from pipeline.sam.masker import SamMasker


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vit_tiny_test`` random weights saved as a state dict (skips without torch/segment-anything)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from pipeline.sam.model import SAM_SPECS, build_sam

    torch.manual_seed(0)
    model = build_sam(SAM_SPECS["vit_tiny_test"])
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny_test_random.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_config(tiny_checkpoint: Path) -> SamConfig:
    """CPU config for the tiny model; the generator keeps every mask (random weights score low)."""
    auto = AutoMaskConfig(
        points_per_side=4,
        points_per_batch=16,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        max_mask_fraction=1.0,
    )
    return SamConfig(checkpoint=tiny_checkpoint, model_type="vit_tiny_test", device="cpu", batch_size=2, auto=auto)


@pytest.fixture(scope="session")
def tiny_masker(tiny_config: SamConfig) -> SamMasker:
    """A ``SamMasker`` on the tiny random-weight checkpoint."""
    from pipeline.sam.masker import SamMasker

    return SamMasker.from_config(tiny_config)
