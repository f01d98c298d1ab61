#!/usr/bin/env bash
# On the GPU host (device tool, carry=[".carry"] from `make_carry.py --clips`): train an avatar on
# the one-minute bundled sample (issue 4's time goal, measured again), then the renderer benchmark
# on it: one avatar, batched, 16 live sessions, and a 10 s driving clip reenacted.
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/device/env.sh
python bench/train.py --sample-seconds 60 --json "$OUT/train_sample60.json" --work /tmp/trn 2>&1 \
  | tee "$OUT/train.log" | grep -v '^{' | tail -5
python -m pytest -q -p no:cacheprovider tests/test_animate.py -k cuda 2>&1 | tail -3
python bench/render.py --avatar /tmp/trn/sample_60s/avatar_default --driver .carry/clips/drive_lp_d19_man_glasses.mp4 \
  --json "$OUT/render.json" 2>&1 | tail -12
