"""The review API for a day's work: the queue paged from the database (same order as the reference,
filters), samples read one row group at a time, flags tied to phrases, phrase-level decisions, and undo.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from annotations.db import open_engine, sample_index
from annotations.export import load_decisions
from annotations.index import SampleSummary, ensure_index
from annotations.queue import QueueConfig, ReviewQueue, build_queue

NO_SPOTS = QueueConfig(spot_check_rate=0.0)
SEVERITIES = ("none", "info", "warning", "error")


def decide(client: Any, tile_id: str, action: str = "accept", base_revision: int = 0, **extra: Any) -> Any:
    return client.post(
        f"/api/samples/{tile_id}/decision", json={"action": action, "base_revision": base_revision, **extra}
    )


def phrase(
    client: Any, tile_id: str, n: int, action: str, text: str | None = None, base_revision: int = 0
) -> Any:
    return client.post(
        f"/api/samples/{tile_id}/phrases/{n}/decision",
        json={"action": action, "base_revision": base_revision, "text": text},
    )


def many_specs(tools: Any, n: int, seed: int = 5) -> list[Any]:
    """``n`` tiles with pseudo-random severities, flag counts and categories."""
    import random

    rng = random.Random(seed)
    specs = []
    for i in range(n):
        severity = rng.choice(SEVERITIES)
        flags = [] if severity == "none" else [(f"code{rng.randint(0, 3)}", severity, "x")]
        flags += [(f"code{rng.randint(0, 3)}", "info", "y") for _ in range(rng.randint(0, 2) if flags else 0)]
        category = rng.choice(["ship", "harbor", "small-vehicle"])
        specs.append(
            tools.TileSpec(
                f"T{i:04d}_0_32_0_32",
                ["A ", tools.Phrase("thing", (1, 1, 9, 9), category=category)],
                flags,
                size=32,
            )
        )
    return specs


# ---------------------------------------------------------------- queue from the database


def test_database_queue_matches_the_reference_order_and_pages(tmp_path, tools):
    specs = many_specs(tools, 300)
    root = tmp_path / "d"
    tools.write_dataset(root, specs)
    engine = open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    config = QueueConfig(spot_check_rate=0.2, seed=3)
    stats = ensure_index(
        engine, root, spot_check_rate=config.spot_check_rate, seed=config.seed, batch_rows=17
    )
    summaries = []
    for row in pq.read_table(root / "samples.parquet").to_pylist():
        summaries.append(
            SampleSummary(row["tile_id"], row["max_severity"], tuple(f["code"] for f in row["flags"]))
        )
    expected = [item.tile_id for item in build_queue(summaries, config)]
    with engine.connect() as conn:
        got = list(
            conn.execute(
                sa.select(sample_index.c.tile_id)
                .where(sample_index.c.position.is_not(None))
                .order_by(sample_index.c.position)
            ).scalars()
        )
    assert stats.rebuilt and stats.samples == 300 and stats.queued == len(expected)
    assert got == expected
    # The queue hands tiles out in that order, a page of 7 at a time, wrapping around after the last.
    queue = ReviewQueue(engine, config, chunk_size=7)
    handed = [queue.next_for("alice")]
    for _ in range(len(expected) - 1):
        handed.append(queue.next_for("alice", handed[-1]))
    assert handed == expected
    assert queue.next_for("alice", expected[-1]) == expected[0]  # wraps to the first she still holds
    assert queue.peek("bob") == expected[0] or queue.peek("bob") is None
    # A second start on the same files and settings keeps the index; other settings rebuild it.
    assert not ensure_index(engine, root, spot_check_rate=0.2, seed=3).rebuilt
    assert ensure_index(engine, root, spot_check_rate=0.0, seed=3).rebuilt
    engine.dispose()


def test_queue_filters_by_flag_code_and_category(make_review, tools, tmp_path):
    root = tools.write_dataset(tmp_path / "d", many_specs(tools, 60))
    review = make_review(root, queue_config=NO_SPOTS)
    alice = review.client("alice")
    facets = alice.get("/api/queue/facets").json()
    codes = {f["value"]: f["samples"] for f in facets["flag_codes"]}
    categories = {f["value"]: f["samples"] for f in facets["categories"]}
    assert set(categories) == {"ship", "harbor", "small-vehicle"} and sum(categories.values()) == 60
    table = pq.read_table(root / "samples.parquet").to_pylist()
    with_code1 = {r["tile_id"] for r in table if "code1" in {f["code"] for f in r["flags"]}}
    assert codes["code1"] == len(with_code1)
    seen: list[str] = []
    after = None
    while True:
        tile = alice.get(
            "/api/queue/next",
            params={"after": after, "flag_code": "code1"} if after else {"flag_code": "code1"},
        ).json()["tile_id"]
        if tile is None or tile in seen:
            break
        seen.append(tile)
        assert decide(alice, tile).status_code == 200
        after = tile
    assert set(seen) == with_code1
    summary = alice.get("/api/queue/summary", params={"flag_code": "code1"}).json()
    assert summary["remaining"] == 0 and summary["today"] == len(with_code1)
    ships = alice.get("/api/queue/next", params={"category": "ship"}).json()["tile_id"]
    row = next(r for r in table if r["tile_id"] == ships)
    assert row["phrases"][0]["category"] == "ship"
    # A filter value is data, not a pattern.
    assert alice.get("/api/queue/next", params={"flag_code": "%"}).json()["tile_id"] is None


def test_samples_in_many_row_groups_are_read_one_at_a_time(tmp_path, tools, make_review):
    specs = many_specs(tools, 40)
    root = tools.write_dataset(tmp_path / "d", specs)
    table = pq.read_table(root / "samples.parquet")
    pq.write_table(table, root / "samples.parquet", row_group_size=6)
    instances = pq.read_table(root / "instances.parquet")
    pq.write_table(instances, root / "instances.parquet", row_group_size=5)
    review = make_review(root)
    alice = review.client("alice")
    for row in table.to_pylist():
        sample = alice.get(f"/api/samples/{row['tile_id']}").json()
        assert sample["original"]["gcg_caption"] == row["gcg_caption"]
        assert sample["masks"] == row["masks"]
        assert [p["tile_id"] for p in sample["priors"]] == [row["tile_id"]]
        assert "rle" not in sample["priors"][0]


def test_flags_carry_their_phrase_and_instances_old_rows_too(tmp_path, tools, make_review):
    """The describe stage's new flag fields (phrase, instance_ids) and rows written before them."""
    spec = tools.TileSpec(
        "N_0_128_0_128",
        ["The ", tools.Phrase("car", (1, 1, 9, 9)), " by the ", tools.Phrase("truck", (20, 20, 40, 40))],
    )
    row = tools.sample_row(spec)
    row["flags"] = [
        {"code": "count", "severity": "info", "detail": "a", "phrase": None, "instance_ids": None},
        {"code": "category", "severity": "error", "detail": "b", "phrase": 1, "instance_ids": [7, 8]},
    ]
    row["max_severity"] = "error"
    from annotations.samples import SAMPLES_SCHEMA

    flag = pa.struct(
        [
            ("code", pa.string()),
            ("severity", pa.string()),
            ("detail", pa.string()),
            ("phrase", pa.int32()),
            ("instance_ids", pa.list_(pa.int64())),
        ]
    )
    schema = SAMPLES_SCHEMA.set(SAMPLES_SCHEMA.get_field_index("flags"), pa.field("flags", pa.list_(flag)))
    root = tools.write_dataset(tmp_path / "d", [spec])
    pq.write_table(pa.Table.from_pylist([row], schema=schema), root / "samples.parquet")
    review = make_review(root)
    alice = review.client("alice")
    flags = alice.get("/api/samples/N_0_128_0_128").json()["flags"]
    assert flags[1] == {
        "code": "category",
        "severity": "error",
        "detail": "b",
        "phrase": 1,
        "instance_ids": [7, 8],
    }
    # A file written before flags had phrase and instance_ids: its flag struct has three fields only.
    old_flag = pa.struct([("code", pa.string()), ("severity", pa.string()), ("detail", pa.string())])
    old_schema = SAMPLES_SCHEMA.set(SAMPLES_SCHEMA.get_field_index("flags"), pa.field("flags", pa.list_(old_flag)))
    old_row = {**row, "flags": [{"code": "seg_mismatch", "severity": "error", "detail": "2 [SEG] for 3 instances"}]}
    old_root = tools.write_dataset(tmp_path / "old", [spec])
    pq.write_table(pa.Table.from_pylist([old_row], schema=old_schema), old_root / "samples.parquet")
    assert pq.read_schema(old_root / "samples.parquet").field("flags").type.value_type.num_fields == 3
    bob = make_review(old_root).client("bob")
    assert bob.get("/api/samples/N_0_128_0_128").json()["flags"] == [
        {"code": "seg_mismatch", "severity": "error", "detail": "2 [SEG] for 3 instances", "phrase": None,
         "instance_ids": None}
    ]


