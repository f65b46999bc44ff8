#!/usr/bin/env bash
# DHCPv4 DORA throughput: Kea's perfdhcp against openchami (release build) and
# against Kea's kea-dhcp4 (memfile backend, persist on), both configured with
# the same /16 subnet, the same pool and the same 10,000 reservations
# (bench/gen_cluster.py's nodes: MAC 02:ad:00:00:xx:xx -> 10.1.x.y).
#
# Two client sets: random clients (-R 10000 MACs from 04:00:00:00:00:00, none
# in the inventory: pool leases, persisted before the ACK) and reserved
# clients (the 10,000 inventory MACs). For each server and set it prints the
# highest DORA rate perfdhcp completed with < 1 % drops (stepping the asked
# rate), and the server's CPU seconds per 1,000 exchanges at one common rate
# (COMMON; default: the lowest of the rates found, so every server sustains
# it), then the ratios openchami / kea.
#
# Topology: two network namespaces joined by a veth pair; the server in one
# (pinned to CPU 0), perfdhcp in the other (pinned to CPU 1). Needs root.
#
#   bench/dhcp.sh
#   STEP_SECS=5 RATES="4000 8000 12000 16000 20000" bench/dhcp.sh
#   OPENCHAMI_BIN=/path/to/openchami SERVERS=openchami bench/dhcp.sh
#   KEA_THREADS=2 SERVER_CPU=0,1 SERVERS=kea bench/dhcp.sh   (Kea multi-threaded)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
COMMON=${COMMON:-}
STEP_SECS=${STEP_SECS:-6}
RATES=${RATES:-"1000 2000 3000 4000 5000 6000 7000 8000 10000 12000 14000 16000 18000 20000 24000 28000"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-openchami kea}
SRV_IP=10.1.250.1
CLI_IP=10.1.250.2

[ "$(id -u)" = 0 ] || { echo "bench/dhcp.sh: needs root (network namespaces)" >&2; exit 2; }
need=()
command -v perfdhcp >/dev/null || need+=(kea-admin)
command -v kea-dhcp4 >/dev/null || need+=(kea-dhcp4-server)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "== building (release)"
nice -n 10 cargo build --release --bin openchami 2>&1 | grep -v '^\s*Compiling' || true
OC=${OPENCHAMI_BIN:-target/release/openchami}
[ -x "$OC" ] || { echo "bench/dhcp.sh: build failed" >&2; exit 1; }
OC=$(readlink -f "$OC")

WORK=$(mktemp -d /tmp/openchami-bench-dhcp.XXXXXX)
NS_S=ocbench-dhcp-s-$$
NS_C=ocbench-dhcp-c-$$
IF_S=obds$$
IF_C=obdc$$
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

# ---- the inventory: N nodes, and the same reservations for Kea
python3 bench/gen_cluster.py "$N" > "$WORK/cluster.yaml"
python3 - "$N" > "$WORK/kea-reservations.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
def ip(i):
    a = i + 1
    return f"10.{1 + (a >> 16)}.{(a >> 8) & 0xFF}.{a & 0xFF}"
def mac(i):
    return ":".join(f"{x:02x}" for x in [0x02, 0xAD, (i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])
# openchami's option 12 for these nodes: cluster "openchami" -> "op" + NID.
print(json.dumps([{"hw-address": mac(i), "ip-address": ip(i), "hostname": f"op{i + 1:04d}"} for i in range(n)]))
EOF

cat > "$WORK/openchami.toml" <<EOF
state_dir = "$WORK/oc-state"
[api]
listen = "127.0.0.1:18443"
[node]
listen = "$SRV_IP:27778"
[dhcp]
enabled = true
interfaces = ["$IF_S"]
[[dhcp.subnets]]
cidr = "10.1.0.0/16"
pool = "10.1.64.1-10.1.200.254"
routers = ["$SRV_IP"]
dns = ["$SRV_IP"]
domain = "bench.test"
EOF

python3 - "$WORK" "$IF_S" "$SRV_IP" "${KEA_THREADS:-0}" > "$WORK/kea.json" <<'EOF'
import json, sys
work, iface, srv, threads = sys.argv[1:5]
threads = int(threads)
res = json.load(open(f"{work}/kea-reservations.json"))
print(json.dumps({"Dhcp4": {
    "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "raw"},
    "lease-database": {"type": "memfile", "persist": True, "name": f"{work}/kea-leases4.csv", "lfc-interval": 0},
    "valid-lifetime": 3600,
    "host-reservation-identifiers": ["hw-address"],
    "subnet4": [{"id": 1, "subnet": "10.1.0.0/16",
                 "pools": [{"pool": "10.1.64.1 - 10.1.200.254"}],
                 "option-data": [{"name": "routers", "data": srv}, {"name": "domain-name-servers", "data": srv},
                                 {"name": "domain-name", "data": "bench.test"}],
                 "reservations": res}],
    "multi-threading": {"enable-multi-threading": threads > 0, "thread-pool-size": max(threads, 1),
                        "packet-queue-size": 64},
    "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": f"{work}/kea.log"}]}],
}}))
EOF

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
    kea)
      rm -f "$WORK"/kea-leases4.csv*
      KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK \
        ip netns exec "$NS_S" taskset -c "$SERVER_CPU" kea-dhcp4 -c "$WORK/kea.json" >"$WORK/kea.out" 2>&1 &
      SERVER_PID=$!
      sleep 3
      kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/kea.out" "$WORK/kea.log" >&2; exit 1; }
      ;;
  esac
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

