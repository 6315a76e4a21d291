"""Writing an export without ever leaving half of it where a reader looks.

* :func:`staged_folder` builds the whole EXPORT folder under a hidden sibling
  (``.{name}.partial-{pid}``) and swaps it into place only when every file is complete; an error removes
  the partial folder and leaves any earlier complete export untouched. A partial folder left by a killed
  run is removed by the next run.
* :func:`writing` turns an ``OSError`` (disk full, quota, permissions, a file size limit) raised while
  writing one file into an :class:`ExportWriteError` that names that file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ExportWriteError(OSError):
    """Writing an export file failed (e.g. the disk filled); the message names the file and the cause."""


class MissingTileError(FileNotFoundError):
    """A sample's tile image is gone (removed or moved after describe); the message names the file."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Re-raise any ``OSError`` inside the block as :class:`ExportWriteError` naming ``path``."""
    try:
        yield
    except ExportWriteError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ExportWriteError(exc.errno or 0, f"{path}: {reason} while writing the export") from exc


def _partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


@contextmanager
def staged_folder(out: Path, overwrite: bool = True) -> Iterator[Path]:
    """A fresh staging folder for ``out``; on success it replaces ``out``, on error it is removed.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _partials(out):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(stage, out)
    shutil.rmtree(old, ignore_errors=True)
