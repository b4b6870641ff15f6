#!/usr/bin/env bash
# The newcomer's first command: install, build the offline demo and serve the explorer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec saescope demo "$@"
