#!/usr/bin/env bash
# Waybill side by side with the automerge-repo sync server, in one run on this
# machine: builds `waybill` (release), installs the peer with npm into bench/peer,
# runs every scenario on both, and prints one table (scenario | metric | Waybill |
# automerge-repo | ratio). BENCHMARKS.md explains the scenarios and the figures.
#
#   bash bench/run.sh                          # full scale (under 15 minutes after the build)
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
    # The peer's initial sync (≈ 210–420 s here) and its restarted-client reconnect
    # (≈ 245–360 s) would not fit the 15-minute budget together: they get wall-clock
    # caps, and a capped figure is printed as a bound ("> N", "≥ N×"), never dropped.
    peer_args=(--docs 10000 --changed 100 --writers 50 --orders 10 --changes 200
      --devices "${WAYBILL_BENCH_PEER_FANOUT:-1000}" --rounds 5 --idle 1000,10000
      --concurrency "${WAYBILL_BENCH_PEER_FINDS:-50}"
      --sync-cap-s "${WAYBILL_BENCH_PEER_SYNC_CAP:-300}"
      --restart-cap-s "${WAYBILL_BENCH_PEER_RESTART_CAP:-60}")
    ;;
  smoke)
    profile=${WAYBILL_BENCH_PROFILE:-debug}
    waybill_args=(--docs 200 --changed 20 --writers 5 --orders-per-writer 4
      --changes-per-writer 20 --devices 20 --rounds 3 --idle 50,100)
    peer_args=(--docs 200 --changed 20 --writers 5 --orders 4 --changes 20
      --devices 20 --rounds 3 --idle 50,100 --sync-cap-s 120 --restart-cap-s 60)
    ;;
  *) echo "WAYBILL_BENCH_SCALE must be full or smoke, not $scale" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*" >&2; }
started=$(date +%s)
# Seconds since `since` (epoch seconds).
took() { echo $(( $(date +%s) - $1 )); }

step "build waybill ($profile)"
if [ "$profile" = release ]; then
  cargo build --release -p waybill-server --bin waybill >&2
else
  cargo build -p waybill-server --bin waybill >&2
fi
waybill=target/$profile/waybill

build_s=$(took "$started")
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
measured=$(date +%s)
# One scenario at a time on each side, so each one's time can be printed.
: > "$out/waybill.jsonl"
: > "$out/peer.jsonl"
times=()
for scenario in sync ingest fanout idle; do
  step "Waybill $scenario: $waybill bench $scenario ${waybill_args[*]}"
  t=$(date +%s)
  "$waybill" bench "$scenario" "${waybill_args[@]}" --json --work "$work/waybill" >> "$out/waybill.jsonl" || status=1
  times+=("waybill $scenario: $(took "$t") s")
done
for scenario in sync ingest fanout idle; do
  step "automerge-repo $scenario: node bench/peer/run.mjs --scenarios $scenario ${peer_args[*]}"
  t=$(date +%s)
  node bench/peer/run.mjs --work "$work/peer" --scenarios "$scenario" "${peer_args[@]}" >> "$out/peer.jsonl" || status=1
  times+=("automerge-repo $scenario: $(took "$t") s")
done

step "results ($scale scale)"
{
  echo "build (cargo, not part of the budget): ${build_s} s"
  printf '%s\n' "${times[@]}"
  echo "scenarios, both sides: $(took "$measured") s; in all, npm install included: $(( $(took "$started") - build_s )) s"
} >&2
node bench/table.mjs "$out/waybill.jsonl" "$out/peer.jsonl"
if [ "$status" -ne 0 ]; then
  echo "a scenario failed (see the messages above)" >&2
fi
exit "$status"
