#!/usr/bin/env bash
# Lint and format check (ruff, configured in pyproject.toml): seconds; .ci/run runs it before the tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
ruff check . && ruff format --check .
