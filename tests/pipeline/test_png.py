"""The PNG writer: lossless through every decoder, with libdeflate and with the zlib fallback."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline import png


def _decode_pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (7, 5, 1), (6, 9, 2), (33, 17, 3), (8, 8, 4), (1, 300, 3)])
def test_every_layout_decodes_to_the_same_pixels(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(len(shape) * 100 + shape[0]).integers(0, 256, size=shape, dtype=np.uint8)
    data = png.encode(pixels)
    assert data.startswith(png.SIGNATURE)
    assert np.array_equal(_decode_pil(data).reshape(pixels.shape), pixels)
    flags = cv2.IMREAD_UNCHANGED
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        return  # OpenCV has no grey+alpha; PIL checked it
    assert np.array_equal(decoded.reshape(pixels.shape), pixels)


def test_a_real_tile_stays_lossless_and_compresses(data_dir: Path) -> None:
    rgb = np.asarray(Image.open(data_dir / "isaid" / "P0003.png").convert("RGB"))[:800, :800]
    data = png.encode(np.ascontiguousarray(rgb))
    assert np.array_equal(_decode_pil(data), rgb)
    assert len(data) < 0.7 * rgb.nbytes  # deflated, not stored


def test_the_zlib_fallback_writes_the_same_pixels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    np.save(tmp_path / "p.npy", pixels)
    code = (
        "import sys, numpy as np\n"
        "from pipeline import png\n"
        "p = np.load(sys.argv[1])\n"
        "png.write(sys.argv[2], p)\n"
        "print(png.backend())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "p.npy"), str(tmp_path / "z.png")],
        capture_output=True, text=True, env={"GEOPIXELD_PNG_DEFLATE": "zlib", "PATH": "/usr/bin:/bin"}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "zlib"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "z.png")), pixels)


def test_rejects_what_png_cannot_hold() -> None:
    with pytest.raises(ValueError, match="uint8"):
        png.encode(np.zeros((4, 4), dtype=np.uint16))
    with pytest.raises(ValueError, match="shape"):
        png.encode(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        png.encode(np.zeros((0, 4, 3), dtype=np.uint8))


def test_writer_threads_write_everything_and_name_a_file_it_cannot_write(tmp_path: Path) -> None:
    pixels = [np.full((20, 20, 3), k, dtype=np.uint8) for k in range(10)]
    writer = png.PngWriter(threads=2, pending=3)
    for k, p in enumerate(pixels):
        writer.write(tmp_path / f"t{k}.png", p, also=tmp_path / f"m{k}.png")
    writer.close()
    for k, p in enumerate(pixels):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"t{k}.png")), p)
        assert (tmp_path / f"m{k}.png").read_bytes() == (tmp_path / f"t{k}.png").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind

    writer = png.PngWriter(threads=1)
    writer.write(tmp_path / "missing-folder" / "x.png", pixels[0])
    with pytest.raises(OSError, match="missing-folder/x.png"):
        writer.close()
