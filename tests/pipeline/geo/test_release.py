"""Exports with the geo format, releases with STAC (read back with pystac, core schemas validated offline,
extensions checked structurally), pandas access through ``load`` and ``release show --stats``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import pytest
from pyproj import Transformer
from pystac.extensions.label import LabelExtension, LabelType
from pystac.extensions.projection import ProjectionExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator
from shapely.geometry import Point, shape
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.export import export
from pipeline.geo import GeoConfig, write_geo_layers
from pipeline.geo.stac import write_stac
from pipeline.release import load, publish

LABEL_SCHEMA = "https://stac-extensions.github.io/label/v1.0.1/schema.json"
PROJ_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"


@pytest.fixture(scope="module")
def neon_export(tmp_path_factory: pytest.TempPathFactory, neon_described: Path) -> Path:
    out = tmp_path_factory.mktemp("geo_exports") / "neon"
    summary = export(neon_described, out, ratios=(1, 0, 0))
    assert "geo: geo/instances.parquet" in summary.text()
    return out


@pytest.fixture(scope="module")
def flagged_export(tmp_path_factory: pytest.TempPathFactory, neon_described: Path) -> Path:
    """The NEON dataset with validation flags set on two samples (two on one, one on another), exported."""
    root = tmp_path_factory.mktemp("geo_flagged")
    data = root / "data"
    shutil.copytree(neon_described, data, ignore=shutil.ignore_patterns("lmm_cache", "parts"))
    table = pq.read_table(data / "samples.parquet")
    rows = table.to_pylist()
    rows[0]["flags"] = [{"code": "mostly_cut_off", "severity": "warning", "detail": "a"},
                        {"code": "mostly_cut_off", "severity": "warning", "detail": "b"}]
    rows[1]["flags"] = [{"code": "no_grounding", "severity": "info", "detail": "c"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), data / "samples.parquet")
    export(data, root / "export", ratios=(1, 0, 0))
    return root / "export"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geo_store")


def _offline_validator() -> JsonSchemaSTACValidator:
    """pystac's validator limited to the schemas pystac ships: any download attempt fails the test."""
    validator = JsonSchemaSTACValidator()
    shipped = dict(validator.schema_cache)

    def only_shipped(uri: str) -> dict[str, Any]:
        assert uri in shipped, f"validation would download {uri}"
        return shipped[uri]

    validator._get_schema = only_shipped  # type: ignore[method-assign,assignment]
    return validator


def test_export_geo_layers_follow_the_export(neon_export: Path) -> None:
    ids = {}
    for shard in sorted((neon_export / "data").glob("*.parquet")):
        for r in pq.read_table(shard, columns=["id", "split"]).to_pylist():
            ids[r["id"]] = r["split"]
    frame = gpd.read_parquet(neon_export / "geo" / "instances.parquet")
    assert set(frame["sample_id"]) <= set(ids) and all(ids[s] == sp for s, sp in zip(frame["sample_id"], frame["split"], strict=True))
    assert (neon_export / "tables" / "lmm_calls.parquet").is_file()
    info = (neon_export / "export.json").read_text()
    assert '"geo"' in info and not list(neon_export.rglob("*.tmp"))


def test_export_cli_geo_crs_option(tmp_path: Path, neon_described: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["export", str(neon_described), "--out", str(tmp_path / "bad"), "--geo-crs", "EPSG:999999"])
    assert bad.exit_code == 2 and "invalid CRS 'EPSG:999999'" in bad.output
    ok = runner.invoke(app, ["export", str(neon_described), "--out", str(tmp_path / "ok"), "--formats",
                             "gcg-parquet,geo", "--geo-crs", "EPSG:4326"])
    assert ok.exit_code == 0, ok.output
    assert gpd.read_parquet(tmp_path / "ok" / "geo" / "instances.parquet").crs.to_epsg() == 4326


