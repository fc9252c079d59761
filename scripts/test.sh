#!/usr/bin/env bash
# The test suite: offline, tiny random models, a few minutes on 2 CPU cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
HF_HUB_OFFLINE=1 python -m pytest "$@"
