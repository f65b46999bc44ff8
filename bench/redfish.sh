#!/usr/bin/env bash
# Redfish discovery and power at scale: N simulated BMCs (default 1000,
# `openchami sim-bmc`, one per loopback address 127.1.x.y:8443, HTTPS,
# SessionService) answering every request after LATENCY_MS (default 250).
#
#   1. discovery of one BMC (`discover collect ADDR`: probe, login, crawl,
#      logout, write) - the reference;
#   2. discovery of all N (`discover collect 127.1.0.0/22`, which also probes
#      the unused addresses of the range): total time, ratio to (1) (target
#      <= 2x), CPU time of the appliance and of the simulators (they share
#      the machine), peak open file descriptors and peak RSS of the appliance;
#   3. a power-on transition of one node, then of all N nodes: time until
#      every task is `succeeded` (the transition polls PowerState every
#      POLL_SECS), and the ratio.
#
# The appliance (release build) runs with its state in a temp dir; the
# simulators run in a second process. Both raise their open-file limit.
#
#   bench/redfish.sh
#   N=200 LATENCY_MS=100 bench/redfish.sh
#   OPENCHAMI_BIN=/path/to/openchami bench/redfish.sh   # a given build, no cargo
#   PERF_DATA=/tmp/redfish.perf OPENCHAMI_BIN=... bench/redfish.sh
#       # also `perf record` (DWARF call graphs) of the appliance during the
#       # N-BMC discovery; give a binary built with symbols:
#       # CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#       #   cargo build --release --target-dir target/prof
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
LATENCY_MS=${LATENCY_MS:-250}
POLL_SECS=${POLL_SECS:-1}
PORT=8443
API=127.0.0.1:18643

