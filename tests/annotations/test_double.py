"""Two-reviewer mode: blind double reviews, agreement decides, disagreement goes to a lead, and the
agreement report (share of agreement, Cohen's kappa overall and per flag code)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from annotations.cli import app as cli_app
from annotations.double import cohen_kappa
from annotations.export import load_decisions
from annotations.queue import QueueConfig

ALL_DOUBLE = QueueConfig(spot_check_rate=0.0, double_review_rate=1.0)


def decide(client, tile_id, action="accept", **extra):
    return client.post(
        f"/api/samples/{tile_id}/decision", json={"action": action, "base_revision": 0, **extra}
    )


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items, two raters: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> po 0.7, pe 0.5, kappa 0.4.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([("a", "a")] * 3) is None  # one label only: undefined
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)


def test_double_review_is_blind_agreement_decides_and_disagreement_goes_to_a_lead(make_review):
    review = make_review(queue_config=ALL_DOUBLE)
    alice, bob, carol = review.client("alice"), review.client("bob"), review.client("carol")
    lead = review.client("lena", role="lead")
    first = alice.get("/api/queue/next").json()["tile_id"]
    assert first == "P0001_0_128_0_128"
    saved = decide(alice, first, note="fine by me").json()
    assert saved["decision"] is None and saved["outcome"] == "waiting"
    # Not decided yet; Alice is not given it again; Bob is, and sees nothing of Alice's review.
    assert alice.get(f"/api/samples/{first}").json()["decision"] is None
    assert decide(alice, first).status_code == 409
    assert alice.get("/api/queue/next").json()["tile_id"] != first
    assert bob.get("/api/queue/next").json()["tile_id"] == first
    seen = bob.get(f"/api/samples/{first}").json()
    assert seen["double_review"] == {"reviews": 1, "mine": None} and seen["decision"] is None
    assert [e["actor"] for e in bob.get("/api/events", params={"tile_id": first}).json()["events"]] == []
    agreed = decide(bob, first).json()
    assert agreed["outcome"] == "agreed" and agreed["decision"]["status"] == "accepted"
    assert agreed["decision"]["reviewer"] == "alice+bob"
    # A disagreement: accepted by Alice, rejected by Carol -> adjudication, decided by a lead only.
    second = "P0002_0_128_0_128"
    assert decide(alice, second).json()["outcome"] == "waiting"
    assert decide(carol, second, "reject").json()["outcome"] == "disagreed"
    assert decide(bob, second).status_code == 403  # two reviews already: a lead decides
    assert lead.get("/api/queue/facets").json()["adjudicate"] == 1
    assert bob.get("/api/queue/next", params={"adjudicate": 1}).status_code == 403
    assert lead.get("/api/queue/next", params={"adjudicate": 1}).json()["tile_id"] == second
    detail = lead.get(f"/api/samples/{second}").json()["double_review"]["detail"]
    assert [(r["annotator"], r["status"]) for r in detail] == [("alice", "accepted"), ("carol", "rejected")]
    assert "detail" not in alice.get(f"/api/samples/{second}").json()["double_review"]
    assert decide(carol, second, "accept").status_code == 403
    assert decide(lead, second, "reject").json()["decision"]["status"] == "rejected"
    assert lead.get("/api/queue/facets").json()["adjudicate"] == 0
    events = [e["action"] for e in lead.get("/api/events", params={"tile_id": second}).json()["events"]]
    assert events == ["adjudicate_reject", "adjudication_opened", "review_reject", "review_accept"]
    statuses = {
        r["tile_id"]: r["review_status"] for r in load_decisions(review.data_dir, review.db_url).to_pylist()
    }
    assert statuses[first] == "accepted" and statuses[second] == "rejected"
    # Phrase-by-phrase decisions are not used on double-review samples.
    third = "P0003_0_128_0_128"
    response = alice.post(
        f"/api/samples/{third}/phrases/0/decision", json={"action": "accept", "base_revision": 0}
    )
    assert response.status_code == 409
    # The report: two pairs, one agreement; per flag code.
    report = lead.get("/api/report").json()
    assert alice.get("/api/report").status_code == 403
    assert report["pairs"] == 2 and report["agreement"] == 0.5
    assert report["kappa"] == pytest.approx(cohen_kappa([("accepted", "accepted"), ("accepted", "rejected")]))
    codes = {r["flag_code"]: r for r in report["by_flag_code"]}
    assert codes["seg_mismatch"]["agreement"] == 1.0 and codes["lmm_error"]["agreement"] == 0.0
    assert report["adjudication"] == {"open": 0, "decided": 1}
    # ... and the same numbers in `geopixeld review report`.
    db = ["--db", review.db_url] if review.db_url else []
    result = CliRunner().invoke(cli_app, ["report", "--data", str(review.data_dir), *db])
    assert result.exit_code == 0, result.output
    assert "Two-reviewer agreement" in result.output and "agreement: 50.0%" in result.output
    assert "lmm_error" in result.output


def test_fixes_agree_only_when_they_are_the_same(make_review):
    review = make_review(queue_config=ALL_DOUBLE)
    alice, bob = review.client("alice"), review.client("bob")
    tile = "P0004_0_128_0_128"
    fix = {"gcg_caption": "An empty <p> white van </p> [SEG].", "mask_refs": [0]}
    other = {"gcg_caption": "An empty <p> van </p> [SEG].", "mask_refs": [0]}
    assert decide(alice, tile, "fix", fix=fix).json()["outcome"] == "waiting"
    assert decide(bob, tile, "fix", fix=other).json()["outcome"] == "disagreed"
    tile = "P0005_0_128_0_128"
    fix = {"gcg_caption": "A <p> thing </p> [SEG] next to a <p> white car </p> [SEG].", "mask_refs": [0, 1]}
    assert decide(alice, tile, "fix", fix=fix).json()["outcome"] == "waiting"
    agreed = decide(bob, tile, "fix", fix=fix).json()
    assert agreed["outcome"] == "agreed" and agreed["decision"]["status"] == "fixed"
    row = {r["tile_id"]: r for r in load_decisions(review.data_dir, review.db_url).to_pylist()}[tile]
    assert row["gcg_caption"] == fix["gcg_caption"]
