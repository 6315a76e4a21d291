"""Remote-sensing-native outputs: GeoParquet layers of an export and STAC metadata of a release.

* :mod:`pipeline.geo.layers`: ``geo/instances.parquet`` (instance pieces as polygons in the source CRS,
  merge key ``object_id``) and ``geo/tiles.parquet`` (tile footprints), streamed image by image;
* :mod:`pipeline.geo.parquet`: the GeoParquet 1.1 writer (pyarrow + shapely; no geopandas needed);
* :mod:`pipeline.geo.stac`: ``stac/collection.json`` and one item per source image (label and projection
  extensions; needs the ``geo`` extra: pystac);
* :mod:`pipeline.geo.frames`: pandas views of a pulled release (samples, instances, flags, calls) and the
  statistics ``geopixeld release show --stats`` prints.
"""

from .errors import GeoError
from .layers import GEO_DIR, MERGE_KEY, GeoConfig, GeoLayer, GeoSummary, write_geo_layers

__all__ = ["GEO_DIR", "MERGE_KEY", "GeoConfig", "GeoError", "GeoLayer", "GeoSummary", "write_geo_layers"]
