"""GeoJSON features over a raster, in the raster's CRS or in EPSG:4326, moved to pixels.

SOURCE is a raster; its features come from ``--annotations FILE`` or the file beside it with the
same stem and a ``.geojson``/``.json`` suffix. The features' CRS: the file's legacy ``crs`` member if
present, else ``--geojson-crs`` (``auto`` by default: EPSG:4326 when every coordinate is a valid
longitude/latitude and the raster's CRS is not geographic, as RFC 7946 prescribes; the raster's CRS
otherwise). The label comes from the first of ``--label-field`` (default ``label,category,class,name``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import shape

from ..errors import InputError, Skip
from ..records import SourceInstance
from .base import ImageItem, LoadedAnnotations, VectorAnnotations, image_files

LABEL_FIELDS = ("label", "category", "class", "name")


def _sidecar(image: Path) -> Path | None:
    for suffix in (".geojson", ".json"):
        cand = image.with_suffix(suffix)
        if cand.exists():
            return cand
    return None


def _all_lonlat(features: list[dict[str, Any]]) -> bool:
    for f in features:
        geom = f.get("geometry")
        if not geom:
            continue
        coords = np.asarray(shapely.get_coordinates(shape(geom)))
        if coords.size and (np.abs(coords[:, 0]).max() > 180 or np.abs(coords[:, 1]).max() > 90):
            return False
    return True


class GeoJSONAdapter:
    name = "geojson"
    help = "rasters with GeoJSON features (sidecar FILE.geojson or --annotations), raster CRS or EPSG:4326"

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]:
        items, skips = [], []
        explicit = options.get("annotations")
        for img in image_files(sources):
            if not img.exists():
                skips.append(Skip(str(img), "discover", "file not found"))
                continue
            labels = Path(explicit) if explicit else _sidecar(img)
            if labels is None or not labels.exists():
                skips.append(Skip(str(img), "discover", "no GeoJSON found (give --annotations or a sidecar .geojson)"))
                continue
            opts = {k: options[k] for k in ("geojson_crs", "label_field") if options.get(k)}
            items.append(ImageItem(img.stem, str(img), self.name, {"geojson": str(labels)}, opts))
        return items, skips

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations:
        path = Path(item.annotations["geojson"])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, f"not readable GeoJSON ({exc})") from None
        features = data.get("features") if isinstance(data, dict) else None
        if features is None:
            if isinstance(data, dict) and data.get("type") == "Feature":
                features = [data]
            else:
                raise InputError(path, "not a GeoJSON FeatureCollection or Feature")
        declared = (data.get("crs") or {}).get("properties", {}).get("name") if isinstance(data, dict) else None
        mode = item.options.get("geojson_crs", "auto")
        if declared:
            src_crs: str | None = declared
        elif mode != "auto":
            src_crs = mode
        elif crs is not None and not CRS.from_user_input(crs).is_geographic and _all_lonlat(features):
            src_crs = "EPSG:4326"
        else:
            src_crs = crs
        if crs is None:
            raise InputError(
                path,
                f"features are in map coordinates but the raster {Path(item.image_path).name} has no CRS, "
                "so they cannot be placed on it",
            )
        fields = item.options.get("label_field", ",".join(LABEL_FIELDS)).split(",")
        a, b, c, d, e, f = transform[:6]
        # pixel = inverse(affine) * map; shapely's affine_transform takes [a, b, d, e, xoff, yoff].
        det = a * e - b * d
        ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
        ic, if_ = -(ia * c + ib * f), -(id_ * c + ie * f)
        instances, skips = [], []
        for n, feat in enumerate(features, start=1):
            where = f"{path}#feature {n}"
            geom_json = feat.get("geometry")
            if not geom_json:
                skips.append(Skip(where, "annotations", "feature has no geometry", "annotation"))
                continue
            try:
                if src_crs and src_crs != crs:
                    geom_json = transform_geom(src_crs, crs, geom_json)
                geom = shapely.affinity.affine_transform(shape(geom_json), [ia, ib, id_, ie, ic, if_])
            except Exception as exc:  # noqa: BLE001 - any bad geometry is one counted skip
                skips.append(Skip(where, "annotations", f"bad geometry: {exc}", "annotation"))
                continue
            if geom.geom_type not in ("Polygon", "MultiPolygon"):
                skips.append(Skip(where, "annotations", f"{geom.geom_type} is not an area", "annotation"))
                continue
            props = feat.get("properties") or {}
            label = next((str(props[k]) for k in fields if props.get(k) not in (None, "")), "object")
            ref = f"{path.name}#{feat.get('id', n)}"
            instances.append(SourceInstance(n, label, geom, "polygon", ref, None, where))
        source = VectorAnnotations(instances, width, height)
        return LoadedAnnotations(source=source, skips=skips + source.skips, repairs=source.repairs)
