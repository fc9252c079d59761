#!/usr/bin/env bash
# A virtualenv with the quantization backends (torchao, bitsandbytes) for tests/test_quantization.py. Kept apart from
# .venv: with torchao installed every `import transformers.modeling_utils` imports it (about 2 s per process), which
# the rest of the suite would pay hundreds of times. Sourced by test.sh after bootstrap.sh; built once (a minute or
# two: the CPU torch, the package with its test extra, both backends) and reused while this file and pyproject.toml
# are unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=".venv-quantization"
stamp="$venv/.ready-$(cat scripts/quantization_venv.sh pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
  "$venv/bin/python" -m pip install --quiet -e ".[test,quant,quant-cuda]"
  touch "$stamp"
fi
LONGCLIP_QUANTIZATION_PYTHON="$PWD/$venv/bin/python"
export LONGCLIP_QUANTIZATION_PYTHON
