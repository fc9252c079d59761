#!/usr/bin/env bash
# The test suite: offline, tiny random models, about 12 minutes on 2 CPU cores; folders are also loaded on transformers
# 4.57 and 5.17, and the quantization backends are tested in a virtualenv of their own (all built on the first run,
# then cached).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
source "$(dirname "${BASH_SOURCE[0]}")/transformers_venvs.sh"
source "$(dirname "${BASH_SOURCE[0]}")/quantization_venv.sh"
HF_HUB_OFFLINE=1 python -m pytest "$@"
