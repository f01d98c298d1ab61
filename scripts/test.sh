#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
#   scripts/test.sh                 # everything (about 6 minutes on 2 cores)
#   scripts/test.sh -k preprocess   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
