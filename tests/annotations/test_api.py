"""The review API: queue order and stickiness, decisions and fixes, optimistic locking, audit log,
statistics, bulk accept, the validator, and export-decisions (library and CLI)."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from annotations.cli import app as cli_app
from annotations.db import assignments, utcnow
from annotations.export import DECISIONS_SCHEMA, load_decisions
from annotations.queue import QueueConfig, build_queue
from annotations.samples import SampleSummary
from annotations.validate import parse_gcg, validate_fixed

NO_SPOTS = QueueConfig(spot_check_rate=0.0)


def decide(client, tile_id, action="accept", base_revision=0, **extra):
    return client.post(
        f"/api/samples/{tile_id}/decision", json={"action": action, "base_revision": base_revision, **extra}
    )


# ---------------------------------------------------------------- queue


def test_queue_orders_flagged_by_severity_and_spreads_deterministic_spot_checks():
    summaries = [SampleSummary(f"u{i:02d}", "none", ()) for i in range(40)]
    summaries += [
        SampleSummary("w1", "warning", ("a",)),
        SampleSummary("e1", "error", ("a",)),
        SampleSummary("i1", "info", ("a",)),
        SampleSummary("e2", "error", ("a", "b")),
        SampleSummary("w0", "warning", ("a",)),
    ]
    config = QueueConfig(spot_check_rate=0.1, seed=7)
    queue = build_queue(summaries, config)
    flagged = [item.tile_id for item in queue if not item.spot_check]
    assert flagged == ["e2", "e1", "w0", "w1", "i1"]  # severity, then more flags, then id
    spots = [item.tile_id for item in queue if item.spot_check]
    assert len(spots) == 4 and all(t.startswith("u") for t in spots)
    positions = [i for i, item in enumerate(queue) if item.spot_check]
    assert positions[0] < len(queue) - 4, "spot checks are spread among the flagged, not all at the end"
    # Deterministic: same seed, same queue, whatever the input order; another seed picks other tiles.
    assert build_queue(list(reversed(summaries)), config) == queue
    other = {
        i.tile_id for i in build_queue(summaries, QueueConfig(spot_check_rate=0.1, seed=8)) if i.spot_check
    }
    assert other != set(spots)
    assert [i.tile_id for i in build_queue(summaries, NO_SPOTS)] == flagged


def test_queue_config_is_validated():
    with pytest.raises(ValueError):
        QueueConfig(spot_check_rate=1.5)
    with pytest.raises(ValueError):
        QueueConfig(lease=timedelta(0))


def test_queue_through_api_follows_severity_and_is_sticky(make_review):
    review = make_review(queue_config=NO_SPOTS)
    alice, bob = review.client("alice"), review.client("bob")
    first = alice.get("/api/queue/next").json()["tile_id"]
    assert first == "P0001_0_128_0_128"  # error with two flags
    # Bob is not handed Alice's sample while she holds it.
    assert bob.get("/api/queue/next").json()["tile_id"] == "P0002_0_128_0_128"
    # Alice comes back (no `after`): she gets her sample again.
    assert alice.get("/api/queue/next").json()["tile_id"] == first
    # She skips it (j): the next free one, neither hers nor Bob's.
    skipped_to = alice.get("/api/queue/next", params={"after": first}).json()["tile_id"]
    assert skipped_to == "P0003_0_128_0_128"
    summary = alice.get("/api/queue/summary").json()
    assert summary == {"total": 5, "remaining": 5, "in_progress": 2, "samples": 25, "today": 0}
    sample = bob.get(f"/api/samples/{first}").json()
    assert sample["holder"] == "alice"
    # Deciding releases the assignment; then her earliest held sample comes back first.
    assert decide(alice, first).status_code == 200
    assert alice.get("/api/queue/next").json()["tile_id"] == "P0003_0_128_0_128"
    assert alice.get("/api/queue/summary").json()["remaining"] == 4
    # Peek shows without assigning.
    peeked = bob.get("/api/queue/peek", params={"after": "P0002_0_128_0_128"}).json()["tile_id"]
    assert peeked == "P0005_0_128_0_128"  # warning before info
    with review.engine.connect() as conn:
        held = dict(conn.execute(sa.select(assignments.c.tile_id, assignments.c.annotator)).all())
    assert held == {"P0002_0_128_0_128": "bob", "P0003_0_128_0_128": "alice"}


def test_lapsed_assignment_goes_to_someone_else(make_review):
    review = make_review(queue_config=QueueConfig(spot_check_rate=0.0, lease=timedelta(minutes=30)))
    alice, bob = review.client("alice"), review.client("bob")
    first = alice.get("/api/queue/next").json()["tile_id"]
    with review.engine.begin() as conn:
        conn.execute(sa.update(assignments).values(assigned_at=utcnow() - timedelta(hours=1)))
    assert bob.get("/api/queue/next").json()["tile_id"] == first


def test_queue_ends_when_everything_is_decided(make_review):
    review = make_review(queue_config=NO_SPOTS)
    alice = review.client("alice")
    seen = []
    tile_id = alice.get("/api/queue/next").json()["tile_id"]
    while tile_id is not None:
        seen.append(tile_id)
        assert decide(alice, tile_id).status_code == 200
        tile_id = alice.get("/api/queue/next", params={"after": tile_id}).json()["tile_id"]
    assert len(seen) == 5 and len(set(seen)) == 5
    assert alice.get("/api/queue/summary").json()["remaining"] == 0


# ---------------------------------------------------------------- sample, decisions, fixes


def test_sample_payload_has_caption_masks_flags_priors(make_review, tools):
    review = make_review()
    alice = review.client("alice")
    sample = alice.get("/api/samples/P0001_0_128_0_128").json()
    assert sample["width"] == 128 and sample["max_severity"] == "error"
    assert [f["code"] for f in sample["flags"]] == ["seg_mismatch", "count"]
    assert sample["original"]["gcg_caption"].count("[SEG]") == len(sample["masks"]) == 2
    assert sample["current"]["mask_refs"] == [0, 1]
    assert sample["masks"][0]["counts"] == tools.rect_mask(128, 128, 10, 10, 40, 30)["counts"]
    assert [p["instance_id"] for p in sample["priors"]] == [1, 2]
    assert sample["priors"][0]["length_m"] is None  # NaN in the parquet becomes null, not invalid JSON
    assert sample["revision"] == 0 and sample["decision"] is None and sample["has_marks"] is True
    image = alice.get("/api/samples/P0001_0_128_0_128/image/tile")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (review.data_dir / "tiles" / "P0001_0_128_0_128.png").read_bytes()
    assert alice.get("/api/samples/P0001_0_128_0_128/image/marks").status_code == 200
    assert alice.get("/api/samples/nope").status_code == 404


def test_fix_edits_relinks_and_drops_phrases(make_review):
    review = make_review()
    alice = review.client("alice")
    tile = "P0001_0_128_0_128"
    original = alice.get(f"/api/samples/{tile}").json()
    # Edit a phrase's words and a sentence, and swap the two phrases' masks.
    gcg = "A busy parking lot. The <p> red car </p> [SEG] is next to the <p>truck</p>[SEG]."
    response = decide(alice, tile, "fix", fix={"gcg_caption": gcg, "mask_refs": [1, 0]}, note="car is red")
    assert response.status_code == 200, response.text
    assert response.json()["decision"]["status"] == "fixed"
    assert response.json()["decision"]["revision"] == 1
    sample = alice.get(f"/api/samples/{tile}").json()
    current = sample["current"]
    assert (
        current["gcg_caption"]
        == "A busy parking lot. The <p> red car </p> [SEG] is next to the <p> truck </p> [SEG]."
    )
    assert current["caption"] == "A busy parking lot. The red car is next to the truck."
    for phrase in current["phrases"]:
        assert current["caption"][phrase["start"] : phrase["end"]] == phrase["text"]
    assert [p["text"] for p in current["phrases"]] == ["red car", "truck"]
    assert [p["category"] for p in current["phrases"]] == ["large-vehicle", "small-vehicle"]  # from the mask
    assert current["mask_refs"] == [1, 0]
    assert sample["original"] == original["original"]  # the source data is never changed
    assert sample["decision"]["note"] == "car is red"
    # Drop a phrase: its words stay, its mask goes.
    gcg = "A busy parking lot. The red car is next to the <p> truck </p> [SEG]."
    response = decide(alice, tile, "fix", base_revision=1, fix={"gcg_caption": gcg, "mask_refs": [0]})
    assert response.status_code == 200, response.text
    table = load_decisions(review.data_dir, review.db_url)
    row = next(r for r in table.to_pylist() if r["tile_id"] == tile)
    assert row["review_status"] == "fixed" and row["revision"] == 2
    assert row["caption"] == "A busy parking lot. The red car is next to the truck."
    assert row["phrases"] == [
        {
            "text": "truck",
            "start": 47,
            "end": 52,
            "instance_ids": [1],
            "category": "small-vehicle",
            "kind": "instance",
        }
    ]
    assert row["masks"] == [original["masks"][0]]


@pytest.mark.parametrize(
    ("gcg", "refs", "code"),
    [
        ("The <p> car </p> is here.", [0], "markup_missing_seg"),
        ("The <p> car <p> x </p> [SEG] </p> [SEG].", [0, 1], "markup_nested"),
        ("The <p> car </p> [SEG] and <p> truck", [0], "markup_unclosed"),
        ("The car [SEG].", [], "markup_orphan_seg"),
        ("The <p> car </p> [SEG] and <p> truck </p> [SEG].", [0, None], "seg_mask_count_mismatch"),
        ("The <p> car </p> [SEG].", [0, 1], "phrase_count_mismatch"),
        ("The <p> car </p> [SEG].", [7], "mask_ref_invalid"),
        ("The <p>  </p> [SEG].", [0], "phrase_empty"),
    ],
)
def test_invalid_fix_is_refused_with_flags(make_review, gcg, refs, code):
    review = make_review()
    alice = review.client("alice")
    tile = "P0001_0_128_0_128"
    response = decide(alice, tile, "fix", fix={"gcg_caption": gcg, "mask_refs": refs})
    assert response.status_code == 422
    assert code in [f["code"] for f in response.json()["flags"]]
    # Nothing was saved, and the draft can be checked without saving.
    assert alice.get(f"/api/samples/{tile}").json()["revision"] == 0
    checked = alice.post(f"/api/samples/{tile}/validate", json={"gcg_caption": gcg, "mask_refs": refs}).json()
    assert checked["ok"] is False and code in [f["code"] for f in checked["flags"]]


def test_fix_needs_its_content(make_review):
    alice = make_review().client("alice")
    assert decide(alice, "P0001_0_128_0_128", "fix").status_code == 422
    assert decide(alice, "P0001_0_128_0_128", "approve").status_code == 422
    assert decide(alice, "P0001_0_128_0_128", base_revision=-1).status_code == 422


def test_optimistic_locking_second_save_gets_409_and_nothing_is_lost(make_review):
    review = make_review()
    alice, bob = review.client("alice"), review.client("bob")
    tile = "P0002_0_128_0_128"
    assert alice.get(f"/api/samples/{tile}").json()["revision"] == 0
    assert bob.get(f"/api/samples/{tile}").json()["revision"] == 0
    gcg = "A road with <p> two parked cars </p> [SEG] parked."
    assert decide(alice, tile, "fix", fix={"gcg_caption": gcg, "mask_refs": [0]}).status_code == 200
    late = decide(bob, tile, "reject", note="looks wrong")
    assert late.status_code == 409
    body = late.json()
    assert body["error"] == "conflict" and "alice" in body["detail"]
    assert body["current"]["status"] == "fixed" and body["current"]["revision"] == 1
    # Alice's fix is intact, and Bob's attempt is in the audit log.
    sample = bob.get(f"/api/samples/{tile}").json()
    assert sample["decision"]["reviewer"] == "alice" and sample["current"]["gcg_caption"] == gcg
    events = bob.get("/api/events", params={"tile_id": tile}).json()["events"]
    conflict = next(e for e in events if e["action"] == "conflict")
    assert conflict["actor"] == "bob" and conflict["after"] == {"status": "rejected", "note": "looks wrong"}
    # Bob decides again on top of Alice's revision.
    again = decide(bob, tile, "reject", base_revision=1, note="still wrong")
    assert again.status_code == 200 and again.json()["decision"]["revision"] == 2


def test_concurrent_first_decisions_only_one_wins(make_review):
    from concurrent.futures import ThreadPoolExecutor

    review = make_review()
    clients = [review.client(name) for name in ("ann1", "ann2", "ann3", "ann4")]
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda c: decide(c, "P0004_0_128_0_128").status_code, clients))
    assert sorted(codes) == [200, 409, 409, 409]


def test_audit_log_records_before_and_after(make_review):
    review = make_review()
    alice, bob = review.client("alice", role="lead"), review.client("bob")
    tile = "P0004_0_128_0_128"
    assert decide(alice, tile).status_code == 200
    gcg = "An empty <p> white van </p> [SEG]."
    assert (
        decide(bob, tile, "fix", base_revision=1, fix={"gcg_caption": gcg, "mask_refs": [0]}).status_code
        == 200
    )
    events = alice.get("/api/events", params={"tile_id": tile}).json()["events"]
    accept, fix = events[1], events[0]  # newest first
    assert (accept["actor"], accept["action"], accept["base_revision"], accept["revision"]) == (
        "alice",
        "accept",
        0,
        1,
    )
    assert accept["before"]["status"] == "unreviewed" and accept["after"]["status"] == "accepted"
    assert (fix["actor"], fix["action"], fix["revision"]) == ("bob", "fix", 2)
    assert fix["before"]["gcg_caption"] == "An empty <p> white car </p> [SEG]."
    assert fix["after"]["gcg_caption"] == gcg and fix["after"]["status"] == "fixed"
    assert fix["at"].endswith("+00:00")
    # Per-annotator counts (a lead's report; annotators are refused).
    assert bob.get("/api/stats").status_code == 403
    assert bob.get("/api/events/export").status_code == 403
    stats = alice.get("/api/stats").json()
    by_name = {a["name"]: a for a in stats["annotators"]}
    assert by_name["alice"]["accept"] == 1 and by_name["alice"]["today"] == 1
    assert by_name["bob"]["fix"] == 1
    assert stats["decisions"] == {"fixed": 1}
    # The log is exportable as JSON Lines, logins included.
    lines = [json.loads(line) for line in alice.get("/api/events/export").text.splitlines()]
    assert [e["action"] for e in lines].count("login") == 2
    assert [e["action"] for e in lines if e["tile_id"] == tile] == ["accept", "fix"]
    # Append-only: the database refuses to change history.
    with pytest.raises(sa.exc.DatabaseError), review.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE events SET actor = 'mallory'")
    with pytest.raises(sa.exc.DatabaseError), review.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events")


def test_bulk_accept_over_a_filter(make_review):
    review = make_review(queue_config=NO_SPOTS)
    alice, bob = review.client("alice", role="lead"), review.client("bob")
    held = bob.get("/api/queue/next").json()["tile_id"]  # bob holds P0001 (error)
    # Annotators cannot bulk-accept (not even count).
    refused = bob.post("/api/bulk-accept", json={"severities": ["error"], "dry_run": False})
    assert refused.status_code == 403 and bob.get("/api/queue/summary").json()["remaining"] == 5
    dry = alice.post("/api/bulk-accept", json={"severities": ["none", "info"]}).json()
    assert dry["dry_run"] is True and dry["count"] == 21
    assert alice.get("/api/queue/summary").json()["remaining"] == 5  # a dry run changes nothing
    assert decide(alice, "U0000_0_128_0_128", "reject").status_code == 200
    done = alice.post("/api/bulk-accept", json={"severities": ["none", "info"], "dry_run": False}).json()
    assert done["count"] == 20 and "U0000_0_128_0_128" not in done["tile_ids"]
    table = load_decisions(review.data_dir, review.db_url).to_pylist()
    status = {r["tile_id"]: r["review_status"] for r in table}
    assert status["U0000_0_128_0_128"] == "rejected" and status["U0001_0_128_0_128"] == "accepted"
    assert status["P0004_0_128_0_128"] == "accepted" and status["P0003_0_128_0_128"] == "unreviewed"
    # A flag-code filter, and samples someone else is working on are left alone.
    errors = alice.post(
        "/api/bulk-accept", json={"severities": ["error"], "flag_code": "seg_mismatch", "dry_run": False}
    ).json()
    assert errors["count"] == 0 and held == "P0001_0_128_0_128"
    events = alice.get("/api/events", params={"tile_id": "U0001_0_128_0_128"}).json()["events"]
    assert [e["action"] for e in events] == ["bulk_accept"]


# ---------------------------------------------------------------- validator


def test_validate_fixed_accepts_clean_captions(tools):
    masks = [tools.rect_mask(64, 64, 0, 0, 10, 10), tools.rect_mask(64, 64, 20, 20, 30, 40)]
    gcg = "The <p> tennis court-1 </p> [SEG] at right, <p> court-2 </p> [SEG] , ok."
    parsed = parse_gcg(gcg)
    assert parsed.caption == "The tennis court-1 at right, court-2 , ok."
    phrases = [{"text": p.text, "start": p.start, "end": p.end} for p in parsed.phrases]
    assert validate_fixed(gcg, masks, phrases) == []


def test_validate_fixed_reports_problems(tools):
    mask = tools.rect_mask(64, 64, 0, 0, 10, 10)
    codes = lambda flags: {f["code"] for f in flags}  # noqa: E731
    assert "seg_mask_count_mismatch" in codes(validate_fixed("The <p> a </p> [SEG].", [mask, mask]))
    assert "markup_stray_close" in codes(validate_fixed("a </p> b", []))
    assert "mask_invalid" in codes(validate_fixed("<p> a </p> [SEG]", [{"size": [64, 64], "counts": "0"}]))
    assert "mask_invalid" in codes(validate_fixed("<p> a </p> [SEG]", [{"size": [64], "counts": "x"}]))
    other_size = tools.rect_mask(32, 32, 0, 0, 5, 5)
    assert "mask_size_mismatch" in codes(
        validate_fixed("<p> a </p> [SEG] <p> b </p> [SEG]", [mask, other_size])
    )
    empty = tools.rect_mask(64, 64, 0, 0, 0, 0)
    flags = validate_fixed("<p> a </p> [SEG] <p> b </p> [SEG]", [empty, empty])
    assert {("mask_empty", "warning"), ("mask_duplicate", "warning")} <= {
        (f["code"], f["severity"]) for f in flags
    }
    spans = validate_fixed("The <p> a </p> [SEG].", [mask], [{"text": "a", "start": 3, "end": 4}])
    assert codes(spans) == {"phrase_span_mismatch"}
    tag = validate_fixed("<p> a </p> [SEG] <b>x</b>", [mask])
    assert [(f["code"], f["severity"]) for f in tag] == [("markup_unexpected_tag", "warning")] * 2


# ---------------------------------------------------------------- export-decisions and the CLI


def test_load_decisions_has_one_row_per_tile(make_review):
    review = make_review()
    alice = review.client("alice")
    assert decide(alice, "P0001_0_128_0_128").status_code == 200
    assert decide(alice, "P0002_0_128_0_128", "reject").status_code == 200
    fix = {"gcg_caption": "The <p> lorry </p> [SEG] is alone.", "mask_refs": [0]}
    assert decide(alice, "P0003_0_128_0_128", "fix", fix=fix).status_code == 200
    table = load_decisions(review.data_dir, review.db_url)
    assert table.schema.equals(DECISIONS_SCHEMA)
    assert table.num_rows == 25
    rows = {r["tile_id"]: r for r in table.to_pylist()}
    assert [
        rows[t]["review_status"]
        for t in ("P0001_0_128_0_128", "P0002_0_128_0_128", "P0003_0_128_0_128", "P0004_0_128_0_128")
    ] == ["accepted", "rejected", "fixed", "unreviewed"]
    accepted, fixed, unreviewed = (
        rows["P0001_0_128_0_128"],
        rows["P0003_0_128_0_128"],
        rows["P0004_0_128_0_128"],
    )
    assert accepted["reviewer"] == "alice" and accepted["revision"] == 1
    assert accepted["decided_at"].tzinfo is not None and accepted["decided_at"].utcoffset() == timedelta(0)
    assert accepted["gcg_caption"] is None and accepted["phrases"] is None and accepted["masks"] is None
    assert fixed["gcg_caption"] == "The <p> lorry </p> [SEG] is alone."
    assert fixed["caption"] == "The lorry is alone." and fixed["phrases"][0]["text"] == "lorry"
    assert len(fixed["masks"]) == 1 and fixed["masks"][0]["size"] == [128, 128]
    assert unreviewed["reviewer"] is None and unreviewed["decided_at"] is None and unreviewed["revision"] == 0
    assert table.schema.field("decided_at").type == pa.timestamp("us", tz="UTC")


def test_cli_add_user_and_export(make_review, tmp_path):
    review = make_review()
    runner = CliRunner()
    data = str(review.data_dir)
    db = ["--db", review.db_url] if review.db_url else []
    result = runner.invoke(
        cli_app, ["add-user", "carol", "--data", data, *db, "--password-stdin"], input="a long passphrase\n"
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(
        cli_app, ["add-user", "carol", "--data", data, *db, "--password-stdin"], input="another one\n"
    )
    assert again.exit_code == 1 and "exists" in again.output
    short = runner.invoke(
        cli_app, ["add-user", "dave", "--data", data, *db, "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 1
    carol = review.client()
    login = carol.post("/api/login", json={"name": "carol", "password": "a long passphrase"})
    assert login.status_code == 200
    carol.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    assert decide(carol, "P0001_0_128_0_128").status_code == 200

    out = tmp_path / "out" / "decisions.parquet"
    result = runner.invoke(cli_app, ["export-decisions", "--data", data, *db, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "accepted 1" in result.output and "unreviewed 24" in result.output
    table = pq.read_table(out)
    assert table.num_rows == 25
    assert table.filter(pa.compute.equal(table["review_status"], "accepted"))["reviewer"].to_pylist() == [
        "carol"
    ]

    events_out = tmp_path / "events.jsonl"
    result = runner.invoke(cli_app, ["export-events", "--data", data, *db, "--out", str(events_out)])
    assert result.exit_code == 0, result.output
    actions = [json.loads(line)["action"] for line in events_out.read_text().splitlines()]
    assert actions == ["add_user", "login", "accept"]
    parquet_out = tmp_path / "events.parquet"
    assert (
        runner.invoke(cli_app, ["export-events", "--data", data, *db, "--out", str(parquet_out)]).exit_code
        == 0
    )
    assert pq.read_table(parquet_out).column("action").to_pylist() == actions


def test_cli_help_lists_commands():
    result = CliRunner().invoke(cli_app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "add-user", "export-decisions", "export-events"):
        assert command in result.output
    serve_help = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "--spot-check-rate" in serve_help.output and "DIR/review.sqlite" in serve_help.output


def test_decisions_survive_a_restart_and_other_db_url(make_review, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'team.sqlite'}"
    first = make_review(db_url=db_url)
    alice = first.client("alice")
    assert decide(alice, "P0001_0_128_0_128").status_code == 200
    second = make_review(first.data_dir, db_url=db_url)
    bob = second.client("bob")
    assert bob.get("/api/samples/P0001_0_128_0_128").json()["decision"]["reviewer"] == "alice"
    assert not (first.data_dir / "review.sqlite").exists()
    assert (
        load_decisions(first.data_dir, db_url)
        .filter(pa.compute.equal(pa.compute.field("review_status"), "accepted"))
        .num_rows
        == 1
    )
    assert load_decisions(first.data_dir).column("review_status").to_pylist().count("accepted") == 0
    assert utcnow().tzinfo is UTC


def test_load_decisions_without_a_review_database_reads_nothing_and_writes_nothing(review_dir):
    table = load_decisions(review_dir)
    assert set(table.column("review_status").to_pylist()) == {"unreviewed"}
    assert table.num_rows == 25 and not (review_dir / "review.sqlite").exists()


def test_queue_uses_the_worst_flag_when_max_severity_disagrees(tmp_path, tools):
    from annotations.db import open_engine, sample_index
    from annotations.index import ensure_index

    spec = tools.TileSpec("X_0_1_0_1", ["A ", tools.Phrase("car", (0, 0, 4, 4))], [("bad", "error", "x")])
    root = tools.write_dataset(tmp_path / "d", [spec])
    table = pq.read_table(root / "samples.parquet")
    table = table.set_column(table.schema.get_field_index("max_severity"), "max_severity", pa.array(["none"]))
    pq.write_table(table, root / "samples.parquet")
    engine = open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    ensure_index(engine, root)
    with engine.connect() as conn:
        assert list(conn.execute(sa.select(sample_index.c.max_severity, sample_index.c.position))) == [
            ("error", 0)
        ]
    engine.dispose()


def test_queue_puts_the_higher_needs_review_score_first_within_a_severity(tmp_path, tools):
    """describe's review_score orders samples of one severity (files without it keep the old order)."""
    from annotations.db import open_engine, sample_index
    from annotations.index import ensure_index

    specs = [
        tools.TileSpec(f"X_{k}_1_0_1", ["A ", tools.Phrase("car", (0, 0, 4, 4))], [("w", "warning", "x")] * (3 - k))
        for k in range(3)
    ]  # X_0 has the most flags, so the old order is X_0, X_1, X_2
    root = tools.write_dataset(tmp_path / "d", specs)
    table = pq.read_table(root / "samples.parquet")
    scores = pa.array([0.2, 0.5, 0.9], type=pa.float64())
    if "review_score" in table.schema.names:
        table = table.set_column(table.schema.get_field_index("review_score"), "review_score", scores)
    else:
        table = table.append_column("review_score", scores)
    pq.write_table(table, root / "samples.parquet")
    engine = open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    ensure_index(engine, root)
    with engine.connect() as conn:
        order = [t for (t,) in conn.execute(sa.select(sample_index.c.tile_id).order_by(sample_index.c.position))]
    assert order == ["X_2_1_0_1", "X_1_1_0_1", "X_0_1_0_1"]
    engine.dispose()
