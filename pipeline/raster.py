"""Reading imagery with rasterio: metadata, row-band windowed reads and rendering to 8-bit RGB.

Memory never grows with the image: ``RowBandReader`` keeps only the rows of the current band of
tiles (at most ``tile size`` rows of the full width) and reads each source row once, top to bottom,
which suits both tiled GeoTIFFs/COGs and line-oriented formats such as PNG.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _import_rasterio() -> Any:
    """Import rasterio without importing boto3 (and botocore) with it.

    ``rasterio.session`` imports boto3 at import time, only to use it for ``s3://`` paths; that import
    alone costs about 0.15 s of every command's start. Here it is kept out while rasterio loads, and
    ``rasterio.session.boto3`` becomes a stand-in that imports the real boto3 the first time it is used,
    so S3 sessions behave exactly as before.
    """
    if "rasterio" in sys.modules or "boto3" in sys.modules or importlib.util.find_spec("boto3") is None:
        import rasterio

        return rasterio
    sys.modules["boto3"] = None  # type: ignore[assignment]  # makes `import boto3` raise ImportError
    try:
        import rasterio
        import rasterio.session
    finally:
        del sys.modules["boto3"]
    if getattr(rasterio.session, "boto3", "absent") is None:
        setattr(rasterio.session, "boto3", _DeferredBoto3())  # noqa: B010 - not a name rasterio declares
    return rasterio


class _DeferredBoto3:
    """Stands for the boto3 module; imports it on first attribute access."""

    def __getattr__(self, name: str) -> Any:
        import boto3

        return getattr(boto3, name)


rasterio = _import_rasterio()
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from .errors import InputError  # noqa: E402

# Long side of the decimated read used for stretch statistics.
STATS_SIDE = 1024


@dataclass
class RasterInfo:
    """What we record about a source raster.

    Attributes:
        path: the file.
        width, height: size in pixels.
        count: number of bands.
        dtype: numpy dtype name of the bands (``uint8``, ``uint16``, ``float32``...).
        crs: ``EPSG:nnnn`` when the CRS has an EPSG code, else its WKT; ``None`` when not georeferenced.
        transform: the affine transform ``(a, b, c, d, e, f)`` (rasterio order), identity when not
            georeferenced.
        gsd: ground sample distance in metres per pixel, when known.
        nodata: the nodata value, if any.
        georeferenced: whether a CRS and a non-identity transform are present.
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    gsd: float | None
    nodata: float | None
    georeferenced: bool
    bounds: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))


