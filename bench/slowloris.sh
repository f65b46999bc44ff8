#!/usr/bin/env bash
# Slowloris benchmark: boot script requests per second and API p99 with and
# without a slowloris on the node listener, and the server's peak RSS and
# open descriptors, side by side in one run (targets: boot scripts >= 0.8x,
# API p99 < 100 ms under the flood).
#
#   bash bench/slowloris.sh
#   DURATION=10 OPENCHAMI_BIN=target/release/openchami \
#     LOAD_BIN=target/release/examples/slowloris_load bash bench/slowloris.sh
#
# The boot script load is wrk (BOOT_LOAD=wrk, the default): WORKERS (16)
# connections from one thread, each request for a random MAC of the
# enrolled nodes (a Lua script, as in bench/multihead.sh), DURATION s per
# phase, run by the load generator so both phases measure the same
# window. KEEPALIVE=1 (the default) keeps the connections open, as iPXE
# pools its connections for a node's script, kernel and initrd; it is the
# default because a connection per request costs the client core a TCP
# handshake and teardown per request, which that core, shared with the
# attacker, runs out of before the server's does. KEEPALIVE=0 sends
# `Connection: close` (a connection per request). BOOT_LOAD=tasks uses the
# load generator's own tokio workers instead (no wrk; on loopback they cost
# the client core about what wrk does per keep-alive request, most of it
# the kernel's, but the rate then rests on our own client code).
# slowloris_load still runs the attacker and the API prober.
#
# FLOOD (20000) connections from FLOOD_ADDRS (1) loopback addresses, each
# sending a request head one line every 3 s and never finishing it; a
# connection the server closes is reopened at the next round (3 s;
# RECONNECT_MS=10 reopens at once: a connect flood), one whose connect
# gets no answer in 2 s (SYNs dropped: the address is at its share) 100 ms
# later. Everything runs on
# 127.0.0.1 (and 127.2.0.0/16 for the attacker) with a temporary state
# directory.
#
# PIN=1 (the default) runs the server on CPU SERVER_CPU (0) and the load
# generator (with wrk) and the attacker on CPU CLIENT_CPU (1), in both
# phases; the server and the load generator each in a session (so a
# scheduling group, with autogroup on) of its own at nice NICE (-10), the
# attacker in the load generator's session under SCHED_IDLE
# (ATTACKER_PREFIX, "chrt --idle 0"): it gets the CPU the nodes' load
# leaves and never delays a wakeup of wrk. In a session of its own at nice
# 0 (ATTACKER_PREFIX=setsid, the earlier layout) its time slices kept wrk
# off the shared core for milliseconds while the 16 requests in flight
# kept the server busy for a fraction of one, so the server's core sat
# 13-15 % idle under the flood and the ratio measured the client core's
# scheduling. The ratio then measures what the server can do on its core,
# not CPU the attacker process takes from it or from the nodes' load (a
# remote attacker brings its own), nor what other work on the machine
# takes. PIN=0 leaves placement and priority to the scheduler. Pinned, the
# table also shows how busy each of the two cores was (softirq included).
# Every process is bounded in time (wrk by its -d and a timeout) and killed
# on exit. See bench/README.md, "Slowloris".
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
WORKERS=${WORKERS:-16}
FLOOD=${FLOOD:-20000}
FLOOD_ADDRS=${FLOOD_ADDRS:-1}
PIN=${PIN:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NICE=${NICE:--10}
BOOT_LOAD=${BOOT_LOAD:-wrk}
export KEEPALIVE=${KEEPALIVE:-1}

die() {
  echo "slowloris.sh: $*" >&2
  exit 1
}
command -v curl >/dev/null 2>&1 || die "missing curl; on Debian: apt-get install curl"
case $BOOT_LOAD in
wrk) command -v wrk >/dev/null 2>&1 || die "missing wrk; on Debian: apt-get install wrk (or BOOT_LOAD=tasks)" ;;
tasks) ;;
*) die "BOOT_LOAD is wrk or tasks, not $BOOT_LOAD" ;;
esac
server_cmd=()
client_cmd=()
if [[ $PIN == 1 ]]; then
  command -v taskset >/dev/null 2>&1 || die "missing taskset (util-linux); or run with PIN=0"
  command -v setsid >/dev/null 2>&1 || die "missing setsid (util-linux); or run with PIN=0"
  command -v chrt >/dev/null 2>&1 || die "missing chrt (util-linux); or run with PIN=0"
  server_cmd=(setsid taskset -c "$SERVER_CPU")
  client_cmd=(setsid -w taskset -c "$CLIENT_CPU")
  # The load generator starts the attacker's processes under this.
  export ATTACKER_PREFIX=${ATTACKER_PREFIX:-chrt --idle 0}
  # The load generator reports how busy these two cores were.
  export SERVER_CPU CLIENT_CPU
