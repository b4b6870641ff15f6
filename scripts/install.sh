#!/usr/bin/env bash
# Install saescope into ./.venv on a fresh Debian/Ubuntu machine (idempotent).
#   scripts/install.sh          runtime: system packages for the demo data, torch (CPU), saescope
#   scripts/install.sh --dev    also test tools and Debian's chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
apt_pkgs="fonts-noto-color-emoji unicode-data wordnet-base"
[ "$dev" = 1 ] && apt_pkgs="$apt_pkgs chromium docker-compose"
missing=""
for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "==> apt-get install$missing"
  $sudo_cmd apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# Google's and Twitter's emoji (MIT, 64 px PNGs + names and categories) for the multi-style demo;
# without npm the demo goes on with the Noto set alone.
npm_pkgs="emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0"
if command -v npm >/dev/null 2>&1; then
  [ -f .npm-data/node_modules/emoji-datasource-twitter/emoji.json ] && [ -f .npm-data/node_modules/emoji-datasource-google/emoji.json ] \
    || { echo "==> npm install --prefix .npm-data $npm_pkgs"; npm install -s --no-audit --no-fund --prefix .npm-data $npm_pkgs \
         || echo "==> npm install failed: the demo will use the Noto emoji only"; }
else
  echo "==> npm not found: the demo will use the Noto emoji only (apt-get install npm, then rerun for Google's and Twitter's)"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, pinned: this takes the CPU build from the local disk instead of a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
if [ "$dev" = 1 ]; then
  pip install -q -e ".[dev,flux]"
else
  pip install -q -e ".[text]"
fi
echo "==> saescope installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
