#!/usr/bin/env bash
# On the GPU host (device tool, carry=[".carry"] from `make_carry.py --clips`): the renderer
# benchmark on an avatar of the one-minute bundled sample: one avatar, batched, 16 live sessions,
# and a 10 s driving clip reenacted. The avatar is trained first (issue 4's time goal, measured
# again) unless AVATAR names one that travelled in the carry; its avatar.pt is copied to $OUT so
# the next run can carry it.
#   CARRY=.carry-render AVATAR=.carry-render/avatar_sample60 DRIVER= SKIP_TESTS=1 PROFILE=1 bash bench/device/render_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/device/env.sh
AVATAR=${AVATAR:-}
if [ -z "$AVATAR" ]; then
  python bench/train.py --sample-seconds 60 --json "$OUT/train_sample60.json" --work /tmp/trn 2>&1 \
    | tee "$OUT/train.log" | grep -v '^{' | tail -5
  AVATAR=/tmp/trn/sample_60s/avatar_default
  mkdir -p "$OUT/avatar_sample60" && cp "$AVATAR/avatar.pt" "$OUT/avatar_sample60/"
fi
[ -n "${SKIP_TESTS:-}" ] || python -m pytest -q -p no:cacheprovider tests/test_animate.py -k cuda 2>&1 | tail -3
DRIVER=${DRIVER-.carry/clips/drive_lp_d19_man_glasses.mp4}  # DRIVER= (empty): no reenactment timing
python bench/render.py --avatar "$AVATAR" ${DRIVER:+--driver "$DRIVER"} ${PROFILE:+--profile} ${COMPILE:+--compile} ${EACH:+--seconds $EACH} \
  --json "$OUT/render.json" 2>&1 | tail -${TAIL:-80}
# `neuavatar reenact` end to end in fresh processes (the first after the benchmark: caches warm)
if [ -n "$DRIVER" ]; then
  for run in 1 2; do
    start=$(date +%s%N)
    python -m neuavatar reenact "$AVATAR" "$DRIVER" --out "$OUT/reenact_cli.mp4" --side-by-side 2>&1 | tail -1
    echo "neuavatar reenact, fresh process $run: $(( ($(date +%s%N) - start) / 1000000 )) ms wall"
  done
fi
# gRPC live streams: needs grpcio in the carry and the generated code (carry shared/neuavatar/api/_proto)
if python -c "import grpc, neuavatar.api.pb" 2>/dev/null; then
  python bench/stream.py --avatar "$AVATAR" --json "$OUT/stream.json" 2>&1 | tail -8
fi
