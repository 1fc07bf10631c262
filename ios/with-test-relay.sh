#!/usr/bin/env bash
# Run a command with a Waybill relay on loopback and two enrolled test devices, for
# the sync test in Tests/WaybillTests (which is skipped without them):
#
#   bash ios/with-test-relay.sh swift test --package-path ios
#   (cd ios && bash with-test-relay.sh xcodebuild test -scheme Waybill \
#       -destination 'platform=iOS Simulator,name=iPhone 15')
#
# It builds and starts `waybill serve` on 127.0.0.1 (a free UDP port) in a temporary
# data directory, enrols a store tablet (store S1) and a courier phone (courier-7,
# store S1), runs the command with these set, and stops the relay afterwards:
#
#   WAYBILL_TEST_RELAY               host:port of the relay
#   WAYBILL_TEST_STORE_CREDENTIAL    path of the tablet's credential file
#   WAYBILL_TEST_COURIER_CREDENTIAL  path of the phone's credential file
#
# each also as TEST_RUNNER_<name>, which xcodebuild hands to tests on a simulator.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$(mktemp -d)"
relay_pid=""
cleanup() {
  if [[ -n $relay_pid ]]; then
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

echo "==> build the relay (cargo build -p waybill-server --bin waybill)" >&2
(cd "$root" && cargo build -q -p waybill-server --bin waybill)
waybill="${CARGO_TARGET_DIR:-$root/target}/debug/waybill"

port="$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
relay="127.0.0.1:$port"

RUST_LOG=info "$waybill" serve --data "$data/relay" --listen "$relay" >"$data/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 1 100); do
  grep -q "relay listening" "$data/relay.log" && break
  if ! kill -0 "$relay_pid" 2>/dev/null; then
    cat "$data/relay.log" >&2
    echo "error: the relay did not start" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "relay listening" "$data/relay.log"; then
  cat "$data/relay.log" >&2
  echo "error: the relay did not start listening within 10 s" >&2
  exit 1
fi

"$waybill" enroll --data "$data/relay" --role store --store S1 --device-id swift-tablet \
  --relay-addr "$relay" --out "$data/tablet.cred" >&2
"$waybill" enroll --data "$data/relay" --role courier --courier courier-7 --store S1 \
  --device-id swift-phone --relay-addr "$relay" --out "$data/phone.cred" >&2

export WAYBILL_TEST_RELAY="$relay"
export WAYBILL_TEST_STORE_CREDENTIAL="$data/tablet.cred"
export WAYBILL_TEST_COURIER_CREDENTIAL="$data/phone.cred"
export TEST_RUNNER_WAYBILL_TEST_RELAY="$WAYBILL_TEST_RELAY"
export TEST_RUNNER_WAYBILL_TEST_STORE_CREDENTIAL="$WAYBILL_TEST_STORE_CREDENTIAL"
export TEST_RUNNER_WAYBILL_TEST_COURIER_CREDENTIAL="$WAYBILL_TEST_COURIER_CREDENTIAL"
echo "==> relay on $relay; running: $*" >&2

status=0
"$@" || status=$?
exit "$status"
