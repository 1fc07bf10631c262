#!/usr/bin/env bash
# The dispatcher's dashboard end to end in headless Chromium: builds `waybill`
# (debug), starts a relay with --http on free loopback ports, enrols a store
# tablet and two couriers' phones, drives a day's work through `waybill device`
# and the API, and checks the board, a timeline, the KPIs, the device list and a
# live change in the browser. Screenshots go to tests/browser/artifacts/.
# Last line: `N passed, N failed`.
#
#   bash tests/browser/run.sh        (needs node, npm and Debian's chromium)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

chromium="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$chromium" ]; then
  echo "error: chromium not found: apt-get install -y chromium (or set CHROMIUM)" >&2
  exit 1
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
fi
cargo build -q -p waybill-server
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

rm -rf "$here/artifacts"
mkdir -p "$here/artifacts"
WAYBILL_BIN="$target_dir/debug/waybill" CHROMIUM="$chromium" ARTIFACTS="$here/artifacts" \
  node "$here/scenario.mjs"
