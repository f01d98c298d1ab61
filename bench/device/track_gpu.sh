#!/usr/bin/env bash
# On the GPU host (device tool, carry=[".carry"] made by `make_carry.py --clips`): unpack the
# wheels, check the nvdiffrast/CUDA paths against the CPU ones, time the renderer and run the
# tracking benchmark on the training clips and a 60 s bundled sample. Results land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/device/env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python bench/device/render_parity.py --sizes 128 512 --batches 1 8 --json "$OUT/render_parity.json" 2>&1 | tail -25
python -m pytest -q -p no:cacheprovider tests/test_render.py tests/test_openhead.py tests/test_track.py -k "cuda or nvdiffrast" 2>&1 | tail -8
python bench/track.py --videos .carry/clips/*.mp4 --sample-seconds 60 --json "$OUT/track.json" --work /tmp/trk 2>&1 | grep -v '^{' | tail -14
for d in /tmp/trk/*/; do n=$(basename "$d"); cp "$d/tracking/metrics.png" "$OUT/${n:0:24}_metrics.png"; done
cp /tmp/trk/train_lp_d6*/tracking/overlay.mp4 "$OUT/d6_overlay.mp4" 2>/dev/null; ls -la /tmp/trk/*/tracking/ | head -12
