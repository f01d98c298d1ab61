#!/usr/bin/env bash
# On the GPU host (device tool, carry=[".carry"] from `make_carry.py --clips`): the render phase of
# bench/reenact_quality.py at 512² for each training clip and every driver (the judge runs back on
# the CPU machine: its weights do not travel). Each clip's renders come back as $OUT/<clip>.tar,
# written as soon as that clip is done, so a run cut short still returns the clips it finished.
#   VIDEOS="..." SPLIT=interleaved SKIP_CHECKS=1 bash bench/device/quality_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/device/env.sh
DRIVERS=$(ls .carry/clips/drive_*.mp4)
for video in ${VIDEOS:-.carry/clips/train_lp_d3_woman_headturns.mp4 .carry/clips/train_mimictalk_german_anchor_20s.mp4 .carry/clips/train_lp_d6_woman_faces_33s.mp4}; do
  clip=$(basename "$video" .mp4)
  python bench/reenact_quality.py render /tmp/renders --videos "$video" --drivers $DRIVERS --split "${SPLIT:-tail}" \
    --work /tmp/rq 2>&1 | grep -v "^[WI]0000\|GetPrototype\|absl::" | tail -3
  tar -cf "$OUT/$clip.tar" -C /tmp/renders "$clip" && echo "$clip: $(du -h "$OUT/$clip.tar" | cut -f1)"
done
# RENDER=1: the renderer benchmark on the last clip's avatar (its speed goals, with the neck cut's
# mask in the graphs); SAMPLE=60: the time goal, a one-minute clip to a checkpoint (bench/train.py)
if [ -n "${RENDER:-}" ]; then
  python bench/render.py --avatar "/tmp/rq/${clip}_${SPLIT:-tail}/avatar" --seconds 3 --sessions 16 \
    --json "$OUT/render.json" 2>&1 | grep -v "^[WI]0000\|GetPrototype\|absl::" | tail -14
fi
if [ -n "${SAMPLE:-}" ]; then
  python bench/train.py --sample-seconds "$SAMPLE" --json "$OUT/train_sample.json" --work /tmp/trn 2>&1 \
    | grep -v '^{\|^[WI]0000\|GetPrototype\|absl::' | tail -5
fi
# the CUDA checks last: the measurements matter more when a lease runs short
if [ -z "${SKIP_CHECKS:-}" ]; then
  python -m pytest -q -p no:cacheprovider tests/test_avatar.py tests/test_animate.py -k "cuda or gsplat" 2>&1 | tail -4
fi
