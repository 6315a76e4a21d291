"""Review app security: accounts and passwords, sessions, CSRF and origin checks, escaping of untrusted
text, and tile lookup that no request path can steer outside the data directory."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from annotations import auth
from annotations.app import STATIC_DIR
from annotations.db import sessions, users

TILE = "P0001_0_128_0_128"
DATA_ENDPOINTS = [
    ("GET", "/api/me"),
    ("GET", "/api/queue/next"),
    ("GET", "/api/queue/peek"),
    ("GET", "/api/queue/summary"),
    ("GET", f"/api/samples/{TILE}"),
    ("GET", f"/api/samples/{TILE}/image/tile"),
    ("GET", f"/api/samples/{TILE}/image/marks"),
    ("GET", "/api/stats"),
    ("GET", "/api/events"),
    ("GET", "/api/events/export"),
    ("POST", f"/api/samples/{TILE}/decision"),
    ("POST", f"/api/samples/{TILE}/validate"),
    ("POST", "/api/bulk-accept"),
    ("POST", "/api/logout"),
    ("GET", "/api/queue/facets"),
    ("POST", f"/api/samples/{TILE}/phrases/0/decision"),
    ("POST", "/api/undo"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("POST", "/api/users/alice"),
]
LEAD_ENDPOINTS = [
    ("GET", "/api/stats", None),
    ("GET", "/api/events/export", None),
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"name": "eve2", "password": "longenough1", "role": "lead"}),
    ("POST", "/api/users/bob", {"role": "lead"}),
    ("POST", "/api/bulk-accept", {"severities": ["error"], "dry_run": False}),
]


# ---------------------------------------------------------------- accounts and sessions


def test_no_anonymous_reads_or_writes(make_review):
    review = make_review()
    anonymous = review.client()
    for method, path in DATA_ENDPOINTS:
        response = anonymous.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.status_code)
    page = anonymous.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert anonymous.get("/login").status_code == 200
    # A made-up cookie is no better than none.
    anonymous.cookies.set(auth.SESSION_COOKIE, "forged-token")
    assert anonymous.get(f"/api/samples/{TILE}/image/tile").status_code == 401


def test_login_sets_a_strict_httponly_cookie_and_stores_only_its_hash(make_review, tools):
    review = make_review()
    tools.add_test_user(review.engine, "alice")
    client = review.client()
    response = client.post("/api/login", json={"name": "alice", "password": tools.PASSWORD})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    found = re.match(rf"{auth.SESSION_COOKIE}=([^;]+)", cookie)
    assert found is not None
    token = found.group(1)
    with review.engine.connect() as conn:
        stored = conn.execute(sa.select(sessions.c.token_hash)).scalars().all()
    assert token not in stored and len(stored) == 1
    assert client.get("/", follow_redirects=False).status_code == 200


def test_secure_cookie_flag(make_review, tools):
    review = make_review(secure_cookies=True)
    tools.add_test_user(review.engine, "alice")
    response = review.client().post("/api/login", json={"name": "alice", "password": tools.PASSWORD})
    assert "Secure" in response.headers["set-cookie"]


def test_lead_endpoints_refuse_annotators_and_leads_manage_users(make_review, tools):
    review = make_review()
    bob = review.client("bob")
    for method, path, body in LEAD_ENDPOINTS:
        response = bob.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.status_code)
    assert bob.get("/api/me").json()["role"] == "annotator"
    lead = review.client("lena", role="lead")
    assert lead.get("/api/me").json()["role"] == "lead"
    created = lead.post("/api/users", json={"name": "carol", "password": "long enough", "role": "annotator"})
    assert created.status_code == 200
    assert lead.post("/api/users", json={"name": "carol", "password": "long enough"}).status_code == 422
    assert lead.post("/api/users/bob", json={"role": "lead"}).json() == {"name": "bob", "role": "lead"}
    assert bob.get("/api/stats").status_code == 200  # bob's live session has the new role
    assert lead.post("/api/users/lena", json={"active": False}).status_code == 422  # not yourself
    assert lead.post("/api/users/nobody", json={"active": False}).status_code == 404
    listed = {u["name"]: u for u in lead.get("/api/users").json()["users"]}
    assert listed["carol"]["role"] == "annotator" and listed["bob"]["role"] == "lead"
    carol = review.client()
    ok = carol.post("/api/login", json={"name": "carol", "password": "long enough"})
    assert ok.status_code == 200 and ok.json()["role"] == "annotator"
    assert lead.post("/api/users/carol", json={"active": False}).status_code == 200
    assert carol.get("/api/me").status_code == 401
    actions = [e["action"] for e in lead.get("/api/events", params={"limit": 1000}).json()["events"]]
    assert actions.count("change_user") == 2 and "add_user" in actions


class FakeClock:
    """Monotonic seconds that only move when told (no timed tests)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_passwords_are_refused_and_throttled_by_address_with_growing_delays(make_review, tools):
    clock = FakeClock()
    throttle = auth.LoginThrottle(free_failures=3, base_delay_s=2.0, max_delay_s=30.0, clock=clock)
    review = make_review(throttle=throttle)
    tools.add_test_user(review.engine, "alice")
    attacker = review.client(address="10.0.0.66")
    for _ in range(3):  # free failures
        assert (
            attacker.post("/api/login", json={"name": "alice", "password": "wrong pass"}).status_code == 401
        )
    refused = attacker.post("/api/login", json={"name": "alice", "password": tools.PASSWORD})
    assert refused.status_code == 429 and "set-cookie" not in refused.headers
    assert refused.headers["Retry-After"] == "2" and refused.json()["retry_after"] == 2
    # One password across many names is slowed just the same: the count is per address.
    assert attacker.post("/api/login", json={"name": "bob", "password": "wrong pass"}).status_code == 429
    # The real user, from their own address, is never locked out by someone else's failures.
    alice = review.client(address="10.0.0.7")
    assert alice.post("/api/login", json={"name": "alice", "password": tools.PASSWORD}).status_code == 200
    # Growing delays: 2 s, 4 s, 8 s, ... capped at 30 s.
    waits = []
    for _ in range(6):
        clock.now += throttle.wait_s("10.0.0.66")
        assert (
            attacker.post("/api/login", json={"name": "carol", "password": "wrong pass"}).status_code == 401
        )
        waits.append(throttle.wait_s("10.0.0.66"))
    assert waits == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    # After the wait, the right password works from the attacker's address too (nobody is locked for good),
    # and a success starts the address afresh.
    clock.now += 30.0
    assert attacker.post("/api/login", json={"name": "alice", "password": tools.PASSWORD}).status_code == 200
    assert throttle.wait_s("10.0.0.66") == 0.0
    # An address that stays quiet long enough is forgotten.
    for _ in range(3):
        throttle.failed("10.0.0.99")
    assert throttle.wait_s("10.0.0.99") == 2.0
    clock.now += throttle.forget_s
    assert throttle.wait_s("10.0.0.99") == 0.0


