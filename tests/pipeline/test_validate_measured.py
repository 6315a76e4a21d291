"""The checks against measurements, one rule at a time; idioms; the needs-review score; second-opinion
agreement; calibration from review decisions (a decisions file and the review app's own database)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import validate, vocab
from pipeline.agreement import agreement, disagreement_flag
from pipeline.calibration import calibrate
from pipeline.tables import SAMPLES_SCHEMA

LABELS = vocab.label_set(frozenset({"plane", "small vehicle", "large vehicle"}))


def plane(**kw: Any) -> validate.Measured:
    base: dict[str, Any] = dict(
        kind="instance", category="plane", size_class="large", length_m=40.0, width_m=36.0, orientation_deg=10.0,
        elongation=2.0, colours=(("white", 0.6), ("light grey", 0.3), ("grey", 0.1)),
        tile_counts=(("plane", 3), ("small vehicle", 12)), labels=LABELS,
    )
    return validate.Measured(**{**base, **kw})


def cars(count: int = 14, **kw: Any) -> validate.Measured:
    base: dict[str, Any] = dict(kind="cluster", category="small vehicle", count=count,
                                colours=(("grey", 0.5), ("white", 0.3), ("black", 0.2)),
                                tile_counts=(("plane", 3), ("small vehicle", count)), labels=LABELS)
    return validate.Measured(**{**base, **kw})


def codes(text: str, m: validate.Measured) -> list[str]:
    return [f["code"] for f in validate.check_measured(text, m)]


@pytest.mark.parametrize("text", [
    "A large white plane parked right next to the terminal, oriented horizontally, about 40 m long.",
    "The plane is mostly white and grey, lying east-west, roughly 38 m by 35 m.",
    "One of the planes, a white airliner, sits at the left, left behind by the others.",
    "A big white aircraft, slightly diagonal, rising to the right.",
])
def test_correct_instance_answers_are_not_flagged(text: str) -> None:
    assert codes(text, plane()) == []


@pytest.mark.parametrize(("text", "code"), [
    ("A white plane lying vertically at the top left.", "orientation_contradiction"),
    ("A white plane running from top left to bottom right.", "orientation_contradiction"),
    ("A tiny white plane.", "size_contradiction"),
    ("The white plane is small.", "size_contradiction"),
    ("A white plane about 120 m long.", "metres_contradiction"),
    ("A white plane, 12 by 10 m.", "metres_contradiction"),
    ("A red plane at the left.", "colour_contradiction"),
    ("The plane is painted green.", "colour_contradiction"),
    ("Two white planes at the left.", "plural_mismatch"),
    ("A white plane right next to a helicopter.", "absent_category"),
    ("A white plane next to two trucks.", "absent_category"),
])
def test_each_wrong_instance_answer_gets_its_flag(text: str, code: str) -> None:
    assert codes(text, plane()) == [code]


def test_orientation_only_for_elongated_non_round_objects() -> None:
    assert codes("A white plane lying vertically.", plane(elongation=1.3)) == []
    tank = plane(category="storage tank", colours=(), tile_counts=(("storage tank", 1),))
    assert codes("A storage tank lying vertically.", tank) == []


def test_size_words_of_the_category_name_do_not_count() -> None:
    truck = plane(category="large vehicle", size_class="small", colours=(), tile_counts=(("large vehicle", 1),))
    assert codes("A large vehicle parked at the left.", truck) == []
    assert codes("A huge large vehicle parked at the left.", truck) == ["size_contradiction"]


def test_metres_per_pixel_and_areas_are_not_lengths() -> None:
    assert validate.stated_metres("At 0.5 m per pixel it covers 400 m² and is 24-metre long, 24 by 11 m") == [24.0, 24.0, 11.0]


@pytest.mark.parametrize(("text", "ok"), [
    ("There are fourteen cars at the left.", True),
    ("A group of many small vehicles.", True),
    ("A cluster of 15 vehicles.", True),  # within 10 % of 14
    ("Numerous grey cars parked in two rows.", True),  # "two" counts rows, not cars
    ("A single small vehicle at the left.", False),
    ("A few cars at the bottom.", False),
    ("12 small vehicles", False),
    ("two cars", False),
    ("Fourteen cars are parked; one car is black.", True),  # a subset, after the count
])
def test_counts_use_the_phrase_range(text: str, ok: bool) -> None:
    assert (codes(text, cars()) == []) is ok, validate.check_measured(text, cars())


def test_holistic_counts_and_absent_categories() -> None:
    m = validate.Measured("holistic", tile_counts=(("large vehicle", 3), ("small vehicle", 31)), labels=LABELS)
    assert codes("It contains 31 small vehicles and three large vehicles.", m) == []
    assert codes("It contains 31 small vehicles and eight large vehicles.", m) == ["count_mismatch"]
    assert codes("Cars and trucks line a road near a helicopter pad with a helicopter.", m) == ["absent_category"]


def test_absent_needs_a_known_label_set() -> None:
    trees = vocab.label_set(frozenset({"tree"}))
    assert trees == {"tree"}  # not an iSAID/DOTA dataset: its own categories only
    m = validate.Measured("holistic", tile_counts=(("tree", 4),), labels=trees)
    assert codes("Four trees next to parked cars and a truck.", m) == []
    assert "helicopter" in LABELS  # iSAID categories: the whole iSAID label set


@pytest.mark.parametrize(("text", "flagged"), [
    ("A small vehicle right next to the building.", False),
    ("A bridge rising to the right.", False),
    ("A truck left behind in the lot.", False),
    ("A road running from the top right to the bottom left.", False),
    ("Parked to the right of the road.", False),
    ("Parked on the right side of the image.", True),
    ("On top of the building, a tank on the right.", True),
])
def test_idioms_are_not_positions(text: str, flagged: bool) -> None:
    # The object is in the left column: only a real "right" is a contradiction.
    got = validate.check_position(text, "left")
    assert bool(got) is flagged, (text, got)


NATURAL_PLANE = [  # the kind of English a chat model writes, all true of plane() in the left column
    "A large white commercial airliner is parked on the apron with its nose pointing to the right, right beside "
    "the terminal.",
    "This white aircraft appears to be a wide-body jet, lying horizontally with its left wing near the edge.",
    "The plane is white with a blue tail and sits at the left of the image, about 40 meters long.",
    "One of several white planes in the scene, this one is parked horizontally on the left side.",
    "A white plane with service vehicles right next to it, its shadow cast to its right.",
    "Seen from above, the white airplane's fuselage runs east-west.",
]
NATURAL_CARS = [  # ... and true of cars() (14 grey, white and black cars)
    "A row of mostly white and silver cars is parked along the road on the left side.",
    "About fifteen cars are parked closely together in the lot.",
    "Many vehicles, mostly grey, fill the parking spaces to the left of the road.",
    "Fourteen cars, mainly grey and white, are lined up in two neat rows in the right lane.",
]


# The caption of the one official GeoPixelD training sample (mbzuai-oryx/GeoPixel, data/GeoPixelD.json,
# tile P0224_0_800_0_800; annotations CC-BY-4.0), markup removed: four tennis courts, trees not labelled.
GEOPIXELD_P0224 = (
    "The image is an aerial view of a tennis court complex surrounded by dense greenery, with lush trees and "
    "foliage. The tennis courts are empty, and the atmosphere is tranquil due to the absence of people or "
    "movement. The tennis court-1 at right is a standard hard court with white boundary lines and a net "
    "stretched across the center. The tennis court-2 , tennis court-3 , and tennis court-4 features the "
    "standard dimensions and markings of a tennis court, situated at the bottom right of the image. This could "
    "be a recreational facility or a professional training ground."
)


def test_geopixeld_caption_raises_no_flag() -> None:
    labels = vocab.label_set(frozenset({"tennis court"}))
    assert "helicopter" in labels and "tree" not in labels
    tile = validate.Measured("holistic", tile_counts=(("tennis court", 4),), labels=labels)
    assert validate.check_measured(GEOPIXELD_P0224, tile) == []
    court = validate.Measured("instance", "tennis court", size_class="large", colours=(("green", 0.7), ("grey", 0.2)),
                              tile_counts=(("tennis court", 4),), labels=labels)
    assert validate.check_measured(GEOPIXELD_P0224.split(". ")[2], court) == []
    assert validate.check_position(GEOPIXELD_P0224.split(". ")[2], "right") == []


@pytest.mark.parametrize("text", NATURAL_PLANE)
def test_natural_true_answers_are_not_flagged(text: str) -> None:
    assert codes(text, plane()) == [] and validate.check_position(text, "left") == []


@pytest.mark.parametrize("text", NATURAL_CARS)
def test_natural_true_group_answers_are_not_flagged(text: str) -> None:
    assert codes(text, cars()) == [] and validate.check_position(text, "left") == []


def test_idioms_for_every_side() -> None:
    assert validate.check_position("A car left behind near the entrance.", "right") == []
    assert validate.check_position("A plane seen top-down, on top of the apron.", "bottom") == []
    assert validate.check_position("A plane at the top of the image.", "bottom")


def test_review_score_orders_by_severity_and_agreement() -> None:
    err = validate.flag("count_mismatch", "error", "x")
    warn = validate.flag("colour_contradiction", "warning", "x")
    info = validate.flag("category_not_named", "info", "x")
    assert validate.review_score([]) == 0.0
    scores = [validate.review_score(f) for f in ([info], [warn], [err], [err, warn])]
    assert scores == sorted(scores) and len(set(scores)) == 4
    assert validate.review_score([], agreement=0.4) > validate.review_score([], agreement=0.9) > 0
    assert validate.review_score([err] * 40) < 1.0
    assert validate.review_score([warn], weights={"colour_contradiction": 0.9}) == 0.9


def test_agreement_scores_facets() -> None:
    known = ["plane", "helicopter", "small vehicle"]
    same, _ = agreement("A white plane parked at the left, oriented horizontally.",
                        "A large white aircraft sits on the left side, lying horizontally.", "plane", known)
    colour, scores = agreement("A white plane parked at the left.", "A red plane parked at the left.", "plane", known)
    other, _ = agreement("A white plane at the left.", "A red helicopter at the right, vertical.", "plane", known)
    assert same > 0.75 > colour and other < colour
    assert scores["colour"] == 0.0
    assert disagreement_flag(same, {"category": 1.0}, "judge") is None
    flag = disagreement_flag(colour, scores, "judge")
    assert flag is not None and flag["code"] == "second_opinion_disagreement" and "agreement" in flag["detail"]


def _samples(path: Path) -> None:
    def row(tile: str, flags: list[str]) -> dict[str, Any]:
        return {"tile_id": tile, "image_id": "img", "flags": [
            {"code": c, "severity": validate.MEASURED_SEVERITY.get(c, "info"), "detail": "", "phrase": None,
             "instance_ids": None} for c in flags]}

    rows = [row("t1", ["count_mismatch"]), row("t2", ["count_mismatch", "colour_contradiction"]),
            row("t3", ["colour_contradiction"]), row("t4", ["colour_contradiction"]),
            row("u1", []), row("u2", []), row("u3", []), row("u4", [])]
    # an old samples file: no review_score column
    schema = pa.schema([f for f in SAMPLES_SCHEMA if f.name != "review_score"])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path / "samples.parquet")


DECIDED = {"t1": "rejected", "t2": "fixed", "t3": "accepted", "t4": "accepted", "u1": "accepted", "u2": "rejected",
           "u3": "accepted"}


def _check(report: Any) -> None:
    assert report.samples == 8 and report.reviewed == 7
    count, colour = report.by_code["count_mismatch"], report.by_code["colour_contradiction"]
    assert (count.rejected, count.fixed, count.accepted, count.problem_rate) == (1, 1, 0, 1.0)
    assert (colour.samples, colour.reviewed, colour.problem_rate) == (3, 3, pytest.approx(1 / 3))
    assert report.unflagged.samples == 4 and report.unflagged.reviewed == 3
    assert report.miss_estimate == pytest.approx(1 / 3)
    assert report.weights(min_reviewed=2) == {"colour_contradiction": pytest.approx(1 / 3), "count_mismatch": 1.0}
    text = report.markdown()
    assert "| count_mismatch | error | 2 | 2 | 1 | 1 | 0 | 100 %" in text and "Miss estimate" in text


def test_calibration_from_a_decisions_file(tmp_path: Path) -> None:
    _samples(tmp_path)
    rows = [{"tile_id": t, "review_status": s, "reviewer": "ann", "decided_at": datetime.now(UTC)} for t, s in DECIDED.items()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "decisions.parquet")
    _check(calibrate(tmp_path, decisions=tmp_path / "decisions.parquet"))
    # a samples file from before review_score still reads with today's schema (the column is null)
    old = pq.read_table(tmp_path / "samples.parquet", schema=SAMPLES_SCHEMA)
    assert old.column("review_score").null_count == old.num_rows == 8


def test_review_report_reads_the_review_database(tmp_path: Path) -> None:
    sa = pytest.importorskip("sqlalchemy")
    from annotations import db
    from pipeline.cli import app

    _samples(tmp_path)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'review.sqlite'}")
    db.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(db.decisions.insert(), [
            {"tile_id": t, "status": s, "reviewer": "ann", "decided_at": datetime.now(UTC), "revision": 1}
            for t, s in DECIDED.items()
        ])
    engine.dispose()
    _check(calibrate(tmp_path))  # DATA/review.sqlite by default
    result = CliRunner().invoke(app, ["review", "report", "--data", str(tmp_path), "--out", str(tmp_path / "cal.json")])
    assert result.exit_code == 0, result.output
    assert "count_mismatch" in result.output and (tmp_path / "cal.json").exists()
    missing = CliRunner().invoke(app, ["review", "report", "--data", str(tmp_path), "--decisions", str(tmp_path / "no.parquet")])
    assert missing.exit_code == 2 and "not found" in missing.output
    # The run report carries the calibration when the output folder has review decisions.
    from flows.artifacts import write_report

    run_report = write_report(tmp_path, {"out_dir": str(tmp_path)})
    assert "## Review calibration" in run_report.markdown and "Miss estimate" in run_report.markdown
