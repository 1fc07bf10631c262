#!/usr/bin/env bash
# The SDK scenario through the generated Python bindings (no pip packages):
# generates the Python binding into a temporary folder, puts libwaybill_ffi.so beside
# it, builds the `waybill` relay, and runs tests/python/test_sdk.py with python3.
#
#   bash tests/python/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

bash scripts/generate-bindings.sh "$tmp/bindings" >"$tmp/generate.log" 2>&1 || {
  cat "$tmp/generate.log" >&2
  echo "error: scripts/generate-bindings.sh failed" >&2
  exit 1
}
cargo build -q -p waybill-server

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cp "$target_dir/debug/libwaybill_ffi.so" "$tmp/bindings/python/"

WAYBILL_BIN="$target_dir/debug/waybill" PYTHONPATH="$tmp/bindings/python" \
  python3 tests/python/test_sdk.py