def test_throttle_memory_is_bounded():
    throttle = auth.LoginThrottle(max_addresses=100, clock=FakeClock())
    for i in range(1000):
        throttle.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(throttle._failures) <= 100


def test_login_only_takes_json(make_review, tools):
    # A cross-site HTML form can send urlencoded or text/plain bodies, never JSON.
    review = make_review()
    tools.add_test_user(review.engine, "alice")
    client = review.client()
    form = client.post("/api/login", data={"name": "alice", "password": tools.PASSWORD})
    assert form.status_code == 422
    text = client.post(
        "/api/login",
        content=f'{{"name": "alice", "password": "{tools.PASSWORD}"}}',
        headers={"Content-Type": "text/plain"},
    )
    assert text.status_code == 422


def test_logout_and_expiry_end_the_session(make_review, tools):
    review = make_review()
    client = review.client("alice")
    assert client.get("/api/me").json()["user"] == "alice"
    assert client.post("/api/logout").status_code == 200
    assert client.get("/api/me").status_code == 401
    short = make_review(review.data_dir, session_ttl=timedelta(seconds=-1))
    expired = short.client("bob")
    assert expired.get("/api/me").status_code == 401


def test_deactivated_user_loses_access(make_review):
    review = make_review()
    client = review.client("alice")
    with review.engine.begin() as conn:
        conn.execute(sa.update(users).where(users.c.name == "alice").values(active=False))
    assert client.get("/api/me").status_code == 401


def test_passwords_are_scrypt_hashed(make_review):
    encoded = auth.hash_password("a long passphrase")
    assert encoded.startswith("scrypt$32768$8$1$") and "a long passphrase" not in encoded
    assert auth.verify_password("a long passphrase", encoded)
    assert not auth.verify_password("a long passphrasE", encoded)
    assert not auth.verify_password("x", "md5$abc")
    assert auth.hash_password("same password") != auth.hash_password("same password")  # salted
    review = make_review()
    auth.add_user(review.engine, "carol", "a long passphrase")
    with pytest.raises(ValueError, match="exists"):
        auth.add_user(review.engine, "carol", "another passphrase")
    auth.add_user(review.engine, "carol", "another passphrase", replace=True)
    assert auth.authenticate(review.engine, "carol", "another passphrase")
    assert not auth.authenticate(review.engine, "carol", "a long passphrase")
    for bad_name in ("", "../x", "a b", "<script>", "x" * 65):
        with pytest.raises(ValueError):
            auth.add_user(review.engine, bad_name, "a long passphrase")
    with pytest.raises(ValueError, match="at least"):
        auth.add_user(review.engine, "dave", "short")


