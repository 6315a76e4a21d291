"""The selection policy: which objects are described alone, which are grouped, and the call budget."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.selection import SelectionPolicy, select_tile


def _row(i: int, cat: str, x: float, y: float, *, mark: int | None = None, area: float = 400.0,
         size: str = "medium", visible: float = 1.0, cluster: str | None = None) -> dict[str, Any]:
    return {
        "instance_id": i, "category_name": cat, "mark": mark if mark is not None else (None if cluster else i),
        "cluster_id": cluster, "centroid_x": x, "centroid_y": y, "area": area, "size_class": size,
        "visible_fraction": visible, "truncated": visible < 1.0, "position": "center",
    }


def _ids(selection: Any) -> list[int]:
    return [int(r["instance_id"]) for r in selection.singles] + [i for g in selection.groups for i in g.instance_ids]


def test_rare_categories_are_described_alone_and_the_rest_grouped() -> None:
    rows = [_row(k, "large vehicle", 50 + 20 * k, 100) for k in range(1, 21)]  # a dense row of trucks
    rows += [_row(21, "plane", 600, 600, area=9000, size="large"), _row(22, "storage tank", 400, 700)]
    sel = select_tile(rows, [], 800, 800, SelectionPolicy())
    assert {r["category_name"] for r in sel.singles} == {"plane", "storage tank"}  # rare ones first
    assert sorted(_ids(sel)) == list(range(1, 23))  # every object grounded exactly once
    assert all(g.category_name == "large vehicle" for g in sel.groups)
    assert sum(g.described for g in sel.groups) <= 2


def test_cut_off_objects_are_not_singles_but_stay_grounded() -> None:
    rows = [_row(1, "plane", 10, 10, visible=0.3, size="large"), _row(2, "ship", 700, 700)]
    sel = select_tile(rows, [], 800, 800, SelectionPolicy())
    assert [r["instance_id"] for r in sel.singles] == [2]
    assert [g.instance_ids for g in sel.groups] == [[1]]


def test_groups_of_one_category_merge_to_fit_the_phrase_budget() -> None:
    # Four far-apart pairs of ships: four spatial groups, merged down to the budget.
    rows = []
    for k, (x, y) in enumerate([(50, 50), (750, 50), (50, 750), (750, 750)]):
        rows += [_row(2 * k + 1, "ship", x, y), _row(2 * k + 2, "ship", x + 15, y)]
    policy = SelectionPolicy(max_instances=0, max_phrases=2)
    sel = select_tile(rows, [], 800, 800, policy)
    assert len(sel.groups) == 2 and sorted(_ids(sel)) == list(range(1, 9))
    unlimited = select_tile(rows, [], 800, 800, SelectionPolicy(max_instances=0, max_phrases=10))
    assert len(unlimited.groups) == 4


def test_categories_are_never_merged_together() -> None:
    cats = ["ship", "plane", "bridge", "harbor"]
    rows = [_row(k + 1, c, 100 + 150 * k, 400) for k, c in enumerate(cats) for _ in [0]]
    rows += [_row(10 + k, c, 110 + 150 * k, 420) for k, c in enumerate(cats)]
    sel = select_tile(rows, [], 800, 800, SelectionPolicy(max_instances=0, max_phrases=2))
    assert sorted(g.category_name for g in sel.groups) == sorted(cats)  # over budget, but nothing mixed


def test_prepared_clusters_are_groups_and_all_instances_keeps_density() -> None:
    rows = [_row(k, "small vehicle", 100 + 5 * k, 100, cluster="t#c1") for k in range(1, 6)]
    rows += [_row(6 + k, "plane", 300 + 100 * k, 500) for k in range(3)]
    clusters = [{"cluster_id": "t#c1", "category_name": "small vehicle", "instance_ids": [1, 2, 3, 4, 5],
                 "position": "top left"}]
    dense = select_tile(rows, clusters, 800, 800, SelectionPolicy.preset("all-instances"))
    assert len(dense.singles) == 3 and [g.cluster_id for g in dense.groups] == ["t#c1"]
    assert all(g.described for g in dense.groups)
    shaped = select_tile(rows, clusters, 800, 800, SelectionPolicy())
    assert len(shaped.singles) == 2 and sorted(_ids(shaped)) == list(range(1, 9))  # K = 2
    assert any(g.cluster_id == "t#c1" for g in shaped.groups)


def test_calls_per_tile_are_bounded() -> None:
    assert SelectionPolicy().max_calls() == 6
    assert SelectionPolicy.preset("all-instances").max_calls() is None
    with pytest.raises(ValueError, match="policy must be one of"):
        SelectionPolicy.preset("everything")
