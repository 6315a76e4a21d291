"""Lossless PNG writing, fast: a numpy ``Up`` filter and one deflate call that releases the GIL.

Tiles and set-of-marks images are most of what prepare writes, and the deflate step is most of what a
PNG encoder spends. Here the rows are filtered with numpy (PNG filter type 2, ``Up``: each byte minus
the byte above it, which suits aerial imagery) and deflated in one call:

* through **libdeflate** (level ``LEVEL``), the library rasterio's wheels ship (``rasterio.libs``) or a
  system one, called with ctypes — about twice as fast as zlib for the same size, and it releases the
  GIL, so tiles encode on other cores while Python works on the next tile;
* else through the standard library's ``zlib`` (same format, slower; it releases the GIL too).

``GEOPIXELD_PNG_DEFLATE=zlib`` forces the fallback. Either way the file is a plain 8-bit PNG (greyscale,
RGB or RGBA) that every decoder reads back to the same pixels.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import struct
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

LEVEL = 1  # libdeflate/zlib level: 1 is the fastest that still compresses (about cv2's default size)
SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels → PNG colour type (grey, grey+alpha, RGB, RGBA)


def _chunk(tag: bytes, data: bytes | memoryview) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag))
    return b"".join((struct.pack(">I", len(data)), tag, bytes(data), struct.pack(">I", crc)))


def _libdeflate_paths() -> list[str]:
    """Candidate libdeflate shared libraries: rasterio's bundled copy first, then the system's."""
    found: list[str] = []
    spec = importlib.util.find_spec("rasterio")
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        for folder in (pkg.parent / "rasterio.libs", pkg / ".dylibs", pkg.parent / "rasterio" / ".libs"):
            found += sorted(glob.glob(str(folder / "libdeflate*")))
    for name in ("libdeflate.so.0", "libdeflate.so", "libdeflate.dylib"):
        found.append(name)
    return found


class _LibDeflate:
    """ctypes binding of libdeflate's zlib-format compressor; one compressor per thread."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.libdeflate_alloc_compressor.restype = ctypes.c_void_p
        lib.libdeflate_alloc_compressor.argtypes = [ctypes.c_int]
        lib.libdeflate_zlib_compress.restype = ctypes.c_size_t
        lib.libdeflate_zlib_compress.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t
        ]
        lib.libdeflate_zlib_compress_bound.restype = ctypes.c_size_t
        lib.libdeflate_zlib_compress_bound.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.libdeflate_free_compressor.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self._local = threading.local()

    def _compressor(self) -> int:
        c = getattr(self._local, "compressor", None)
        if c is None:
            c = self.lib.libdeflate_alloc_compressor(LEVEL)
            if not c:
                raise MemoryError("libdeflate could not allocate a compressor")
            self._local.compressor = c
        return int(c)

    def compress(self, data: np.ndarray) -> memoryview:
        """zlib stream of a C-contiguous uint8 array (the GIL is released while compressing)."""
        c = self._compressor()
        bound = self.lib.libdeflate_zlib_compress_bound(c, data.nbytes)
        out = np.empty(bound, dtype=np.uint8)
        n = self.lib.libdeflate_zlib_compress(c, data.ctypes.data, data.nbytes, out.ctypes.data, bound)
        if n == 0:
            raise RuntimeError("libdeflate: output buffer too small")
        return memoryview(out.data)[:n]


def _load_backend() -> _LibDeflate | None:
    if os.environ.get("GEOPIXELD_PNG_DEFLATE", "").lower() == "zlib":
        return None
    for path in _libdeflate_paths():
        try:
            lib = ctypes.CDLL(path)
            return _LibDeflate(lib)
        except (OSError, AttributeError):
            continue
    return None


_BACKEND: _LibDeflate | None = None
_BACKEND_LOADED = False
_BACKEND_LOCK = threading.Lock()


def backend() -> str:
    """``libdeflate`` or ``zlib``: what ``encode`` deflates with in this process."""
    return "libdeflate" if _backend() is not None else "zlib"


def _backend() -> _LibDeflate | None:
    global _BACKEND, _BACKEND_LOADED
    if not _BACKEND_LOADED:
        with _BACKEND_LOCK:
            if not _BACKEND_LOADED:
                _BACKEND = _load_backend()
                _BACKEND_LOADED = True
    return _BACKEND


def filtered_rows(pixels: np.ndarray) -> np.ndarray:
    """PNG scanlines with filter ``Up``: ``H × (1 + W·C)`` uint8, each row minus the row above it."""
    h = pixels.shape[0]
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    out = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 2  # filter type Up (the first row's "above" is zeros: the row itself)
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    return out


def encode(pixels: np.ndarray) -> bytes:
    """A lossless 8-bit PNG of ``pixels`` (``H×W`` grey, or ``H×W×C`` with C = 1, 2, 3 or 4; uint8)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8, not {pixels.dtype}")
    if pixels.ndim == 2:
        channels = 1
    elif pixels.ndim == 3 and pixels.shape[2] in _COLOR_TYPE:
        channels = pixels.shape[2]
    else:
        raise ValueError(f"cannot write an array of shape {pixels.shape} as PNG")
    h, w = pixels.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("cannot write an empty image as PNG")
    raw = filtered_rows(pixels)
    lib = _backend()
    data: bytes | memoryview = lib.compress(raw) if lib is not None else zlib.compress(raw.data, LEVEL)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPE[channels], 0, 0, 0)
    return b"".join((SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", data), _chunk(b"IEND", b"")))


def write(path: str | Path, pixels: np.ndarray) -> None:
    """Encode and write atomically (a temporary name in the same folder, renamed when complete)."""
    data = encode(pixels)
    write_bytes(path, data)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write already-encoded bytes atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class PngWriter:
    """Encodes and writes PNGs on ``threads`` worker threads while the caller goes on.

    At most ``pending`` images wait or encode at once (``write`` blocks beyond that), so memory stays
    bounded. ``threads=0`` writes in the caller's thread. ``close()`` waits for every image and raises
    the first error (an ``OSError`` naming the file); ``close(wait=False)`` drops what has not started.
    """

    def __init__(self, threads: int = 1, pending: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png") if threads > 0 else None
        self._futures: deque[Future[None]] = deque()
        self._pending = max(1, pending)

    def write(self, path: str | Path, pixels: np.ndarray, also: str | Path | None = None) -> None:
        """Write ``pixels`` to ``path`` (and the same bytes to ``also``). ``pixels`` must not change later."""
        if self._pool is None:
            _encode_and_write(path, pixels, also)
            return
        while len(self._futures) >= self._pending:
            self._futures.popleft().result()
        self._futures.append(self._pool.submit(_encode_and_write, path, pixels, also))

    def close(self, wait: bool = True) -> None:
        if self._pool is None:
            return
        try:
            if wait:
                while self._futures:
                    self._futures.popleft().result()
        finally:
            for f in self._futures:
                f.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._futures.clear()


def _encode_and_write(path: str | Path, pixels: np.ndarray, also: str | Path | None) -> None:
    data = encode(pixels)
    for p in (path, also):
        if p is None:
            continue
        try:
            write_bytes(p, data)
        except OSError as exc:
            raise OSError(f"{p}: cannot write the PNG ({exc.strerror or exc})") from exc
