#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install what the demo and the tests need. Sourced by demo.sh and
# test.sh; needs only Python 3.10+ and pip with access to PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
stamp="$VENV/.modeling_longclip-$(cat pyproject.toml scripts/bootstrap.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  # The CPU build first, so that nothing below pulls a multi-GB CUDA torch.
  python -m pip install --quiet "torch==2.13.0"
  python -m pip install --quiet -e ".[test]"
  # The independent reference and the CLIP BPE file; its torchvision/timm dependencies are not needed.
  python -m pip install --quiet --no-deps "open-clip-torch==3.3.0"
  touch "$stamp"
fi
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