# ---------------------------------------------------------------- phrase-level decisions

TWO = (
    "P0001_0_128_0_128"  # "A parking lot. The <p> white car </p> [SEG] is next to the <p> truck </p> [SEG]."
)


def test_phrase_decisions_decide_the_sample_when_all_phrases_are(make_review):
    review = make_review()
    alice = review.client("alice")
    first = phrase(alice, TWO, 0, "fix", "red car")
    assert first.status_code == 200, first.text
    assert first.json()["decision"] is None and first.json()["phrase_decisions"]["0"]["status"] == "fixed"
    sample = alice.get(f"/api/samples/{TWO}").json()
    assert sample["decision"] is None and sample["phrase_decisions"]["0"]["text"] == "red car"
    last = phrase(alice, TWO, 1, "reject")
    assert last.status_code == 200, last.text
    assert last.json()["decision"]["status"] == "fixed"
    rows = {r["tile_id"]: r for r in load_decisions(review.data_dir, review.db_url).to_pylist()}
    fixed = rows[TWO]
    # The fixed phrase has its new words; the rejected one keeps its words but loses its mask.
    assert fixed["gcg_caption"] == "A parking lot. The <p> red car </p> [SEG] is next to the truck."
    assert [p["text"] for p in fixed["phrases"]] == ["red car"] and len(fixed["masks"]) == 1
    events = [e["action"] for e in alice.get("/api/events", params={"tile_id": TWO}).json()["events"]]
    assert events == ["phrases_done", "phrase_reject", "phrase_fix"]
    # A decided sample takes no more phrase decisions.
    assert phrase(alice, TWO, 0, "accept").status_code == 409


