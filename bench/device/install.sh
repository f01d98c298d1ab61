#!/usr/bin/env bash
# On the GPU host: unpack the carried wheels into /tmp/pydeps (put it first on PYTHONPATH, so its
# protobuf 6 wins over the host's 7). Wheels are zip files; unpacking is all "installing" them
# needs, and it leaves the host's own environment untouched.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/pydeps
for w in .carry/wheels/*.whl; do python -m zipfile -e "$w" /tmp/pydeps; done
echo "unpacked $(ls .carry/wheels | wc -l) wheels into /tmp/pydeps"
