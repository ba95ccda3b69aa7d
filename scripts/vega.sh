#!/usr/bin/env bash
# Installs Vega, Vega-Lite and vega-embed (the versions DVC's plot page names) from the npm registry into
# vendor/vega/, where `dvc plots show`'s page (scripts/dvc_plots.html) loads them: the plots draw offline.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=vendor/vega
have="$dest/node_modules/vega-embed/build/vega-embed.min.js"
[ -f "$have" ] && [ -f "$dest/node_modules/vega/build/vega.min.js" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
  source scripts/apt.sh
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  apt_get update -qq
  apt_get install -y -qq npm >/dev/null
fi
mkdir -p "$dest"
# --legacy-peer-deps: vega-embed 6.18 names a vega-lite peer range that npm 9+ would otherwise refuse.
npm install --prefix "$dest" --no-save --no-audit --no-fund --legacy-peer-deps --loglevel=error \
  vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null
[ -f "$have" ] || { echo "vega.sh: npm did not install $have" >&2; exit 1; }
echo "Vega installed in $dest (for dvc plots show)"