fi

if [[ -z ${OPENCHAMI_BIN:-} ]]; then
  echo "building the release binary and load generator (nice -n 10 cargo build --release)…" >&2
  nice -n 10 cargo build --release --quiet
  OPENCHAMI_BIN=target/release/openchami
fi
[[ -x $OPENCHAMI_BIN ]] || die "$OPENCHAMI_BIN is not an executable"
BIN=$(cd "$(dirname "$OPENCHAMI_BIN")" && pwd)/$(basename "$OPENCHAMI_BIN")
if [[ -n ${LOAD_BIN:-} ]]; then
  LOAD=$LOAD_BIN
else
  nice -n 10 cargo build --release --quiet --example slowloris_load
  LOAD=target/release/examples/slowloris_load
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/openchami-bench-slowloris.XXXXXX")
server_pid=
load_pid=
cleanup() {
  local rc=$?
  set +e
  if [[ -n $load_pid ]]; then
    # Its children (the attacker's processes, the boot script command)
    # before it goes and they are reparented; wrk by its pid file.
    kill $(pgrep -P "$load_pid") "$load_pid" 2>/dev/null
    [[ -s $tmp/wrk.pid ]] && kill "$(cat "$tmp/wrk.pid")" 2>/dev/null
  fi
  if [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null; then
    # Not always this shell's child (see `started`): wait for it to go.
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    if ! port_in_use "$p"; then
      echo "$p"
      return
    fi
  done
  die "no free loopback port found"
}
API_PORT=$(free_port)
NODE_PORT=$(free_port)
NODE_BASE=http://127.0.0.1:$NODE_PORT

cat >"$tmp/config.toml" <<EOF
state_dir = "$tmp/state"

[api]
listen = "127.0.0.1:$API_PORT"

[node]
listen = "127.0.0.1:$NODE_PORT"
advertise = "$NODE_BASE"
EOF
# The server raises its soft descriptor limit to the hard one itself.
# `setsid` forks when it is called as a process group leader: each
# process writes its own pid before it becomes the program measured.
started() {
  for _ in $(seq 1 100); do
    [[ -s $1 ]] && cat "$1" && return
    sleep 0.05
  done
  die "$1 was not written"
}
"${server_cmd[@]}" sh -c 'echo $$ >"$0"; exec "$@"' "$tmp/server.pid" \
  "$BIN" --config "$tmp/config.toml" serve >"$tmp/server.log" 2>&1 &
server_pid=$(started "$tmp/server.pid")
# With autogroup, a session's weight is its autogroup's nice, not its
# processes' (and within the session, nice still applies).
prioritize() {
  [[ $PIN == 1 ]] || return 0
  echo "$NICE" >"/proc/$1/autogroup" 2>/dev/null || renice -n "$NICE" -p "$1" >/dev/null 2>&1 ||
    echo "slowloris.sh: cannot raise the priority of $1; measuring without" >&2
}
prioritize "$server_pid"
for _ in $(seq 1 200); do
  curl -sf -o /dev/null "$NODE_BASE/healthz" && break
  sleep 0.05
done
curl -sf -o /dev/null "$NODE_BASE/healthz" || die "openchami did not start: $(tail -5 "$tmp/server.log")"

cat >"$tmp/cluster.yaml" <<EOF
nodes:
  - name: n0
    nid: 1
    xname: x1000c0s0b0n0
    group: compute
    interfaces:
      - mac_addr: 02:00:00:00:00:01
        ip_addrs:
          - name: internal
            ip_addr: 10.1.0.1
EOF
cli=("$BIN" --config "$tmp/config.toml")
"${cli[@]}" import -f "$tmp/cluster.yaml" >/dev/null
"${cli[@]}" boot params set --tag Default \
  --kernel "$NODE_BASE/artifacts/vmlinuz" --initrd "$NODE_BASE/artifacts/initrd.img" \
  --params "console=ttyS0,115200 ip=dhcp" >/dev/null
curl -sf "$NODE_BASE/boot/v1/bootscript?mac=02:00:00:00:00:01" | grep -q '^kernel ' ||
  die "the node did not get a boot script"
token=$("${cli[@]}" token issue --ttl 1h)

# The boot script load of one phase, run by the load generator with the
# phase's length in PHASE_SECONDS; prints REQUESTS ERRORS SECONDS.
if [[ $BOOT_LOAD == wrk ]]; then
  lua_list() { # file -> lua table literal
    printf '{'
    sed 's/.*/"&",/' "$1" | tr -d '\n'
    printf '}'
  }
  grep -o 'mac_addr: [0-9a-f:]*' "$tmp/cluster.yaml" | cut -d' ' -f2 >"$tmp/macs"
  cat >"$tmp/script.lua" <<EOF
local ms = $(lua_list "$tmp/macs")
request = function()
  return wrk.format("GET", "/boot/v1/bootscript?mac=" .. ms[math.random(#ms)])
end
EOF
  export BENCH_TMP=$tmp NODE_BASE WORKERS
  cat >"$tmp/boot.sh" <<'EOF'
set -eu
close=()
[[ $KEEPALIVE == 1 ]] || close=(-H "Connection: close")
out=$(mktemp "$BENCH_TMP/wrk.XXXXXX")
timeout -k 5 $((PHASE_SECONDS + 20)) wrk -t1 -c"$WORKERS" -d"${PHASE_SECONDS}s" "${close[@]}" \
  -s "$BENCH_TMP/script.lua" "$NODE_BASE" >"$out" 2>&1 &
echo $! >"$BENCH_TMP/wrk.pid" # timeout's, which passes a signal on to wrk
wait $! || true
awk '
/ requests in / { req = $1 }
/^Requests\/sec:/ { rps = $2 }
/Non-2xx or 3xx responses:/ { bad += $NF }
/Socket errors:/ { gsub(",", ""); bad += $4 + $6 + $8 + $10 }
END { printf "%d %d %.3f\n", req, bad + (req == "" ? 1 : 0), (rps > 0 ? req / rps : 0) }' "$out"
EOF
  export BOOT_LOAD_CMD="bash $tmp/boot.sh"
  export BOOT_LOAD_DESC="wrk, $WORKERS connections ($([[ $KEEPALIVE == 1 ]] && echo keep-alive || echo a connection per request))"
else
  unset BOOT_LOAD_CMD
fi

if [[ $PIN == 1 ]]; then
  echo "pinned: server on CPU $SERVER_CPU, load generator ($BOOT_LOAD) and attacker on CPU $CLIENT_CPU;" \
    "server and load generator at nice $NICE, attacker under: $ATTACKER_PREFIX"
else
  echo "not pinned (PIN=0)"
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"${client_cmd[@]}" sh -c 'echo $$ >"$0"; exec "$@"' "$tmp/load.pid" "$LOAD" --node "127.0.0.1:$NODE_PORT" --api "https://127.0.0.1:$API_PORT" \
  --ca "$tmp/state/ca/root.crt" --token "$token" --mac 02:00:00:00:00:01 \
  --pid "$server_pid" --duration "$DURATION" --workers "$WORKERS" \
  --flood "$FLOOD" --flood-addrs "$FLOOD_ADDRS" &
load_job=$!
load_pid=$(started "$tmp/load.pid")
prioritize "$load_pid"
wait "$load_job"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "server log lines \"Too many open files\": $(grep -c "Too many open files" "$tmp/server.log" || true)"