def _crs_string(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def gsd_from(crs: Any, transform: Any, width: int, height: int) -> float | None:
    """Metres per pixel from a CRS and transform; ``None`` when not georeferenced.

    Projected CRSs use their linear unit; geographic CRSs (degrees) are converted at the image's
    centre latitude (an approximation, good to a fraction of a percent over a tile).
    """
    if crs is None or transform is None or transform.is_identity:
        return None
    px = math.hypot(transform.a, transform.d)
    py = math.hypot(transform.b, transform.e)
    if crs.is_projected:
        factor = crs.linear_units_factor[1] if hasattr(crs, "linear_units_factor") else 1.0
        return float((px + py) / 2 * factor)
    if crs.is_geographic:
        cy = transform.d * width / 2 + transform.e * height / 2 + transform.f
        lat = math.radians(max(-89.9, min(89.9, cy)))
        metres_per_degree = 111_320.0
        return float((px * math.cos(lat) + py) / 2 * metres_per_degree)
    return None


def open_dataset(path: str | Path) -> Any:
    """Open a raster, turning rasterio's errors into an ``InputError`` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(path, f"cannot open as a raster ({exc})") from None


def read_info(path: str | Path) -> RasterInfo:
    """Metadata of a raster, validated: non-empty, at least one band."""
    with open_dataset(path) as ds:
        if ds.width <= 0 or ds.height <= 0 or ds.count <= 0:
            raise InputError(path, f"empty raster ({ds.width}×{ds.height}, {ds.count} bands)")
        t = ds.transform
        georef = ds.crs is not None and not t.is_identity
        return RasterInfo(
            path=str(path),
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=str(ds.dtypes[0]),
            crs=_crs_string(ds.crs),
            transform=(t.a, t.b, t.c, t.d, t.e, t.f),
            gsd=gsd_from(ds.crs, t, ds.width, ds.height),
            nodata=None if ds.nodata is None else float(ds.nodata),
            georeferenced=georef,
            bounds=tuple(ds.bounds),
        )


def resolve_bands(info: RasterInfo, bands: list[int] | None) -> list[int]:
    """1-based band indexes to render as RGB: the given ones, else 1,2,3 (or 1 for a single band)."""
    if bands:
        bad = [b for b in bands if b < 1 or b > info.count]
        if bad:
            raise InputError(info.path, f"band(s) {bad} requested but the raster has {info.count} band(s)")
        if len(bands) not in (1, 3):
            raise InputError(info.path, f"give 1 or 3 bands to render, not {len(bands)}")
        return list(bands)
    return [1, 2, 3] if info.count >= 3 else [1]


@dataclass
class Stretch:
    """Per-band linear stretch ``[low, high] → [0, 255]``; ``None`` bounds mean a plain uint8 copy."""

    low: list[float] | None = None
    high: list[float] | None = None

    def apply(self, data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``C×H×W`` source values → ``H×W×C`` uint8, invalid (nodata) pixels set to 0."""
        if self.low is None or self.high is None:
            out = np.clip(data, 0, 255).astype(np.uint8) if data.dtype != np.uint8 else data
        else:
            out = np.empty(data.shape, dtype=np.uint8)
            for i in range(data.shape[0]):
                lo, hi = self.low[i], self.high[i]
                scale = 255.0 / (hi - lo) if hi > lo else 0.0
                band = (data[i].astype(np.float32) - lo) * scale
                out[i] = np.clip(band, 0, 255).astype(np.uint8)
        if valid is not None:
            out = np.where(valid[None], out, 0).astype(np.uint8)
        if out.shape[0] == 1:
            return np.ascontiguousarray(out[0])[..., None]
        if out.shape[0] <= 4:  # OpenCV interleaves bands many times faster than numpy's transposing copy
            return cv2.merge([out[i] for i in range(out.shape[0])])
        return np.ascontiguousarray(np.moveaxis(out, 0, -1))


def compute_stretch(
    path: str | Path,
    bands: list[int],
    mode: str = "auto",
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Stretch:
    """Stretch from a decimated read (at most ``STATS_SIDE`` px on the long side), nodata excluded.

    ``mode``: ``auto`` (uint8 data copied as is, anything else percentile-stretched), ``percentile``
    (always stretch), ``none`` (clip to 0..255).
    """
    with open_dataset(path) as ds:
        dtype = ds.dtypes[0]
        if mode == "none" or (mode == "auto" and dtype == "uint8"):
            return Stretch()
        if mode not in ("auto", "percentile"):
            raise ValueError(f"unknown stretch mode {mode!r} (auto, percentile, none)")
        scale = max(ds.width, ds.height) / STATS_SIDE
        out_shape = (len(bands), max(1, round(ds.height / max(scale, 1))), max(1, round(ds.width / max(scale, 1))))
        data = ds.read(bands, out_shape=out_shape, masked=True)
        lows, highs = [], []
        for i in range(data.shape[0]):
            values = data[i].compressed()
            values = values[np.isfinite(values)]
            if values.size == 0:
                lows.append(0.0)
                highs.append(1.0)
                continue
            lo, hi = np.percentile(values, percentiles)
            lows.append(float(lo))
            highs.append(float(hi))
        return Stretch(lows, highs)


class RowBandReader:
    """Reads rows ``[y0, y1)`` of the full width, in non-decreasing order, each source row once.

    Args:
        path: the raster.
        bands: 1-based band indexes.
        chunk_rows: rows read per call when advancing (bounded reads keep peak memory small).
    """

    def __init__(self, path: str | Path, bands: list[int], masked: bool = False) -> None:
        self.path = str(path)
        self._ds = open_dataset(path)
        self.bands = bands
        self.masked = masked
        self.width = self._ds.width
        self.height = self._ds.height
        self._y0 = 0
        self._rows = np.zeros((len(bands), 0, self.width), dtype=self._ds.dtypes[0])
        self._valid = np.zeros((0, self.width), dtype=bool)

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> RowBandReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data C×(y1-y0)×W, valid (y1-y0)×W)``; ``valid`` is False on nodata/masked pixels."""
        if y0 < self._y0:
            raise ValueError(f"rows must be read in order: asked for {y0} after {self._y0}")
        have_end = self._y0 + self._rows.shape[1]
        drop = min(y0, have_end) - self._y0
        if drop > 0:
            self._rows = self._rows[:, drop:]
            self._valid = self._valid[drop:]
            self._y0 += drop
        if y0 > self._y0 + self._rows.shape[1]:  # a gap: skip rows we will never need
            self._y0 = y0
            self._rows = self._rows[:, :0]
            self._valid = self._valid[:0]
        start = self._y0 + self._rows.shape[1]
        if y1 > start:
            window = Window(0, start, self.width, y1 - start)
            try:
                if self.masked:
                    arr = self._ds.read(self.bands, window=window, masked=True)
                    new = np.asarray(arr.data)
                    mask = np.ma.getmaskarray(arr)
                    valid = np.asarray(~mask.all(axis=0), dtype=bool)
                else:
                    new = self._ds.read(self.bands, window=window)
                    valid = np.ones(new.shape[1:], dtype=bool)
            except RasterioIOError as exc:
                raise InputError(self.path, f"read failed at rows {start}–{y1} ({exc})") from None
            self._rows = np.concatenate([self._rows, new], axis=1) if self._rows.shape[1] else new
            self._valid = np.concatenate([self._valid, valid], axis=0) if self._valid.shape[0] else valid
        a, b = y0 - self._y0, y1 - self._y0
        return self._rows[:, a:b], self._valid[a:b]
