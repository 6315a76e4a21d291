"""Planning: which requests each tile needs (holistic, singles, described groups), from the prepared tables."""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import validate, vocab
from ..lmm.types import LMMRequest
from ..prompts import PromptSet, load_prompt_set
from ..rle import merge
from ..selection import Group, TileSelection, select_tile
from .config import DescribeConfig


@dataclass
class Subject:
    """What one sentence of a tile is about: the holistic summary, a single object, or a group."""

    kind: str  # holistic | instance | cluster
    row: dict[str, Any] | None = None  # the instance row of a single
    group: Group | None = None
    request: int | None = None  # index into the plan's requests; None for a measured sentence

    @property
    def category(self) -> str:
        if self.row is not None:
            return str(self.row["category_name"])
        return self.group.category_name if self.group is not None else ""

    @property
    def instance_ids(self) -> list[int]:
        if self.row is not None:
            return [int(self.row["instance_id"])]
        return self.group.instance_ids if self.group is not None else []

    @property
    def position(self) -> str:
        if self.row is not None:
            return str(self.row["position"])
        return self.group.position if self.group is not None else ""

    @property
    def label(self) -> str:
        if self.kind == "holistic":
            return "holistic"
        if self.row is not None:
            return f"instance {self.row['instance_id']}"
        return f"group {self.group.ref}" if self.group is not None else self.kind



@dataclass
class TilePlan:
    """The requests of one tile and what each sentence is about (holistic first, then category blocks)."""

    tile: dict[str, Any]
    selection: TileSelection
    requests: list[LMMRequest] = field(default_factory=list)
    subjects: list[Subject] = field(default_factory=list)
    # flags prepare left on the tile's instances (SAM quality, naming), carried to the sample
    instance_flags: list[dict[str, Any]] = field(default_factory=list)
    n_instances: int = 0
    # objects per readable category in the tile, and the label set (what answers are checked against)
    tile_counts: tuple[tuple[str, int], ...] = ()
    labels: frozenset[str] = frozenset()



