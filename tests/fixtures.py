"""Generated real-format fixtures for cases the bundled samples do not cover (16-bit, 5-band, nodata...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def write_geotiff(
    path: Path,
    width: int,
    height: int,
    bands: int = 3,
    dtype: str = "uint8",
    nodata: float | None = None,
    crs: str | None = "EPSG:32617",
    res: float = 0.5,
    origin: tuple[float, float] = (404000.0, 3285000.0),
    seed: int = 0,
    data: np.ndarray | None = None,
) -> Path:
    """A GeoTIFF with smooth random content (values spanning the dtype's usual range)."""
    rng = np.random.default_rng(seed)
    if data is None:
        top = 255 if dtype == "uint8" else 4000
        base = rng.integers(0, top, size=(bands, height // 8 + 1, width // 8 + 1))
        data = np.kron(base, np.ones((1, 8, 8)))[:, :height, :width].astype(dtype)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    if crs:
        profile.update(crs=crs, transform=from_origin(origin[0], origin[1], res, res))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def write_isaid(folder: Path, stem: str, image: np.ndarray, ids: np.ndarray, colours: np.ndarray) -> Path:
    """An iSAID triple: image (H×W×3), instance ids (H×W int) and class colours (H×W×3)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{stem}.png")
    rgb_ids = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb_ids).save(folder / f"{stem}_instance_id_RGB.png")
    Image.fromarray(colours.astype(np.uint8)).save(folder / f"{stem}_instance_color_RGB.png")
    return folder / f"{stem}.png"
