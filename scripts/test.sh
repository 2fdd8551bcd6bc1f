#!/usr/bin/env bash
# Run the test suite as CI does (the README's second quick-start command calls this after setup).
#   bash scripts/test.sh
# 1. Every test module that opens no napari viewer, spread over the cores (pytest-xdist), with one
#    torch thread per worker: two processes of two OpenMP threads on two cores stall at every barrier
#    (BENCHMARKS.md, "Reading CPU rows").
# 2. Every module that opens a viewer, alone in a fresh process (and X server), with triton
#    importable. Every CUDA build of torch ships triton, and importing triton (torch._dynamo does,
#    e.g. when a torch optimiser is built) kills a process that already shows a napari viewer
#    (triton's LLVM against Mesa's). The pinned CPU torch has no triton, so triton is installed
#    beside the venv (.triton-site; the venv stays untouched), and each viewer module runs alone so
#    that no earlier module has already imported it. The longest modules start first.
# Plain `.venv/bin/python -m pytest` also runs the whole suite, in one process (tests/conftest.py
# orders the viewer modules last); this script is the faster, stricter way CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TRITON_VERSION=3.9.0   # the triton of the CUDA builds of torch 2.13
JOBS=$(nproc)

viewer_modules=$(grep -l make_napari_viewer tests/test_*.py)
ignore=()
for module in $viewer_modules; do ignore+=("--ignore=$module"); done
echo "test: the modules without a viewer, $JOBS workers"
status=0
OMP_NUM_THREADS=1 "$PY" -m pytest -n "$JOBS" -p no:cacheprovider "${ignore[@]}" || status=1

[ -d .triton-site/triton ] || {
  echo "test: installing triton $TRITON_VERSION into .triton-site (as the CUDA builds of torch have it)"
  "$PY" -m pip install -q --no-deps --target .triton-site "triton==$TRITON_VERSION"
}
echo "test: each module with a viewer alone, triton importable, $JOBS at a time"
logs=$(mktemp -d)
# longest first (by file size, a fair proxy), so that no long module starts last
failed=$(ls -S $viewer_modules | OMP_NUM_THREADS=1 xargs -P "$JOBS" -I{} sh -c \
  'PYTHONPATH=.triton-site "$3" -m pytest -q -p no:cacheprovider "$1" > "$2/$(basename "$1").log" 2>&1 || echo "$1"' \
  _ {} "$logs" "$PY")
for log in "$logs"/*.log; do
  echo "test: $(basename "$log" .log) alone, with triton importable: $(tail -n 1 "$log")"
done
if [ -n "$failed" ]; then
  for module in $failed; do cat "$logs/$(basename "$module").log"; done
  echo "test: failed alone with triton importable:" $failed >&2
  status=1
fi
rm -rf "$logs"
exit $status
