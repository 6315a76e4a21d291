"""``croissant.json``: Croissant 1.0 metadata (with GeoCroissant 1.0 properties) for a release.

Written from the release manifest and the sample parquet schema:

* the required Croissant 1.0 dataset properties (``@context``, ``@type: sc:Dataset``, ``conformsTo``,
  ``name``, ``description``, ``license``, ``url``, ``version``, ``datePublished``);
* ``distribution``: a ``cr:FileObject`` with ``sha256``, ``contentSize`` and ``encodingFormat`` for each
  file, except that folders with many files of one extension (per-tile GeoPixel / GLaMM files) become one
  ``cr:FileSet`` with an ``includes`` glob (their checksums stay in ``manifest.json``), plus one parquet
  ``cr:FileSet`` per split that the record sets read from;
* ``recordSet``: one ``cr:RecordSet`` per split, keyed by ``id``, with a ``cr:Field`` per parquet column;
* where known, GeoCroissant's ``geocr:coordinateReferenceSystem``, ``geocr:spatialResolution`` (metres per
  pixel) and schema.org ``spatialCoverage`` (a ``GeoShape`` box ``"south west north east"`` in WGS84).
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from typing import Any

import pyarrow as pa
import yaml

from pipeline.release.manifest import Manifest

CROISSANT_CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
GEOCROISSANT_CONFORMS_TO = "http://mlcommons.org/croissant/geo/1.0"
#: A folder with more than this many files of one extension is described by a FileSet glob.
MAX_FILE_OBJECTS_PER_FOLDER = 32

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "geocr": "http://mlcommons.org/croissant/geo/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

ENCODING_FORMATS: dict[str, str] = {
    ".parquet": "application/x-parquet",
    ".json": "application/json",
    ".jsonl": "application/jsonlines",
    ".md": "text/markdown",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".txt": "text/plain",
    ".csv": "text/csv",
}

#: Descriptions (with units) of the exporter's sample columns.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "id": "Unique sample id.",
    "tile_id": "Id of the image tile the sample annotates.",
    "image": "Encoded tile image (bytes) and its original path.",
    "width": "Tile width in pixels.",
    "height": "Tile height in pixels.",
    "caption": "Plain detailed caption of the tile.",
    "gcg_caption": "Grounded caption with phrase markers linking phrases to masks.",
    "phrases": "Grounded phrases, aligned with masks.",
    "masks": "Instance masks, one per grounded phrase, in tile pixel coordinates.",
    "categories": "Object category of each mask.",
    "crs": "Coordinate reference system of the tile (e.g. EPSG code or WKT).",
    "transform": "Affine geotransform of the tile (a, b, c, d, e, f), pixel to CRS units.",
    "gsd": "Ground sample distance in metres per pixel.",
    "source_image": "Scene the tile was cut from.",
    "review_status": "Human review state (unreviewed, accepted, fixed, ...).",
    "flags": "Automatic quality flags raised during generation.",
    "lmm_model": "Large multimodal model that wrote the caption.",
    "prompt_version": "Version of the caption prompt.",
}


def card_front_matter(card: str) -> dict[str, Any]:
    """The YAML front matter (``---`` block) of a dataset card, or ``{}`` if it has none or it is invalid."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", card, re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match[1])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def card_summary(card: str) -> str | None:
    """First prose paragraph of a dataset card body (skipping front matter and headings)."""
    body = re.sub(r"^---\s*\n.*?\n---\s*\n", "", card, count=1, flags=re.DOTALL)
    for paragraph in re.split(r"\n\s*\n", body):
        text = " ".join(line.strip() for line in paragraph.strip().splitlines())
        if text and not text.startswith(("#", "|", "```", "<", "-", "*", "!")):
            return text
    return None


def build_croissant(
    manifest: Manifest,
    schema: pa.Schema,
    *,
    description: str,
    license: str,
    url: str,
    date_published: str,
    cite_as: str | None = None,
) -> dict[str, Any]:
    """The Croissant JSON-LD document of a release.

    Args:
        manifest: the release manifest (files, geo facts, version).
        schema: Arrow schema of the sample parquet shards.
        description / license / url: dataset-level properties (license as SPDX id or URL).
        date_published: ISO 8601 date (``YYYY-MM-DD``).
        cite_as: optional citation (BibTeX or DOI URL).
    """
    geo = manifest.geo or {}
    has_geo = bool(geo.get("crs") or geo.get("gsd_m") or geo.get("bbox_wgs84"))
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT_CONFORMS_TO, GEOCROISSANT_CONFORMS_TO] if has_geo else CROISSANT_CONFORMS_TO,
        "name": manifest.name,
        "description": description,
        "license": license,
        "url": url,
        "version": manifest.version,
        "datePublished": date_published,
    }
    if cite_as:
        doc["citeAs"] = cite_as
    doc.update(_geo_properties(geo))
    shards = manifest.parquet_by_split()
    doc["distribution"] = _distribution(manifest, shards)
    doc["recordSet"] = [_record_set(split, schema) for split in sorted(shards)]
    return doc


