"""The run's totals from per-image reports: every image and every skip counted, reasons grouped."""

from __future__ import annotations

from pipeline.errors import Skip
from pipeline.prepare_report import ImageReport, summarize


def test_summary_counts_every_image_and_skip() -> None:
    ok = ImageReport("a", "a.png", "ok", tiles=4, instances=30, clusters=2, marks=20, dropped={"under_min_area": 3})
    ok.skips.append(Skip("a.png#t1", "tile", "tile is entirely nodata", "tile").to_dict())
    reused = ImageReport("b", "b.png", "reused", tiles=2, instances=5, marks=5, dropped={"under_min_area": 1})
    failed = ImageReport("c", "c.png", "failed", error="read failed at rows 0–800 (boom)")
    failed.skips.append(Skip("c.png", "prepare", "read failed at rows 0–800 (boom)").to_dict())
    discover = [Skip("d.png", "discover", "missing iSAID mask(s): d_instance_id_RGB.png")]

    s = summarize("/out", [ok, reused, failed], discover)

    assert (s.images, s.images_ok, s.images_reused, s.images_failed) == (4, 1, 1, 2)
    assert (s.tiles, s.instances, s.clusters, s.marks) == (6, 35, 2, 25)
    assert s.dropped == {"under_min_area": 4}
    assert len(s.skipped) == 3
    assert s.skipped_by_reason == {
        "missing iSAID mask(s)": 1,
        "tile is entirely nodata": 1,
        "read failed at rows 0–800": 1,
    }
    text = s.text()
    assert "4 (1 done, 1 reused, 2 failed)" in text and "d.png: missing iSAID mask(s)" in text
