#!/usr/bin/env bash
# Authoritative DNS throughput: dnsperf against openchami (release build),
# dnsmasq (a hosts file of the same names) and NSD (a zone file of the same
# records), each serving a zone of N nodes (bench/gen_cluster.py's cluster:
# node i is op<NID>.cluster -> 10.1.x.y), queried for random node names
# (A records; the query file is every name, shuffled, looped by dnsperf).
#
# For each server it prints the highest rate dnsperf completed with < 0.1 %
# of queries lost (stepping the asked rate), and the server's CPU seconds
# per 1,000 queries at one common rate (COMMON; default: the lowest of the
# rates found, so every server sustains it), then the ratios to dnsmasq and
# NSD. Target: openchami >= dnsmasq's rate.
#
# Topology: two network namespaces joined by a veth pair; the server in one
# (pinned to CPU 0, SERVER_CPU), dnsperf in the other (CPU 1). Needs root.
#
#   bench/dns.sh
#   STEP_SECS=5 RATES="20000 40000 80000" SERVERS="openchami dnsmasq" bench/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
COMMON=${COMMON:-}
STEP_SECS=${STEP_SECS:-5}
RATES=${RATES:-"2000 5000 10000 15000 20000 25000 30000 40000 50000 60000 80000 100000 150000 200000"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-openchami dnsmasq nsd}
SRV_IP=10.1.250.1
CLI_IP=10.1.250.2

[ "$(id -u)" = 0 ] || { echo "bench/dns.sh: needs root (network namespaces)" >&2; exit 2; }
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v nsd >/dev/null || need+=(nsd)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ -z "${OPENCHAMI_BIN:-}" ]; then
  echo "== building (release)"
  nice -n 10 cargo build --release --bin openchami 2>&1 | grep -v '^\s*Compiling' || true
fi
OC=${OPENCHAMI_BIN:-target/release/openchami}
[ -x "$OC" ] || { echo "bench/dns.sh: build failed" >&2; exit 1; }
OC=$(readlink -f "$OC")

WORK=$(mktemp -d /tmp/openchami-bench-dns.XXXXXX)
NS_S=ocbench-dns-s-$$
NS_C=ocbench-dns-c-$$
IF_S=obns$$
IF_C=obnc$$
IF_S=${IF_S:0:15}
IF_C=${IF_C:0:15}
SERVER_PID=
cleanup() {
  set +e
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  for ns in "$NS_C" "$NS_S"; do
    if ip netns list | grep -qw "$ns"; then
      # Anything left in our namespaces was started by this script.
      for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$ns"
    fi
  done
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$IF_S" netns "$NS_S" type veth peer name "$IF_C" netns "$NS_C"
ip -n "$NS_S" addr add "$SRV_IP/16" dev "$IF_S"
ip -n "$NS_C" addr add "$CLI_IP/16" dev "$IF_C"
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set "$IF_S" up
ip -n "$NS_C" link set "$IF_C" up

# ---- the same names for every server
python3 bench/gen_cluster.py "$N" > "$WORK/cluster.yaml"
python3 - "$N" "$WORK" <<'EOF'
import random, sys
n, work = int(sys.argv[1]), sys.argv[2]
def ip(i):
    a = i + 1
    return f"10.{1 + (a >> 16)}.{(a >> 8) & 0xFF}.{a & 0xFF}"
# openchami's host name for these nodes: cluster "openchami" -> "op" + NID
# (at least 4 digits), in the zone "cluster".
names = [(f"op{i + 1:04d}.cluster", ip(i)) for i in range(n)]
with open(f"{work}/hosts", "w") as h:
    for name, a in names:
        h.write(f"{a} {name}\n")
with open(f"{work}/cluster.zone", "w") as z:
    z.write("$ORIGIN cluster.\n$TTL 60\n")
    z.write("@ IN SOA openchami.cluster. hostmaster.cluster. 1 3600 600 86400 60\n")
    z.write("@ IN NS openchami.cluster.\nopenchami IN A 10.1.250.1\n")
    for name, a in names:
        z.write(f"{name}. IN A {a}\n")
q = [name for name, _ in names]
random.seed(1)
random.shuffle(q)
with open(f"{work}/queries", "w") as f:
    for name in q:
        f.write(f"{name} A\n")
EOF

cat > "$WORK/openchami.toml" <<EOF
state_dir = "$WORK/oc-state"
[api]
listen = "127.0.0.1:18443"
[node]
listen = "$SRV_IP:27778"
[dns]
enabled = true
interfaces = ["$IF_S"]
networks = ["10.0.0.0/8"]
rrl_per_sec = 0
EOF

cat > "$WORK/nsd.conf" <<EOF
server:
  ip-address: $SRV_IP
  port: 53
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$WORK"
  database: ""
  zonelistfile: "$WORK/zone.list"
  xfrdfile: "$WORK/xfrd.state"
  pidfile: "$WORK/nsd.pid"
  logfile: "$WORK/nsd.log"
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: cluster
  zonefile: cluster.zone
EOF

wait_answer() {
  for _ in $(seq 1 300); do
    ip netns exec "$NS_C" dig +short +time=1 +tries=1 "@$SRV_IP" op0001.cluster 2>/dev/null | grep -q . && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK"/*.log >&2; exit 1; }
    sleep 0.2
  done
  echo "bench/dns.sh: $1 does not answer" >&2
  exit 1
}

start_server() {
  case $1 in
    openchami)
      rm -rf "$WORK/oc-state"
      RUST_LOG=warn ip netns exec "$NS_S" taskset -c "$SERVER_CPU" "$OC" serve --config "$WORK/openchami.toml" \
        >"$WORK/openchami.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 1 300); do
        ip netns exec "$NS_S" "$OC" --url https://127.0.0.1:18443 --state-dir "$WORK/oc-state" \
          --config "$WORK/openchami.toml" node list >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/openchami.log" >&2; exit 1; }
        sleep 0.2
      done
      ip netns exec "$NS_S" "$OC" --url https://127.0.0.1:18443 --state-dir "$WORK/oc-state" \
        --config "$WORK/openchami.toml" import -f "$WORK/cluster.yaml" >/dev/null
      ;;
    dnsmasq)
      ip netns exec "$NS_S" taskset -c "$SERVER_CPU" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts \
        --addn-hosts="$WORK/hosts" --local=/cluster/ --listen-address="$SRV_IP" --bind-interfaces \
        --port=53 --user=root --pid-file="$WORK/dnsmasq.pid" --cache-size=10000 \
        >"$WORK/dnsmasq.log" 2>&1 &
      SERVER_PID=$!
      ;;
    nsd)
      ip netns exec "$NS_S" taskset -c "$SERVER_CPU" nsd -d -c "$WORK/nsd.conf" >"$WORK/nsd.out" 2>&1 &
      SERVER_PID=$!
      ;;
  esac
  wait_answer "$1"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

