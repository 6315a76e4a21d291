"""The SAM box path holds at most one decoder chunk of full-resolution masks, whatever the box count.

A box-dense tile (DOTA harbours and parking lots reach thousands of boxes) is decoded in calls of at most
``max_prompts_per_call`` prompts, upsampled to the tile ``decode_chunk`` masks at a time, and every mask
leaves as a tight crop. Peak memory of ``predict_boxes`` is measured in a fresh process (the tiny
random-weight model on CPU) at two box counts 4× apart, less the crops it returns (the answer itself):
it must not follow the count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import resource, sys
import numpy as np
import torch
from pipeline.sam.config import SamConfig
from pipeline.sam.masker import SamMasker

torch.set_num_threads(1)
config = SamConfig(checkpoint=sys.argv[1], model_type="vit_tiny_test", device="cpu", batch_size=1,
                   max_prompts_per_call=64, decode_chunk=16)
masker = SamMasker.from_config(config)
rng = np.random.default_rng(0)
tile = rng.integers(0, 256, size=(800, 800, 3), dtype=np.uint8)

def boxes(n):
    xy = rng.uniform(0, 740, size=(n, 2))
    wh = rng.uniform(8, 60, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)

masker.predict_boxes([tile], [boxes(80)])  # warm-up: allocator pools, lazy initialisation
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
preds = masker.predict_boxes([tile], [boxes(int(sys.argv[2]))])
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
held = sum(p.mask.array.nbytes for p in preds[0]) // 1024  # the answer itself: one tight crop per box
print(len(preds[0]), growth, held)
"""


def _working_mb(checkpoint: Path, n: int) -> float:
    """Peak memory growth of ``predict_boxes`` over ``n`` boxes, less the crops it returns (MB)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), str(n)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, growth_kb, held_kb = proc.stdout.split()[-3:]
    assert int(count) == n
    return (int(growth_kb) - int(held_kb)) / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_boxes(tiny_checkpoint: Path) -> None:
    few = _working_mb(tiny_checkpoint, 256)
    many = _working_mb(tiny_checkpoint, 1024)
    # Besides the crops it returns (random weights make large masks), 1,024 full-resolution 800² float
    # masks would be 2.6 GB; one chunk of 16 is 41 MB.
    assert many < few + 40, (few, many)
    assert many < 300, many
