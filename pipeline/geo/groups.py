"""Stream a dataset table image by image, in the order of ``tiles.parquet``, without holding the table.

Prepare writes ``tiles.parquet``, ``instances.parquet`` and describe ``samples.parquet`` image by image, in
the same image order, so one pass over each file, cut at image changes, lines them up (a merge join on
the image). Memory is one image's rows at a time plus the list of image ids.

A file whose rows are not grouped that way (edited by hand, concatenated in another order) is still read
correctly, one filtered scan per image (slower; :attr:`GroupedTable.mode` says ``per-image``). Rows naming
an image that ``tiles.parquet`` does not have are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import GeoError

BATCH_ROWS = 8192


def image_order(tiles_path: Path) -> list[str]:
    """Image ids in the order of their first tile in ``tiles.parquet`` (read one column, streamed)."""
    order: list[str] = []
    seen: set[str] = set()
    for batch in _batches(tiles_path, ["image_id"]):
        for value in pc.unique(batch.column(0)).to_pylist():
            if value is not None and value not in seen:
                seen.add(value)
                order.append(value)
    return order


def _batches(path: Path, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise GeoError(f"{path}: cannot read as Parquet ({exc})") from None
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise GeoError(f"{path}: missing column(s) {', '.join(missing)}")
    yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=list(columns))


def _runs(values: list[str | None]) -> Iterator[tuple[str | None, int, int]]:
    """Maximal runs of equal values as ``(value, start, stop)``."""
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            yield values[start], start, i
            start = i


class GroupedTable:
    """A table read image by image in a given image order.

    Attributes:
        path: the Parquet file.
        mode: ``single-pass`` (rows grouped by image in order) or ``per-image`` (one filtered scan each).
        unknown_rows: rows whose image is not in the order (skipped).
    """

    def __init__(self, path: Path, columns: Sequence[str], order: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(dict.fromkeys(["image_id", *columns]))
        self.position = {image: i for i, image in enumerate(order)}
        self.order = list(order)
        self.unknown_rows = 0
        self.mode = "single-pass" if self._grouped_in_order() else "per-image"

    def _grouped_in_order(self) -> bool:
        """Whether each known image's rows form one run and runs follow the order (one column read).

        Also counts the rows of unknown images (:attr:`unknown_rows`).
        """
        last = -1
        in_order = True
        previous: str | None = None
        for batch in _batches(self.path, ["image_id"]):
            for value, start, stop in _runs(batch.column(0).to_pylist()):
                pos = self.position.get(value) if value is not None else None
                if pos is None:
                    self.unknown_rows += stop - start
                    continue
                if value == previous:
                    continue
                if pos <= last:
                    in_order = False
                last, previous = pos, value
        return in_order

    def __iter__(self) -> Iterator[tuple[str, pa.Table]]:
        """``(image_id, rows of that image)`` in the order; images without rows are left out."""
        if self.mode == "single-pass":
            yield from self._single_pass()
        else:
            yield from self._per_image()

    def _single_pass(self) -> Iterator[tuple[str, pa.Table]]:
        current: str | None = None
        pending: list[pa.RecordBatch] = []
        for batch in _batches(self.path, self.columns):
            ids = batch.column(batch.schema.get_field_index("image_id")).to_pylist()
            for value, start, stop in _runs(ids):
                if value is None or value not in self.position:
                    continue
                if value != current and pending:
                    assert current is not None
                    yield current, pa.Table.from_batches(pending)
                    pending = []
                current = value
                pending.append(batch.slice(start, stop - start))
        if pending and current is not None:
            yield current, pa.Table.from_batches(pending)

    def _per_image(self) -> Iterator[tuple[str, pa.Table]]:
        dataset = ds.dataset(str(self.path), format="parquet")
        for image in self.order:
            table = dataset.to_table(columns=self.columns, filter=pc.field("image_id") == image)
            if table.num_rows:
                yield image, table


class Aligned:
    """Take a grouped table's rows image by image while walking the image order (a merge join)."""

    def __init__(self, groups: GroupedTable | None) -> None:
        self._it = iter(groups) if groups is not None else iter(())
        self._head: tuple[str, pa.Table] | None = next(self._it, None)

    def take(self, image_id: str) -> pa.Table | None:
        """The rows of ``image_id``, or ``None`` when the table has none (call in the image order)."""
        if self._head is not None and self._head[0] == image_id:
            rows = self._head[1]
            self._head = next(self._it, None)
            return rows
        return None