def test_release_carries_stac_read_back_with_pystac(neon_export: Path, store: Path) -> None:
    result = publish(neon_export, "neon-geo", "1.0.0", store)
    release = Path(result.url)
    listed = {e.path for e in result.manifest.files} if result.manifest else set()
    assert {"stac/collection.json", "stac/OSBS_029/OSBS_029.json"} <= listed
    collection = pystac.Collection.from_file(str(release / "stac" / "collection.json"))
    validator = _offline_validator()
    collection.validate(validator=_CoreOnly(validator))
    items = list(collection.get_items(recursive=True))
    assert [i.id for i in items] == ["OSBS_029"]
    item = items[0]
    item.validate(validator=_CoreOnly(validator))
    # structural checks of the two extensions (their schemas are not shipped with pystac)
    assert {LABEL_SCHEMA, PROJ_SCHEMA} <= set(item.stac_extensions)
    proj = ProjectionExtension.ext(item)
    assert proj.code == "EPSG:32617" and proj.shape == [400, 400]
    assert proj.transform == pytest.approx([0.1, 0.0, 404211.9, 0.0, -0.1, 3285142.9])
    label = LabelExtension.ext(item)
    assert label.label_type == LabelType.VECTOR and label.label_tasks == ["segmentation", "caption"]
    assert label.label_properties == ["category_name"]
    frame = gpd.read_parquet(release / "geo" / "instances.parquet")
    objects = frame.groupby("category_name")["object_id"].nunique().to_dict()
    assert objects == {"tree": 61}  # 73 pieces, 61 trees in the CSV
    [overview] = label.label_overviews or []
    assert {c.name: c.count for c in overview.counts or []} == objects
    assert [c.classes for c in label.label_classes or []] == [sorted(objects)]
    # footprint in WGS 84 holds the image centre; assets resolve inside the release
    centre = Transformer.from_crs(32617, 4326, always_xy=True).transform(404211.9 + 20, 3285142.9 - 20)
    assert shape(item.geometry).contains(Point(centre)) and item.bbox == pytest.approx(list(shape(item.geometry).bounds))
    assert item.properties["geopixeld:datetime_source"] == "release"
    base = Path(item.get_self_href() or "").parent
    for key, asset in item.assets.items():
        assert (base / asset.href).resolve().is_file(), key
    assert (base / item.assets["labels"].href).resolve() == (release / "geo" / "instances.parquet").resolve()
    assert any(k.startswith("samples-train") for k in item.assets) and "masks" in item.assets
    assert collection.extent.spatial.bboxes[0] == pytest.approx(item.bbox)


class _CoreOnly(pystac.validation.STACValidator):
    """Validate the core (item/collection) schemas pystac ships; extensions are checked structurally."""

    def __init__(self, inner: JsonSchemaSTACValidator) -> None:
        self.inner = inner

    def validate_core(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                      href: str | None = None) -> Any:
        return self.inner.validate_core(stac_dict, stac_object_type, stac_version, href)

    def validate_extension(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                           extension_id: str, href: str | None = None) -> Any:
        return None


def test_second_release_does_not_diff_generated_stac(neon_export: Path, store: Path) -> None:
    if not (store / "neon-geo" / "1.0.0").exists():
        publish(neon_export, "neon-geo", "1.0.0", store)
    result = publish(neon_export, "neon-geo", "1.0.1", store)
    assert result.bump == "PATCH" and "stac/" not in result.entry


def test_pixel_only_release_has_null_geometry(tmp_path: Path, dota_described: Path) -> None:
    out = tmp_path / "dota"
    export(dota_described, out, ratios=(1, 0, 0))
    result = publish(out, "dota-geo", "1.0.0", tmp_path / "store")
    item = pystac.Item.from_file(str(Path(result.url) / "stac" / "P1888" / "P1888.json"))
    item.validate(validator=_CoreOnly(_offline_validator()))
    assert item.geometry is None and item.bbox is None
    assert ProjectionExtension.ext(item).code is None and item.properties["proj:shape"] == [557, 712]
    assert item.properties["geopixeld:coordinates"] == "pixel"


