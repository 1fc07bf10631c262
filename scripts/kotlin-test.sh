#!/usr/bin/env bash
# The Kotlin SDK on the JVM: builds the host library and the relay, generates the
# Kotlin bindings, compiles them with the Android module's platform-independent layer
# (android/waybill/src/main/kotlin) and its test (android/waybill/src/test/kotlin) with
# kotlinc, and runs the test against a relay on loopback. Exits non-zero on failure.
#
#   bash scripts/kotlin-test.sh
#
# Installs what is missing: JDK 17 and JNA (Debian: openjdk-17-jdk-headless,
# libjna-java) and the Kotlin compiler (npm kotlin-compiler, into target/kotlin).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

KOTLIN_COMPILER_VERSION="${KOTLIN_COMPILER_VERSION:-2.4.20}"
work="$root/target/kotlin-test"
kotlin_home="$root/target/kotlin/node_modules/kotlin-compiler"
jna_jar=/usr/share/java/jna.jar

step() { printf '\n==> %s\n' "$*"; }

step "JDK, JNA, kotlinc"
apt_install() {
  if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v java >/dev/null; then apt_install openjdk-17-jdk-headless; fi
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "error: java on PATH is $java_major; JDK 17 or newer is needed (apt-get install openjdk-17-jdk-headless)" >&2
  exit 1
fi
[ -f "$jna_jar" ] || apt_install libjna-java
if ! grep -qs "\"version\": \"$KOTLIN_COMPILER_VERSION\"" "$kotlin_home/package.json"; then
  if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
  mkdir -p "$root/target/kotlin"
  npm install --prefix "$root/target/kotlin" --no-audit --no-fund --loglevel=error \
    "kotlin-compiler@$KOTLIN_COMPILER_VERSION"
fi
kotlinc="$kotlin_home/bin/kotlinc"
stdlib="$kotlin_home/lib/kotlin-stdlib.jar"
coroutines="$kotlin_home/lib/kotlinx-coroutines-core-jvm.jar"
for f in "$stdlib" "$coroutines" "$jna_jar"; do
  [ -f "$f" ] || { echo "error: $f is missing" >&2; exit 1; }
done
java -version 2>&1 | head -1
echo "kotlinc $KOTLIN_COMPILER_VERSION, JNA $(readlink -f "$jna_jar" | sed 's/.*jna-//; s/\.jar$//')"

step "host library and relay (debug)"
cargo build -p waybill-ffi -p waybill-server
target_dir="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
lib="$target_dir/debug/libwaybill_ffi.so"
waybill="$target_dir/debug/waybill"
for f in "$lib" "$waybill"; do
  [ -f "$f" ] || { echo "error: $f was not built" >&2; exit 1; }
done

step "Kotlin bindings"
rm -rf "$work"
mkdir -p "$work"
bash scripts/generate-bindings.sh "$work/bindings"
mapfile -t generated < <(find "$work/bindings/kotlin" -name '*.kt' | sort)
[ "${#generated[@]}" -gt 0 ] || { echo "error: no Kotlin bindings generated" >&2; exit 1; }

# The layer compiled here must be platform-independent: android.* lives in src/android.
layer="android/waybill/src/main/kotlin/org/waybill"
if grep -rn --include='*.kt' -E '^import (android|androidx)\.' "$layer"; then
  echo "error: $layer must not import android.*: move that code to android/waybill/src/android" >&2
  exit 1
fi

step "kotlinc: generated bindings"
# Two compilations: the generated code (whose warnings are uniffi's, not ours), then
# the hand-written layer and the test with warnings as errors.
"$kotlinc" -jvm-target 17 -nowarn -cp "$jna_jar:$coroutines" \
  -d "$work/bindings.jar" "${generated[@]}"

step "kotlinc: org.waybill layer and test"
mapfile -t sources < <(find "$layer" android/waybill/src/test/kotlin -name '*.kt' | sort)
"$kotlinc" -jvm-target 17 -Werror -cp "$work/bindings.jar:$jna_jar:$coroutines" \
  -d "$work/test.jar" "${sources[@]}"

step "Kotlin test (JVM, relay on loopback)"
java -Djna.library.path="$(dirname "$lib")" \
  -Dwaybill.bin="$waybill" \
  -Dwaybill.tmp="$work" \
  -cp "$work/test.jar:$work/bindings.jar:$stdlib:$coroutines:$jna_jar" \
  org.waybill.WaybillTestKt
