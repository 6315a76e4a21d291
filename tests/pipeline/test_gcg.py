"""The one GCG markup module: parsing, canonical rendering, error codes, and its users agreeing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import gcg

OFFICIAL = Path(__file__).resolve().parents[1] / "data" / "geopixeld" / "P0224_0_800_0_800.json"


def test_parse_spans_point_into_the_plain_caption() -> None:
    text = "The <p>tennis court-1</p>[SEG] at right and <p> plane-2 </p>  [SEG] ."
    parsed = gcg.parse(text)
    assert parsed.gcg_caption == "The <p> tennis court-1 </p> [SEG] at right and <p> plane-2 </p> [SEG] ."
    assert parsed.caption == "The tennis court-1 at right and plane-2 ."
    for phrase in parsed.phrases:
        assert parsed.caption[phrase.start : phrase.end] == phrase.text
    assert [p.text for p in parsed.phrases] == gcg.phrase_texts(text) == ["tennis court-1", "plane-2"]
    assert gcg.markup_problems(text, 2) == []


def test_official_sample_parses_clean() -> None:
    sample = json.loads(OFFICIAL.read_text())
    text = sample["gcg_description"]
    assert gcg.markup_problems(text, len(sample["polygons"])) == []
    assert gcg.phrase_texts(text) == ["tennis court-1", "tennis court-2", "tennis court-3", "tennis court-4"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("a <p> x <p> y </p> [SEG]", "markup_nested"),
        ("a x </p> [SEG]", "markup_stray_close"),
        ("a <p> x </p> and", "markup_missing_seg"),
        ("a [SEG] b", "markup_orphan_seg"),
        ("a <p> x", "markup_unclosed"),
        ("a <p> </p> [SEG]", "phrase_empty"),
        ("a <b>x</b> <p> x </p> [SEG]", "markup_unexpected_tag"),
    ],
)
def test_each_malformation_has_its_code(text: str, code: str) -> None:
    flags = gcg.markup_problems(text)
    assert code in {f["code"] for f in flags}
    assert all(f["severity"] == gcg.MARKUP_SEVERITY[f["code"]] for f in flags)


def test_seg_count_against_masks() -> None:
    flags = gcg.markup_problems("<p> a </p> [SEG]", 2)
    assert [f["code"] for f in flags] == ["seg_mask_count_mismatch"]


def test_strip_and_plain_text() -> None:
    assert gcg.strip_markup("A <p>plane</p> [SEG] here") == "A plane here"
    assert gcg.plain_text("The <p> tennis court-1 </p> [SEG] , and more .") == "The tennis court-1, and more."
    assert gcg.seg_phrases("x <p> a </p> [SEG] y [SEG]") == ["a", ""]


def test_pipeline_and_trainer_use_the_same_parser() -> None:
    from geopixel.eval.captions import strip_markup as eval_strip
    from pipeline.validate import check_markup

    text = "The <p> tennis court-1 </p> [SEG] , and <p> plane-2 </p> [SEG] ."
    assert eval_strip(text) == gcg.plain_text(text)
    assert check_markup(text, 1) == gcg.markup_problems(text, 1)
