#!/usr/bin/env bash
# Sets up what the tests need, then runs the test suite: the fast tests by default, `-m slow` for the long
# ones, `-m "slow or not slow"` for all (what CI runs). Extra arguments go to pytest.
#
# Besides the project (.venv, with the test and scale extras) the tests use Debian's headless Chromium (the
# report's browser test) and a local PostgreSQL + MLflow server (the scale-out tests); this script installs
# and starts them, and stops the services again on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "test,scale"
if ! command -v chromium >/dev/null 2>&1; then
  source scripts/apt.sh
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  apt_get update -qq
  apt_get install -y -qq chromium >/dev/null
fi
eval "$(bash scripts/services.sh start)"
trap 'bash scripts/services.sh stop >/dev/null 2>&1' EXIT
.venv/bin/python -m pytest "$@"
