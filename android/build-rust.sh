#!/usr/bin/env bash
# Builds libwaybill_ffi.so for Android and the Kotlin bindings the module compiles.
#
#   android/build-rust.sh            # release build, every ABI
#   ABIS="arm64-v8a" PROFILE=debug android/build-rust.sh
#
# Needs: rustup, the Android NDK (ANDROID_NDK_HOME, or ANDROID_HOME/ndk/<version>),
# and cargo-ndk (`cargo install cargo-ndk`). Writes (both ignored by git):
#   waybill/src/main/jniLibs/<abi>/libwaybill_ffi.so
#   waybill/src/main/kotlin/uniffi/waybill_ffi/waybill_ffi.kt   (generated; never edit)
#
# ABI (Android)   Rust target
# arm64-v8a       aarch64-linux-android      phones and tablets
# armeabi-v7a     armv7-linux-androideabi    older 32-bit phones
# x86_64          x86_64-linux-android       the emulator on x86_64 hosts
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
module="$here/waybill"

PROFILE="${PROFILE:-release}"
ABIS="${ABIS:-arm64-v8a armeabi-v7a x86_64}"
MIN_SDK="${MIN_SDK:-24}" # keep in step with minSdk in waybill/build.gradle.kts

rust_target() {
  case "$1" in
    arm64-v8a) echo aarch64-linux-android ;;
    armeabi-v7a) echo armv7-linux-androideabi ;;
    x86_64) echo x86_64-linux-android ;;
    x86) echo i686-linux-android ;;
    *) echo "unknown ABI $1 (arm64-v8a, armeabi-v7a, x86_64, x86)" >&2; return 1 ;;
  esac
}

if [ -z "${ANDROID_NDK_HOME:-}" ] && [ -n "${ANDROID_HOME:-}" ] && [ -d "$ANDROID_HOME/ndk" ]; then
  ANDROID_NDK_HOME="$(find "$ANDROID_HOME/ndk" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -1)"
  export ANDROID_NDK_HOME
fi
if [ -z "${ANDROID_NDK_HOME:-}" ]; then
  echo "error: set ANDROID_NDK_HOME to the Android NDK (or ANDROID_HOME with an ndk/ inside)" >&2
  exit 1
fi
if ! cargo ndk --version >/dev/null 2>&1; then
  echo "error: cargo-ndk not found: cargo install cargo-ndk" >&2
  exit 1
fi

ndk_args=()
for abi in $ABIS; do
  rustup target add "$(rust_target "$abi")" >/dev/null
  ndk_args+=(-t "$abi")
done

# 16 KB page alignment, which Android 15+ devices may require (NDK r28 does this by
# default; older NDKs need it spelled out). Per target, so host build scripts keep
# their own flags and cache.
export CARGO_TARGET_AARCH64_LINUX_ANDROID_RUSTFLAGS="-C link-arg=-Wl,-z,max-page-size=16384"
export CARGO_TARGET_X86_64_LINUX_ANDROID_RUSTFLAGS="-C link-arg=-Wl,-z,max-page-size=16384"

profile_args=()
[ "$PROFILE" = release ] && profile_args+=(--release)

cd "$root"
echo "==> libwaybill_ffi.so for: $ABIS ($PROFILE, API $MIN_SDK)"
cargo ndk "${ndk_args[@]}" --platform "$MIN_SDK" -o "$module/src/main/jniLibs" \
  build -p waybill-ffi "${profile_args[@]}"

# The bindings come from the host build of the same crate (uniffi's library mode reads
# the metadata compiled into the library; it is the same for every target).
echo "==> Kotlin bindings"
out="$root/target/bindings-android"
rm -rf "$out"
bash "$root/scripts/generate-bindings.sh" "$out"
rm -rf "$module/src/main/kotlin/uniffi"
cp -R "$out/kotlin/uniffi" "$module/src/main/kotlin/uniffi"

echo "==> done: $(cd "$module/src/main" && find jniLibs -name '*.so' | sort | tr '\n' ' ')"
