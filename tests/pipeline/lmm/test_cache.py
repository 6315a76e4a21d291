"""The response cache: what the key covers, atomic one-file-per-key storage, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.lmm.cache import CACHE_SCHEMA, CacheEntry, ResponseCache, cache_key
from pipeline.lmm.client import LMMClient
from pipeline.lmm.types import LMMRequest, LMMSettings

BASE: dict[str, Any] = {
    "model": "m",
    "params": {"temperature": 0.2, "max_tokens": 300, "detail": "auto", "send_facts": True},
    "prompt_version": "geopixeld-v1",
    "tier": "instance",
    "prompt": "List down all the attributes of the plane ...",
    "image_png": b"\x89PNG fake",
    "facts": {"tier": "instance", "category": "plane", "mark": 3},
}


def entry(key: str, text: str = "A white plane.", **overrides: Any) -> CacheEntry:
    values: dict[str, Any] = {
        "key": key, "text": text, "model": "m", "raw": '{"choices": []}', "input_tokens": 100,
        "output_tokens": 12, "finish_reason": "stop", "tier": "instance", "prompt_version": "geopixeld-v1",
        "prompt": "p", "created_at": 1.0,
    }  # fmt: skip
    values.update(overrides)
    return CacheEntry(**values)


def hexkey(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


# ---------------------------------------------------------------- the key


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "gpt-4o"),
        ("params", {**BASE["params"], "temperature": 0.0}),
        ("params", {**BASE["params"], "max_tokens": 301}),
        ("params", {**BASE["params"], "detail": "high"}),
        ("prompt_version", "geopixeld-v2"),
        ("tier", "instance_metric"),
        ("prompt", BASE["prompt"] + " "),
        ("image_png", b"\x89PNG fakf"),
        ("facts", {**BASE["facts"], "mark": 4}),
    ],
)
def test_key_changes_with_every_input(field: str, value: Any) -> None:
    assert cache_key(**{**BASE, field: value}) != cache_key(**BASE)


def test_key_is_stable_and_ignores_dict_order_and_numpy_types() -> None:
    key = cache_key(**BASE)
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key(**BASE) == key
    reordered = {k: BASE["facts"][k] for k in reversed(list(BASE["facts"]))}
    assert cache_key(**{**BASE, "facts": reordered}) == key
    numpy_facts = {**BASE["facts"], "mark": np.int64(3)}
    assert cache_key(**{**BASE, "facts": numpy_facts}) == key
    rle_text = {**BASE["facts"], "mask_rle": {"size": [4, 4], "counts": "abc"}}
    rle_bytes = {**BASE["facts"], "mask_rle": {"size": np.array([4, 4]), "counts": b"abc"}}
    assert cache_key(**{**BASE, "facts": rle_text}) == cache_key(**{**BASE, "facts": rle_bytes})


def test_key_ignores_ref_endpoint_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    request = LMMRequest("instance", "prompt", b"png", {"mark": 1}, ref="tile-1|instance|7")
    monkeypatch.setenv("KEY_A", "sk-aaaa")
    monkeypatch.setenv("KEY_B", "sk-bbbb")
    a = LMMClient(LMMSettings(base_url="http://127.0.0.1:1/v1", api_key_env="KEY_A"))
    b = LMMClient(LMMSettings(base_url="https://gateway.example/v1", api_key_env="KEY_B", concurrency=99))
    relabelled = LMMRequest("instance", "prompt", b"png", {"mark": 1}, ref="something else")
    assert a.key_for(request) == b.key_for(request) == a.key_for(relabelled)
    assert a.key_for(request) != LMMClient(LMMSettings(model="other")).key_for(request)
    assert a.key_for(request) != LMMClient(LMMSettings(send_facts=False)).key_for(request)


# ---------------------------------------------------------------- storage


def test_put_get_roundtrip_and_layout(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    key = hexkey(1)
    assert cache.get(key) is None and key not in cache and len(cache) == 0
    path = cache.put(entry(key))
    assert path == tmp_path / "c" / key[:2] / f"{key}.json"
    assert cache.get(key) == entry(key) and key in cache and list(cache.keys()) == [key] and len(cache) == 1
    stored = json.loads(path.read_text())
    assert stored["schema"] == CACHE_SCHEMA and stored["text"] == "A white plane."
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


def test_overwrite_replaces_whole_entry(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = hexkey(2)
    cache.put(entry(key, "first"))
    cache.put(entry(key, "second"))
    got = cache.get(key)
    assert got is not None and got.text == "second"


@pytest.mark.parametrize(
    "content",
    ["", "{", '{"schema": "other", "key": "K"}', "[1, 2]", '{"schema": "S", "key": "K", "unexpected": 1}'],
)
def test_unreadable_or_foreign_entries_are_misses(tmp_path: Path, content: str) -> None:
    cache = ResponseCache(tmp_path)
    key = hexkey(3)
    path = cache.path_for(key)
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("K", key).replace('"S"', json.dumps(CACHE_SCHEMA)))
    assert cache.get(key) is None
    cache.put(entry(key))  # and the next success repairs it
    assert cache.get(key) == entry(key)


def test_entry_under_another_key_is_a_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    a, b = hexkey(4), hexkey(5)
    cache.put(entry(a))
    cache.path_for(b).parent.mkdir(parents=True, exist_ok=True)
    cache.path_for(b).write_bytes(cache.path_for(a).read_bytes())  # a copied file must not answer for b
    assert cache.get(b) is None


def test_keys_must_be_hex(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hex"):
        ResponseCache(tmp_path).path_for("../../etc/passwd")


WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from pipeline.lmm.cache import CacheEntry, ResponseCache
    root, writer = sys.argv[1], int(sys.argv[2])
    cache = ResponseCache(root)
    for i in range(150):
        key = hashlib.sha256(str(i % 100).encode()).hexdigest()  # keys 0..99, every writer writes all of them
        text = f"answer {i % 100} from writer {writer} " + "x" * 2000
        cache.put(CacheEntry(key=key, text=text, model="m", raw=None, input_tokens=1, output_tokens=1,
                             finish_reason="stop", tier="t", prompt_version="v", prompt="p", created_at=0.0))
        got = cache.get(key)
        assert got is not None and got.text.startswith(f"answer {i % 100} from writer "), got
    """
)


def test_concurrent_writer_processes_leave_only_complete_entries(tmp_path: Path) -> None:
    root = tmp_path / "shared-cache"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(w)], stderr=subprocess.PIPE, text=True)
        for w in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    cache = ResponseCache(root)
    assert len(cache) == 100
    for i in range(100):
        got = cache.get(hexkey(i))
        assert (
            got is not None
            and got.text.startswith(f"answer {i} from writer ")
            and got.text.endswith("x" * 2000)
        )
    assert not [p for p in root.rglob("*") if p.is_file() and p.suffix != ".json"]  # no stray temporaries
