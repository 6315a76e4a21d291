"""How many processes prepare runs, and what a process that only prepares may skip at start-up."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import PrepareConfig


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | str, images: int, config: PrepareConfig) -> int:
    """Processes for ``workers``: ``auto`` is one per CPU core, at most one per image, and 1 with SAM
    (one model on one device); a number is taken as given (at least 1)."""
    if isinstance(workers, str):
        if workers.strip().lower() != "auto":
            try:
                workers = int(workers)
            except ValueError:
                raise ValueError(f"workers must be a number or 'auto', not {workers!r}") from None
        elif config.masks == "sam":
            return 1
        else:
            return max(1, min(available_cpus(), images))
    return max(1, int(workers))


def without_pandas_integration() -> None:
    """For a process that only prepares (``geopixeld prepare``): keep pyarrow from importing pandas.

    pyarrow looks for pandas the first time it builds any table (to recognise DataFrames), which costs
    about a quarter of a second at start-up although prepare never hands it pandas objects. Here that first
    look finds nothing, so pyarrow treats objects as non-pandas; an explicit conversion (``to_pandas``,
    ``from_pandas``) still imports pandas when asked. Library callers are left alone: only the command calls
    this.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.schema([("probe", pa.int8())]).empty_table()  # pyarrow's one-time pandas check happens now
    finally:
        sys.meta_path.remove(blocker)


class _NoPandas:
    """An import finder that reports pandas as missing (used for a moment only)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
