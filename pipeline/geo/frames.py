"""pandas views of a pulled release: samples, instances, flags and LMM calls, and their statistics.

:func:`pipeline.release.load` returns a :class:`ReleaseData`: still ``{split: pyarrow.dataset.Dataset}``
for training loaders, plus :meth:`~ReleaseData.to_pandas` (and one method per table) for analysis:

* ``samples``: one row per sample (the GCG shards without the ``image`` bytes and ``masks`` unless asked);
* ``instances``: one row per instance piece from ``geo/instances*.parquet`` (geometry as WKB; use
  :meth:`~ReleaseData.geo_instances` for a GeoDataFrame), with ``layer`` naming the file;
* ``flags``: one row per validation flag: ``id, split, code, severity, detail``;
* ``calls``: the LMM call log (``tables/lmm_calls.parquet``) when the release carries it.

:func:`category_table` and :func:`flag_table` aggregate the shards column by column, batch by batch
(never a whole table in memory); ``geopixeld release show NAME==V --stats`` prints them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .layers import GEO_DIR, MERGE_KEY

if TYPE_CHECKING:
    import pandas as pd

TABLES = ("samples", "instances", "flags", "calls")
#: Where the export keeps the LMM call log (copied from the dataset folder's ``lmm_calls.parquet``).
CALLS_PATH = "tables/lmm_calls.parquet"
HEAVY_COLUMNS = ("image", "masks")
_BATCH = 4096


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - pandas comes with the geo extra and with pyarrow users
        raise ImportError("pandas is needed for table access: pip install 'geopixeld[geo]'") from exc
    return pandas


#: Columns of the call log that say how this run got an answer (from the cache, after retries, how fast,
#: through the Batch API), not what was asked and answered: left out of the export, so a rerun answered from
#: the cache exports the same file (and republishing the same data is recognised as the same release).
RUN_COLUMNS = ("from_cache", "attempts", "latency_s", "batch")


def copy_call_log(data_dir: str | Path, out_dir: str | Path) -> int:
    """Copy ``DATA/lmm_calls.parquet`` to ``OUT/tables/lmm_calls.parquet`` without :data:`RUN_COLUMNS`,
    batch by batch (temp name, then rename).

    Returns the number of files written (0 when the dataset has no call log).
    """
    src = Path(data_dir) / "lmm_calls.parquet"
    if not src.is_file():
        return 0
    dst = Path(out_dir) / CALLS_PATH
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    source = pq.ParquetFile(src)
    keep = [n for n in source.schema_arrow.names if n not in RUN_COLUMNS]
    schema = pa.schema([source.schema_arrow.field(n) for n in keep])
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in source.iter_batches(batch_size=4096, columns=keep):
            writer.write_batch(batch)
    tmp.replace(dst)
    return 1


class ReleaseData(dict[str, ds.Dataset]):
    """``{split: pyarrow.dataset.Dataset}`` of a pulled release, with pandas access to its tables.

    Attributes:
        path: the local release folder.
    """

    def __init__(self, splits: dict[str, ds.Dataset], path: str | Path) -> None:
        super().__init__(splits)
        self.path = Path(path)

    def to_pandas(self, table: str = "samples", **kwargs: Any) -> pd.DataFrame:
        """One of ``samples``, ``instances``, ``flags``, ``calls`` as a DataFrame."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
        frame: pd.DataFrame = getattr(self, table)(**kwargs)
        return frame

    def _columns(self, wanted: Sequence[str] | None, heavy: bool) -> list[str] | None:
        names = self._schema_names()
        if wanted is not None:
            return list(wanted)
        return [n for n in names if heavy or n not in HEAVY_COLUMNS]

    def _schema_names(self) -> list[str]:
        for dataset in self.values():
            return list(dataset.schema.names)
        return []

    def samples(self, columns: Sequence[str] | None = None, heavy: bool = False) -> pd.DataFrame:
        """Samples of every split (``image`` bytes and ``masks`` only with ``heavy=True`` or by name)."""
        cols = self._columns(columns, heavy)
        tables = [d.to_table(columns=cols) for _, d in sorted(self.items())]
        return _concat(tables).to_pandas()

    def flags(self) -> pd.DataFrame:
        """One row per flag: ``id, split, code, severity, detail``."""
        return _concat(list(iter_flags(self))).to_pandas()

    def instances(self) -> pd.DataFrame:
        """Instance pieces from ``geo/instances*.parquet`` (WKB ``geometry``; ``layer`` = file name)."""
        files = self.instance_files()
        if not files:
            raise FileNotFoundError(f"{self.path}: the release has no {GEO_DIR}/instances*.parquet "
                                    "(it was exported without the 'geo' format)")
        tables = []
        for f in files:
            t = pq.read_table(f)
            tables.append(t.append_column("layer", pa.array([f.name] * t.num_rows, pa.string())))
        return _concat(tables).to_pandas()

    def geo_instances(self) -> Any:
        """Instance pieces as a GeoDataFrame (needs geopandas); several CRSs give ``{file name: frame}``."""
        import geopandas

        frames = {f.name: geopandas.read_parquet(f) for f in self.instance_files()}
        return next(iter(frames.values())) if len(frames) == 1 else frames

    def instance_files(self) -> list[Path]:
        return sorted((self.path / GEO_DIR).glob("instances*.parquet"))

    def calls(self) -> pd.DataFrame:
        """The LMM call log; ``FileNotFoundError`` when the release does not carry one."""
        path = self.path / CALLS_PATH
        if not path.is_file():
            raise FileNotFoundError(f"{self.path}: the release carries no LMM call log ({CALLS_PATH}; "
                                    "exported without the 'geo' format or from a dataset without describe)")
        return pq.read_table(path).to_pandas()


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def iter_flags(splits: dict[str, ds.Dataset]) -> Iterator[pa.Table]:
    """Flags of every sample as ``id, split, code, severity, detail`` tables, batch by batch."""
    for split, dataset in sorted(splits.items()):
        if "flags" not in dataset.schema.names:
            continue
        for batch in dataset.to_batches(columns=["id", "flags"], batch_size=_BATCH):
            flags = batch.column("flags")
            flat = pc.list_flatten(flags)
            if len(flat) == 0:
                continue
            parents = pc.list_parent_indices(flags)
            ids = pc.take(batch.column("id"), parents)
            if pa.types.is_struct(flat.type):
                code, severity, detail = (flat.field(k) for k in ("code", "severity", "detail"))
            else:  # flags stored as plain strings
                code, severity, detail = flat, pa.nulls(len(flat), pa.string()), pa.nulls(len(flat), pa.string())
            yield pa.table({"id": ids, "split": pa.array([split] * len(flat), pa.string()), "code": code,
                            "severity": severity, "detail": detail})


