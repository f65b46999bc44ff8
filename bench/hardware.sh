#!/usr/bin/env bash
# Hardware-inventory discovery at scale: N simulated BMCs (default 1000) with
# full FRU trees (`sim-bmc --hardware`: 2 CPUs, 16 DIMMs, 4 GPUs, 4 drives,
# 5 PCIe devices, 2 power supplies per node) against N with today's shallow
# trees (Systems, Managers, Chassis, NICs only), LATENCY_MS (default 250) per
# request. Reports per tree: discovery time, requests per BMC, appliance CPU
# and peak RSS; then the latency of GET /hsm/v2/Inventory/Hardware over
# the resulting locations (~30 per node).
#
#   bench/hardware.sh
#   N=200 LATENCY_MS=100 OPENCHAMI_BIN=target/release/openchami bench/hardware.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
LATENCY_MS=${LATENCY_MS:-250}
PORT=8443
API=127.0.0.1:18644
[ "$N" -le 1000 ] || { echo "bench/hardware.sh: N <= 1000 (one /22 each)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "${OPENCHAMI_BIN:-}" ]; then
  echo "== building (release)"
  nice -n 10 cargo build --release --bin openchami 2>&1 | grep -v '^\s*Compiling' || true
fi
OC=${OPENCHAMI_BIN:-target/release/openchami}
[ -x "$OC" ] || { echo "bench/hardware.sh: build failed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/openchami-bench-hardware.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/config.toml" <<EOF2
state_dir = "$WORK/state"
[api]
listen = "$API"
[node]
listen = "127.0.0.1:0"
[discovery]
port = $PORT
[power]
sample_interval_secs = 0
EOF2
export OPENCHAMI_CONFIG="$WORK/config.toml" OPENCHAMI_URL="https://$API" BMC_PW=password

now() { date +%s.%N; }
cpu() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' /proc/"$1"/stat; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rss() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' /proc/"$1"/status; }

# One run: a fresh appliance, N sims (with or without --hardware), one
# collect of their /22. Prints "time requests/BMC cpu rss_mb summary".
run() {
  local label=$1 first=$2 cidr=$3; shift 3
  rm -rf "$WORK/state"
  "$OC" serve >"$WORK/serve-$label.log" 2>&1 &
  local serve=$!; PIDS+=("$serve")
  "$OC" sim-bmc --count "$N" --first-ip "$first" --port $PORT --latency-ms "$LATENCY_MS" "$@" >"$WORK/sim-$label.log" 2>&1 &
  local sim=$!; PIDS+=("$sim")
  for _ in $(seq 150); do
    curl -skf "https://$API/healthz" >/dev/null 2>&1 && grep -q simulating "$WORK/sim-$label.log" && break
    sleep 0.2
  done
  "$OC" discover credentials set default --username admin --password-env BMC_PW >/dev/null
  local c0 t0 t1
  c0=$(cpu "$serve"); t0=$(now)
  "$OC" discover collect "$cidr" -o json >"$WORK/$label.json" || true
  t1=$(now)
  eval "${label}_TIME=$(secs "$t0" "$t1")"
  eval "${label}_CPU=$(secs "$c0" "$(cpu "$serve")")"
  eval "${label}_RSS=$(rss "$serve")"
  eval "${label}_SUMMARY='$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("collected %d, failed %d" % (j["collected"], j["failed"]))' "$WORK/$label.json")'"
  if [ "$label" = full ]; then
    TOKEN=$("$OC" token issue --ttl 1h)
    URL="https://$API/hsm/v2/Inventory/Hardware"
    LOCS=$(curl -sk -H "Authorization: Bearer $TOKEN" "$URL" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    : >"$WORK/lat"
    for _ in 1 2 3 4 5; do
      curl -sk -o /dev/null -H "Authorization: Bearer $TOKEN" -w '%{time_total} %{size_download}\n' "$URL" >>"$WORK/lat"
    done
    LIST=$(sort -n "$WORK/lat" | awk 'NR==3 {printf "%.3fs median of 5, %.1f MB", $1, $2/1e6}')
    LIST_RSS=$(rss "$serve")
  fi
  kill "$sim"; wait "$sim" 2>/dev/null || true
  local req
  req=$(awk '/requests answered/ {print $3}' "$WORK/sim-$label.log")
  eval "${label}_REQ=$(awk -v r="${req:-0}" -v n="$N" 'BEGIN{printf "%.1f", r/n}')"
  kill "$serve"; wait "$serve" 2>/dev/null || true
}

LOAD=$(cut -d' ' -f1 /proc/loadavg)
echo "== shallow trees: $N BMCs, ${LATENCY_MS} ms per request"
run shallow 127.1.0.1 127.1.0.0/22
echo "== full hardware trees: $N BMCs, ${LATENCY_MS} ms per request"
run full 127.3.0.1 127.3.0.0/22 --hardware

echo
printf '%-40s %14s %14s\n' "" "shallow" "full trees"
printf '%-40s %13ss %13ss\n' "discovery (scan + crawl + write)" "$shallow_TIME" "$full_TIME"
printf '%-40s %14s %14s\n' "  result" "$shallow_SUMMARY" "$full_SUMMARY"
printf '%-40s %14s %14s\n' "  requests per BMC (incl. scan probe)" "$shallow_REQ" "$full_REQ"
printf '%-40s %13ss %13ss\n' "  appliance CPU (user + system)" "$shallow_CPU" "$full_CPU"
printf '%-40s %13sM %13sM\n' "  appliance peak RSS (VmHWM)" "$shallow_RSS" "$full_RSS"
echo "GET /hsm/v2/Inventory/Hardware: $LOCS locations, $LIST (peak RSS after: ${LIST_RSS}M)"
echo "load average at the start: $LOAD"
