"""The optional LMM category tier for automatic masks: requests, validation against the list, outcomes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sam_helpers import sam_extras

from pipeline.lmm.client import LMMClient
from pipeline.lmm.server import running_offline_server
from pipeline.lmm.types import LMMRequest, LMMResult, LMMSettings
from pipeline.records import TileInstance
from pipeline.rle import LocalMask
from pipeline.sam.naming import (
    MAX_VIEW_SIDE,
    check_candidates,
    match_category,
    name_objects,
    name_tile_instances,
    object_view,
)

CANDIDATES = ["small vehicle", "vehicle", "storage_tank", "Tennis-Court"]


class ScriptedClient:
    """Answers request ``n`` with ``answers[n]`` (``None``: a failed call)."""

    def __init__(self, answers: Sequence[str | None]) -> None:
        self.answers = list(answers)
        self.requests: list[LMMRequest] = []

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        out = []
        for r in requests:
            text = self.answers[len(self.requests)]
            self.requests.append(r)
            status = "ok" if text is not None else "error"
            err = None if text is not None else "HTTP 500"
            out.append(LMMResult(r.ref, "k", status, text, False, 1, 0.0, 0, 0, err, text, "scripted", r.tier))  # type: ignore[arg-type]
        return out


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("small vehicle", ("named", "small vehicle")),
        ("Small_Vehicles.", ("named", "small vehicle")),
        ("storage tank", ("named", "storage_tank")),
        ("tennis court", ("named", "Tennis-Court")),
        ("It is a storage tank.", ("named", "storage_tank")),
        ("a small vehicle parked", ("named", "small vehicle")),  # longest match, not "vehicle"
        ("vehicle", ("named", "vehicle")),
        ("Unknown", ("unknown", None)),
        ("none", ("unknown", None)),
        ("I cannot tell; unknown.", ("unknown", None)),
        ("a storage tank or a tennis court", ("invalid", None)),
        ("harbor", ("invalid", None)),
        ("", ("invalid", None)),
        (None, ("invalid", None)),
    ],
)
def test_answers_are_validated_against_the_list(answer: str | None, expected: tuple[str, str | None]) -> None:
    assert match_category(answer, CANDIDATES) == expected


def test_candidate_list_is_checked() -> None:
    assert check_candidates(["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="at least one"):
        check_candidates([])
    with pytest.raises(ValueError, match="the same after normalising"):
        check_candidates(["storage tank", "Storage_Tank"])


def _scene() -> tuple[np.ndarray, list[LocalMask]]:
    rgb = np.full((300, 400, 3), 90, dtype=np.uint8)
    rgb[50:70, 60:100] = (200, 40, 40)
    rgb[200:260, 300:390] = (40, 40, 200)
    return rgb, [
        LocalMask(60, 50, np.ones((20, 40), bool)),
        LocalMask(300, 200, np.ones((60, 90), bool)),
        LocalMask(0, 0, np.zeros((0, 0), bool)),
    ]


def test_object_view_is_a_marked_crop() -> None:
    rgb, masks = _scene()
    img = Image.open(io.BytesIO(object_view(rgb, masks[0])))
    assert img.size == (40 + 2 * 48, 20 + 2 * 48)  # context: max(object size, 48) px on every side
    clipped = Image.open(io.BytesIO(object_view(rgb, masks[1])))
    assert clipped.size == (400 - (300 - 90), 300 - (200 - 90))  # 90 px context, cut at the tile's edges
    arr = np.asarray(img)
    yellow = (arr[..., 0] > 180) & (arr[..., 1] > 180) & (arr[..., 2] < 100)
    assert yellow.any() and (arr == 0).all(axis=2).any()  # the mark: a yellow digit on a black square
    assert (arr == (0, 255, 255)).all(axis=2).any()  # the cyan outline
    big = np.zeros((3000, 3000, 3), dtype=np.uint8)
    view = Image.open(io.BytesIO(object_view(big, LocalMask(100, 100, np.ones((2000, 2000), bool)))))
    assert max(view.size) == MAX_VIEW_SIDE


def test_name_objects_outcomes() -> None:
    rgb, masks = _scene()
    client = ScriptedClient(["Vehicle", "a harbour"])
    outcomes = name_objects(rgb, masks, CANDIDATES, client, refs=["t#1", "t#2", "t#3"])
    assert [o.status for o in outcomes] == ["named", "invalid", "invalid"]
    assert [o.category for o in outcomes] == ["vehicle", None, None]
    assert [o.flag for o in outcomes] == [None, "category_invalid", "category_invalid"]
    assert outcomes[1].answer == "a harbour" and outcomes[2].result.error == "empty mask: not asked"
    assert len(client.requests) == 2  # the empty mask is not asked about
    req = client.requests[0]
    assert req.tier == "category" and req.ref == "t#1"
    assert req.facts == {"tier": "category", "candidates": CANDIDATES, "area_px": 800}
    assert "small vehicle, vehicle, storage_tank, Tennis-Court" in req.prompt and "number 1" in req.prompt
    failed = name_objects(rgb, masks[:1], CANDIDATES, ScriptedClient([None]))
    assert failed[0].status == "failed" and failed[0].flag == "category_failed"
    with pytest.raises(ValueError, match="2 refs for 3 masks"):
        name_objects(rgb, masks, CANDIDATES, client, refs=["a", "b"])


def test_name_tile_instances_renames_only_objects() -> None:
    rgb, masks = _scene()
    insts = [
        TileInstance(1, "object", masks[0], 1.0, False, "mask", "sam-auto:t#1", mask_source="sam"),
        TileInstance(2, "harbor", masks[1], 1.0, False, "polygon", "labels.json#2"),
        TileInstance(3, "object", masks[1], 1.0, False, "mask", "sam-auto:t#3", mask_source="sam"),
    ]
    out, outcomes = name_tile_instances(rgb, insts, CANDIDATES, ScriptedClient(["storage tank", "unknown"]), "t")
    assert [o.ref for o in outcomes] == ["t#1", "t#3"]
    assert out[0].category == "storage_tank" and sam_extras(out[0])["category_source"] == "lmm"
    assert sam_extras(out[0])["category_flags"] == []
    assert out[1] is insts[1]
    assert out[2].category == "object" and sam_extras(out[2])["category_flags"] == ["category_unknown"]
    assert sam_extras(out[2])["lmm_category_answer"] == "unknown"
    assert insts[0].category == "object"  # inputs untouched


def test_offline_describer_answers_the_category_tier(tmp_path: Path) -> None:
    """Through the real client and the embedded offline describer: it does not guess, it says unknown."""
    rgb, masks = _scene()
    with running_offline_server() as url:
        settings = LMMSettings(base_url=url, cache_dir=tmp_path / "cache", concurrency=2, max_retries=0)
        client = LMMClient(settings)
        first = name_objects(rgb, masks[:2], CANDIDATES, client)
        again = name_objects(rgb, masks[:2], CANDIDATES, client)
    assert [o.status for o in first] == ["unknown", "unknown"]
    assert [o.answer for o in first] == ["unknown", "unknown"]
    assert all(o.result.ok and not o.result.from_cache for o in first)
    assert all(o.result.from_cache for o in again)  # the describe stage's cache applies