TICK=$(getconf CLK_TCK)
# The server's CPU: every process in the server namespace (NSD forks its
# serving child and xfrd).
server_cpu() {
  local total=0
  for p in $(ip netns pids "$NS_S"); do
    [ -r "/proc/$p/stat" ] || continue
    # Fields after "pid (comm) ": comm may hold spaces ("nsd: server 1").
    total=$(sed 's/^.*) //' "/proc/$p/stat" | awk -v t="$TICK" -v s="$total" '{ printf "%.3f", s + ($12 + $13) / t }')
  done
  echo "$total"
}

# One dnsperf run: "completed_per_second lost_pct completed".
perf() { # rate seconds
  local out
  out=$(ip netns exec "$NS_C" taskset -c "$CLIENT_CPU" dnsperf -s "$SRV_IP" -d "$WORK/queries" \
    -l "$2" -Q "$1" -c 4 -q 2000 -t 2 2>&1 || true)
  echo "$out" > "$WORK/perf-last.txt"
  echo "$out" | awk '
    /Queries sent:/ { sent = $3 }
    /Queries completed:/ { done = $3 }
    /Queries lost:/ { lost = $3 }
    /Queries per second:/ { qps = $4 }
    /Response codes:/ { sub(/^.*Response codes: */, ""); gsub(/ /, ""); codes = $0 }
    END {
      pct = sent > 0 ? 100 * lost / sent : 100
      printf "%.0f %.3f %d %s\n", qps, pct, done, codes
    }'
}

declare -A BEST CPU
for server in $SERVERS; do
  echo "== $server: stepping the rate"
  start_server "$server"
  perf 5000 2 >/dev/null
  best=0
  for r in $RATES; do
    read -r got lost _ codes < <(perf "$r" "$STEP_SECS")
    printf '   asked %7s/s: %7s answers/s, %7s%% lost (%s)\n' "$r" "$got" "$lost" "$codes"
    if awk -v d="$lost" 'BEGIN { exit !(d < 0.1) }'; then
      [ "$got" -gt "$best" ] && best=$got
    else
      break
    fi
  done
  BEST[$server]=$best
  stop_server
done

if [ -n "$COMMON" ]; then
  AT=$COMMON
else
  AT=$(for server in $SERVERS; do echo "${BEST[$server]}"; done | sort -n | head -1)
  [ "$AT" -gt 0 ] || AT=5000
fi
for server in $SERVERS; do
  echo "== $server: CPU at $AT/s"
  start_server "$server"
  perf 5000 2 >/dev/null
  c0=$(server_cpu)
  read -r got lost done _ < <(perf "$AT" "$STEP_SECS")
  c1=$(server_cpu)
  CPU[$server]=$(awk -v a="$c0" -v b="$c1" -v n="$done" 'BEGIN { printf "%.4f", (n > 0 ? (b - a) * 1000 / n : 0) }')
  printf '   %s answers/s, %s%% lost, %s CPU s per 1,000 queries\n' "$got" "$lost" "${CPU[$server]}"
  stop_server
done

echo
echo "== results ($N names; max answers/s with < 0.1 % lost; server CPU seconds per 1,000 queries at $AT/s)"
printf '%-10s %12s %14s\n' server rate cpu-per-1000
for server in $SERVERS; do
  printf '%-10s %12s %14s\n' "$server" "${BEST[$server]}" "${CPU[$server]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
for other in dnsmasq nsd; do
  if [[ " $SERVERS " == *" openchami "* && " $SERVERS " == *" $other "* ]]; then
    printf '%-10s %12s %14s\n' "oc/$other" "$(ratio "${BEST[openchami]}" "${BEST[$other]}")" \
      "$(ratio "${CPU[openchami]}" "${CPU[$other]}")"
  fi
done
echo "target: oc/dnsmasq rate >= 1.00 (NSD for the record)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
