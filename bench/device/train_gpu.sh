#!/usr/bin/env bash
# On the GPU host (device tool, carry=[".carry"] from `make_carry.py --clips`): unpack the wheels,
# check gsplat against the pure-torch Gaussian rasterizer, run the CUDA tests of the avatar, and
# the training benchmark. STEPS (three numbers) and VIDEOS override the benchmark's defaults;
# VARIANT ('name:key=value;...') trains each clip once more with those settings; EXTRA: more
# arguments for bench/train.py (--skip-default: the variant only).
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/device/env.sh
if [ -z "${SKIP_CHECKS:-}" ]; then
  python bench/device/gaussian_parity.py --no-torch-timing --json "$OUT/gaussian_parity.json" 2>&1 | tail -22
  python -m pytest -q -p no:cacheprovider tests/test_gaussians.py tests/test_avatar.py -k "cuda or gsplat" 2>&1 | tail -6
fi
python bench/train.py --videos ${VIDEOS:-.carry/clips/*.mp4} ${SAMPLE:+--sample-seconds $SAMPLE} \
  ${STEPS:+--steps $STEPS} ${VARIANT:+--variant "$VARIANT"} ${EXTRA:-} --json "$OUT/train.json" --work /tmp/trn --pictures "$OUT" 2>&1 | tee "$OUT/train.log" | grep -v '^{' | tail -12
if [ -n "${PROFILE:-}" ]; then
  python bench/device/profile_train.py /tmp/trn/$PROFILE 2>&1 | grep -v Warning | cut -c1-150 | tail -45
fi
