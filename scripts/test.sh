#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (browser tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
. .venv/bin/activate
export SAESCOPE_PROGRESS=0
exec python -m pytest -q "$@"
