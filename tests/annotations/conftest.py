"""Fixtures for the review app: small real-format data directories, users and logged-in clients.

A data directory follows the describe stage's contract: ``samples.parquet`` (GCG captions, phrase spans,
COCO RLE masks, flags), ``instances.parquet`` (priors) and ``tiles/``/``marks/`` PNGs.

The API tests use SQLite in the data directory; set ``GEOPIXELD_REVIEW_TEST_DB`` to a PostgreSQL URL
(``postgresql+psycopg://user@host:port/db``, a throwaway database: its review tables are dropped) to run
them against PostgreSQL instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from annotations.browser import find_browser, open_chrome
from annotations.samples import INSTANCES_SCHEMA, SAMPLES_SCHEMA
from pipeline.loopback import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
ISAID_IMAGE = Path(__file__).resolve().parents[1] / "data" / "isaid" / "P0003.png"
PASSWORD = "correct horse battery"
XSS_TEXT = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def rect_mask(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> dict[str, Any]:
    """COCO compressed RLE of the rectangle ``[x0, x1) x [y0, y1)`` in an ``height x width`` tile."""
    array = np.zeros((height, width), dtype=np.uint8, order="F")
    array[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(array))
    return {"size": [height, width], "counts": rle["counts"].decode()}


@dataclass
class Phrase:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in tile pixels
    category: str = "small-vehicle"
    kind: str = "instance"
    instance_ids: list[int] = field(default_factory=lambda: [1])


@dataclass
class TileSpec:
    """One sample: caption pieces (plain strings and grounded ``Phrase``s) and its flags."""

    tile_id: str
    pieces: list[str | Phrase]
    # (code, severity, detail) or, as the describe stage now writes them, (code, severity, detail, phrase
    # index or None, instance ids or None)
    flags: list[tuple[Any, ...]] = field(default_factory=list)
    size: int = 128


def sample_row(spec: TileSpec) -> dict[str, Any]:
    """A samples.parquet row built the way the describe stage builds it."""
    gcg, caption, phrases, masks = "", "", [], []
    for piece in spec.pieces:
        if isinstance(piece, str):
            gcg += piece
            caption += piece
            continue
        start = len(caption)
        gcg += f"<p> {piece.text} </p> [SEG]"
        caption += piece.text
        phrases.append(
            {
                "text": piece.text,
                "start": start,
                "end": len(caption),
                "instance_ids": piece.instance_ids,
                "category": piece.category,
                "kind": piece.kind,
            }
        )
        masks.append(rect_mask(spec.size, spec.size, *piece.box))
    rank = {"none": 0, "info": 1, "warning": 2, "error": 3}
    max_severity = max((f[1] for f in spec.flags), key=rank.__getitem__, default="none")
    return {
        "tile_id": spec.tile_id,
        "image_id": spec.tile_id.split("_")[0],
        "tile_path": f"tiles/{spec.tile_id}.png",
        "marks_path": f"marks/{spec.tile_id}.png",
        "width": spec.size,
        "height": spec.size,
        "gcg_caption": gcg,
        "caption": caption,
        "phrases": phrases,
        "masks": masks,
        "flags": [
            dict(zip(("code", "severity", "detail", "phrase", "instance_ids"), flag, strict=False))
            for flag in spec.flags
        ],
        "max_severity": max_severity,
        "lmm_model": "test-lmm",
        "prompt_version": "v1",
    }


def write_dataset(root: Path, specs: list[TileSpec], image: np.ndarray | None = None) -> Path:
    """Write samples.parquet, instances.parquet and the PNGs of ``specs`` under ``root``."""
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    (root / "marks").mkdir(parents=True, exist_ok=True)
    rows, instances = [], []
    for index, spec in enumerate(specs):
        row = sample_row(spec)
        rows.append(row)
        if image is not None:
            tile = image[: spec.size, : spec.size]
        else:
            tile = np.full((spec.size, spec.size, 3), (40 + 7 * index) % 200, dtype=np.uint8)
        Image.fromarray(tile).save(root / row["tile_path"])
        marks = tile.copy()
        marks[::16, :, :] = 255
        Image.fromarray(marks).save(root / row["marks_path"])
        for number, phrase in enumerate(p for p in spec.pieces if isinstance(p, Phrase)):
            x0, y0, x1, y1 = phrase.box
            for instance_id in phrase.instance_ids:
                instances.append(
                    {
                        "tile_id": spec.tile_id,
                        "instance_id": instance_id,
                        "category": phrase.category,
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "area": float((x1 - x0) * (y1 - y0)),
                        "visible_fraction": 1.0,
                        "truncated": False,
                        "position": "center",
                        "size_class": "small",
                        "length_m": float("nan"),
                        "width_m": 2.0,
                        "orientation_deg": None,
                        "mark": number + 1,
                        "mark_x": (x0 + x1) / 2,
                        "mark_y": (y0 + y1) / 2,
                        "cluster_id": None,
                    }
                )
    # The describe stage's schema (pipeline.tables): its flags carry phrase and instance_ids, null when a
    # spec gives only (code, severity, detail).
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), root / "samples.parquet")
    pq.write_table(pa.Table.from_pylist(instances, schema=INSTANCES_SCHEMA), root / "instances.parquet")
    return root


def default_specs(n_unflagged: int = 20) -> list[TileSpec]:
    """Five flagged tiles (two errors, a warning with HTML in its text, an info, a warning) and
    ``n_unflagged`` clean ones."""
    car = Phrase("white car", (10, 10, 40, 30))
    truck = Phrase("truck", (60, 60, 100, 90), category="large-vehicle", instance_ids=[2])
    cars = Phrase("two cars", (20, 80, 50, 120), kind="cluster", instance_ids=[3, 4])
    specs = [
        TileSpec(
            "P0001_0_128_0_128",
            ["A parking lot. The ", car, " is next to the ", truck, "."],
            [("seg_mismatch", "error", "2 [SEG] for 3 instances"), ("count", "warning", "count off")],
        ),
        TileSpec(
            "P0002_0_128_0_128", ["A road with ", cars, " parked."], [("lmm_error", "error", "bad json")]
        ),
        TileSpec(
            "P0003_0_128_0_128",
            ["The ", truck, " is alone. ", XSS_TEXT],
            [("html", "warning", f"caption has markup {XSS_TEXT}")],
        ),
        TileSpec("P0004_0_128_0_128", ["An empty ", car, "."], [("short", "info", "caption is short")]),
        TileSpec(
            "P0005_0_128_0_128",
            ["A ", Phrase(XSS_TEXT, (5, 5, 25, 25)), " next to a ", car, "."],
            [("phrase_markup", "warning", "phrase contains tags")],
        ),
    ]
    specs += [
        TileSpec(f"U{i:04d}_0_128_0_128", ["A quiet field with a ", car, "."]) for i in range(n_unflagged)
    ]
    return specs


@pytest.fixture
def review_dir(tmp_path: Path) -> Path:
    """A data directory with ``default_specs()``."""
    return write_dataset(tmp_path / "data", default_specs())


def add_test_user(engine: Any, name: str, password: str = PASSWORD, role: str = "annotator") -> None:
    """Insert a user with a cheap scrypt cost (the real cost is tested in test_security)."""
    import sqlalchemy as sa

    from annotations.auth import hash_password
    from annotations.db import users, utcnow

    with engine.begin() as conn:
        conn.execute(
            sa.insert(users).values(
                name=name,
                password_hash=hash_password(password, n=2**10),
                active=True,
                created_at=utcnow(),
                role=role,
            )
        )


@dataclass
class Review:
    """A review app under test: the FastAPI app, its data directory, and logged-in clients."""

    app: Any
    data_dir: Path
    db_url: str | None = None
    clients: list[Any] = field(default_factory=list)

    @property
    def engine(self) -> Any:
        return self.app.state.review.engine

    def client(
        self,
        name: str | None = None,
        *,
        login: bool = True,
        role: str = "annotator",
        address: str = "testclient",
    ) -> Any:
        """A TestClient from client ``address``; with ``name`` a user with ``role`` is created and logged
        in, and the CSRF header preset."""
        from fastapi.testclient import TestClient

        client = TestClient(self.app, client=(address, 50000))
        self.clients.append(client)
        if name is not None:
            add_test_user(self.engine, name, role=role)
            if login:
                response = client.post("/api/login", json={"name": name, "password": PASSWORD})
                assert response.status_code == 200, response.text
                client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        return client


def _drop_review_tables(db_url: str) -> None:
    import sqlalchemy as sa

    from annotations.db import metadata

    engine = sa.create_engine(db_url)
    try:
        metadata.drop_all(engine)
    finally:
        engine.dispose()


def review_db_url() -> str | None:
    """The PostgreSQL URL the tests run against (``GEOPIXELD_REVIEW_TEST_DB``), its review tables
    dropped; None for SQLite in the data directory."""
    url = os.environ.get("GEOPIXELD_REVIEW_TEST_DB") or None
    if url:
        _drop_review_tables(url)
    return url


@pytest.fixture
def make_review(tmp_path: Path) -> Iterator[Callable[..., Review]]:
    """Factory: ``make_review(data_dir=None, **create_app_kwargs)`` -> ``Review``."""
    from annotations.app import create_app

    made: list[Review] = []
    shared_db = os.environ.get("GEOPIXELD_REVIEW_TEST_DB")

    def factory(data_dir: Path | None = None, **kwargs: Any) -> Review:
        root = data_dir or write_dataset(tmp_path / f"data{len(made)}", default_specs())
        if shared_db and "db_url" not in kwargs:
            if not made:
                _drop_review_tables(shared_db)
            kwargs["db_url"] = shared_db
        review = Review(create_app(root, **kwargs), root, kwargs.get("db_url"))
        made.append(review)
        return review

    yield factory
    for review in made:
        for client in review.clients:
            client.close()
        review.engine.dispose()


@pytest.fixture
def isaid_tile() -> np.ndarray:
    """An 800x800 RGB crop of the bundled iSAID image P0003."""
    with Image.open(ISAID_IMAGE) as image:
        return np.asarray(image.convert("RGB"))[:800, :800].copy()


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m annotations.cli ARGS`` (checked)."""
    return subprocess.run(
        [sys.executable, "-m", "annotations.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )


@contextlib.contextmanager
def serve_review(
    data_dir: Path, *args: str, timeout: float = 120.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real review server (``python -m annotations.cli serve --data DIR ARGS``) on a free loopback
    port: yields ``(base url, process)``; stopped by PID."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotations.cli",
            "serve",
            "--data",
            str(data_dir),
            "--port",
            str(port),
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"server exited with {process.returncode}: {error}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not listen on {port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_process(process)


def require_browser() -> None:
    """Skip without Chromium, chromedriver or selenium, unless GEOPIXELD_REQUIRE_BROWSER=1 (CI): then fail."""
    found = find_browser()
    if isinstance(found, str):
        if os.environ.get("GEOPIXELD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GEOPIXELD_REQUIRE_BROWSER=1 but the browser test cannot run: {found}")
        pytest.skip(f"browser test skipped: {found}")


@pytest.fixture
def driver() -> Iterator[Any]:
    """Headless Chromium with a throwaway profile (see ``annotations.browser``)."""
    require_browser()
    profile = tempfile.mkdtemp(prefix="gpx-chrome-")
    browser = open_chrome(profile)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def tools() -> SimpleNamespace:
    """The fixture builders, for tests that make their own data directories."""
    return SimpleNamespace(
        TileSpec=TileSpec,
        Phrase=Phrase,
        write_dataset=write_dataset,
        default_specs=default_specs,
        sample_row=sample_row,
        rect_mask=rect_mask,
        add_test_user=add_test_user,
        PASSWORD=PASSWORD,
        XSS_TEXT=XSS_TEXT,
        serve=serve_review,
        cli=run_cli,
        review_db_url=review_db_url,
    )
