#!/usr/bin/env bash
# Generate Waybill's Kotlin, Swift and Python bindings from the host build of
# waybill-ffi, with the workspace's pinned uniffi-bindgen (library mode: the bindings
# come from the metadata compiled into the library; they are the same for every
# target). Generated files are never edited by hand.
#
#   bash scripts/generate-bindings.sh [--release] [OUT_DIR]    # default target/bindings
#
# Writes:
#   OUT_DIR/kotlin/uniffi/waybill_ffi/waybill_ffi.kt
#   OUT_DIR/swift/waybill_ffi.swift, waybill_ffiFFI.h, waybill_ffiFFI.modulemap
#   OUT_DIR/python/waybill_ffi.py   (put libwaybill_ffi.so beside it to import it)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
out=""
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown flag $arg" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
out="${out:-target/bindings}"

case "$(uname -s)" in
  Darwin) lib_name=libwaybill_ffi.dylib ;;
  *) lib_name=libwaybill_ffi.so ;;
esac

profile_args=()
[[ $profile == release ]] && profile_args+=(--release)

echo "==> build waybill-ffi ($profile)"
cargo build -p waybill-ffi "${profile_args[@]}"
echo "==> build uniffi-bindgen"
cargo build -q -p uniffi-bindgen

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
lib="$target_dir/$profile/$lib_name"
if [[ ! -f $lib ]]; then
  echo "error: $lib was not built" >&2
  exit 1
fi

for language in kotlin swift python; do
  rm -rf "${out:?}/$language"
  mkdir -p "$out/$language"
  cargo run -q -p uniffi-bindgen -- generate --library "$lib" \
    --language "$language" --no-format --out-dir "$out/$language"
done

echo "==> bindings generated from $lib:"
find "$out/kotlin" "$out/swift" "$out/python" -type f | sort | sed 's/^/    /'
