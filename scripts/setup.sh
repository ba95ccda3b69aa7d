#!/usr/bin/env bash
# Sets up everything archbench needs on a Debian machine with Python 3.11: system data packages, a
# virtual environment with the CPU build of torch installed FIRST (a torch range pulled in by another
# package would otherwise fetch a multi-GB CUDA build), then the project itself.
# Usage: bash scripts/setup.sh [extra]   (extra: pip extras, e.g. "test")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

# Real data that installs offline from Debian: the English word list and Fashion-MNIST.
need=()
[ -f /usr/share/dict/american-english ] || need+=(wamerican)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
source scripts/apt.sh
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#need[@]} -gt 0 ]; then
  apt_get update -qq
  apt_get install -y -qq "${need[@]}"
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel; set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) where PyPI would give CUDA.
.venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
# Vega for `dvc plots show`'s offline page (npm registry; see scripts/vega.sh).
bash scripts/vega.sh
echo "archbench set up in .venv (activate with: source .venv/bin/activate)"
