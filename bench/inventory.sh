#!/usr/bin/env bash
# Inventory benchmark of the openchami appliance (release build).
#
# Measures, on loopback only:
#   cold start   spawn of `openchami serve` on an empty state dir -> first 200
#                from GET /hsm/v2/service/ready (median of COLD_RUNS)
#   import       `openchami import -f cluster.yaml` of N nodes, then again
#                (the second run must change nothing)
#   load         wrk against GET /hsm/v2/State/Components (all, anonymous)
#                and GET /hsm/v2/State/Components/<xname> (bearer token)
#   RSS          server VmRSS after the import and after the load runs
#   restart      spawn -> ready on the state dir holding the N-node inventory
#
# Every figure is printed as a table and as machine-readable lines:
#   figure: <name> <value> <unit> <target|-> <ok|MISS|->
#
# Knobs (environment): N, NODE_GROUPS, DURATION, THREADS, CONNECTIONS,
# COLD_RUNS, WRK_TIMEOUT, API_PORT, NODE_PORT, OPENCHAMI_BIN, KEEP_WORK. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

N=${N:-10000}
NODE_GROUPS=${NODE_GROUPS:-1}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
COLD_RUNS=${COLD_RUNS:-5}
WRK_TIMEOUT=${WRK_TIMEOUT:-30}
KEEP_WORK=${KEEP_WORK:-0}

# Targets (the load figures have none).
TARGET_IMPORT_S=1
TARGET_RSS_MIB=64
TARGET_COLD_MS=100

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
WORK=""
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill -TERM "$SERVER_PID" 2>/dev/null || true
            for _ in $(seq 1 150); do
                kill -0 "$SERVER_PID" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_server
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "$KEEP_WORK" == 1 ]]; then
            log "kept $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk; then
    if [[ $(id -u) -eq 0 ]] && need apt-get; then
        log "installing wrk"
        DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } \
            || die "cannot install wrk"
    else
        die "wrk is required (Debian: apt-get install wrk)"
    fi
fi
for t in python3 curl; do need "$t" || die "$t is required"; done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer"

# ---------------------------------------------------------------- build
if [[ -n "${OPENCHAMI_BIN:-}" ]]; then
    BIN=$OPENCHAMI_BIN
else
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "release build failed"
    BIN="$ROOT/target/release/openchami"
fi
[[ -x "$BIN" ]] || die "no executable at $BIN"

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/openchami-bench.XXXXXX")

# ---------------------------------------------------------------- ports
port_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
API_PORT=${API_PORT:-$(free_port)}
NODE_PORT=${NODE_PORT:-$(free_port)}
[[ "$API_PORT" != "$NODE_PORT" ]] || NODE_PORT=$(free_port)
port_free "$API_PORT" || die "port $API_PORT on 127.0.0.1 is in use"
port_free "$NODE_PORT" || die "port $NODE_PORT on 127.0.0.1 is in use"
URL="https://127.0.0.1:$API_PORT"
READY="$URL/hsm/v2/service/ready"

# A config binding loopback only, with its own state dir.
write_config() { # <config path> <state dir>
    cat >"$1" <<EOF
state_dir = "$2"
cluster_name = "bench"

[api]
listen = "127.0.0.1:$API_PORT"

[node]
listen = "127.0.0.1:$NODE_PORT"
EOF
}

now_s() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.1f}")' "$@"; }
# CPU seconds (user + system, all threads) the process has used so far.
CLK_TCK=$(getconf CLK_TCK)
cpu_s() { # <pid>
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}
cpu_delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }
rss_mib() { # <pid> <field: VmRSS|VmHWM>
    awk -v f="$2:" '$1 == f { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}

# ---------------------------------------------------------------- cold start
log "cold start: $COLD_RUNS runs on empty state dirs (api $URL)"
cold=()
cold_cpu=()
for i in $(seq 1 "$COLD_RUNS"); do
    d="$WORK/cold$i"
    mkdir -p "$d"
    write_config "$d/config.toml" "$d/state"
    out=$(python3 "$HERE/coldstart.py" "$READY" "$d/server.log" -- \
        "$BIN" --config "$d/config.toml" serve) || die "cold start run $i failed (log: $d/server.log)"
    read -r ms cpu <<<"$out"
    log "  run $i: $ms ms (server CPU $cpu ms)"
    cold+=("$ms")
    cold_cpu+=("$cpu")
    port_free "$API_PORT" || sleep 0.2
done
COLD_MS=$(median "${cold[@]}")
COLD_CPU_MS=$(median "${cold_cpu[@]}")

# ---------------------------------------------------------------- server
STATE="$WORK/state"
CONFIG="$WORK/config.toml"
write_config "$CONFIG" "$STATE"
CLI=("$BIN" --config "$CONFIG" --state-dir "$STATE" --url "$URL")

start_server() {
    "$BIN" --config "$CONFIG" serve >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 30))
    until curl -sk -o /dev/null --fail --max-time 2 "$READY"; do
        kill -0 "$SERVER_PID" 2>/dev/null || die "server exited (log: $WORK/server.log)"
        ((SECONDS < deadline)) || die "server not ready after 30 s"
        sleep 0.01
    done
}
log "starting the server (state $STATE)"
start_server
CACERT="$STATE/ca/root.crt"
CLI+=(--cacert "$CACERT")
TOKEN=$("${CLI[@]}" token issue --ttl 2h) || die "token issue failed"
CLI+=(--token "$TOKEN")

