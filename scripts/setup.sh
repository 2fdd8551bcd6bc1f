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

# A second run (the README's second command) reuses .venv: what an earlier run installed is
# recorded in .venv/napari-retina-setup (the extras, and a hash of the package's configuration);
# when it already covers this run, nothing is installed again.
EXTRA=qt
[ "${1:-}" = "testing" ] && EXTRA=testing
CONFIG_HASH=$(cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
STAMP=.venv/napari-retina-setup
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && grep -qx "$EXTRA $CONFIG_HASH" "$STAMP"; then
  echo "setup: .venv already has napari-retina[$EXTRA]; reusing it (delete $STAMP to reinstall)"
  exit 0
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[$EXTRA]"
echo "$EXTRA $CONFIG_HASH" >> "$STAMP"
# the testing extra includes the Qt binding, so a testing install also serves a plain run
[ "$EXTRA" = testing ] && echo "qt $CONFIG_HASH" >> "$STAMP"
echo "setup: ready in .venv"
