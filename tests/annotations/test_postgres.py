"""A team on one PostgreSQL server: two review servers started together on the same database, and four
annotators working through the queue at once over HTTP, split between them.

Every queued sample ends up decided exactly once, no sample is handed to two annotators at the same
time, and the index is built once. Runs when ``GEOPIXELD_REVIEW_TEST_DB`` names a throwaway PostgreSQL
database (``.ci/review-postgres.sh start DIR`` makes one); skips otherwise, and fails instead when
``GEOPIXELD_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from annotations.export import load_decisions, load_events


def _postgres_url() -> str:
    url = os.environ.get("GEOPIXELD_REVIEW_TEST_DB") or ""
    if not url.startswith("postgresql"):
        reason = (
            "no PostgreSQL to test against: set GEOPIXELD_REVIEW_TEST_DB=postgresql+psycopg://USER@127.0.0.1:PORT/DB "
            "(a throwaway database; .ci/review-postgres.sh start /tmp/NAME starts one)"
        )
        if os.environ.get("GEOPIXELD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"GEOPIXELD_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return url


def test_two_servers_and_four_annotators_share_one_postgresql(tmp_path: Any, tools: Any) -> None:
    url = _postgres_url()
    tools.review_db_url()  # drop the review tables: a fresh database
    specs = tools.default_specs(n_unflagged=40)
    data = tools.write_dataset(tmp_path / "data", specs)
    names = ("ann1", "ann2", "ann3", "ann4")
    for name in names:
        tools.cli(
            "add-user",
            name,
            "--data",
            str(data),
            "--db",
            url,
            "--password-stdin",
            stdin=f"{tools.PASSWORD}\n",
        )
    with ExitStack() as stack:
        servers = [
            stack.enter_context(tools.serve(data, "--db", url, "--spot-check-rate", "0.5")) for _ in range(2)
        ]
        held: dict[str, str] = {}  # tile -> annotator currently holding it
        lock = threading.Lock()
        problems: list[str] = []
        decided: Counter[str] = Counter()

        def work(name: str, base: str) -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                login = client.post("/api/login", json={"name": name, "password": tools.PASSWORD})
                assert login.status_code == 200
                client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
                tile = None
                for _ in range(200):
                    tile = client.get("/api/queue/next", params={"after": tile} if tile else {}).json()[
                        "tile_id"
                    ]
                    if tile is None:
                        return
                    with lock:
                        if held.get(tile) not in (None, name):
                            problems.append(f"{tile} handed to {name} while {held[tile]} holds it")
                        held[tile] = name
                    response = client.post(
                        f"/api/samples/{tile}/decision", json={"action": "accept", "base_revision": 0}
                    )
                    with lock:
                        held.pop(tile, None)
                        if response.status_code == 200:
                            decided[tile] += 1
                        else:
                            problems.append(f"{name} could not decide {tile}: {response.status_code}")

        threads = [
            threading.Thread(target=work, args=(name, servers[i % 2][0])) for i, name in enumerate(names)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert problems == []
        with httpx.Client(base_url=servers[1][0], timeout=30) as client:
            login = client.post("/api/login", json={"name": "ann1", "password": tools.PASSWORD})
            summary = client.get("/api/queue/summary").json()
            assert login.status_code == 200
    assert summary["remaining"] == 0 and summary["total"] == 25  # 5 flagged + half of the 40 clean ones
    assert len(decided) == 25 and set(decided.values()) == {1}
    accepts = [e["tile_id"] for e in load_events(data, url).to_pylist() if e["action"] == "accept"]
    assert sorted(accepts) == sorted(decided)
    statuses = Counter(r["review_status"] for r in load_decisions(data, url).to_pylist())
    assert statuses == {"accepted": 25, "unreviewed": 20}
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sample_index")).scalar_one() == 45
    engine.dispose()
