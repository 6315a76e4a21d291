"""`make demo`: the main job on the bundled sample data, offline.

Prepares the iSAID, DOTA and NEON (box CSV) samples, describes them with the embedded offline
describer (a real OpenAI-compatible server on 127.0.0.1, no network), and prints where everything is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PrepareConfig
from .describe import DescribeConfig, describe
from .prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

SOURCES = {
    "isaid": ([DATA / "isaid"], PrepareConfig(format="isaid")),
    "dota": ([DATA / "dota"], PrepareConfig(format="dota")),
    "neon": ([DATA / "neon" / "OSBS_029.csv"], PrepareConfig(format="boxes")),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "demo_out", help="output folder (default demo_out/)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    lines = []
    for name, (sources, config) in SOURCES.items():
        out = args.out / name
        print(f"\n== {name}: prepare ==", flush=True)
        s = prepare(sources, config, out, progress=progress)
        print(s.text())
        print(f"\n== {name}: describe (offline describer) ==", flush=True)
        d = describe(out, DescribeConfig(), progress=progress)
        print(d.text())
        lines.append(f"  {name:6s} {out}/samples.parquet  ({d.samples} samples, {d.phrases} grounded phrases, "
                     f"{d.flagged} flagged)  tiles: {out}/tiles  marks: {out}/marks")
    print("\nDemo outputs:")
    print("\n".join(lines))
    print(f"Reports: {args.out}/*/prepare_report.json, {args.out}/*/describe_report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
