#!/usr/bin/env bash
# Sets up what the tests need, then runs the fast test suite (add -m slow for the long ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
