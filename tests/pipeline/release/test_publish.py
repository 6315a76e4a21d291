"""Publishing: release layout, manifest, Croissant, immutability and concurrent publishes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import pipeline.release
from pipeline.release import ExportError, ReleaseExistsError, Store, list_releases, publish, pull
from pipeline.release.cli import app
from pipeline.release.layout import SAMPLE_INDEX_PATH
from pipeline.release.manifest import Manifest
from pipeline.release.publish import commit_release, plan_release, stage_release

REPO = Path(pipeline.release.__file__).resolve().parents[2]


def _manifest(release: Path) -> Manifest:
    return Manifest.model_validate_json((release / "manifest.json").read_bytes())


def _expected_version() -> str:
    init = (REPO / "pipeline" / "__init__.py").read_text()
    match = re.search(r'__version__\s*=\s*"([^"]+)"', init)
    assert match is not None
    return match[1]


def test_release_holds_export_and_checksummed_manifest(make_export, make_rows, store_dir: Path) -> None:
    rows = make_rows(5)
    rows[0]["lmm_model"] = "qwen2-vl-72b"
    rows[1]["prompt_version"] = "gcg-v4"
    export = make_export("a", {"train": rows, "val": make_rows(3, "val", start=50)}, shards=2)
    result = publish(export, "tiny", "1.0.0", store_dir)
    release = store_dir / "tiny" / "1.0.0"
    assert result.url == str(release) and result.committed

    exported = {p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    released = {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()}
    generated = {"manifest.json", "croissant.json", "CHANGELOG.md", SAMPLE_INDEX_PATH}
    assert released == exported | generated
    assert {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"} <= released

    manifest = _manifest(release)
    assert {e.path for e in manifest.files} == released - {"manifest.json"}
    for entry in manifest.files:
        data = (release / entry.path).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.bytes == len(data)
    shard = manifest.file("data/train-00001-of-00002.parquet")
    assert shard.split == "train" and shard.rows == pq.read_metadata(release / shard.path).num_rows
    assert manifest.file("coco/instances_val.json").split == "val"
    assert manifest.file("geopixel/train/tile_0002.png").split == "train"
    assert manifest.file("README.md").split is None
    assert manifest.schema_version == 1
    assert manifest.geopixeld_version == _expected_version()
    assert manifest.git_commit is None or re.fullmatch(r"[0-9a-f]{40}", manifest.git_commit)
    assert manifest.lmm_models == ["gpt-4o-2024-08-06", "qwen2-vl-72b"]
    assert manifest.prompt_versions == ["gcg-v3", "gcg-v4"]
    assert manifest.counts["samples"] == 8 and manifest.counts["splits"] == {"train": 5, "val": 3}
    assert manifest.counts["files"] == len(released)
    # sample_row marks every third id as accepted: train 0, 3 and val 51.
    assert manifest.review["total"] == {"accepted": 3, "unreviewed": 5}
    assert manifest.review["by_split"]["val"] == {"accepted": 1, "unreviewed": 2}
    assert manifest.columns["image"] == "struct<bytes: binary, path: string>"
    assert manifest.geo == {
        "crs": ["EPSG:32633"],
        "gsd_m": [0.3, 0.5],
        "bbox_wgs84": [14.9, 36.1, 15.1, 36.2],
    }
    index = pq.read_table(release / SAMPLE_INDEX_PATH)
    assert index.num_rows == 8 and set(index.column("split").to_pylist()) == {"train", "val"}
    # The card is published as exported.
    assert (release / "README.md").read_bytes() == (export / "README.md").read_bytes()


def test_croissant_has_required_and_geo_fields(make_export, make_rows, store_dir: Path) -> None:
    export = make_export("a", {"train": make_rows(40), "val": make_rows(2, "val", start=90)})
    publish(export, "tiny", "1.0.0", store_dir, license="CC-BY-4.0")
    release = store_dir / "tiny" / "1.0.0"
    doc = json.loads((release / "croissant.json").read_text())
    manifest = _manifest(release)

    assert doc["@type"] == "sc:Dataset"
    assert doc["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert doc["conformsTo"] == [
        "http://mlcommons.org/croissant/1.0",
        "http://mlcommons.org/croissant/geo/1.0",
    ]
    assert doc["name"] == "tiny" and doc["version"] == "1.0.0" and doc["license"] == "CC-BY-4.0"
    assert doc["description"] == "Pixel-grounded captions of tiny synthetic remote-sensing tiles, for tests."
    assert doc["url"] == release.as_uri()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc["datePublished"])
    assert doc["geocr:coordinateReferenceSystem"] == "EPSG:32633"
    assert doc["geocr:spatialResolution"] == {
        "@type": "QuantitativeValue",
        "unitText": "m",
        "minValue": 0.3,
        "maxValue": 0.5,
    }
    # schema.org box order is "south west north east".
    assert doc["spatialCoverage"]["geo"]["box"] == "36.1 14.9 36.2 15.1"

    objects = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    sets = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileSet"}
    shard = manifest.file("data/train-00000-of-00001.parquet")
    assert objects[shard.path]["sha256"] == shard.sha256
    assert objects[shard.path]["encodingFormat"] == "application/x-parquet"
    assert objects["coco/instances_train.json"]["encodingFormat"] == "application/json"
    # 40 per-tile PNGs in one folder are described by a glob, not 40 FileObjects.
    assert sets["geopixel/train/*.png"]["includes"] == "geopixel/train/*.png"
    assert "geopixel/train/tile_0001.png" not in objects
    assert objects["geopixel/val/tile_0090.png"]["encodingFormat"] == "image/png"
    assert sets["parquet-val"]["includes"] == "data/val-*.parquet"

    records = {r["@id"]: r for r in doc["recordSet"]}
    assert sorted(records) == ["train", "val"]
    train = records["train"]
    assert train["key"] == {"@id": "train/id"}
    fields = {f["@id"]: f for f in train["field"]}
    assert set(fields) == {f"train/{c}" for c in manifest.columns}
    assert fields["train/image"]["dataType"] == "sc:ImageObject"
    assert fields["train/image"]["source"]["transform"] == {"jsonPath": "bytes"}
    assert (
        fields["train/gsd"]["dataType"] == "sc:Float"
        and "metres per pixel" in fields["train/gsd"]["description"]
    )
    assert fields["train/width"]["dataType"] == "sc:Integer"
    assert fields["train/phrases"]["repeated"] is True
    assert fields["train/caption"]["source"] == {
        "fileSet": {"@id": "parquet-train"},
        "extract": {"column": "caption"},
    }


def test_croissant_without_geo_facts_is_plain_croissant(make_export, make_rows, store_dir: Path) -> None:
    rows = make_rows(2, crs=None, gsd=None)
    export = make_export(
        "a", {"train": rows}, export_json={"crs": [], "gsd": [], "bbox_wgs84": None}, card=None
    )
    publish(export, "tiny", "0.1.0", store_dir)
    release = store_dir / "tiny" / "0.1.0"
    doc = json.loads((release / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert not any(k.startswith("geocr:") for k in doc) and "spatialCoverage" not in doc
    assert doc["license"] == "unknown"
    # Without a card in the export, a minimal one with HF `configs:` is generated.
    card = (release / "README.md").read_text()
    assert card.startswith("---\npretty_name: tiny\nconfigs:") and "path: data/train-*.parquet" in card


def test_existing_version_is_never_overwritten(make_export, make_rows, store_dir: Path) -> None:
    publish(make_export("a", {"train": make_rows(3)}), "tiny", "1.0.0", store_dir)
    before = (store_dir / "tiny" / "1.0.0" / "manifest.json").read_bytes()
    with pytest.raises(ReleaseExistsError, match=r"release tiny==1.0.0 already exists in .*tiny/1.0.0"):
        publish(make_export("b", {"train": make_rows(4)}), "tiny", "1.0.0", store_dir)
    assert (store_dir / "tiny" / "1.0.0" / "manifest.json").read_bytes() == before


def test_losing_a_commit_race_fails_cleanly(make_export, make_rows, store_dir: Path) -> None:
    """Two publishers both pass planning; the second directory rename must fail, not merge or overwrite."""
    store = Store.from_uri(store_dir)
    staged_a = stage_release(plan_release(make_export("a", {"train": make_rows(3)}), "tiny", "1.0.0", store))
    staged_b = stage_release(plan_release(make_export("b", {"train": make_rows(5)}), "tiny", "1.0.0", store))
    assert staged_a.directory.parent == staged_b.directory.parent == store_dir / "tiny"
    # Staging folders are invisible to readers.
    assert list_releases(store_dir) == []

    commit_release(staged_a)
    with pytest.raises(ReleaseExistsError, match="published concurrently by another process"):
        commit_release(staged_b)
    assert sorted(p.name for p in (store_dir / "tiny").iterdir()) == ["1.0.0"]
    assert _manifest(store_dir / "tiny" / "1.0.0").counts["samples"] == 3
    assert pull("tiny==1.0.0", store_dir, store_dir.parent / "pulled").manifest.counts["samples"] == 3


CONTENDER = """
import sys, time
from pathlib import Path
from pipeline.release import ReleaseExistsError, publish

