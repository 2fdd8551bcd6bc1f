#!/usr/bin/env bash
# Every GPU job a session has waiting, in one device call of under ten minutes on an H200: the
# science first (as the project asks), then issue 15's benchmark rows on a quiet GPU.
#
#   bash scripts/gpu_session.sh OUT          (on the device machine: OUT=$OUT; run timeout_s 600)
#
#  1. science, side by side on the one GPU, until SCIENCE_S seconds (default 300) after the start:
#     - the v3 truth's sweep, five seeds, KIND (default mix-sparse): scripts/science_sweep.sh;
#     - scripts/gain_ceiling.py on the capacity test's data (docs/MODEL.md, "A gain-control stage"):
#       the stage learnt from scratch ("scratch"); the control (--no-gain, "plain") then the stage
#       warm-started on it ("warm"); the plain BN-CNN trained on the truth's undivided drive
#       (--targets drive, "drive"), saved with the truth's own stage on it. Each saves its best
#       model at every improvement; what the limit cuts short is scored afterwards (--score).
#  2. benchmarks/gpu_rows.py (issue 15's rows), alone on the GPU, for BENCH_S seconds (default 220).
#
# OUT gets device.txt, sweep/ (sweep.md, sweep.json, the models), gain/ (the models and their
# latency_*.json), a log per job and gpu_rows.md. Captum is optional for gpu_rows (its rows are
# skipped without it). DEVICE (default cuda) moves the gain runs, for a dry run on a CPU.
set -uo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$root/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
end=$(( $(date +%s) + ${SCIENCE_S:-300} ))
left() { echo $(( end - $(date +%s) > 1 ? end - $(date +%s) : 1 )); }
gain=$out/gain
device=${DEVICE:-cuda}
cd "$root/scripts"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/device.txt" 2>&1

sweep=/tmp/gpu_session_sweep      # the datasets (GBs) stay off OUT
RETINA_VERSION=3 KIND=${KIND:-mix-sparse} timeout "$(left)" bash science_sweep.sh "$sweep" "$out/sweep" 0 1 2 3 4 \
  > "$out/sweep.log" 2>&1 &
timeout "$(left)" python gain_ceiling.py "$gain" --data > "$out/gain_data.log" 2>&1   # once, before the runs share it
long="--device $device --epochs 1000 --patience 60"
runs=(
  "scratch|python gain_ceiling.py $gain $long --name scratch"
  "warm|python gain_ceiling.py $gain --device $device --epochs 80 --patience 15 --no-gain &&
        python gain_ceiling.py $gain $long --init $gain/plain_0.pt --name warm"
  "drive|python gain_ceiling.py $gain $long --no-gain --targets drive"
)
for run in "${runs[@]}"; do
  timeout "$(left)" bash -c "${run#*|}" > "$out/gain_${run%%|*}.log" 2>&1 &
done
wait                               # timeout signals its command's whole process group at the limit,
pkill -f "science_sweep.py $sweep"   # but science_sweep.sh's models run under timeouts of their own
mkdir -p "$out/sweep"
[ -e "$out/sweep/sweep.md" ] || { timeout 60 python science_sweep.py "$sweep" --stage summary >> "$out/sweep.log" 2>&1
                                  cp "$sweep"/model_*.pt "$sweep"/sweep.json "$sweep"/sweep.md "$out/sweep/" 2>/dev/null; }
for model in "$gain"/*.pt; do      # a finished run has written its latency_*.json after its last model
  [ -e "$model" ] || continue
  [ "$gain/latency_$(basename "$model" .pt).json" -nt "$model" ] ||
    timeout 90 python gain_ceiling.py "$gain" --score "$model" > "$out/score_$(basename "$model" .pt).log" 2>&1 &
done
wait
rm -f "$gain"/*.h5

cd "$root"
bench=${BENCH_S:-220}
timeout "$bench" python benchmarks/gpu_rows.py --budget $(( bench - 60 )) > "$out/gpu_rows.md" 2> "$out/gpu_rows.log"
tail -n 4 "$out"/*.log
