#!/usr/bin/env bash
# Virtualenvs with the other transformers lines users load our folders with (4.57, the last 4.x, and 5.17, the oldest
# 5.x we support), for tests/test_transformers_versions.py. Sourced by test.sh after bootstrap.sh; cached: each is
# built once (about a minute, CPU torch from PyPI) and reused while this file is unchanged. ftfy: the Long-CLIP
# tokenizer cleans text with it, as the original does (a folder loaded without it warns once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LONGCLIP_OTHER_TRANSFORMERS=""
for version in 4.57 5.17; do
  venv=".venv-transformers-$version"
  stamp="$venv/.ready-$(sha1sum scripts/transformers_venvs.sh | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "torch==2.13.0" "transformers~=$version.0" safetensors pillow numpy ftfy
    touch "$stamp"
  fi
  LONGCLIP_OTHER_TRANSFORMERS="$LONGCLIP_OTHER_TRANSFORMERS $PWD/$venv/bin/python"
done
export LONGCLIP_OTHER_TRANSFORMERS
