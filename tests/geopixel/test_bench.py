"""The GPU benchmark: skipped without CUDA; its code path exercised on CPU with the tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("segment_anything")

from typer.testing import CliRunner  # noqa: E402

from geopixel.bench import measure, report, run_bench  # noqa: E402
from geopixel.cli import app  # noqa: E402

TINY = Path(__file__).resolve().parents[2] / "geopixel" / "configs" / "tiny.yaml"


def test_bench_skips_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run for real")
    res = CliRunner().invoke(app, ["bench"])
    assert res.exit_code == 0 and "no CUDA: skipped" in res.output


def test_bench_code_path_on_cpu() -> None:
    # RANDOM weights, tiny config: checks the synthetic batch, timing and FLOP accounting, not speed
    m = measure(TINY, tokens=200, steps=1, device="cpu", warmup=1, n_seg=3, image_size=64, checkpointing=(True, False))
    on, off = m["rows"]
    assert on["checkpointing"] and not off["checkpointing"] and len(on["times"]) == 1
    # the step's required work is the count without recomputation; checkpointing executes one more LM forward
    assert m["required"] == off["executed"] and on["executed"] > off["executed"]
    assert m["recompute"] > 0
    assert abs(on["executed"] - m["recompute"] - off["executed"]) / off["executed"] < 0.01
    text = report(m)
    assert "tokens/step 200" in text and "counted in a step without checkpointing" in text
    assert text.count("model TFLOP/s") == 2 and "checkpointing on" in text and "checkpointing off" in text
    # only checkpointing: the required work is estimated from the executed count
    only = measure(TINY, tokens=200, steps=1, device="cpu", warmup=0, n_seg=3, image_size=64, checkpointing=(True,))
    assert "executed count minus the recomputed LM forward" in report(only)
    assert abs(only["required"] - m["required"]) / m["required"] < 0.01
    assert "model TFLOP/s" in run_bench(TINY, tokens=200, steps=1, device="cpu", warmup=0, n_seg=3, image_size=64,
                                        checkpointing=(False,))
