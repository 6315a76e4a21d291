"""`make bench` section: GeoPixelD fidelity of the describe stage, both policies side by side.

Prepares the bundled iSAID sample once, describes it with the embedded offline describer under the
``geopixeld`` policy (the default) and under ``all-instances`` (one call per object), and prints the
fidelity figures (:mod:`pipeline.fidelity`) beside GeoPixelD's published ones, with the ratio of LMM calls.

Run alone: ``python -m pipeline.bench_fidelity``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import PrepareConfig
from .describe import DescribeConfig, describe
from .fidelity import rows
from .prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "isaid"

def run_bench(source: Path = SAMPLES) -> dict[str, Any]:
    """Fidelity of both policies on ``source`` (iSAID layout); returns the figures per policy."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "prepared"
        prepare([source], PrepareConfig(format="isaid"), base, progress=False)
        out: dict[str, Any] = {}
        for policy in ("geopixeld", "all-instances"):
            data = Path(tmp) / policy
            shutil.copytree(base, data, ignore=shutil.ignore_patterns("lmm_cache"))
            start = time.perf_counter()
            summary = describe(data, DescribeConfig(policy=policy), progress=False)
            out[policy] = {**summary.fidelity, "describe_s": time.perf_counter() - start}
    print(f"describe fidelity on {source} ({out['geopixeld']['tiles']} tiles, offline describer)")
    print(f"  {'':26s} {'geopixeld':>10s} {'all-instances':>14s} {'GeoPixelD':>10s}")
    for label, ours, dense, ref in rows(out["geopixeld"], out["all-instances"]):
        print(f"  {label:26s} {ours:>10s} {dense:>14s} {ref:>10s}")
    ratio = out["all-instances"]["calls_per_tile"] / max(out["geopixeld"]["calls_per_tile"], 1e-9)
    print(f"  LMM calls per tile, all-instances / geopixeld: {ratio:.1f}×")
    return {"ratio_calls_all_over_geopixeld": ratio, **{f"{p}_{k}": v for p, d in out.items()
                                                       for k, v in d.items() if isinstance(v, int | float)}}


if __name__ == "__main__":
    run_bench(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES)