def _png(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: tile image missing (was the prepare output moved or deleted?)") from None



def _ordered_subjects(selection: TileSelection) -> list[Subject]:
    """Singles and groups category by category (in order of first appearance), singles first."""
    items: list[Subject] = [Subject("instance", row=r) for r in selection.singles]
    items += [Subject("cluster", group=g) for g in selection.groups]
    order: dict[str, int] = {}
    for s in items:
        order.setdefault(s.category, len(order))
    return sorted(items, key=lambda s: (order[s.category], s.kind != "instance"))  # stable within a block



def plan_tile(
    data_dir: Path,
    tile: dict[str, Any],
    instances: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    prompts: PromptSet,
    config: DescribeConfig,
) -> TilePlan:
    """The first-round requests of one tile (holistic, singles, described groups); compose comes later."""
    selection = select_tile(instances, clusters, int(tile["width"]), int(tile["height"]), config.selection())
    plan = TilePlan(tile, selection, instance_flags=validate.instance_flags(instances), n_instances=len(instances))
    clean = _png(data_dir / tile["tile_path"])
    gsd = tile.get("gsd")
    counts: Counter[str] = Counter(r["category_name"] for r in instances)
    plan.tile_counts = tuple(sorted(counts.items()))
    holistic_facts = {
        "tier": "holistic",
        "category_counts": dict(sorted(counts.items())),
        "instances": [
            {"category": r["category_name"], "position": r["position"], "size_class": r["size_class"]}
            for r in instances[:100]
        ],
        "gsd": gsd,
        "tile_size": [tile["width"], tile["height"]],
    }
    plan.requests.append(
        LMMRequest("holistic", prompts.render("holistic"), clean, holistic_facts, f"{tile['tile_id']}|holistic")
    )
    plan.subjects.append(Subject("holistic", request=0))
    use_metric = config.metric_priors and gsd is not None and "instance_metric" in prompts.tiers
    marks = _png(data_dir / tile["marks_path"]) if selection.singles else b""
    for s in _ordered_subjects(selection):
        if s.row is not None:
            plan.requests.append(_instance_request(tile, s.row, marks, gsd, prompts, use_metric))
        elif s.group is not None and s.group.described:
            plan.requests.append(_group_request(tile, s.group, clean, gsd, prompts))
        else:
            plan.subjects.append(s)  # measured sentence: no request
            continue
        s.request = len(plan.requests) - 1
        plan.subjects.append(s)
    return plan



def _instance_request(
    tile: dict[str, Any], r: dict[str, Any], marks: bytes, gsd: float | None, prompts: PromptSet, use_metric: bool
) -> LMMRequest:
    tier = "instance_metric" if use_metric and r["length_m"] is not None else "instance"
    values: dict[str, Any] = {"category_name": r["category_name"], "pos": r["position"], "mark_number": r["mark"]}
    if tier == "instance_metric":
        values.update(
            length_m=r["length_m"], width_m=r["width_m"], orientation_word=r["orientation_word"] or "not determined"
        )
    facts = {
        "tier": "instance",
        "category": r["category_name"],
        "position": r["position"],
        "mark": r["mark"],
        "mask_rle": r["rle"],
        "mark_box": r["mark_box"],
        "gsd": gsd,
        "length_m": r["length_m"],
        "width_m": r["width_m"],
        "orientation_deg": r["orientation_deg"],
        "orientation_word": r["orientation_word"],
        "size_class": r["size_class"],
        "visible_fraction": r["visible_fraction"],
        "truncated": r["truncated"],
    }
    ref = f"{tile['tile_id']}|instance|{r['instance_id']}"
    return LMMRequest(tier, prompts.render(tier, **values), marks, facts, ref)



def _group_request(tile: dict[str, Any], g: Group, clean: bytes, gsd: float | None, prompts: PromptSet) -> LMMRequest:
    name = vocab.plural(g.category_name, g.count)
    values = {"cluster_info": g.count_word, "category_name": name, "pos": g.position}
    facts = {
        "tier": "cluster",
        "category": name,
        "count": g.count,
        "count_word": g.count_word,
        "position": g.position,
        "mask_rle": merge([m["rle"] for m in g.members]),
        "gsd": gsd,
    }
    return LMMRequest("cluster", prompts.render("cluster", **values), clean, facts, f"{tile['tile_id']}|cluster|{g.ref}")



def _group(rows: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return out



def tile_batches(data_dir: str | Path, batch_tiles: int = 32) -> list[list[str]]:
    """The prepared tile ids of ``data_dir`` in batches (the unit a flow maps over)."""
    data = Path(data_dir)
    if not (data / "tiles.parquet").exists():
        raise FileNotFoundError(f"{data}: no tiles.parquet — run `geopixeld prepare` first")
    ids = pq.read_table(data / "tiles.parquet", columns=["tile_id"]).column("tile_id").to_pylist()
    return [ids[i : i + batch_tiles] for i in range(0, len(ids), batch_tiles)]



@functools.lru_cache(maxsize=8)
def _label_set(path: str, mtime_ns: int) -> frozenset[str]:
    del mtime_ns  # part of the cache key: a rewritten file is read again
    found: set[str] = set()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=["category_name"]):
        found.update(x for x in pc.unique(batch.column(0)).to_pylist() if x)
    return frozenset(found)



def dataset_categories(data_dir: str | Path) -> frozenset[str]:
    """The readable categories of every instance of ``data_dir`` (with :func:`pipeline.vocab.label_set`, the
    label set answers are checked against), read one column batch by batch; empty without
    ``instances.parquet``."""
    path = Path(data_dir) / "instances.parquet"
    return _label_set(str(path), path.stat().st_mtime_ns) if path.exists() else frozenset()



def _read_rows(path: Path, tile_ids: list[str]) -> list[dict[str, Any]]:
    return pq.read_table(path, filters=[("tile_id", "in", tile_ids)]).to_pylist() if tile_ids else []



def plan_batch(data_dir: str | Path, tile_ids: list[str], config: DescribeConfig) -> tuple[list[TilePlan], list[str]]:
    """The tiles' first-round plans (in ``tile_ids`` order) and the category names answers are checked
    against."""
    data = Path(data_dir)
    order = {t: k for k, t in enumerate(tile_ids)}
    tiles = sorted(_read_rows(data / "tiles.parquet", tile_ids), key=lambda t: order[t["tile_id"]])
    instances = _group(_read_rows(data / "instances.parquet", tile_ids), "tile_id")
    clusters = _group(_read_rows(data / "clusters.parquet", tile_ids), "tile_id")
    known = sorted({r["category_name"] for rows in instances.values() for r in rows} | set(vocab.SYNONYMS))
    present = {r["category_name"] for rows in instances.values() for r in rows}
    labels = vocab.label_set(dataset_categories(data) | present)
    prompts = load_prompt_set(config.prompts)
    plans = [
        plan_tile(data, t, instances.get(t["tile_id"], []), clusters.get(t["tile_id"], []), prompts, config)
        for t in tiles
    ]
    for p in plans:
        p.labels = labels
    return plans, known

