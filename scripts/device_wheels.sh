#!/usr/bin/env bash
# Download, on this machine, the wheels that the GPU benchmarks need and the device machine's image lacks
# (it has torch, torchvision, transformers, peft, numpy, PIL, yaml, tqdm; not pydantic or segment-anything).
# They land in .whl/ (git-ignored); scripts/device_bench.sh installs them there. Python 3.12, x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for spec in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
            typing-extensions==4.16.0 segment-anything==1.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$spec"
done
ls -l .whl