# ---------------------------------------------------------------- import
CLUSTER="$WORK/cluster.yaml"
log "generating $N nodes ($NODE_GROUPS group(s))"
python3 "$HERE/gen_cluster.py" "$N" "$NODE_GROUPS" >"$CLUSTER"
log "  $(wc -c <"$CLUSTER") bytes"

import_once() { # <out json>; prints elapsed seconds
    local t0 t1
    t0=$(now_s)
    "${CLI[@]}" -o json import -f "$CLUSTER" >"$1" 2>"$1.err" \
        || die "import failed: $(cat "$1.err")"
    t1=$(now_s)
    elapsed "$t0" "$t1"
}
log "import 1 (empty inventory)"
c0=$(cpu_s "$SERVER_PID")
IMPORT1_S=$(import_once "$WORK/import1.json")
c1=$(cpu_s "$SERVER_PID")
IMPORT1_CPU=$(cpu_delta "$c0" "$c1")
log "  ${IMPORT1_S} s (server CPU ${IMPORT1_CPU} s): $(tr -d '\n ' <"$WORK/import1.json")"
RSS_IMPORT1=$(rss_mib "$SERVER_PID" VmRSS)
log "import 2 (same file, nothing to change)"
IMPORT2_S=$(import_once "$WORK/import2.json")
c2=$(cpu_s "$SERVER_PID")
IMPORT2_CPU=$(cpu_delta "$c1" "$c2")
log "  ${IMPORT2_S} s (server CPU ${IMPORT2_CPU} s): $(tr -d '\n ' <"$WORK/import2.json")"
RSS_IMPORT=$(rss_mib "$SERVER_PID" VmRSS)

python3 - "$WORK/import1.json" "$WORK/import2.json" "$N" <<'EOF' || die "import summaries are not as expected"
import json, sys
a, b, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
want = {"components": 2 * n, "interfaces": 2 * n, "endpoints": n}
got = {k: a["created"][k] for k in want}
if got != want:
    sys.exit(f"first import created {got}, expected {want}")
if b["changed"] != 0:
    sys.exit(f"second import changed {b['changed']} records")
EOF

