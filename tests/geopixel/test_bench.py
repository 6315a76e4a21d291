"""The GPU benchmark: skipped without CUDA; its code path exercised on CPU with the tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("segment_anything")

from typer.testing import CliRunner  # noqa: E402

from geopixel.bench import run_bench  # noqa: E402
from geopixel.cli import app  # noqa: E402

TINY = Path(__file__).resolve().parents[2] / "geopixel" / "configs" / "tiny.yaml"


def test_bench_skips_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run for real")
    res = CliRunner().invoke(app, ["bench"])
    assert res.exit_code == 0 and "no CUDA: skipped" in res.output


def test_bench_code_path_on_cpu() -> None:
    # RANDOM weights, tiny config: checks the synthetic batch, timing and FLOP counting, not speed
    report = run_bench(TINY, tokens=200, steps=1, device="cpu", warmup=1, n_seg=3, image_size=64)
    assert "tokens/step 200" in report and "model TFLOP/s" in report and "executed TFLOP/s" in report
