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
