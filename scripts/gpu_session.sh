#!/usr/bin/env bash
# Every GPU job a session has waiting, in one device call of under ten minutes on an H200: the
# science first (as the project asks), then issue 15's benchmark rows on a quiet GPU.
#
#   bash scripts/gpu_session.sh OUT          (on the device machine: OUT=$OUT; run timeout_s 600)
#
# The device's python3 has torch but not Captum (gpu_rows' row D). Here, once:
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl captum==0.9.0
# then one device call, carry [".whl"], timeout_s 600:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
#     export PYTHONPATH=/tmp/site; bash scripts/gpu_session.sh $OUT
#
#  1. science, side by side on the one GPU, until SCIENCE_S seconds (default 300) after the start:
#     - a truth's sweep, five seeds, KIND (default mix-sparse): scripts/science_sweep.sh on RETINA_VERSION
#       (default 6, the one truth with all five phenomena by today's criteria, its OSR a rise of 19-30% of
#       the train's answer; 5's OSR latency follows the period on a line but rises under 8%; v3's sweep ran
#       2026-12-04);
#     - scripts/gain_ceiling.py on the capacity test's data (docs/MODEL.md, "A gain-control stage"), from the
#       same truth (RETINA_VERSION 3 to 6; with 1 or 2 the gain runs take version 3, the first with gain
#       control):
#       the stage learnt from scratch with the Poisson and log losses summed (--loss both, "both";
#       on a CPU it coded 16.1-20.6 ms in 40 epochs: "The loss's weighting, tested"); the control
#       (--no-gain, "plain") then the stage warm-started on it ("warm"); the plain BN-CNN trained on
#       the truth's undivided drive (--targets drive, "drive"), saved with the truth's own stage on
#       it. Each saves its best model at every improvement, the first 10 epochs not counted (--warmup
#       10: an early dip of the held-out loss otherwise halts the learning rate); and for each seed of
#       HELD_SEEDS (default "1 2") the truth's division held: on a BN-CNN fitted to the truth's drive
#       with the summed loss ("truthfixed") and the Poisson loss ("heldpoisson"), and from scratch
#       ("heldscratch"); and, from the same drive fit, the Poisson-loss run trained on the five
#       experiments' own movies instead ("battpoisson": --movie battery; it waits for its seed's drive fit,
#       so it needs "truthfixed" too), and on those movies from scratch with the truth's OFF-stage gain
#       control too, both stages held at the truth's k and tau ("battoff": --off-stage); and the split given
#       ("battsplit": the BN-CNN's two outputs per cell fitted to the truth's OFF stage and ON inputs,
#       --targets split, then trained on those movies' rates to the end with both of the truth's stages held
#       on top). On an H200 each gain run converges in about a minute. What the limit cuts short is scored
#       afterwards (--score). SWEEP=0 leaves the sweep out.
#  2. benchmarks/gpu_rows.py (issue 15's rows), alone on the GPU, for BENCH_S seconds (default 220);
#     BENCH=0 leaves it out.
#
# Everything stops TOTAL_S seconds (default 570) after the start, inside the call's 600 s, so that
# the results are packed before the call is killed. The device tool brings back at most 8 files
# from OUT, so the work happens in WORK (default /tmp/gpu_session) and OUT gets 7:
#   device.txt, sweep.md, science.tar.gz (written as soon as the science ends: every log, the sweep's
#   and the gain runs' models, rows and latency_*.json), gpu_rows.md, gpu_rows.json, gpu_rows.log,
#   tails.txt (the last lines of every log).
# Captum is optional for gpu_rows (its rows are skipped without it). DEVICE (default cuda) moves
# the gain runs and gpu_rows; BENCH_ARGS adds gpu_rows options. A dry run on a CPU:
#   DEVICE=cpu SCIENCE_S=60 BENCH_S=60 BENCH_ARGS="--frames 200 --predict-frames 2000 --captum-frames 20
#     --ref-steps 50 --no-tests" bash scripts/gpu_session.sh /tmp/out
set -uo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/gpu_session}
rm -rf "$work" && mkdir -p "$work/logs"
export PYTHONPATH=$root/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# the scripts call `python`; where only python3 is on PATH (the device image's torch is python3's), add it
command -v python >/dev/null || { mkdir -p "$work/bin"; ln -s "$(command -v python3)" "$work/bin/python"
                                  export PATH=$work/bin:$PATH; }
start=$(date +%s)
end=$(( start + ${SCIENCE_S:-300} ))
deadline=$(( start + ${TOTAL_S:-570} ))
until_() { echo $(( $1 - $(date +%s) > 1 ? $1 - $(date +%s) : 1 )); }   # seconds to a time, at least 1
left() { until_ "$end"; }
gain=$work/gain
version=${RETINA_VERSION:-6}
gain_version=$(( version >= 3 ? version : 3 ))
gc="python gain_ceiling.py $gain --retina-version $gain_version"   # every gain run and score, on that truth
logs=$work/logs
device=${DEVICE:-cuda}
cd "$root/scripts"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/device.txt" 2>&1

sweep=$work/sweep_data            # the datasets (GBs) are not packed
[ "${SWEEP:-1}" = 1 ] &&           # SWEEP=0: the gain runs alone
  RETINA_VERSION=$version KIND=${KIND:-mix-sparse} timeout "$(left)" bash science_sweep.sh "$sweep" "$work/sweep" 0 1 2 3 4 \
    > "$logs/sweep.log" 2>&1 &