@pytest.mark.parametrize(
    ("actions", "status"), [(["accept", "accept"], "accepted"), (["reject", "reject"], "rejected")]
)
def test_all_phrases_accepted_or_rejected(make_review, actions, status):
    review = make_review()
    alice = review.client("alice")
    for n, action in enumerate(actions):
        response = phrase(alice, TWO, n, action)
        assert response.status_code == 200, response.text
    assert response.json()["decision"]["status"] == status


def test_bad_phrase_decisions_are_refused(make_review):
    review = make_review()
    alice = review.client("alice")
    assert phrase(alice, TWO, 5, "accept").status_code == 422
    assert phrase(alice, TWO, 0, "fix", "  ").status_code == 422
    markup = phrase(alice, TWO, 0, "fix", "a <p> b </p> [SEG]")
    assert markup.status_code == 422 and markup.json()["flags"][0]["code"] == "phrase_text_invalid"
    assert alice.get(f"/api/samples/{TWO}").json()["phrase_decisions"] == {}


# ---------------------------------------------------------------- undo


def test_undo_takes_back_my_last_decisions_in_order(make_review):
    review = make_review(queue_config=NO_SPOTS)
    alice, bob = review.client("alice"), review.client("bob")
    assert alice.post("/api/undo").status_code == 404
    assert decide(alice, "P0001_0_128_0_128").status_code == 200
    fix = {"gcg_caption": "A road with <p> cars </p> [SEG] parked.", "mask_refs": [0]}
    assert decide(alice, "P0002_0_128_0_128", "fix", fix=fix).status_code == 200
    assert decide(alice, "P0002_0_128_0_128", "reject", base_revision=1).status_code == 200
    undone = alice.post("/api/undo").json()
    assert undone["tile_id"] == "P0002_0_128_0_128" and undone["undid"] == ["reject"]
    sample = alice.get("/api/samples/P0002_0_128_0_128").json()
    assert sample["decision"]["status"] == "fixed" and sample["current"]["phrases"][0]["text"] == "cars"
    assert sample["revision"] == 3  # an undo is a new revision, never a reused one
    assert alice.post("/api/undo").json()["undid"] == ["fix"]
    assert alice.get("/api/samples/P0002_0_128_0_128").json()["decision"] is None
    assert alice.get("/api/queue/next").json()["tile_id"] == "P0002_0_128_0_128"  # back with her
    assert bob.get("/api/queue/next").json()["tile_id"] != "P0002_0_128_0_128"
    assert alice.post("/api/undo").json()["undid"] == ["accept"]
    assert alice.post("/api/undo").status_code == 404
    actions = [e["action"] for e in alice.get("/api/events", params={"limit": 100}).json()["events"]]
    assert actions.count("undo") == 3
    statuses = {
        r["tile_id"]: r["review_status"] for r in load_decisions(review.data_dir, review.db_url).to_pylist()
    }
    assert statuses["P0001_0_128_0_128"] == statuses["P0002_0_128_0_128"] == "unreviewed"


