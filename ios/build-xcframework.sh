#!/usr/bin/env bash
# Build WaybillFFI.xcframework (the Rust library `waybill-ffi` for iOS devices, the
# iOS simulator and, by default, macOS) and refresh the committed Swift bindings.
# Needs a Mac with Xcode (xcodebuild, lipo) and rustup.
#
#   bash ios/build-xcframework.sh              # iOS device + simulator + macOS (arm64)
#   bash ios/build-xcframework.sh --no-macos   # iOS only (`swift test` on a Mac then has no slice)
#   bash ios/build-xcframework.sh --debug      # debug builds, for stepping into Rust
#
# Output:
#   ios/WaybillFFI.xcframework                 the binary target of ios/Package.swift (not committed)
#   ios/Sources/WaybillBindings/waybill_ffi.swift  the generated Swift bindings (committed;
#                                              `scripts/check-swift-bindings.sh` checks them in CI)
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

macos=1
profile=release
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-macos) macos=0 ;;
    --debug) profile=debug ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

for tool in cargo rustup xcodebuild lipo; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool not found: this script needs a Mac with Xcode and rustup" >&2
    exit 1
  fi
done

lib=libwaybill_ffi.a
ffi_module=waybill_ffiFFI   # the C module the generated Swift imports
target_dir="${CARGO_TARGET_DIR:-$root/target}"
work="$target_dir/ios-xcframework"
xcframework="$here/WaybillFFI.xcframework"

# Keep in step with `platforms:` in Package.swift: the C code in the library (SQLite,
# ring) is compiled for these minimum versions.
export IPHONEOS_DEPLOYMENT_TARGET=15.0
export MACOSX_DEPLOYMENT_TARGET=12.0

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
[[ $macos == 1 ]] && targets+=(aarch64-apple-darwin)

profile_flag=()
[[ $profile == release ]] && profile_flag=(--release)

echo "==> rustup targets: ${targets[*]}"
rustup target add "${targets[@]}"

for t in "${targets[@]}"; do
  echo "==> cargo build -p waybill-ffi --$profile --target $t"
  # ${a[@]+"${a[@]}"}: an empty array under `set -u` in macOS's bash 3.2.
  cargo build -p waybill-ffi --locked ${profile_flag[@]+"${profile_flag[@]}"} --target "$t"
done
built() { echo "$target_dir/$1/$profile/$lib"; }

rm -rf "$work" "$xcframework"
mkdir -p "$work/bindings" "$work/Headers/$ffi_module" "$work/ios-simulator"

# The bindings depend only on the exported API, so one library serves every slice:
# generate them from the device build (uniffi-bindgen's library mode). --no-format
# keeps a swift-format installed on this Mac from making them differ from CI's.
echo "==> generate Swift bindings from $(built aarch64-apple-ios)"
cargo run -q -p uniffi-bindgen --locked -- generate \
  --library "$(built aarch64-apple-ios)" --language swift --no-format --out-dir "$work/bindings"

# Headers/<module>/module.modulemap rather than Headers/module.modulemap: Xcode copies
# every static XCFramework's headers into one include folder, where two packages'
# top-level module.modulemap files would overwrite each other. Clang finds a module
# map in a subfolder named after the module.
cp "$work/bindings/$ffi_module.h" "$work/Headers/$ffi_module/"
cp "$work/bindings/$ffi_module.modulemap" "$work/Headers/$ffi_module/module.modulemap"

echo "==> lipo: one simulator library for arm64 and x86_64"
lipo -create "$(built aarch64-apple-ios-sim)" "$(built x86_64-apple-ios)" \
  -output "$work/ios-simulator/$lib"

slices=(-library "$(built aarch64-apple-ios)" -headers "$work/Headers"
        -library "$work/ios-simulator/$lib" -headers "$work/Headers")
[[ $macos == 1 ]] && slices+=(-library "$(built aarch64-apple-darwin)" -headers "$work/Headers")

echo "==> xcodebuild -create-xcframework"
xcodebuild -create-xcframework "${slices[@]}" -output "$xcframework"

cp "$work/bindings/waybill_ffi.swift" "$here/Sources/WaybillBindings/waybill_ffi.swift"

echo
echo "built $xcframework"
echo "updated ios/Sources/WaybillBindings/waybill_ffi.swift (commit it if git shows a change)"
echo "next: cd ios && swift build        # or open ios/Package.swift in Xcode"