# Sanity: the list holds every node and BMC; the single GET answers 200.
XNAME=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import gen_cluster; print(gen_cluster.xname(int(sys.argv[2]) // 2))' "$HERE" "$N")
LIST_URL="$URL/hsm/v2/State/Components"
ONE_URL="$URL/hsm/v2/State/Components/$XNAME"
count=$(curl -s --fail --cacert "$CACERT" "$LIST_URL" \
    | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["Components"]))') \
    || die "GET $LIST_URL failed"
[[ "$count" -eq $((2 * N)) ]] || die "list returned $count components, expected $((2 * N))"
LIST_BYTES=$(curl -s --fail --cacert "$CACERT" -o /dev/null -w '%{size_download}' "$LIST_URL")
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CACERT" \
    -H "Authorization: Bearer $TOKEN" "$ONE_URL")
[[ "$code" == 200 ]] || die "GET $ONE_URL answered $code"

# ---------------------------------------------------------------- load
# wrk does not verify the certificate; that is fine on loopback.
parse_wrk() { # <wrk output file>; prints "<req/s> <p99 ms> <non-2xx> <socket errors>"
    python3 - "$1" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        return float("nan")
    x, u = float(m.group(1)), m.group(2)
    return x * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[u]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if not rps or not p99:
    sys.exit("cannot parse wrk output")
errors = sum(int(g) for g in sock.groups()) if sock else 0
print(f"{float(rps.group(1)):.1f} {ms(p99.group(1)):.2f} {int(non2xx.group(1)) if non2xx else 0} {errors}")
EOF
}
run_wrk() { # <name> <url> [wrk args...]
    local name=$1 url=$2
    shift 2
    log "load: $name, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --timeout ${WRK_TIMEOUT}s"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout "${WRK_TIMEOUT}s" --latency "$@" "$url" >"$WORK/wrk-$name.txt" 2>&1 \
        || die "wrk failed: $(cat "$WORK/wrk-$name.txt")"
    sed 's/^/    /' "$WORK/wrk-$name.txt" >&2
    parse_wrk "$WORK/wrk-$name.txt"
}
# Requests wrk gave up on or left in flight may still be running when it
# exits; wait until readiness answers quickly before the next measurement.
settle() { # prints the seconds it took
    local t0 t deadline=$((SECONDS + 300))
    t0=$(now_s)
    while ((SECONDS < deadline)); do
        t=$(curl -sk -o /dev/null --max-time 10 -w '%{time_total}' "$READY") || t=99
        awk -v t="$t" 'BEGIN { exit !(t < 0.05) }' && break
        sleep 0.1
    done
    ((SECONDS < deadline)) || log "warning: server still busy after 300 s"
    elapsed "$t0" "$(now_s)"
}
read -r LIST_RPS LIST_P99 LIST_NON2XX LIST_ERR < <(run_wrk list "$LIST_URL")
LIST_DRAIN_S=$(settle)
log "  server answered readiness promptly again after $LIST_DRAIN_S s"
read -r ONE_RPS ONE_P99 ONE_NON2XX ONE_ERR < <(run_wrk one "$ONE_URL" -H "Authorization: Bearer $TOKEN")
[[ "$LIST_NON2XX$LIST_ERR$ONE_NON2XX$ONE_ERR" == 0000 ]] \
    || log "warning: errors (non-2xx/socket): list $LIST_NON2XX/$LIST_ERR, one $ONE_NON2XX/$ONE_ERR"
RSS_LOAD=$(rss_mib "$SERVER_PID" VmRSS)
HWM_LOAD=$(rss_mib "$SERVER_PID" VmHWM)

# ---------------------------------------------------------------- restart
stop_server
log "restart: $COLD_RUNS runs on the $N-node state dir"
warm=()
warm_cpu=()
for i in $(seq 1 "$COLD_RUNS"); do
    out=$(python3 "$HERE/coldstart.py" "$READY" "$WORK/restart.log" -- \
        "$BIN" --config "$CONFIG" serve) || die "restart run $i failed (log: $WORK/restart.log)"
    read -r ms cpu <<<"$out"
    log "  run $i: $ms ms (server CPU $cpu ms)"
    warm+=("$ms")
    warm_cpu+=("$cpu")
    port_free "$API_PORT" || sleep 0.2
done
RESTART_MS=$(median "${warm[@]}")
RESTART_CPU_MS=$(median "${warm_cpu[@]}")
log "restarted server: RSS with the $N-node inventory loaded"
start_server
RSS_RESTART=$(rss_mib "$SERVER_PID" VmRSS)
stop_server

# ---------------------------------------------------------------- report
status_lt() { # <value> <limit>
    python3 -c 'import sys; print("ok" if float(sys.argv[1]) < float(sys.argv[2]) else "MISS")' "$1" "$2"
}
rows=(
    "cold_start_ms $COLD_MS ms <$TARGET_COLD_MS $(status_lt "$COLD_MS" "$TARGET_COLD_MS")"
    "import_s $IMPORT1_S s <$TARGET_IMPORT_S $(status_lt "$IMPORT1_S" "$TARGET_IMPORT_S")"
    "import_again_s $IMPORT2_S s <$TARGET_IMPORT_S $(status_lt "$IMPORT2_S" "$TARGET_IMPORT_S")"
    "rss_after_import_mib $RSS_IMPORT MiB <$TARGET_RSS_MIB $(status_lt "$RSS_IMPORT" "$TARGET_RSS_MIB")"
    "rss_after_load_mib $RSS_LOAD MiB <$TARGET_RSS_MIB $(status_lt "$RSS_LOAD" "$TARGET_RSS_MIB")"
    "list_rps $LIST_RPS req/s - -"
    "list_p99_ms $LIST_P99 ms - -"
    "one_rps $ONE_RPS req/s - -"
    "one_p99_ms $ONE_P99 ms - -"
    "list_errors $((LIST_NON2XX + LIST_ERR)) count - -"
    "list_drain_s $LIST_DRAIN_S s - -"
    "one_errors $((ONE_NON2XX + ONE_ERR)) count - -"
    "cold_start_server_cpu_ms $COLD_CPU_MS ms - -"
    "import_server_cpu_s $IMPORT1_CPU s - -"
    "import_again_server_cpu_s $IMPORT2_CPU s - -"
    "rss_after_first_import_mib $RSS_IMPORT1 MiB - -"
    "rss_peak_mib $HWM_LOAD MiB - -"
    "rss_restarted_mib $RSS_RESTART MiB - -"
    "restart_ms $RESTART_MS ms - -"
    "restart_server_cpu_ms $RESTART_CPU_MS ms - -"
    "list_bytes $LIST_BYTES B - -"
)

echo
echo "openchami inventory benchmark: N=$N nodes ($((2 * N)) components with BMCs), $(nproc) CPUs,"
echo "load average at start: $LOADAVG_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --timeout ${WRK_TIMEOUT}s; single component $XNAME; cold/restart = median of $COLD_RUNS"
echo
printf '%-28s %12s %-6s %8s  %s\n' FIGURE VALUE UNIT TARGET STATUS
for r in "${rows[@]}"; do
    read -r name value unit target status <<<"$r"
    printf '%-28s %12s %-6s %8s  %s\n' "$name" "$value" "$unit" "$target" "$status"
done
echo
for r in "${rows[@]}"; do
    echo "figure: $r"
done
