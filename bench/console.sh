#!/usr/bin/env bash
# Console benchmark: CONSOLES (1000) simulated BMC serial consoles over SSH,
# each printing RATE (1024) bytes a second, kept open and logged by one
# appliance for DURATION (60) seconds, with one WebSocket viewer following
# the first console. Prints the appliance's CPU (% of one core, from
# /proc/PID/stat) and RSS, the console log bytes written, and the viewer's
# latency p99 from a line's stamp at the simulated BMC to its arrival at
# the viewer (targets: CPU < 10 % of one core, p99 < 100 ms).
# The viewed console is read at once while the viewer is attached; the
# other consoles, unwatched, are read in batches a second apart
# (src/console/pace.rs), so the latency is a watched console's, and the
# lines the first console's socket held when the viewer attached arrive at
# once and are counted apart (the viewer's history).
#
#   bash bench/console.sh
#
# The consoles are russh servers in one load process (bench/console_load.rs,
# redfish::simssh) on consecutive loopback addresses from 127.3.0.1, all on
# port PORT (2222), which the appliance's [console] ssh_port names, as on a
# management network where every BMC serves its console on one port. The
# power sampler is off (the simulated BMCs serve no Redfish).
# OPENCHAMI_BIN / LOAD_BIN: use these binaries instead of building.
# Smaller runs: CONSOLES=20 DURATION=10 (the figures scale per console).
# WRAP: a command the appliance runs under, e.g. to count its instructions
# (repeatable on a busy machine, unlike CPU time):
#   CONSOLES=20 DURATION=20 WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" \
#     bash bench/console.sh
# (with CONNECT_TIMEOUT=120: SSH handshakes are slow under valgrind),
# then `callgrind_control -z` once the consoles are connected and
# `callgrind_control -d` when the window ends count the window only.
set -euo pipefail
cd "$(dirname "$0")/.."

CONSOLES=${CONSOLES:-1000}
RATE=${RATE:-1024}
DURATION=${DURATION:-60}
PORT=${PORT:-2222}
FIRST=${FIRST:-127.3.0.1}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-10}

die() {
  echo "console.sh: $*" >&2
  exit 1
}
command -v curl >/dev/null 2>&1 || die "missing curl; on Debian: apt-get install curl"

if [[ -z ${OPENCHAMI_BIN:-} || -z ${LOAD_BIN:-} ]]; then
  echo "building the release binary and load program (nice -n 10 cargo build --release)…" >&2
  nice -n 10 cargo build --release --quiet --bin openchami --example console_load
fi
OPENCHAMI_BIN=${OPENCHAMI_BIN:-target/release/openchami}
LOAD_BIN=${LOAD_BIN:-target/release/examples/console_load}
[[ -x $OPENCHAMI_BIN ]] || die "$OPENCHAMI_BIN is not an executable"
[[ -x $LOAD_BIN ]] || die "$LOAD_BIN is not an executable"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/openchami-bench-console.XXXXXX")
server_pid=
cleanup() {
  local rc=$?
  set +e
  if [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null; then
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

cat >"$tmp/config.toml" <<CONF
state_dir = "$tmp/state"

[api]
listen = "127.0.0.1:$API_PORT"

[node]
listen = "127.0.0.1:$NODE_PORT"

[power]
sample_interval_secs = 0

[console]
ssh_port = $PORT
refresh_secs = 2
connect_timeout_secs = $CONNECT_TIMEOUT
CONF
# shellcheck disable=SC2086 # WRAP is a command line
${WRAP:-} "$OPENCHAMI_BIN" --config "$tmp/config.toml" serve >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 2400); do
  curl -sf -o /dev/null "http://127.0.0.1:$NODE_PORT/healthz" && break
  sleep 0.05
done
curl -sf -o /dev/null "http://127.0.0.1:$NODE_PORT/healthz" || die "openchami did not start: $(tail -5 "$tmp/server.log")"
token=$("$OPENCHAMI_BIN" --config "$tmp/config.toml" token issue --ttl 1h)

# A listener and a connection per console in the load program.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ $(ulimit -n) == unlimited || $(ulimit -n) -ge $((CONSOLES * 2 + 64)) ]] ||
  die "the descriptor limit $(ulimit -n) is too low for $CONSOLES consoles"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs, shared with whatever else runs)"
"$LOAD_BIN" --api "https://127.0.0.1:$API_PORT" --ca "$tmp/state/ca/root.crt" --token "$token" \
  --pid "$server_pid" --state-dir "$tmp/state" --consoles "$CONSOLES" --first "$FIRST" \
  --port "$PORT" --rate "$RATE" --duration "$DURATION"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
