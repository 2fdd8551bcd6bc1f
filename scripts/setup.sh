#!/usr/bin/env bash
# Set up napari-retina in ./.venv on a fresh Linux machine with Python 3.11.
#   bash scripts/setup.sh            # the package with a Qt binding (demo, CLI, napari plugin)
#   bash scripts/setup.sh testing    # ... plus the test dependencies
# Installs the system libraries napari's canvas needs without a display (Xvfb,
# Mesa GL, Qt's xcb libraries) when apt-get is available and we may use it,
# then a CPU build of torch (pinned: an unpinned torch pulls a multi-GB CUDA
# build; on a GPU machine, install the CUDA torch you want first).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-cursor0 libxcb-xkb1 libx11-xcb1 libdbus-1-3 libfontconfig1 libglib2.0-0"

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "setup: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: warning: missing system packages (install them for napari without a display):$missing" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
if [ "${1:-}" = "testing" ]; then
  .venv/bin/python -m pip install -q -e ".[testing]"
else
  .venv/bin/python -m pip install -q -e ".[qt]"
fi
echo "setup: ready in .venv"
