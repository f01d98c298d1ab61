#!/usr/bin/env bash
# Set up (scripts/setup.sh), make the bundled sample video and run the pipeline on it with the
# CPU preset. Results land in out/demo/ (open out/demo/dataset/contact_sheet.png).
#   scripts/demo.sh                 # CPU-sized, a minute or two
#   PRESET=gpu scripts/demo.sh      # full quality, for a GPU host
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p out
[ -f out/sample.mp4 ] || .venv/bin/neuavatar sample --out out/sample.mp4
exec .venv/bin/neuavatar run out/sample.mp4 --out out/demo --preset "${PRESET:-cpu-smoke}"
