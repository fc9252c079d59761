#!/usr/bin/env bash
# Here, where PyPI is reachable: the wheels the GPU machine lacks (it has no package index), into .whl/, which git
# ignores through .git/info/exclude. Name `.whl` in the device call's `carry`; benchmarks/gpu_batch.sh installs them.
# The machine has Python 3.12, torch, transformers, accelerate, peft, pyarrow, pandas, xxhash, fsspec, regex, timm and
# torchvision; it lacks datasets (and dill, multiprocess), open_clip (and ftfy, wcwidth) and bitsandbytes (43 MB, for
# `gpu_batch.sh quant`; the carry limit is 64 MiB in all).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 \
  bitsandbytes==0.50.2
ls .whl
