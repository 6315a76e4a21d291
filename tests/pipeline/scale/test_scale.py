"""The scale benchmark's parts: the synthetic iSAID corpus and the subprocess memory measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.config import PrepareConfig
from pipeline.ingest.isaid import ISAID_CLASSES
from pipeline.prepare import prepare
from pipeline.scale.corpus import COLOR_SUFFIX, ID_SUFFIX, SIZES, expected_tiles, make_corpus
from pipeline.scale.measure import MB, run_measured


def _code(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def test_corpus_is_isaid_that_prepare_reads(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    made = make_corpus(corpus, 2, seed=3)
    assert made["images"] == 2 and made["tiles"] == sum(expected_tiles(*s) for s in SIZES[:2])
    for i in range(2):
        name = f"S{i:06d}"
        image = Image.open(corpus / f"{name}.png")
        assert image.size == SIZES[i] and min(image.size) >= 1000 and max(image.size) <= 6000
        ids, colours = _code(corpus / f"{name}{ID_SUFFIX}.png"), np.asarray(Image.open(corpus / f"{name}{COLOR_SUFFIX}.png"))
        found = {tuple(int(v) for v in c) for c in np.unique(colours.reshape(-1, 3), axis=0)}
        assert found - {(0, 0, 0)} <= set(ISAID_CLASSES) and len(found) > 2  # real category colours only
        for instance in np.unique(ids[ids > 0])[:200]:  # one category colour per instance id
            assert len(np.unique(colours[ids == instance], axis=0)) == 1
    mtime = (corpus / "S000000.png").stat().st_mtime_ns
    make_corpus(corpus, 2, seed=3)
    assert (corpus / "S000000.png").stat().st_mtime_ns == mtime  # a rerun keeps what is complete
    out = tmp_path / "prepared"
    summary = prepare([corpus], PrepareConfig(format="isaid"), out, progress=False)
    assert summary.images_ok == 2 and not summary.skipped, summary.text()
    assert pq.read_metadata(out / "tiles.parquet").num_rows == made["tiles"]
    assert pq.read_metadata(out / "instances.parquet").num_rows > 100


def test_peak_rss_is_the_commands_own(tmp_path: Path) -> None:
    """A child's peak is measured, not the memory of the (larger) process that started it."""
    ballast = np.ones(300 * MB, dtype=np.uint8)  # this process: +300 MB
    code = "import numpy as np; a = np.ones(150 * 2**20, dtype=np.uint8); print(int(a.sum()))"
    run = run_measured([sys.executable, "-c", code], timeout=120).check("child")
    assert 150 < run.peak_mb < 250, run.peak_mb
    assert run.stdout.strip() == str(150 * MB) and int(ballast[0]) == 1
    failed = run_measured([sys.executable, "-c", "raise SystemExit(3)"], timeout=60)
    assert failed.returncode == 3
