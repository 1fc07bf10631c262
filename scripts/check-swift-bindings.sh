#!/usr/bin/env bash
# Check that the committed Swift bindings (ios/Sources/WaybillBindings/waybill_ffi.swift)
# are what the current `waybill-ffi` generates. This is what a machine without Swift
# can verify about the iOS package:
#
#   1. build waybill-ffi for the host (debug) and generate the Swift bindings twice,
#      into two temporary folders, through scripts/generate-bindings.sh;
#   2. the two runs must be identical (the output depends on the exported API only);
#   3. the generated waybill_ffi.swift must equal the committed copy;
#   4. the hand-written layer (ios/Sources/Waybill) handles every case of the
#      generated enums it maps (WaybillError, ConnectionStateRecord): a case added in
#      ffi/ would otherwise break the Swift build, which no one here would see;
#   5. if clang is installed: the generated header and module map, laid out as in
#      WaybillFFI.xcframework, import as a Clang module (what Swift does with them);
#   6. if Python has tree-sitter and tree-sitter-swift: every hand-written Swift file
#      under ios/ parses (a syntax check only; no type checking, no compiler). The
#      generated file is left out: the grammar does not follow `#if` around
#      attributes, which uniffi emits and Swift accepts.
#
#   bash scripts/check-swift-bindings.sh            # check (CI)
#   bash scripts/check-swift-bindings.sh --update   # refresh the committed copy
#
# Set WAYBILL_REQUIRE_SWIFT_CHECKS=1 to fail, rather than skip, when clang or
# tree-sitter-swift is missing (CI sets it after installing them).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  -h | --help) usage; exit 0 ;;
  *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
esac

committed=ios/Sources/WaybillBindings/waybill_ffi.swift
ffi_module=waybill_ffiFFI
generated_files=(waybill_ffi.swift "$ffi_module.h" "$ffi_module.modulemap")
require="${WAYBILL_REQUIRE_SWIFT_CHECKS:-0}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

skip_or_fail() {
  if [[ $require == 1 ]]; then
    echo "error: $1 (WAYBILL_REQUIRE_SWIFT_CHECKS=1)" >&2
    exit 1
  fi
  echo "skipped: $1"
}

echo "==> build waybill-ffi (debug, host)"
cargo build -p waybill-ffi

echo "==> generate the Swift bindings twice"
for run in first second; do
  bash scripts/generate-bindings.sh "$tmp/$run" >"$tmp/$run.log" 2>&1 || {
    cat "$tmp/$run.log" >&2
    echo "error: scripts/generate-bindings.sh failed" >&2
    exit 1
  }
  for f in "${generated_files[@]}"; do
    if [[ ! -s "$tmp/$run/swift/$f" ]]; then
      echo "error: scripts/generate-bindings.sh produced no swift/$f" >&2
      ls -R "$tmp/$run" >&2 || true
      exit 1
    fi
  done
done
if ! diff -r "$tmp/first/swift" "$tmp/second/swift" >"$tmp/determinism.diff"; then
  head -40 "$tmp/determinism.diff" >&2
  echo "error: two generations of the Swift bindings differ: the output is not deterministic" >&2
  exit 1
fi
echo "ok: two runs generate identical Swift bindings (${generated_files[*]})"

generated="$tmp/first/swift"
if [[ $update == 1 ]]; then
  mkdir -p "$(dirname "$committed")"
  if cmp -s "$generated/waybill_ffi.swift" "$committed"; then
    echo "ok: $committed is already current"
  else
    cp "$generated/waybill_ffi.swift" "$committed"
    echo "updated $committed (commit it)"
  fi
elif [[ ! -f "$committed" ]]; then
  echo "error: $committed is missing: run ios/build-xcframework.sh or scripts/check-swift-bindings.sh --update" >&2
  exit 1
elif ! diff -u "$committed" "$generated/waybill_ffi.swift" >"$tmp/stale.diff"; then
  head -60 "$tmp/stale.diff" >&2
  echo "error: Swift bindings are stale: run ios/build-xcframework.sh or scripts/check-swift-bindings.sh --update" >&2
  exit 1
else
  echo "ok: $committed is current"
fi

echo "==> the Swift layer maps every case of the generated enums it switches over"
python3 - "$generated/waybill_ffi.swift" ios/Sources/Waybill <<'PY'
import pathlib
import re
import sys

generated = pathlib.Path(sys.argv[1]).read_text()
layer = "\n".join(p.read_text() for p in sorted(pathlib.Path(sys.argv[2]).glob("*.swift")))
missing = []
for enum in ("WaybillError", "ConnectionStateRecord"):
    body = re.search(r"\benum " + enum + r"\b[^{]*\{(.*?)\n\}", generated, re.S)
    if body is None:
        sys.exit(f"error: the generated bindings have no enum {enum}; update ios/Sources/Waybill")
    cases = re.findall(r"^\s*case\s+`?(\w+)`?", body.group(1), re.M)
    missing += [f"{enum}.{c}" for c in cases if not re.search(r"\." + c + r"\b", layer)]
    print(f"ok: {enum}: {len(cases) - len([m for m in missing if m.startswith(enum + '.')])}/{len(cases)} cases mapped")
if missing:
    sys.exit("error: ios/Sources/Waybill does not handle " + ", ".join(missing)
             + ": add them to ReplicaError.swift / SyncStatus.swift")
PY

echo "==> the generated header and module map import as a Clang module"
if command -v clang >/dev/null; then
  # The same layout as the XCFramework's Headers folder (see ios/build-xcframework.sh).
  headers="$tmp/Headers"
  mkdir -p "$headers/$ffi_module"
  cp "$generated/$ffi_module.h" "$headers/$ffi_module/"
  cp "$generated/$ffi_module.modulemap" "$headers/$ffi_module/module.modulemap"
  printf '@import %s;\n' "$ffi_module" >"$tmp/import.m"
  clang -fmodules -fmodules-cache-path="$tmp/module-cache" -fsyntax-only -Werror \
    -x objective-c -I "$headers" "$tmp/import.m"
  echo "ok: clang imports module $ffi_module from Headers/$ffi_module/module.modulemap"
else
  skip_or_fail "clang not found (apt-get install clang), the C module was not checked"
fi

echo "==> Swift syntax (tree-sitter-swift; a parser, not a compiler)"
if python3 -c 'import tree_sitter, tree_sitter_swift' 2>/dev/null; then
  swift_files=()
  while IFS= read -r f; do swift_files+=("$f"); done < <(
    find ios -name '*.swift' -not -path '*/.build/*' -not -path 'ios/Sources/WaybillBindings/*' | sort)
  python3 - "${swift_files[@]}" <<'PY'
import sys

import tree_sitter
import tree_sitter_swift

parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))
problems = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        tree = parser.parse(f.read())
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_missing or node.is_error:
            problems += 1
            what = f"missing {node.type}" if node.is_missing else "syntax error"
            print(f"{path}:{node.start_point[0] + 1}:{node.start_point[1] + 1}: {what}", file=sys.stderr)
            continue
        if node.has_error:
            stack.extend(node.children)
if problems:
    sys.exit(f"error: {problems} Swift syntax error(s) above")
print(f"ok: {len(sys.argv) - 1} Swift files parse")
PY
else
  skip_or_fail "python3 lacks tree-sitter-swift (pip install tree-sitter tree-sitter-swift), Swift syntax was not checked"
fi

echo "Swift bindings check passed (Swift itself is not compiled on this machine)"
