"""Fixtures of the LMM tests: loopback servers (offline describer, fault injector), tiny PNGs, settings."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_server import FaultServer, running_fault_server
from PIL import Image

from pipeline.lmm.server import running_offline_server
from pipeline.lmm.types import LMMRequest, LMMSettings


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an H x W x 3 uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def to_png() -> Callable[[np.ndarray], bytes]:
    """The PNG encoder, for tests that draw their own tiles."""
    return png_bytes


@pytest.fixture(scope="session")
def tiny_png() -> bytes:
    """A 16 x 16 grey tile."""
    return png_bytes(np.full((16, 16, 3), 128, dtype=np.uint8))


@pytest.fixture(scope="module")
def offline_url() -> Iterator[str]:
    """Base URL of the offline describer running in a background thread (shut down after the module)."""
    with running_offline_server() as url:
        yield url


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A fresh fault-injecting server (its plan defaults to answering ``ok``)."""
    with running_fault_server() as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., LMMSettings]:
    """Settings for tests: fast back-off, short timeout, cache under ``tmp_path/cache``; override freely."""

    def make(base_url: str, **overrides: Any) -> LMMSettings:
        values: dict[str, Any] = {
            "base_url": base_url,
            "model": "fault-model",
            "concurrency": 4,
            "timeout_s": 5.0,
            "max_retries": 3,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.2,
            "cache_dir": tmp_path / "cache",
            "api_key_env": "GEOPIXELD_TEST_LMM_KEY",
        }
        values.update(overrides)
        return LMMSettings(**values)

    return make


@pytest.fixture
def make_requests(tiny_png: bytes) -> Callable[..., list[LMMRequest]]:
    """``make_requests(["a", "b"])`` -> one request per id (the id travels in the facts)."""

    def make(ids: list[str], tier: str = "instance") -> list[LMMRequest]:
        return [
            LMMRequest(tier=tier, prompt=f"describe {i}", image_png=tiny_png, facts={"id": i}, ref=f"ref-{i}")
            for i in ids
        ]

    return make
