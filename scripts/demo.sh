#!/usr/bin/env bash
# The main job on the embedded default: python -m modeling_longclip.demo, offline, about 10 minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
HF_HUB_OFFLINE=1 python -m modeling_longclip.demo --clean "$@"
