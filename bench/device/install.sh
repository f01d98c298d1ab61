#!/usr/bin/env bash
# On the GPU host: unpack the carried wheels into /tmp/pydeps (put it first on PYTHONPATH, so its
# protobuf 6 wins over the host's 7). Wheels are zip files; unpacking is all "installing" them
# needs, and it leaves the host's own environment untouched. CARRY names the carried folder
# (default .carry; a render-only run carries .carry-render: no MediaPipe, a trained avatar instead).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=${CARRY:-.carry}
mkdir -p /tmp/pydeps
for w in "$CARRY"/wheels/*.whl; do python -m zipfile -e "$w" /tmp/pydeps; done
echo "unpacked $(ls "$CARRY"/wheels | wc -l) wheels into /tmp/pydeps"