def flag_table(splits: dict[str, ds.Dataset]) -> pd.DataFrame:
    """Per flag code and severity: ``flags`` (occurrences) and ``samples`` (samples carrying it)."""
    counts: Counter[tuple[str, str]] = Counter()
    samples: Counter[tuple[str, str]] = Counter()
    last: dict[tuple[str, str], str] = {}  # a sample's flags are contiguous: count each sample once per key
    for table in iter_flags(splits):
        for i, c, s in zip(table.column("id").to_pylist(), table.column("code").to_pylist(),
                           table.column("severity").to_pylist(), strict=True):
            key = (str(c), str(s or ""))
            counts[key] += 1
            if last.get(key) != i:
                samples[key] += 1
                last[key] = i
    rows = [{"code": c, "severity": s, "flags": n, "samples": samples[(c, s)]} for (c, s), n in counts.items()]
    frame = _pandas().DataFrame(rows, columns=["code", "severity", "flags", "samples"])
    return frame.sort_values(["flags", "code"], ascending=[False, True], ignore_index=True)


def category_table(release: ReleaseData) -> pd.DataFrame:
    """Per category: ``phrases`` (grounded [SEG] phrases in captions), ``samples`` (samples naming it), and
    from the GeoParquet layer when present ``objects`` (distinct merge keys), ``pieces`` and ``area_m2``."""
    phrases: Counter[str] = Counter()
    samples: Counter[str] = Counter()
    for _, dataset in sorted(release.items()):
        if "categories" not in dataset.schema.names:
            continue
        for batch in dataset.to_batches(columns=["categories"], batch_size=_BATCH):
            for cats in batch.column("categories").to_pylist():
                cats = [c for c in cats or [] if c is not None]
                phrases.update(cats)
                samples.update(set(cats))
    objects: Counter[str] = Counter()
    pieces: Counter[str] = Counter()
    area: defaultdict[str, float] = defaultdict(float)
    for f in release.instance_files():
        # Files are written image by image and an object's pieces share its image: distinct keys per image.
        image: str | None = None
        seen: set[str] = set()
        columns = ["image_id", MERGE_KEY, "category_name", "area_m2"]
        for batch in pq.ParquetFile(f).iter_batches(columns=columns, batch_size=_BATCH):
            for img, key, cat, a in zip(*(batch.column(i).to_pylist() for i in range(4)), strict=True):
                if img != image:
                    image, seen = img, set()
                if key not in seen:
                    seen.add(key)
                    objects[cat] += 1
                pieces[cat] += 1
                area[cat] += a or 0.0
    names = sorted(set(phrases) | set(pieces))
    rows = [{"category": n, "phrases": phrases[n], "samples": samples[n], "objects": objects[n],
             "pieces": pieces[n], "area_m2": round(area[n], 2)} for n in names]
    frame = _pandas().DataFrame(rows, columns=["category", "phrases", "samples", "objects", "pieces", "area_m2"])
    return frame.sort_values(["phrases", "objects", "category"], ascending=[False, False, True], ignore_index=True)


def stats_text(release: ReleaseData, title: str) -> str:
    """The per-category and per-flag tables as plain text (``geopixeld release show --stats``)."""
    cats = category_table(release)
    flags = flag_table(release)
    total = sum(d.count_rows() for d in release.values())
    parts = [f"{title}: {total} samples in {len(release)} split(s) ({release.path})", "",
             "Per category (phrases: grounded [SEG] phrases; objects: distinct object_id in geo/; "
             "area in m² where the GSD is known)",
             cats.to_string(index=False) if len(cats) else "(no categories)", "",
             "Per flag (flags: occurrences; samples: samples carrying it)",
             flags.to_string(index=False) if len(flags) else "(no flags)"]
    return "\n".join(parts)
