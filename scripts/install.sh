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

# The multi-style demo's emoji sets from npm: Google's and Twitter's (64 px PNGs + names and
# categories), Microsoft's Fluent Emoji 3D (WebP) and flat (SVG), OpenMoji (SVG); see NOTICE.
# Without npm the demo goes on with the Noto set alone.
npm_pkgs="emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 @lobehub/fluent-emoji-3d@1.1.0 fluentui-emoji@1.3.0 openmoji@17.0.0"
npm_markers="emoji-datasource-google/emoji.json emoji-datasource-twitter/emoji.json @lobehub/fluent-emoji-3d/assets fluentui-emoji/icons/flat openmoji/data/openmoji.json"
npm_missing=0
for m in $npm_markers; do [ -e ".npm-data/node_modules/$m" ] || npm_missing=1; done
if [ "$npm_missing" = 0 ]; then
  :
elif command -v npm >/dev/null 2>&1; then
  echo "==> npm install --prefix .npm-data $npm_pkgs"
  npm install -s --no-audit --no-fund --prefix .npm-data $npm_pkgs \
    || echo "==> npm install failed: the demo will use the emoji sets it finds (at least Noto's)"
else
  echo "==> npm not found: the demo will use the Noto emoji only (apt-get install npm, then rerun for the other styles)"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, pinned: this takes the CPU build from the local disk instead of a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
if [ "$dev" = 1 ]; then
  pip install -q -e ".[dev,flux]"
  # open_clip needs torchvision; PyPI's Linux torchvision is built against CUDA torch, and with a CPU
  # torch its import fails (transformers' image processors import it too), so roll it back there.
  # The installed torch is pinned: the newest torchvision would otherwise pull a multi-GB CUDA torch.
  # Where torchvision cannot import, the three packages go to .openclip-site/ instead, outside the
  # venv: tests/test_open_clip.py imports them from there (precompute.extractors.open_clip_load
  # declares the two torchvision operators the CPU torch lacks) and unloads them afterwards.
  if ! python -c "import open_clip" 2>/dev/null && [ ! -d .openclip-site/open_clip ]; then
    pip install -q -e ".[openclip]" "torch==$(python -c 'import torch; print(torch.__version__)')"
    if ! python -c "import torchvision" 2>/dev/null; then
      side="$(pip list --format=freeze 2>/dev/null | grep -iE '^(open.clip.torch|timm|torchvision)==')"
      pip uninstall -y -q torchvision open_clip_torch timm
      pip install -q --no-deps --target .openclip-site $side
      echo "==> open_clip: torchvision here is a CUDA build that a CPU torch cannot import; open_clip, timm and torchvision kept in .openclip-site/ for the tests"
    fi
  fi
else
  pip install -q -e ".[text,styles]"
fi
# Draw the SVG/WebP emoji sets once into .npm-data/raster (128 px PNGs, in parallel), so the
# demo's build time is spent on the model; a no-op once drawn or when the sets are missing.
python -m precompute.emoji_raster || echo "==> drawing the SVG/WebP emoji failed: the demo draws them on its first run"
echo "==> saescope installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
