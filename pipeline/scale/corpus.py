"""A synthetic iSAID-format corpus of any size, made from the bundled real samples.

Each generated image is a mosaic of flipped and rotated crops of the real iSAID samples
(``tests/data/isaid``: ``P.png``, ``P_instance_id_RGB.png``, ``P_instance_color_RGB.png``) at a real
iSAID image size (sides 1,000–6,000 px). Crops are laid in rows of one height (the shortest side of
any sample, so there are no gaps); the image, the instance-id mask and the colour mask get the same
crop and transform, so every object keeps its category colour, and instance ids are offset per crop so
they stay unique within the image (an object cut by a crop edge is a smaller object, as at a tile edge).

Image ``i`` has the size ``SIZES[i % len(SIZES)]``: ``8 × n`` images are exactly 8 times the tiles of ``n``
images when ``n`` is a multiple of ``len(SIZES)``. Files are written under temporary names and renamed;
images already present are kept (a rerun continues).

``python -m pipeline.scale.corpus OUT --images N`` writes one.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "data" / "isaid"
ID_SUFFIX, COLOR_SUFFIX = "_instance_id_RGB", "_instance_color_RGB"
#: (width, height) of generated images, in px: a spread of real iSAID/DOTA sizes, 1,000–6,000 px a side
#: (4, 9, 8 and 20 tiles of the 800/200 grid: 41 tiles per cycle of four images).
SIZES: tuple[tuple[int, int], ...] = ((1000, 1000), (2000, 1500), (1200, 2600), (6000, 1200))


@dataclass
class _Source:
    name: str
    image: np.ndarray  # H×W×3 uint8
    ids: np.ndarray  # H×W int64 instance number 1..K (renumbered from the iSAID codes), 0 = background
    colors: np.ndarray  # H×W×3 uint8 category colours


def _code(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return r + 256 * g + 65536 * b


def _rgb(code: np.ndarray) -> np.ndarray:
    return np.stack([code % 256, (code // 256) % 256, code // 65536], axis=-1).astype(np.uint8)


def load_sources(folder: Path = SAMPLES) -> list[_Source]:
    """The real iSAID samples of ``folder`` (each image with its two masks)."""
    out = []
    for id_path in sorted(folder.glob(f"*{ID_SUFFIX}.png")):
        name = id_path.name[: -len(f"{ID_SUFFIX}.png")]
        image = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
        codes = _code(np.asarray(Image.open(id_path).convert("RGB")))
        values, ranks = np.unique(codes, return_inverse=True)  # compact ids 1..K, background stays 0
        ids = ranks.reshape(codes.shape) + (0 if values[0] == 0 else 1)
        colors = np.asarray(Image.open(folder / f"{name}{COLOR_SUFFIX}.png").convert("RGB"))
        out.append(_Source(name, image, ids, colors))
    if not out:
        raise FileNotFoundError(f"{folder}: no iSAID samples (*{ID_SUFFIX}.png)")
    return out


def _transform(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k)
    return a[:, ::-1] if flip else a


def mosaic(sources: list[_Source], width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ``width × height`` image with its id and colour masks (see the module docstring)."""
    rng = np.random.default_rng(seed)
    row_h = min(min(s.image.shape[:2]) for s in sources)
    image = np.zeros((height, width, 3), np.uint8)
    ids = np.zeros((height, width), np.int64)
    colors = np.zeros((height, width, 3), np.uint8)
    next_id = 0
    for y in range(0, height, row_h):
        h = min(row_h, height - y)
        x = 0
        while x < width:
            src = sources[int(rng.integers(len(sources)))]
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            layers = [_transform(a, k, flip) for a in (src.image, src.ids, src.colors)]
            ph, pw = layers[0].shape[:2]
            y0 = int(rng.integers(ph - h + 1))
            w = min(pw, width - x)
            crops = [a[y0 : y0 + h, :w] for a in layers]
            image[y : y + h, x : x + w] = crops[0]
            ids[y : y + h, x : x + w] = np.where(crops[1] > 0, crops[1] + next_id, 0)
            colors[y : y + h, x : x + w] = crops[2]
            next_id += int(crops[1].max())
            x += w
    if ids.max() >= 2**24:
        raise ValueError(f"{width}×{height}: too many instances for iSAID's 24-bit ids")
    return image, _rgb(ids), colors


def _save(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(array).save(tmp, compress_level=1)
    tmp.replace(path)


def image_name(i: int) -> str:
    """File stem of generated image ``i`` (``S000000``...), apart from real iSAID names (``P0000``)."""
    return f"S{i:06d}"


def expected_tiles(width: int, height: int, tile: int = 800, overlap: int = 200) -> int:
    """Tiles of the iSAID grid on a ``width × height`` image (last tile shifted back)."""
    def along(n: int) -> int:
        return 1 if n <= tile else math.ceil((n - tile) / (tile - overlap)) + 1

    return along(width) * along(height)


def make_corpus(out: str | Path, images: int, seed: int = 0, samples: Path = SAMPLES) -> dict[str, int]:
    """Write ``images`` synthetic iSAID images (with masks) into ``out``; returns counts.

    Returns ``{"images", "pixels", "tiles"}`` (tiles of the default 800/200 grid).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = load_sources(samples)
    pixels = tiles = 0
    for i in range(images):
        width, height = SIZES[i % len(SIZES)]
        pixels += width * height
        tiles += expected_tiles(width, height)
        name = image_name(i)
        if all((out / f"{name}{suffix}.png").is_file() for suffix in ("", ID_SUFFIX, COLOR_SUFFIX)):
            continue
        image, ids, colors = mosaic(sources, width, height, seed * 1_000_003 + i)
        _save(ids, out / f"{name}{ID_SUFFIX}.png")
        _save(colors, out / f"{name}{COLOR_SUFFIX}.png")
        _save(image, out / f"{name}.png")  # last: the image marks the triple complete for prepare
    summary = {"images": images, "pixels": pixels, "tiles": tiles}
    (out / "corpus.json").write_text(json.dumps({**summary, "seed": seed, "sizes": SIZES[:images]}))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="Folder to write the iSAID-format images and masks into.")
    parser.add_argument("--images", type=int, default=8, help="Number of images (sizes cycle through SIZES).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the crops and transforms.")
    args = parser.parse_args()
    print(json.dumps(make_corpus(args.out, args.images, args.seed)))


if __name__ == "__main__":
    main()