def test_release_without_pystac_warns_and_has_no_stac(
    tmp_path: Path, neon_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pystac", None)  # as in a core install without the geo extra
    with pytest.warns(UserWarning, match="no STAC metadata: STAC needs pystac"):
        result = publish(neon_export, "nostac", "1.0.0", tmp_path / "store")
    assert not (Path(result.url) / "stac").exists()


def test_load_gives_pandas_tables_and_cli_stats(flagged_export: Path, neon_described: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(flagged_export, "neon-flags", "1.0.0", store)
    data = load("neon-flags", "1.0.0", store=store, cache_dir=tmp_path / "cache")
    assert set(data) == {"train"} and data["train"].count_rows() == 4  # still {split: Dataset}
    samples = data.to_pandas("samples")
    source = pq.read_table(neon_described / "samples.parquet").to_pylist()
    assert len(samples) == len(source) and "image" not in samples.columns
    flags = data.flags()
    assert len(flags) == 3
    assert set(flags.columns) == {"id", "split", "code", "severity", "detail"}
    instances = data.instances()
    assert len(instances) == pq.read_metadata(neon_described / "instances.parquet").num_rows
    calls = data.calls()
    assert len(calls) == pq.read_metadata(neon_described / "lmm_calls.parquet").num_rows
    with pytest.raises(ValueError, match="unknown table"):
        data.to_pandas("everything")
    runner = CliRunner()
    shown = runner.invoke(app, ["release", "show", "neon-flags==1.0.0", "--store", str(store), "--stats",
                                "--cache-dir", str(tmp_path / "cache")])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    tree = next(line.split() for line in lines if line.strip().startswith("tree"))
    phrases = sum(1 for s in source for p in s["phrases"] if p["category"] == "tree")
    assert tree[:6] == ["tree", str(phrases), "4", "61", str(len(instances)), tree[5]]
    table = [line.split() for line in lines[lines.index(next(x for x in lines if x.startswith("Per flag"))) + 2:]]
    assert table == [["mostly_cut_off", "warning", "2", "1"], ["no_grounding", "info", "1", "1"]]


def test_stac_items_for_sources_in_several_crs(tmp_path: Path, mixed_prepared: Path) -> None:
    write_geo_layers(mixed_prepared, tmp_path, GeoConfig(target_crs="EPSG:3857"))
    files = write_stac(tmp_path, tmp_path, name="mixed", version="0.1.0", created="2026-01-02T03:04:05+00:00",
                       description="three CRSs")
    assert "stac/collection.json" in files
    collection = pystac.Collection.from_file(str(tmp_path / "stac" / "collection.json"))
    collection.validate(validator=_CoreOnly(_offline_validator()))
    items = {i.id: i for i in collection.get_items(recursive=True)}
    assert set(items) == {"A_32617", "B_32616", "C_pixel"}
    for item in items.values():
        item.validate(validator=_CoreOnly(_offline_validator()))
    codes = {k: ProjectionExtension.ext(i).code for k, i in items.items()}
    assert codes == {"A_32617": "EPSG:32617", "B_32616": "EPSG:32616", "C_pixel": None}  # the sources', not 3857
    a, b = shape(items["A_32617"].geometry), shape(items["B_32616"].geometry)
    assert a.area == pytest.approx(b.area, rel=0.01) and a.centroid.x - b.centroid.x == pytest.approx(6.0, abs=0.1)
    assert items["C_pixel"].geometry is None
    assert items["B_32616"].datetime is not None and items["B_32616"].datetime.isoformat() == "2019-06-01T15:30:00+00:00"
    assert items["B_32616"].properties["geopixeld:datetime_source"] == "raster"
    assert items["A_32617"].properties["geopixeld:datetime_source"] == "release"
    start = collection.extent.temporal.intervals[0][0]
    assert start is not None and start.year == 2019