[ "$N" -le 1000 ] || { echo "bench/redfish.sh: N <= 1000 (the /22 scanned)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "${OPENCHAMI_BIN:-}" ]; then
  echo "== building (release)"
  nice -n 10 cargo build --release --bin openchami 2>&1 | grep -v '^\s*Compiling' || true
fi
OC=${OPENCHAMI_BIN:-target/release/openchami}
[ -x "$OC" ] || { echo "bench/redfish.sh: build failed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/openchami-bench-redfish.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/config.toml" <<EOF
state_dir = "$WORK/state"
[api]
listen = "$API"
[node]
listen = "127.0.0.1:0"
[discovery]
port = $PORT
[power]
poll_interval_secs = $POLL_SECS
sample_interval_secs = 0
EOF
export OPENCHAMI_CONFIG="$WORK/config.toml" OPENCHAMI_URL="https://$API" BMC_PW=password

"$OC" serve >"$WORK/serve.log" 2>&1 &
SERVE=$!; PIDS+=("$SERVE")
"$OC" sim-bmc --count 1 --first-ip 127.2.0.1 --port $PORT --latency-ms "$LATENCY_MS" >"$WORK/sim1.log" 2>&1 &
SIM1=$!; PIDS+=("$SIM1")
"$OC" sim-bmc --count "$N" --first-ip 127.1.0.1 --port $PORT --latency-ms "$LATENCY_MS" >"$WORK/simn.log" 2>&1 &
SIMN=$!; PIDS+=("$SIMN")
for _ in $(seq 100); do
  curl -skf "https://$API/healthz" >/dev/null 2>&1 && grep -q simulating "$WORK/simn.log" && break
  sleep 0.2
done
grep -q simulating "$WORK/simn.log" || { cat "$WORK/simn.log"; exit 1; }
"$OC" discover credentials set default --username admin --password-env BMC_PW >/dev/null

now() { date +%s.%N; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' /proc/"$1"/stat; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Peak open fds of the appliance, sampled every 20 ms while discovery runs.
watch_fds() {
  local max=0 n
  while kill -0 "$SERVE" 2>/dev/null && [ ! -e "$WORK/stop-fds" ]; do
    n=$(ls /proc/"$SERVE"/fd 2>/dev/null | wc -l)
    [ "$n" -gt "$max" ] && max=$n && echo "$max" >"$WORK/fds"
    sleep 0.02
  done
}

echo "== discovery: 1 BMC, then $N BMCs, ${LATENCY_MS} ms per request"
c0=$(cpu "$SERVE"); s0=$(cpu "$SIM1")
t0=$(now); "$OC" discover collect 127.2.0.1:$PORT >"$WORK/one.txt"; t1=$(now)
ONE=$(secs "$t0" "$t1"); CPU_ONE=$(secs "$c0" "$(cpu "$SERVE")"); SIM_ONE=$(secs "$s0" "$(cpu "$SIM1")")
FDS_BEFORE=$(ls /proc/"$SERVE"/fd | wc -l)
watch_fds & WATCH=$!; PIDS+=("$WATCH")
if [ -n "${PERF_DATA:-}" ]; then
  perf record --call-graph dwarf,32768 -F 499 -p "$SERVE" -o "$PERF_DATA" >"$WORK/perf.log" 2>&1 & PERF=$!
  sleep 1
fi
LOAD=$(cut -d' ' -f1 /proc/loadavg)
c0=$(cpu "$SERVE"); s0=$(cpu "$SIMN")
t0=$(now); "$OC" discover collect 127.1.0.0/22 -o json >"$WORK/all.json" || true; t1=$(now)
CPU_ALL=$(secs "$c0" "$(cpu "$SERVE")"); SIM_ALL=$(secs "$s0" "$(cpu "$SIMN")")
touch "$WORK/stop-fds"; wait "$WATCH" 2>/dev/null || true
[ -n "${PERF:-}" ] && { kill -INT "$PERF"; wait "$PERF" || true; }
ALL=$(secs "$t0" "$t1")
SUMMARY=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("found %d, collected %d, failed %d" % (j["found"], j["collected"], j["failed"]))' "$WORK/all.json")
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/"$SERVE"/status)
FDS=$(cat "$WORK/fds" 2>/dev/null || echo "?")

echo "== power on: 1 node, then $N nodes"
xnames=$(python3 -c 'import json,sys; print(" ".join(b["xname"] + "n0" for b in json.load(open(sys.argv[1]))["bmcs"] if b["status"] == "collected"))' "$WORK/all.json")
COUNT=$(echo "$xnames" | wc -w)
t0=$(now); "$OC" power on x4064c2s0b1n0 >"$WORK/pone.txt"; t1=$(now)
PONE=$(secs "$t0" "$t1")
# shellcheck disable=SC2086
t0=$(now); "$OC" power on $xnames >"$WORK/pall.txt" || true; t1=$(now)
PALL=$(secs "$t0" "$t1")
OK=$(grep -c succeeded "$WORK/pall.txt" || true)

echo
printf '%-44s %12s %12s %8s\n' "" "1 BMC" "$N BMCs" "ratio"
printf '%-44s %11ss %11ss %7sx\n' "discovery (scan + crawl + write)" "$ONE" "$ALL" "$(awk -v a="$ONE" -v b="$ALL" 'BEGIN{printf "%.2f", b/a}')"
printf '%-44s %12s %12s\n' "  result" "" "$SUMMARY"
printf '%-44s %11ss %11ss\n' "  appliance CPU (user + system)" "$CPU_ONE" "$CPU_ALL"
printf '%-44s %11ss %11ss\n' "  simulated BMCs' CPU (user + system)" "$SIM_ONE" "$SIM_ALL"
printf '%-44s %12s %12s\n' "  appliance open fds (idle -> peak)" "$FDS_BEFORE" "$FDS"
printf '%-44s %12s %11sM\n' "  appliance peak RSS (VmHWM)" "" "$(awk -v k="$RSS_KB" 'BEGIN{printf "%.0f", k/1024}')"
printf '%-44s %11ss %11ss %7sx\n' "power on to all succeeded (poll ${POLL_SECS}s)" "$PONE" "$PALL" "$(awk -v a="$PONE" -v b="$PALL" 'BEGIN{printf "%.2f", b/a}')"
printf '%-44s %12s %12s\n' "  tasks succeeded" "1" "$OK/$COUNT"
echo "target: discovery ratio <= 2x; load average at the start of the $N-BMC discovery: $LOAD"
