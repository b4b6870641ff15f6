#!/usr/bin/env bash
# The newcomer's first command: install, build the offline demo and serve the explorer.
# The demo is ~8,500 emoji in five art styles (Noto, Twemoji, Fluent 3D, Fluent flat, OpenMoji);
# a style whose npm set is missing is skipped with a notice (Noto alone gives the Noto demo).
# `--styles noto,twitter` (or any list) overrides it, as does every other `saescope demo` option.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec saescope demo --styles default "$@"