# ---------------------------------------------------------------- CSRF and origin


def test_state_changes_need_the_sessions_csrf_token(make_review):
    review = make_review()
    alice = review.client("alice")
    bob = review.client("bob")
    body = {"action": "accept", "base_revision": 0}
    good = alice.headers.pop("X-CSRF-Token")
    url = f"/api/samples/{TILE}/decision"
    assert alice.post(url, json=body).status_code == 403
    assert alice.post(url, json=body, headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert (
        alice.post(url, json=body, headers={"X-CSRF-Token": bob.headers["X-CSRF-Token"]}).status_code == 403
    )
    assert alice.post("/api/bulk-accept", json={"severities": ["none"], "dry_run": False}).status_code == 403
    assert alice.post("/api/logout").status_code == 403
    assert alice.get(f"/api/samples/{TILE}").json()["revision"] == 0
    assert alice.post(url, json=body, headers={"X-CSRF-Token": good}).status_code == 200


def test_cross_origin_posts_are_refused(make_review):
    alice = make_review().client("alice")
    url = f"/api/samples/{TILE}/decision"
    body = {"action": "accept", "base_revision": 0}
    evil = alice.post(url, json=body, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    same = alice.post(url, json=body, headers={"Origin": "http://testserver"})
    assert same.status_code == 200


# ---------------------------------------------------------------- untrusted text


def test_untrusted_text_is_returned_verbatim_as_json(make_review, tools):
    alice = make_review().client("alice")
    response = alice.get("/api/samples/P0003_0_128_0_128")
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-content-type-options"] == "nosniff"
    sample = response.json()
    assert sample["original"]["caption"].endswith(tools.XSS_TEXT)
    assert tools.XSS_TEXT in sample["flags"][0]["detail"]
    phrase_sample = alice.get("/api/samples/P0005_0_128_0_128").json()
    assert phrase_sample["original"]["phrases"][0]["text"] == tools.XSS_TEXT


def test_pages_have_a_strict_content_security_policy(make_review):
    client = make_review().client("alice")
    for path in ("/", "/login", "/static/app.js", "/api/me"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
    assert client.get("/api/me").headers["cache-control"] == "no-store"


def test_page_code_never_builds_html_from_strings():
    """Data reaches the page through textContent/value only; no HTML parsing sinks, no inline script."""
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc")
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert len(scripts) >= 5
    for script in scripts:
        assert not sinks.search(script.read_text()), script.name
    for page in STATIC_DIR.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script in {page.name}"
        assert not re.search(r"\son[a-z]+=", html), f"inline handler in {page.name}"
        assert "style=" not in html, f"inline style in {page.name}"


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "path",
    [
        "/api/samples/..%2F..%2Fetc%2Fpasswd/image/tile",
        "/api/samples/%2E%2E/image/tile",
        "/api/samples/..%2Fsamples.parquet/image/tile",
        "/api/samples/%2Fetc%2Fpasswd/image/tile",
        "/api/samples/tiles%2FP0001_0_128_0_128.png/image/tile",
        f"/api/samples/{TILE}/image/..%2F..%2Fsamples.parquet",
        f"/api/samples/{TILE}/image/tile_path",
        "/static/..%2Freview.sqlite",
        "/static/../app.py",
        "/static/%2E%2E/app.py",
    ],
)
def test_no_path_traversal_through_requests(make_review, path):
    client = make_review().client("alice")
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert b"import" not in response.content and b"PAR1" not in response.content


def test_image_paths_in_the_table_cannot_leave_the_data_dir(tmp_path, make_review, tools):
    root = tools.write_dataset(tmp_path / "data", tools.default_specs(0))
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    (root / "tiles" / "link.png").symlink_to(secret)
    table = pq.read_table(root / "samples.parquet").to_pylist()
    table[0]["tile_path"] = "../secret.png"
    table[1]["tile_path"] = str(secret)
    table[2]["tile_path"] = "tiles/link.png"
    table[3]["marks_path"] = None
    schema = pq.read_schema(root / "samples.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table, schema=schema), root / "samples.parquet")
    client = make_review(root).client("alice")
    for row in table[:3]:
        response = client.get(f"/api/samples/{row['tile_id']}/image/tile")
        assert response.status_code == 404 and b"secret" not in response.content
    assert client.get(f"/api/samples/{table[3]['tile_id']}/image/marks").status_code == 404
    assert client.get(f"/api/samples/{table[3]['tile_id']}").json()["has_marks"] is False
    assert client.get(f"/api/samples/{table[4]['tile_id']}/image/tile").status_code == 200


def test_static_files_are_the_pages_only():
    names = {p.name for p in Path(STATIC_DIR).iterdir()}
    assert {"index.html", "login.html", "app.js", "app.css"} <= names
    assert not any(name.endswith((".py", ".sqlite", ".parquet")) for name in names)
