#!/usr/bin/env bash
# TFTP under a burst: N clients (default 500) fetch ipxe.efi (about 850 KB) at
# once from openchami (release build), tftp-hpa's in.tftpd and dnsmasq's TFTP,
# first with lockstep clients (two `curl -Z` processes, blksize 1468), then
# with a client that asks for windowsize 16 (examples/tftp_load.rs; servers
# that do not grant it are read in lockstep). Prints total time, per-transfer
# p99 and failures for each, and the ratios to dnsmasq.
#
# Everything runs in a private network namespace (dnsmasq's TFTP has no port
# option, so it takes port 69 there) on its loopback; servers are pinned to
# CPU 0, clients to CPU 1. Needs root.
#
#   bench/tftp.sh            # N=500
#   N=100 bench/tftp.sh
#   OPENCHAMI_BIN=/path/to/openchami SERVERS=openchami bench/tftp.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-500}
BLKSIZE=${BLKSIZE:-1468}
WINDOW=${WINDOW:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT_OC=6969
PORT_HPA=6970
PORT_DNSMASQ=69
# dnsmasq serves 50 transfers at once by default and leaves the rest of a
# burst queued (here: 5 of 500 curl transfers failed, 120 s); allow all of
# them, as openchami does (tftp.max_transfers = 1000).
DNSMASQ_TFTP_MAX=${DNSMASQ_TFTP_MAX:-1000}
SERVERS=${SERVERS:-openchami tftp-hpa dnsmasq}

[ "$(id -u)" = 0 ] || { echo "bench/tftp.sh: needs root (network namespace)" >&2; exit 2; }

need=()
command -v in.tftpd >/dev/null || need+=(tftpd-hpa)
command -v dnsmasq >/dev/null || need+=(dnsmasq)
command -v curl >/dev/null || need+=(curl)
command -v atftp >/dev/null || need+=(atftp)
[ -e /usr/lib/ipxe/ipxe.efi ] || need+=(ipxe)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "== building (release)"
nice -n 10 cargo build --release --bin openchami --example tftp_load 2>&1 | grep -v '^\s*Compiling' || true
OC=${OPENCHAMI_BIN:-target/release/openchami}
LOAD=target/release/examples/tftp_load
[ -x "$OC" ] && [ -x "$LOAD" ] || { echo "bench/tftp.sh: build failed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/openchami-bench-tftp.XXXXXX)
NS=ocbench-tftp-$$
SERVER_PID=
CLIENT_PIDS=()
cleanup() {
  set +e
  for p in $SERVER_PID "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in $SERVER_PID "${CLIENT_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if ip netns list | grep -qw "$NS"; then
    # Anything left in the namespace was started by this script.
    for p in $(ip netns pids "$NS"); do kill "$p" 2>/dev/null; done
    sleep 0.2
    ip netns del "$NS"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
# in.tftpd resolves its -a address with AI_ADDRCONFIG, which wants some
# address besides 127.0.0.1; a documentation address on lo will do.
ip -n "$NS" addr add 192.0.2.1/32 dev lo
inns() { ip netns exec "$NS" "$@"; }

ROOT=$WORK/root
mkdir -p "$ROOT"
cp -L /usr/lib/ipxe/ipxe.efi "$ROOT/ipxe.efi"
echo ready > "$ROOT/ready.txt"
chmod 755 "$WORK" "$ROOT"
chmod 644 "$ROOT"/*
SIZE=$(stat -c %s "$ROOT/ipxe.efi")

cat > "$WORK/openchami.toml" <<EOF
state_dir = "$WORK/state"
[api]
listen = "127.0.0.1:0"
[node]
listen = "127.0.0.1:0"
[tftp]
enabled = true
listen = "127.0.0.1:$PORT_OC"
root = "$ROOT"
EOF

start_server() { # name port
  case $1 in
    openchami)
      RUST_LOG=warn ip netns exec "$NS" taskset -c "$SERVER_CPU" "$OC" --config "$WORK/openchami.toml" serve \
        >"$WORK/openchami.log" 2>&1 &
      ;;
    tftp-hpa)
      ip netns exec "$NS" taskset -c "$SERVER_CPU" in.tftpd -L -s "$ROOT" -a "127.0.0.1:$2" \
        >"$WORK/tftp-hpa.log" 2>&1 &
      ;;
    dnsmasq)
      ip netns exec "$NS" taskset -c "$SERVER_CPU" dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
        --enable-tftp --tftp-root="$ROOT" --listen-address=127.0.0.1 --bind-interfaces \
        --tftp-max="$DNSMASQ_TFTP_MAX" --quiet-tftp --user=root --group=root --pid-file="$WORK/dnsmasq.pid" \
        >"$WORK/dnsmasq.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if inns curl -s --max-time 1 -o /dev/null "tftp://127.0.0.1:$2/ready.txt"; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench/tftp.sh: $1 did not come up; its log:" >&2
  cat "$WORK/$1.log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

now() { date +%s.%N; }

# CPU seconds the server used so far (in.tftpd's forked children are not
# counted: it does not wait for them).
TICK=$(getconf CLK_TCK)
server_cpu() { awk -v t="$TICK" '{ printf "%.2f\n", ($14 + $15 + $16 + $17) / t }' "/proc/$SERVER_PID/stat"; }

# Lockstep: two curl -Z processes of N/2 transfers each. Prints
# "total p99 failures".
run_curl() { # port
  local half=$((N / 2)) out=$WORK/curl
  rm -f "$out".*
  for i in 1 2; do
    local n=$half
    [ "$i" = 2 ] && n=$((N - half))
    : > "$out.cfg$i"
    for _ in $(seq 1 "$n"); do
      printf 'url = "tftp://127.0.0.1:%s/ipxe.efi"\noutput = "/dev/null"\n' "$1" >> "$out.cfg$i"
    done
  done
  local t0 t1
  t0=$(now)
  for i in 1 2; do
    ip netns exec "$NS" taskset -c "$CLIENT_CPU" curl -Z --parallel-max 250 -s --tftp-blksize "$BLKSIZE" \
      --max-time 120 -w '%{time_total} %{exitcode} %{size_download}\n' -K "$out.cfg$i" \
      > "$out.times$i" 2>/dev/null &
    CLIENT_PIDS+=("$!")
  done
  wait "${CLIENT_PIDS[@]}" || true
  CLIENT_PIDS=()
  t1=$(now)
  sort -n "$out.times1" "$out.times2" | awk -v n="$N" -v size="$SIZE" -v t0="$t0" -v t1="$t1" '
    { t[NR] = $1; if ($2 != 0 || $3 != size) fail++ }
    END {
      fail += n - NR
      i = int(0.99 * NR + 0.999999); if (i < 1) i = 1
      printf "%.3f %.3f %d\n", t1 - t0, (NR ? t[i] : 0), fail
    }'
}

# Windowed (if the server grants it): examples/tftp_load.
run_window() { # port
  local line
  line=$(inns taskset -c "$CLIENT_CPU" "$LOAD" --server "127.0.0.1:$1" --file ipxe.efi \
    --expect "$ROOT/ipxe.efi" --clients "$N" --blksize "$BLKSIZE" --windowsize "$WINDOW" 2>"$WORK/load.err")
  echo "$line" | awk '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "%.3f %.3f %d\n", v["total_s"], v["p99_s"], v["failures"] }'
}

declare -A RES
for server in $SERVERS; do
  case $server in
    openchami) port=$PORT_OC ;;
    tftp-hpa) port=$PORT_HPA ;;
    dnsmasq) port=$PORT_DNSMASQ ;;
  esac
  echo "== $server"
  start_server "$server" "$port"
  c0=$(server_cpu)
  RES[$server,lockstep]=$(run_curl "$port")
  c1=$(server_cpu)
  RES[$server,lockstep]+=" $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
  echo "   curl lockstep:       ${RES[$server,lockstep]}"
  sleep 1
  c0=$(server_cpu)
  RES[$server,window]=$(run_window "$port")
  c1=$(server_cpu)
  RES[$server,window]+=" $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
  echo "   windowsize $WINDOW client: ${RES[$server,window]}"
  stop_server
done

echo
echo "$N concurrent fetches of ipxe.efi ($SIZE bytes), blksize $BLKSIZE; server on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU"
printf '%-10s %-24s %8s %8s %8s %13s %11s %12s\n' server clients total_s p99_s failures total/dnsmasq p99/dnsmasq server_cpu_s
for kind in lockstep window; do
  label="curl -Z x2 (lockstep)"
  [ "$kind" = window ] && label="tftp_load windowsize $WINDOW"
  read -r dt dp _ <<<"${RES[dnsmasq,$kind]:-0 0 0}"
  for server in $SERVERS; do
    read -r t p f c <<<"${RES[$server,$kind]}"
    [ "$server" = tftp-hpa ] && c="n/a"
    rt=$(awk -v a="$t" -v b="$dt" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    rp=$(awk -v a="$p" -v b="$dp" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    printf '%-10s %-24s %8s %8s %8s %13s %11s %12s\n' "$server" "$label" "$t" "$p" "$f" "$rt" "$rp" "$c"
  done
done
read -r ol _ <<<"${RES[openchami,lockstep]:-0}"
read -r ow _ <<<"${RES[openchami,window]:-0}"
awk -v a="$ol" -v b="$ow" 'BEGIN { if (b > 0) printf "openchami: windowed is %.1fx faster than lockstep\n", a / b }'
