"""Which objects of a tile get a sentence of their own, which are grounded through groups.

GeoPixelD's shape (train split: 16,795 holistic, 36,793 instance and 17,023 group descriptions over
16,795 tiles; ~32 objects per tile): per tile one holistic summary, about two objects described alone, about
one group, and every other object grounded through a group phrase. The ``geopixeld`` policy reproduces that
shape; ``all-instances`` keeps one sentence per marked object and one per prepared cluster (dense, costly).

The ``geopixeld`` policy, per tile (all knobs in :class:`SelectionPolicy`):

1. **Singles** — at most ``max_instances`` marked objects are described alone (instance tier, one LMM call
   each). Candidates must show at least ``min_visible_fraction`` of themselves. They are ranked by: a
   category that is rare in the tile (at most ``rare_max`` objects) first, then larger size class, then not
   cut by the tile border, then larger area; one per category before a second of any category.
2. **Groups** — every other object is grounded through a group phrase (one ``[SEG]`` whose mask is the union
   of its members). Prepare's clusters (categories clustered in ``prepare``, e.g. small vehicles) are groups
   as they are; the remaining objects of each category are grouped by single-linkage on their centroids
   (``group_link`` × the category's median object size, as :func:`pipeline.priors.cluster_points`), any
   category, with a count word and a refined position (:mod:`pipeline.priors`).
3. **Budget** — while singles + groups exceed ``max_phrases``, the two nearest groups of the category with the
   most groups are merged (never two categories): phrases stay few, every object stays grounded. A tile with
   more categories than the budget keeps one group per category (the report says so).
4. **Group calls** — the ``max_group_calls`` largest groups are described by the LMM (cluster tier, one call
   each); the others get a measured sentence (count word, category, position — no call, nothing guessed).
5. **Compose** — one more call per tile fuses the holistic, instance and group sentences into one paragraph
   (the ``compose`` tier; see :mod:`pipeline.describe`).

LMM calls per tile: 1 (holistic) + singles + group calls + 1 (compose) ≤ 2 + ``max_instances`` +
``max_group_calls`` (6 with the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from . import priors

POLICIES = ("geopixeld", "all-instances")
_SIZE_RANK = {"large": 2, "medium": 1, "small": 0}


class SelectionPolicy(BaseModel):
    """How a tile's objects are split into singles and groups (see the module docstring).

    Attributes:
        name: ``geopixeld`` (GeoPixelD's shape, the default) or ``all-instances`` (every marked object
            described alone, every prepared cluster described, no merging).
        max_instances: objects described alone per tile (K).
        rare_max: a category with at most this many objects in the tile is rare (preferred for singles).
        min_visible_fraction: singles show at least this share of their object (less: grouped).
        group_link: grouping link distance in median object sizes of the category in the tile.
        max_phrases: grounded phrases per tile the grouping aims at (merges groups of one category).
        max_group_calls: groups described by the LMM per tile; the rest get measured sentences.
        compose: fuse each tile's sentences into one paragraph with one more LMM call.
        compose_max_words: length the compose prompt asks for.
    """

    name: Literal["geopixeld", "all-instances"] = "geopixeld"
    max_instances: int = Field(2, ge=0)
    rare_max: int = Field(2, ge=1)
    min_visible_fraction: float = Field(0.5, ge=0.0, le=1.0)
    group_link: float = Field(2.5, gt=0)
    max_phrases: int = Field(4, ge=1)
    max_group_calls: int = Field(2, ge=0)
    compose: bool = True
    compose_max_words: int = Field(130, ge=20)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SelectionPolicy:
        """The named policy with ``overrides`` (``None`` values ignored)."""
        if name not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {name!r}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if name == "all-instances":
            return cls(name="all-instances", compose=False, **given)
        return cls(name="geopixeld", **given)

    def max_calls(self) -> int | None:
        """The most LMM calls one tile can take (``None``: unbounded, ``all-instances``)."""
        if self.name == "all-instances":
            return None
        return 1 + self.max_instances + self.max_group_calls + (1 if self.compose else 0)


@dataclass
class Group:
    """Objects grounded by one phrase (one ``[SEG]``, the union of their masks).

    Attributes:
        category_name: readable category of every member.
        members: instance rows (``instances.parquet``) of the members.
        position: refined position word of the group (:func:`pipeline.priors.cluster_position`).
        described: asked of the LMM (cluster tier); otherwise it gets a measured sentence.
        cluster_id: the prepared cluster it is, or ``None`` when formed at describe time.
    """

    category_name: str
    members: list[dict[str, Any]]
    position: str
    described: bool = False
    cluster_id: str | None = None

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def count_word(self) -> str:
        return priors.count_word(self.count)

    @property
    def instance_ids(self) -> list[int]:
        return [int(m["instance_id"]) for m in self.members]

    @property
    def ref(self) -> str:
        """A stable label of the group within its tile (the prepared cluster's id, or the first member's)."""
        return self.cluster_id or f"g{min(self.instance_ids)}"


@dataclass
class TileSelection:
    """The outcome for one tile: singles in mark order, groups in phrase order, and what is left out."""

    singles: list[dict[str, Any]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    ungrounded: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_instances(self) -> int:
        return len(self.singles) + sum(g.count for g in self.groups) + len(self.ungrounded)


def _centroids(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[float(r["centroid_x"]), float(r["centroid_y"])] for r in rows], dtype=np.float64)


def _group_of(rows: list[dict[str, Any]], width: int, height: int, **kw: Any) -> Group:
    return Group(rows[0]["category_name"], rows, priors.cluster_position(_centroids(rows), width, height), **kw)


def _single_rank(r: dict[str, Any], counts: dict[str, int], policy: SelectionPolicy) -> tuple[Any, ...]:
    rare = counts[r["category_name"]] <= policy.rare_max
    return (
        not rare,
        -_SIZE_RANK.get(str(r.get("size_class")), 0),
        bool(r.get("truncated")),
        -float(r.get("area") or 0.0),
        int(r["mark"]),
    )


def _pick_singles(rows: list[dict[str, Any]], policy: SelectionPolicy) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["category_name"]] = counts.get(r["category_name"], 0) + 1
    candidates = [
        r
        for r in rows
        if r.get("mark") is not None
        and r.get("cluster_id") is None
        and float(r.get("visible_fraction") or 0.0) >= policy.min_visible_fraction
    ]
    ranked = sorted(candidates, key=lambda r: _single_rank(r, counts, policy))
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in ranked:  # one per category first ...
        if len(chosen) < policy.max_instances and r["category_name"] not in seen:
            chosen.append(r)
            seen.add(r["category_name"])
    for r in ranked:  # ... then the best of the rest
        if len(chosen) < policy.max_instances and r not in chosen:
            chosen.append(r)
    return sorted(chosen, key=lambda r: int(r["mark"]))


def _merge_nearest(groups: list[Group], width: int, height: int) -> bool:
    """Merge the two nearest groups of the category with the most groups; False when none has two."""
    if not groups:
        return False
    by_cat: dict[str, list[int]] = {}
    for k, g in enumerate(groups):
        by_cat.setdefault(g.category_name, []).append(k)
    cat, idxs = max(by_cat.items(), key=lambda kv: (len(kv[1]), kv[0]))
    if len(idxs) < 2:
        return False
    centres = np.array([_centroids(groups[k].members).mean(axis=0) for k in idxs])
    d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    a, b = np.unravel_index(int(np.argmin(d)), d.shape)
    ga, gb = groups[idxs[int(a)]], groups[idxs[int(b)]]
    merged = _group_of(ga.members + gb.members, width, height)
    keep = [g for k, g in enumerate(groups) if k not in (idxs[int(a)], idxs[int(b)])]
    groups[:] = [*keep, merged]
    return True


def select_tile(
    instances: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    width: int,
    height: int,
    policy: SelectionPolicy,
) -> TileSelection:
    """Split one tile's instances (``instances.parquet`` rows) into singles and groups.

    Args:
        instances: the tile's instance rows (need ``instance_id``, ``category_name``, ``mark``,
            ``cluster_id``, ``centroid_x``/``centroid_y``, ``area``, ``size_class``, ``visible_fraction``,
            ``truncated``).
        clusters: the tile's prepared cluster rows (``clusters.parquet``).
        width, height: tile size in px.
        policy: the selection policy.

    Returns:
        The selection; every instance is a single, a member of one group, or (only when it has neither a
        mark nor a cluster) in ``ungrounded``.
    """
    by_id = {int(r["instance_id"]): r for r in instances}
    prepared: list[Group] = []
    for c in clusters:
        members = [by_id[int(i)] for i in c["instance_ids"] if int(i) in by_id]
        if members:
            prepared.append(
                Group(c["category_name"], members, c["position"], cluster_id=c["cluster_id"])
            )
    in_cluster = {int(i) for g in prepared for i in g.instance_ids}
    marked = [r for r in instances if r.get("mark") is not None and int(r["instance_id"]) not in in_cluster]
    ungrounded = [r for r in instances if r.get("mark") is None and int(r["instance_id"]) not in in_cluster]

    if policy.name == "all-instances":
        for g in prepared:
            g.described = True
        return TileSelection(sorted(marked, key=lambda r: int(r["mark"])), prepared, ungrounded)

    singles = _pick_singles(marked, policy)
    single_ids = {int(r["instance_id"]) for r in singles}
    rest: dict[str, list[dict[str, Any]]] = {}
    for r in marked:
        if int(r["instance_id"]) not in single_ids:
            rest.setdefault(r["category_name"], []).append(r)
    groups = list(prepared)
    for cat in sorted(rest):
        rows = rest[cat]
        pts = _centroids(rows)
        sizes = np.sqrt(np.array([max(float(r.get("area") or 1.0), 1.0) for r in rows]))
        for idx in priors.cluster_points(pts, sizes, max(width, height), policy.group_link):
            groups.append(_group_of([rows[j] for j in idx], width, height))
    while len(singles) + len(groups) > policy.max_phrases and _merge_nearest(groups, width, height):
        pass
    # Largest groups are described by the LMM; phrase order: category by category, then top to bottom.
    for g in sorted(groups, key=lambda g: (-g.count, g.category_name, min(g.instance_ids)))[
        : policy.max_group_calls
    ]:
        g.described = True
    groups.sort(key=lambda g: (g.category_name, float(_centroids(g.members)[:, 1].min()), min(g.instance_ids)))
    return TileSelection(singles, groups, ungrounded)


__all__ = ["POLICIES", "Group", "SelectionPolicy", "TileSelection", "select_tile"]
