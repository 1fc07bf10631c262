#!/usr/bin/env bash
# Waybill side by side with the automerge-repo sync server, in one run on this
# machine: builds `waybill` (release), installs the peer with npm into bench/peer,
# runs every scenario on both, and prints one table (scenario | metric | Waybill |
# automerge-repo | ratio). BENCHMARKS.md explains the scenarios and the figures.
#
#   bash bench/run.sh                          # full scale (about 10–15 minutes)
#   WAYBILL_BENCH_SCALE=smoke bash bench/run.sh   # tiny N, debug build (CI)
#
# Other knobs: WAYBILL_BENCH_WORK=DIR keeps the work files (default: a temporary
# directory, removed afterwards); WAYBILL_BENCH_OUT=DIR keeps the raw JSON figures.
set -euo pipefail
cd "$(dirname "$0")/.."

scale=${WAYBILL_BENCH_SCALE:-full}
case "$scale" in
  full)
    profile=release
    waybill_args=(--docs 10000 --changed 100 --writers 50 --orders-per-writer 10
      --changes-per-writer 200 --devices 1000 --rounds 5 --idle 1000,10000)
    peer_args=(--docs 10000 --changed 100 --writers 50 --orders 10 --changes 200
      --devices "${WAYBILL_BENCH_PEER_FANOUT:-1000}" --rounds 5 --idle 1000,10000)
    ;;
  smoke)
    profile=${WAYBILL_BENCH_PROFILE:-debug}
    waybill_args=(--docs 200 --changed 20 --writers 5 --orders-per-writer 4
      --changes-per-writer 20 --devices 20 --rounds 3 --idle 50,100)
    peer_args=(--docs 200 --changed 20 --writers 5 --orders 4 --changes 20
      --devices 20 --rounds 3 --idle 50,100)
    ;;
  *) echo "WAYBILL_BENCH_SCALE must be full or smoke, not $scale" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*" >&2; }
started=$(date +%s)

step "build waybill ($profile)"
if [ "$profile" = release ]; then
  cargo build --release -p waybill-server --bin waybill >&2
else
  cargo build -p waybill-server --bin waybill >&2
fi
waybill=target/$profile/waybill

step "install the peer (automerge-repo from npm, into bench/peer)"
# `npm install` with the committed lockfile installs the locked versions (`npm ci`
# trips over cbor-x's optional platform packages, which the lockfile cannot list).
npm install --prefix bench/peer --no-audit --no-fund --loglevel=error >&2

work=${WAYBILL_BENCH_WORK:-$(mktemp -d /tmp/waybill-bench.XXXXXX)}
mkdir -p "$work"
out=${WAYBILL_BENCH_OUT:-$work}
mkdir -p "$out"
cleanup() { [ -n "${WAYBILL_BENCH_WORK:-}" ] || rm -rf "$work/waybill" "$work/peer"; }
trap cleanup EXIT
# 10,000 websocket connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

status=0
step "Waybill: $waybill bench ${waybill_args[*]}"
"$waybill" bench "${waybill_args[@]}" --json --work "$work/waybill" > "$out/waybill.jsonl" || status=1

step "automerge-repo: node bench/peer/run.mjs ${peer_args[*]}"
node bench/peer/run.mjs --work "$work/peer" "${peer_args[@]}" > "$out/peer.jsonl" || status=1

step "results ($scale scale; $(( $(date +%s) - started )) s in all)"
node bench/table.mjs "$out/waybill.jsonl" "$out/peer.jsonl"
if [ "$status" -ne 0 ]; then
  echo "a scenario failed (see the messages above)" >&2
fi
exit "$status"