timeout "$(left)" $gc --data > "$logs/gain_data.log" 2>&1   # once, before the runs share it
picked() { [ -z "${GAIN_RUNS:-}" ] || [[ " $GAIN_RUNS " == *" $1 "* ]]; }   # GAIN_RUNS holds the run's name, or is unset
{ picked battpoisson || picked battoff || picked battsplit; } &&
  timeout "$(left)" $gc --movie battery --data > "$logs/gain_data_battery.log" 2>&1
long="--device $device --epochs 1000 --patience 60 --warmup 10"   # warmup: docs/MODEL.md, "An early dip"
runs=(
  "both|$gc $long --loss both --name both"
  "warm|$gc --device $device --epochs 80 --patience 15 --no-gain &&
        $gc $long --init $gain/plain_0.pt --name warm"
  "drive|$gc $long --no-gain --targets drive"
)
# the truth's division held (docs/MODEL.md, "held at the truth's", "trained to the end"), seeds HELD_SEEDS:
# on a BN-CNN fitted to the truth's drive, with the summed loss (truthfixed) and the Poisson loss alone
# (heldpoisson); and from scratch, the stage set to the truth's k and tau (heldscratch)
for seed in ${HELD_SEEDS:-1 2}; do
  runs+=("truthfixed$seed|$gc --device $device --no-gain --targets drive --loss log --epochs 40 \
          --seeds $seed --name drivelog && { $gc $long --init $gain/drivelog_$seed.pt --fixed \
          --loss both --seeds $seed --name truthfixed & $gc $long --init $gain/drivelog_$seed.pt \
          --fixed --loss poisson --seeds $seed --name heldpoisson > $logs/gain_heldpoisson$seed.log 2>&1 & wait; }"
         "heldscratch$seed|$gc $long --truth-stages --fixed --loss both --seeds $seed \
          --name heldscratch"
         "battpoisson$seed|until [ -e $gain/latency_drivelog_$seed.json ]; do sleep 2; done; $gc $long \
          --movie battery --init $gain/drivelog_$seed.pt --fixed --loss poisson --seeds $seed \
          --name battpoisson"
         "battoff$seed|$gc $long --movie battery --off-stage --fixed --truth-stages \
          --loss poisson --seeds $seed --name battoff"
         "battsplit$seed|$gc --device $device --movie battery --no-gain --targets split \
          --loss log --epochs 40 --seeds $seed --name battsplit && $gc $long --movie battery \
          --off-stage --fixed --init $gain/battsplit_$seed.pt --loss poisson --seeds $seed --name battsplitoff")
done
for run in "${runs[@]}"; do         # GAIN_RUNS="truthfixed heldscratch", say: only those (default: all)
  name=${run%%|*}
  picked "${name%%[0-9]*}" || continue
  timeout "$(left)" bash -c "${run#*|}" > "$logs/gain_${run%%|*}.log" 2>&1 &
done
wait                               # timeout signals its command's whole process group at the limit,
pkill -f "science_sweep.py $sweep"   # but science_sweep.sh's models run under timeouts of their own

# what the limit cut short: the sweep's summary and the gain runs' scores, in at most 90 s
scored=$(( $(date +%s) + 90 ))
mkdir -p "$work/sweep"
[ "${SWEEP:-1}" = 1 ] && [ ! -e "$work/sweep/sweep.md" ] && { timeout "$(until_ "$scored")" python science_sweep.py "$sweep" --stage summary \
                                     >> "$logs/sweep.log" 2>&1
                                   cp "$sweep"/model_*.pt "$sweep"/row_*.json "$sweep"/sweep.json "$sweep"/sweep.md \
                                     "$work/sweep/" 2>/dev/null; }
cp "$sweep"/log_*.txt "$logs/" 2>/dev/null
for model in "$gain"/*.pt; do      # a finished run has written its latency_*.json after its last model
  [ -e "$model" ] || continue
  [ "$gain/latency_$(basename "$model" .pt).json" -nt "$model" ] ||
    timeout "$(until_ "$scored")" $gc --score "$model" \
      $([[ $(basename "$model") == batt* ]] && echo --movie battery) \
      > "$logs/score_$(basename "$model" .pt).log" 2>&1 &
done
wait
rm -f "$gain"/*.h5
cp "$work/sweep/sweep.md" "$out/" 2>/dev/null
tar -czf "$out/science.tar.gz" -C "$work" logs sweep gain 2>/dev/null

cd "$root"
room=$(( $(until_ "$deadline") - 10 ))     # what is left before packing, read once
bench=$(( ${BENCH_S:-220} < room ? ${BENCH_S:-220} : room ))
if [ "${BENCH:-1}" = 1 ] && [ "$bench" -gt 60 ]; then       # BENCH=0: the science alone
  mkdir -p "$work/bench"
  OUT=$work/bench timeout "$bench" python benchmarks/gpu_rows.py --device "$device" --budget $(( bench - 60 )) \
    ${BENCH_ARGS:-} > "$out/gpu_rows.md" 2> "$out/gpu_rows.log"
  cp "$work/bench/gpu_rows.json" "$out/" 2>/dev/null
else
  echo "gpu_session: gpu_rows.py not run (BENCH=${BENCH:-1}, $bench s left)" > "$out/gpu_rows.log"
fi
for log in "$logs"/*.log "$logs"/*.txt "$out/gpu_rows.log"; do
  [ -e "$log" ] && { echo "== $(basename "$log")"; tail -n 4 "$log"; }
done > "$out/tails.txt"
cat "$out/tails.txt"
n=$(find "$out" -type f | wc -l)
[ "$n" -le 8 ] || echo "gpu_session: $n files in OUT; the device tool brings back 8" >&2
echo "gpu_session: done in $(( $(date +%s) - start )) s; OUT: $(ls "$out" | tr '\n' ' ')"