export, store, ready, go = sys.argv[1:5]
Path(ready).touch()
deadline = time.monotonic() + 60
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("timed out waiting for the start signal")
    time.sleep(0.002)
try:
    result = publish(export, "tiny", "1.0.0", store)
except ReleaseExistsError as exc:
    print(f"LOST: {exc}")
    sys.exit(3)
print(f"WON: {result.url}")
"""


def test_concurrent_publish_from_two_processes(
    make_export, make_rows, store_dir: Path, tmp_path: Path
) -> None:
    exports = [make_export("a", {"train": make_rows(30)}), make_export("b", {"train": make_rows(31)})]
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for i, export in enumerate(exports):
        ready = tmp_path / f"ready-{i}"
        args = [sys.executable, "-c", CONTENDER, str(export), str(store_dir), str(ready), str(go)]
        procs.append((ready, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)))
    deadline = time.monotonic() + 60
    while not all(ready.exists() for ready, _ in procs):
        assert time.monotonic() < deadline, "contenders did not start"
        time.sleep(0.01)
    go.touch()
    outcomes = []
    for _, proc in procs:
        out, err = proc.communicate(timeout=120)
        outcomes.append((proc.returncode, out.decode() + err.decode()))

    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 3], outcomes
    loser = next(text for code, text in outcomes if code == 3)
    assert "LOST: release tiny==1.0.0 already exists" in loser and "Traceback" not in loser
    assert sorted(p.name for p in (store_dir / "tiny").iterdir()) == ["1.0.0"], "staging folder left behind"
    # The winner's release is complete and self-consistent.
    pulled = pull("tiny==1.0.0", store_dir, tmp_path / "pulled")
    assert pulled.manifest.counts["samples"] in (30, 31)


def test_half_written_versions_are_invisible(make_export, make_rows, store_dir: Path) -> None:
    publish(make_export("a", {"train": make_rows(3)}), "tiny", "1.0.0", store_dir)
    # A version folder without manifest.json (e.g. an interrupted remote upload) and a staging folder.
    (store_dir / "tiny" / "2.0.0" / "data").mkdir(parents=True)
    (store_dir / "tiny" / "2.0.0" / "data" / "train-00000-of-00001.parquet").write_bytes(b"partial")
    (store_dir / "tiny" / ".staging-3.0.0-abc").mkdir()
    assert [(r.name, r.version) for r in list_releases(store_dir)] == [("tiny", "1.0.0")]
    # The next publish diffs against the latest *visible* version.
    result = publish(make_export("b", {"train": make_rows(4)}), "tiny", "1.1.0", store_dir)
    assert result.previous == "1.0.0"


def test_invalid_exports_are_refused(make_export, make_rows, store_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        publish(tmp_path / "nowhere", "tiny", "1.0.0", store_dir)
    dup = make_export("dup", {"train": make_rows(2), "val": make_rows(1, "val", start=1)})
    with pytest.raises(ExportError, match=r"duplicate sample id 'tile_0001-s0' in data/train-00000-of-00001"):
        publish(dup, "tiny", "1.0.0", store_dir)
    gap = make_export("gap", {"train": make_rows(4)}, shards=2)
    (gap / "data" / "train-00001-of-00002.parquet").unlink()
    with pytest.raises(ExportError, match=r"split 'train' has shards \[0\] but declares -of- \[2\]"):
        publish(gap, "tiny", "1.0.0", store_dir)
    clash = make_export("clash", {"train": make_rows(1)})
    (clash / "manifest.json").write_text("{}")
    with pytest.raises(ExportError, match="contains manifest.json, which the release writes itself"):
        publish(clash, "tiny", "1.0.0", store_dir)
    misnamed = make_export("misnamed", {"train": make_rows(1)})
    (misnamed / "data" / "extra.parquet").write_bytes(b"")
    with pytest.raises(ExportError, match=r"extra.parquet: expected a shard named"):
        publish(misnamed, "tiny", "1.0.0", store_dir)
    assert not store_dir.exists() or list_releases(store_dir) == []


def test_cli_publish_list_show(make_export, make_rows, store_dir: Path) -> None:
    runner = CliRunner()
    export = make_export("a", {"train": make_rows(3)})
    res = runner.invoke(app, ["publish", str(export), "-n", "tiny", "-V", "1.0.0", "--store", str(store_dir)])
    assert res.exit_code == 0, res.output
    assert f"Published tiny==1.0.0 to {store_dir / 'tiny' / '1.0.0'}, first release" in res.output

    grown = make_export("b", {"train": make_rows(5)})
    refused = runner.invoke(
        app, ["publish", str(grown), "-n", "tiny", "-V", "1.0.1", "--store", str(store_dir)]
    )
    assert refused.exit_code == 1
    assert (
        "error: tiny==1.0.1 is a PATCH bump over 1.0.0, but the changes need a MINOR bump" in refused.output
    )
    assert "Traceback" not in refused.output

    env = {"GEOPIXELD_STORE": str(store_dir)}
    ok = runner.invoke(app, ["publish", str(grown), "-n", "tiny", "-V", "1.1.0"], env=env)
    assert ok.exit_code == 0 and "MINOR bump over 1.0.0" in ok.output and "+2 added" in ok.output

    listed = runner.invoke(app, ["list", "--store", str(store_dir)])
    assert listed.exit_code == 0
    assert [line.split("\t")[0] for line in listed.output.splitlines()] == ["tiny==1.0.0", "tiny==1.1.0"]
    as_json = json.loads(runner.invoke(app, ["list", "tiny", "--json"], env=env).output)
    assert [(r["version"], r["samples"]) for r in as_json] == [("1.0.0", 3), ("1.1.0", 5)]

    shown = runner.invoke(app, ["show", "tiny==1.0.0", "--store", str(store_dir)])
    data = json.loads(shown.output)
    assert data["version"] == "1.0.0" and data["counts"]["samples"] == 3 and "use --files" in data["files"]
    missing = runner.invoke(app, ["show", "tiny==3.0.0", "--store", str(store_dir)])
    assert missing.exit_code == 1 and "published versions: 1.0.0, 1.1.0" in missing.output

    help_text = " ".join(runner.invoke(app, ["publish", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--store-option" in help_text and "MAJOR when samples or columns were removed" in help_text