def encoding_format(path: str) -> str:
    """MIME type of a release file from its extension (``application/octet-stream`` if unknown)."""
    return ENCODING_FORMATS.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")


def _geo_properties(geo: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    crs = geo.get("crs") or []
    if crs:
        props["geocr:coordinateReferenceSystem"] = crs[0] if len(crs) == 1 else crs
    gsd = geo.get("gsd_m")
    if gsd:
        low, high = gsd
        value: dict[str, Any] = {"@type": "QuantitativeValue", "unitText": "m"}
        if low == high:
            value["value"] = low
        else:
            value.update(minValue=low, maxValue=high)
        props["geocr:spatialResolution"] = value
    bbox = geo.get("bbox_wgs84")
    if bbox:
        minx, miny, maxx, maxy = bbox
        props["spatialCoverage"] = {
            "@type": "Place",
            "geo": {"@type": "GeoShape", "box": f"{miny} {minx} {maxy} {maxx}"},
        }
    return props


def _distribution(manifest: Manifest, shards: dict[str, list[str]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in manifest.files:
        folder, ext = posixpath.dirname(entry.path), posixpath.splitext(entry.path)[1].lower()
        groups[(folder, ext)].append(entry.path)
    grouped = {key for key, paths in groups.items() if len(paths) > MAX_FILE_OBJECTS_PER_FOLDER}
    items: list[dict[str, Any]] = []
    for entry in manifest.files:
        key = (posixpath.dirname(entry.path), posixpath.splitext(entry.path)[1].lower())
        if key in grouped:
            continue
        items.append(
            {
                "@type": "cr:FileObject",
                "@id": entry.path,
                "name": entry.path,
                "contentUrl": entry.path,
                "contentSize": f"{entry.bytes} B",
                "encodingFormat": encoding_format(entry.path),
                "sha256": entry.sha256,
            }
        )
    for folder, ext in sorted(grouped):
        pattern = posixpath.join(folder, f"*{ext}")
        items.append(
            {
                "@type": "cr:FileSet",
                "@id": pattern,
                "name": pattern,
                "description": f"{len(groups[(folder, ext)])} files; manifest.json lists the sha256 of each.",
                "encodingFormat": encoding_format(pattern),
                "includes": pattern,
            }
        )
    for split in sorted(shards):
        items.append(
            {
                "@type": "cr:FileSet",
                "@id": f"parquet-{split}",
                "name": f"parquet-{split}",
                "description": f"Sample shards of the {split} split.",
                "encodingFormat": ENCODING_FORMATS[".parquet"],
                "includes": f"data/{split}-*.parquet",
            }
        )
    return items


def _record_set(split: str, schema: pa.Schema) -> dict[str, Any]:
    fields = [_field(split, f, column=f.name) for f in schema]
    record: dict[str, Any] = {
        "@type": "cr:RecordSet",
        "@id": split,
        "name": split,
        "description": f"Samples of the {split} split, one per row of its parquet shards.",
        "field": fields,
    }
    if "id" in schema.names:
        record["key"] = {"@id": f"{split}/id"}
    return record


def _field(
    prefix: str, arrow_field: pa.Field, *, column: str, json_path: str | None = None
) -> dict[str, Any]:
    field_id = f"{prefix}/{arrow_field.name}"
    source: dict[str, Any] = {
        "fileSet": {"@id": f"parquet-{prefix.split('/')[0]}"},
        "extract": {"column": column},
    }
    if json_path:
        source["transform"] = {"jsonPath": json_path}
    out: dict[str, Any] = {"@type": "cr:Field", "@id": field_id, "name": field_id}
    description = COLUMN_DESCRIPTIONS.get(arrow_field.name) if json_path is None else None
    if description:
        out["description"] = description
    arrow_type = arrow_field.type
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        out["repeated"] = True
        arrow_type = arrow_type.value_type
    if pa.types.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0:
        source["transform"] = {"jsonPath": _join_path(json_path, "bytes")}
        out["dataType"] = "sc:ImageObject"
    elif pa.types.is_struct(arrow_type):
        out["dataType"] = "sc:Text"
        out["subField"] = [
            _field(
                field_id,
                arrow_type.field(i),
                column=column,
                json_path=_join_path(json_path, arrow_type.field(i).name),
            )
            for i in range(arrow_type.num_fields)
        ]
    else:
        out["dataType"] = _data_type(arrow_type)
    out["source"] = source
    return out


def _join_path(parent: str | None, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _data_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "sc:Boolean"
    if pa.types.is_integer(arrow_type):
        return "sc:Integer"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "sc:Float"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "sc:Date"
    return "sc:Text"