TICK=$(getconf CLK_TCK)
server_cpu() { awk -v t="$TICK" '{ printf "%.3f\n", ($14 + $15) / t }' "/proc/$SERVER_PID/stat"; }

# One perfdhcp run: "completed_per_second drop_pct exchanges".
perf() { # base-mac rate seconds
  local out
  out=$(ip netns exec "$NS_C" taskset -c "$CLIENT_CPU" perfdhcp -4 -l "$IF_C" -b "mac=$1" -R "$N" \
    -r "$2" -p "$3" -W 500000 2>&1 || true)
  echo "$out" > "$WORK/perf-last.txt"
  [ -n "${VERBOSE:-}" ] && echo "$out" | grep -E 'Rate:|Statistics for|sent packets|received packets|avg delay|max delay' >&2
  # Drops: exchanges started (DISCOVERs sent) that did not end in an ACK.
  echo "$out" | awk -v secs="$3" '
    /Statistics for: DISCOVER-OFFER/ { ph = "do" }
    /Statistics for: REQUEST-ACK/ { ph = "ra" }
    /^sent packets:/ { sent[ph] = $3 }
    /^received packets:/ { recv[ph] = $3 }
    END {
      rate = recv["ra"] / secs
      drop = sent["do"] > 0 ? 100 * (sent["do"] - recv["ra"]) / sent["do"] : 100
      if (drop < 0) drop = 0
      printf "%.0f %.2f %d\n", rate, drop, recv["ra"]
    }'
}

declare -A BEST CPU
base_of() { [ "$1" = reserved ] && echo 02:ad:00:00:00:00 || echo 04:00:00:00:00:00; }

# Pass 1: the highest rate each server completes with < 1 % drops.
for server in $SERVERS; do
  echo "== $server: stepping the rate"
  start_server "$server"
  for set in random reserved; do
    base=$(base_of "$set")
    # Warm-up: every client once, so both servers run with their leases.
    perf "$base" 4000 3 >/dev/null
    best=0
    for r in $RATES; do
      read -r got drop _ < <(perf "$base" "$r" "$STEP_SECS")
      printf '   %-8s asked %6s/s: %6s DORA/s, %6s%% dropped\n' "$set" "$r" "$got" "$drop"
      if awk -v d="$drop" 'BEGIN { exit !(d < 1.0) }'; then
        [ "$got" -gt "$best" ] && best=$got
      else
        break
      fi
    done
    BEST[$server,$set]=$best
  done
  stop_server
done

# Pass 2: CPU per exchange at one rate every server sustains (COMMON, else
# the lowest of the rates found above, per client set).
declare -A AT
for set in random reserved; do
  if [ -n "$COMMON" ]; then
    AT[$set]=$COMMON
  else
    AT[$set]=$(for server in $SERVERS; do echo "${BEST[$server,$set]}"; done | sort -n | head -1)
    [ "${AT[$set]}" -gt 0 ] || AT[$set]=1000
  fi
done
for server in $SERVERS; do
  echo "== $server: CPU at a common rate"
  start_server "$server"
  for set in random reserved; do
    base=$(base_of "$set")
    perf "$base" 4000 3 >/dev/null
    c0=$(server_cpu)
    read -r got drop done < <(perf "$base" "${AT[$set]}" "$STEP_SECS")
    c1=$(server_cpu)
    CPU[$server,$set]=$(awk -v a="$c0" -v b="$c1" -v n="$done" 'BEGIN { printf "%.3f", (n > 0 ? (b - a) * 1000 / n : 0) }')
    printf '   %-8s at %s/s: %s DORA/s, %s%% dropped, %s CPU s per 1,000\n' "$set" "${AT[$set]}" "$got" "$drop" "${CPU[$server,$set]}"
  done
  stop_server
done

echo
echo "== results (max DORA/s with < 1 % drops; server CPU seconds per 1,000 exchanges at ${AT[random]}/s random, ${AT[reserved]}/s reserved)"
printf '%-10s %14s %14s %16s %16s\n' server random reserved cpu-random cpu-reserved
for server in $SERVERS; do
  printf '%-10s %14s %14s %16s %16s\n' "$server" "${BEST[$server,random]}" "${BEST[$server,reserved]}" \
    "${CPU[$server,random]}" "${CPU[$server,reserved]}"
done
if [[ " $SERVERS " == *" openchami "* && " $SERVERS " == *" kea "* ]]; then
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
  printf '%-10s %14s %14s %16s %16s\n' "oc/kea" \
    "$(ratio "${BEST[openchami,random]}" "${BEST[kea,random]}")" \
    "$(ratio "${BEST[openchami,reserved]}" "${BEST[kea,reserved]}")" \
    "$(ratio "${CPU[openchami,random]}" "${CPU[kea,random]}")" \
    "$(ratio "${CPU[openchami,reserved]}" "${CPU[kea,reserved]}")"
  echo "targets: rate ratio >= 1.00, CPU ratio <= 0.50"
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