def test_undo_of_the_last_phrase_reopens_the_sample(make_review):
    review = make_review()
    alice = review.client("alice")
    assert phrase(alice, TWO, 0, "accept").status_code == 200
    assert phrase(alice, TWO, 1, "accept").json()["decision"]["status"] == "accepted"
    assert alice.post("/api/undo").json()["undid"] == ["phrases_done", "phrase_accept"]
    sample = alice.get(f"/api/samples/{TWO}").json()
    assert sample["decision"] is None and list(sample["phrase_decisions"]) == ["0"]


def test_undo_refuses_when_someone_changed_the_sample_since(make_review):
    review = make_review()
    alice, bob = review.client("alice"), review.client("bob")
    assert decide(alice, "P0004_0_128_0_128").status_code == 200
    assert decide(bob, "P0004_0_128_0_128", "reject", base_revision=1).status_code == 200
    refused = alice.post("/api/undo")
    assert refused.status_code == 409 and "bob" in refused.json()["detail"]
    assert alice.get("/api/samples/P0004_0_128_0_128").json()["decision"]["status"] == "rejected"


# ---------------------------------------------------------------- masks drawn in the app


def test_fix_with_a_corrected_mask_and_a_new_object(make_review, tools):
    review = make_review()
    alice = review.client("alice")
    tile = "P0004_0_128_0_128"  # "An empty <p> white car </p> [SEG]." with one 128x128 mask
    corrected = tools.rect_mask(128, 128, 12, 12, 44, 30)
    added = tools.rect_mask(128, 128, 80, 80, 120, 110)
    fix = {
        "gcg_caption": "An empty <p> white car </p> [SEG]. A <p> bus </p> [SEG] was missed.",
        "mask_refs": [1, 2],  # 0 is the original mask; 1 and 2 are the new ones
        "new_masks": [corrected, added],
    }
    checked = alice.post(f"/api/samples/{tile}/validate", json=fix).json()
    assert checked["ok"] is True, checked
    assert decide(alice, tile, "fix", fix=fix).status_code == 200
    sample = alice.get(f"/api/samples/{tile}").json()
    assert sample["current"]["mask_refs"] == [1, 2] and sample["current"]["new_masks"] == [corrected, added]
    row = {r["tile_id"]: r for r in load_decisions(review.data_dir, review.db_url).to_pylist()}[tile]
    assert row["masks"] == [corrected, added]
    assert [p["text"] for p in row["phrases"]] == ["white car", "bus"]
    # Undo and redo keep the drawn masks.
    assert decide(alice, tile, "reject", base_revision=1).status_code == 200
    assert alice.post("/api/undo").json()["undid"] == ["reject"]
    row = {r["tile_id"]: r for r in load_decisions(review.data_dir, review.db_url).to_pylist()}[tile]
    assert row["review_status"] == "fixed" and row["masks"] == [corrected, added]


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        ({"size": [64, 64], "counts": "PP"}, "mask_size_mismatch"),
        ({"size": [128, 128], "counts": "not an rle!"}, "mask_invalid"),
        ({"size": [128, 128], "counts": "0"}, "mask_invalid"),
    ],
)
def test_drawn_masks_are_validated_like_any_mask(make_review, mask, code):
    review = make_review()
    alice = review.client("alice")
    fix = {"gcg_caption": "An empty <p> car </p> [SEG].", "mask_refs": [1], "new_masks": [mask]}
    response = decide(alice, "P0004_0_128_0_128", "fix", fix=fix)
    assert response.status_code == 422
    assert code in {f["code"] for f in response.json()["flags"]}
