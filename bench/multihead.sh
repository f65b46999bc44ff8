#!/usr/bin/env bash
# Several heads on PostgreSQL versus one head on SQLite, in one run.
#
#   bash bench/multihead.sh
#   N=2000 DURATION=10 OPENCHAMI_BIN=target/release/openchami bash bench/multihead.sh
#
# Starts a throwaway PostgreSQL cluster (initdb in a temporary directory,
# Unix socket only, default durability settings: fsync and synchronous
# commit on) and four appliances on loopback, each with a state directory
# of its own:
#
#   sqlite    one head on its embedded SQLite store
#   pg        one head on PostgreSQL (database `one`)
#   pg2a/b    two heads sharing PostgreSQL (database `two`)
#
# and measures, each store set-up after the other:
#
#   writes       component PATCHes per second (`PATCH /hsm/v2/State/Components/
#                {x}/SoftwareStatus`, each a real change, random node) from
#                CONNECTIONS (64) wrk connections over HTTPS for DURATION s,
#                from two wrk processes in every set-up (on two heads, one
#                each), so the load has the same shape whatever serves it. With the CPU
#                seconds the heads and the database server used per 1,000
#                writes.
#   propagation  on two heads: a PATCH acknowledged by head a, then head b
#                polled (keep-alive, no pause) until it serves the new value;
#                p50/p99/max over PROPAGATION (500) writes, one at a time.
#   idle         each set-up's CPU over IDLE_SECS (5) with no requests, in %
#                of a core; "net of idle" rows subtract it.
#   bootscript   boot script requests per second on the node listener (wrk,
#                keep-alive, random MAC of the N nodes) and the heads' CPU
#                seconds per 1,000 requests; on two heads both are loaded.
#                And the control: two SQLite heads that share nothing, on
#                the same CPU and loaded the same way. Two processes taking
#                turns on one core cost more per request than one (1.1-1.35x
#                measured here, varying from run to run) whatever they
#                share; the control shows what the two PostgreSQL heads'
#                sharing adds on top of that. The set-ups take turns in
#                READ_ROUNDS (3) rounds; each figure is a median. Then the
#                same paced (READ_PACE_MS, 5: each connection waits that
#                long between requests; 0 skips it), so every set-up serves
#                about the same rate with room to spare, as the DHCP rows
#                compare at a common rate.
#   dhcp         last: the heads restarted in network namespaces with DHCP
#                on, perfdhcp on the same L2; DORA/s with < 1 % unfinished
#                for pool clients (new bindings: writes) and reserved
#                clients (inventory MACs: reads), CPU per 1,000 exchanges at
#                a common rate, and on two heads a check that no address
#                went to two MACs. See bench/multihead_dhcp.sh for its knobs
#                (DHCP=0 skips it).
#
# Placement: heads and the database on CPU SERVER_CPU (0), wrk and the
# probes on CLIENT_CPU (1). On a two-core machine compare CPU per request,
# not totals (target: reads on PostgreSQL ≤ 1.2× the SQLite head's CPU per
# request). Needs root (PostgreSQL runs as `postgres` or `nobody`; network
# namespaces), wrk, python3, PostgreSQL's server programs (Debian:
# postgresql) and for the DHCP phase iproute2 and Kea's perfdhcp (kea-admin).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
PROPAGATION=${PROPAGATION:-500}
READ_ROUNDS=${READ_ROUNDS:-3}
READ_PACE_MS=${READ_PACE_MS:-5}
IDLE_SECS=${IDLE_SECS:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

die() {
  echo "multihead.sh: $*" >&2
  exit 1
}
for c in wrk python3 curl taskset runuser; do
  command -v "$c" >/dev/null 2>&1 || die "missing $c"
done
. bench/multihead_dhcp.sh
dhcp_check_tools
PGBIN=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")")
[[ -x $PGBIN/initdb ]] || die "PostgreSQL's initdb not found (Debian: apt-get install postgresql)"
if [[ -z ${OPENCHAMI_BIN:-} ]]; then
  nice -n 10 cargo build --release --quiet --bin openchami
  OPENCHAMI_BIN=target/release/openchami
fi
BIN=$(readlink -f "$OPENCHAMI_BIN")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/openchami-bench-multihead.XXXXXX")
chmod 755 "$tmp"
PGUSER_OS=postgres
id -u postgres >/dev/null 2>&1 || PGUSER_OS=nobody
pids=()
cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  dhcp_cleanup
  [[ -d $tmp/pg/data ]] && runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- PostgreSQL
mkdir -p "$tmp/pg"
chown "$PGUSER_OS" "$tmp/pg"
runuser -u "$PGUSER_OS" -- "$PGBIN/initdb" -D "$tmp/pg/data" -U openchami --auth=trust -E UTF8 >"$tmp/pg/initdb.log" 2>&1 ||
  die "initdb failed: $(tail -3 "$tmp/pg/initdb.log")"
runuser -u "$PGUSER_OS" -- taskset -c "$SERVER_CPU" "$PGBIN/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" -w \
  -o "-k $tmp/pg -c listen_addresses= -c max_connections=200" start >/dev/null || die "PostgreSQL did not start"
PG_PID=$(head -1 "$tmp/pg/data/postmaster.pid")
pghost=$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$tmp/pg")
for db in one two; do
  runuser -u "$PGUSER_OS" -- "$PGBIN/psql" -h "$tmp/pg" -U openchami -d postgres -qc "CREATE DATABASE $db" >/dev/null
done

# ---- heads
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  die "no free port"
}
declare -A API NODE PID
start_head() { # name [store url]
  local name=$1 url=${2:-} dir=$tmp/$1
  mkdir -p "$dir"
  API[$name]=$(free_port)
  NODE[$name]=$(free_port)
  {
    echo "state_dir = \"$dir/state\""
    echo "[api]"
    echo "listen = \"127.0.0.1:${API[$name]}\""
    echo "[node]"
    echo "listen = \"127.0.0.1:${NODE[$name]}\""
    echo "advertise = \"http://127.0.0.1:${NODE[$name]}\""
    if [[ -n $url ]]; then
      echo "[store]"
      echo "url = \"$url\""
      echo "kek_file = \"$tmp/kek.key\""
    fi
  } >"$dir/config.toml"
  taskset -c "$SERVER_CPU" "$BIN" --config "$dir/config.toml" serve >"$dir/log" 2>&1 &
  PID[$name]=$!
  pids+=("${PID[$name]}")
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://127.0.0.1:${NODE[$name]}/healthz" && return
    sleep 0.05
  done
  die "$name did not start: $(tail -5 "$dir/log")"
}
cli() { # name args...
  local name=$1
  shift
  "$BIN" --config "$tmp/$name/config.toml" "$@"
}
start_head sqlite
start_head pg "postgres://openchami@$pghost/one"
start_head pg2a "postgres://openchami@$pghost/two"
start_head pg2b "postgres://openchami@$pghost/two"
# The control for two heads on one CPU: two SQLite heads sharing nothing.
start_head sq2a
start_head sq2b

python3 bench/gen_cluster.py "$N" >"$tmp/cluster.yaml"
grep -o 'xname: x[0-9a-z]*' "$tmp/cluster.yaml" | cut -d' ' -f2 >"$tmp/xnames"
grep -o 'mac_addr: [0-9a-f:]*' "$tmp/cluster.yaml" | cut -d' ' -f2 >"$tmp/macs"
for h in sqlite pg pg2a sq2a sq2b; do
  cli "$h" import -f "$tmp/cluster.yaml" >/dev/null
  cli "$h" boot params set --tag Default --kernel "http://127.0.0.1/vmlinuz" \
    --initrd "http://127.0.0.1/initrd.img" --params "console=ttyS0" >/dev/null
done
declare -A TOKEN CAFILE
for h in sqlite pg pg2a pg2b; do
  TOKEN[$h]=$(cli "$h" token issue --ttl 1h)
  CAFILE[$h]=$tmp/$h/ca.pem
  curl -sfk "https://127.0.0.1:${API[$h]}/ca/root.pem" -o "${CAFILE[$h]}" ||
    cp "$tmp/$h/state/ca/root.crt" "${CAFILE[$h]}"
done
# The second head serves what the first imported.
for _ in $(seq 1 100); do
  [[ $(curl -s "http://127.0.0.1:${NODE[pg2b]}/boot/v1/bootscript?mac=$(head -1 "$tmp/macs")" | head -c 6) == "#!ipxe" ]] && break
  sleep 0.1
done

# ---- wrk scripts
lua_list() { # file -> lua table literal
  printf '{'
  sed 's/.*/"&",/' "$1" | tr -d '\n'
  printf '}'
}
cat >"$tmp/patch.lua" <<EOF
local xs = $(lua_list "$tmp/xnames")
local n = 0
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
function setup(thread) thread:set("id", math.random(1, 1000000)) end
request = function()
  n = n + 1
  local x = xs[math.random(#xs)]
  return wrk.format(nil, "/hsm/v2/State/Components/" .. x .. "/SoftwareStatus", nil,
    '{"SoftwareStatus":"s' .. id .. '-' .. n .. '"}')
end
EOF
cat >"$tmp/script.lua" <<EOF
local ms = $(lua_list "$tmp/macs")
request = function()
  return wrk.format("GET", "/boot/v1/bootscript?mac=" .. ms[math.random(#ms)])
end
EOF
# The same requests, each connection waiting READ_PACE_MS between them:
# a rate every set-up serves with room to spare.
{
  cat "$tmp/script.lua"
  echo "delay = function() return $READ_PACE_MS end"
} >"$tmp/paced.lua"

# CPU seconds (user + system) of a process, and for the database server of
# the postmaster, the children it reaped and those alive.
cpu_of() {
  python3 - "$@" <<'EOF'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
def fields(p):
    s = open(f"/proc/{p}/stat").read()
    return s[s.rindex(")") + 2:].split()
total = 0
for p in sys.argv[1:]:
    f = fields(p)
    total += int(f[11]) + int(f[12])
    if p == os.environ.get("PG_PID"):
        total += int(f[13]) + int(f[14])
        for c in os.listdir("/proc"):
            if c.isdigit():
                try:
                    g = fields(c)
                except OSError:
                    continue
                if g[1] == p:
                    total += int(g[11]) + int(g[12])
print(total / hz)
EOF
}
export PG_PID

declare -A RESULT
setup_heads() { # setup -> HEADS, PROCS (heads, then the database server)
  local h
  case $1 in
  sqlite) HEADS=(sqlite) ;;
  pg) HEADS=(pg) ;;
  pg2) HEADS=(pg2a pg2b) ;;
  sq2) HEADS=(sq2a sq2b) ;;
  esac
  PROCS=()
  for h in "${HEADS[@]}"; do PROCS+=("${PID[$h]}"); done
  [[ $1 == pg* ]] && PROCS+=("$PG_PID")
  return 0
}
# What a set-up burns with no requests at all (lease renewals, the change
# feed, timers; for PostgreSQL its own background work), in % of a core,
# over IDLE_SECS.
idle() { # setup
  setup_heads "$1"
  local before after
  before=$(cpu_of "${PROCS[@]}")
  sleep "$IDLE_SECS"
  after=$(cpu_of "${PROCS[@]}")
  RESULT[idle.$1.pct]=$(python3 -c "print(f'{($after - $before) / $IDLE_SECS * 100:.1f}')")
}
median() {
  python3 -c 'import statistics, sys; v = [float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.{3 if max(v) < 100 else 0}f}")' "$@"
}
# RESULT[kind.setup.field] = the median of RESULT[kind.setup.<round>.field]
# over `rounds` rounds, for each setup and field.
medians() { # kind rounds "field..." setup...
  local kind=$1 rounds=$2 fields=$3 setup f r vals
  shift 3
  for setup in "$@"; do
    for f in $fields; do
      vals=()
      for r in $(seq 1 "$rounds"); do vals+=("${RESULT[$kind.$setup.$r.$f]}"); done
      RESULT[$kind.$setup.$f]=$(median "${vals[@]}")
    done
  done
}
# The CPU per 1,000 of set-up a over set-up b, round by round.
by_round() { # kind rounds a b
  local r
  for r in $(seq 1 "$2"); do
    python3 -c "print(f'{${RESULT[$1.$3.$r.cpu]} / ${RESULT[$1.$4.$r.cpu]}:.2f}')"
  done | paste -sd' '
}
phase() { # kind setup [round]
  local kind=$1 setup=$2 round=${3:-} lua path url c h j
  setup_heads "$setup"
  local heads=("${HEADS[@]}") procs=("${PROCS[@]}")
  c=$((CONNECTIONS / 2))
  local before total=0 bad=0 hprocs=("${procs[@]}") hbefore
  [[ $setup == pg* ]] && unset 'hprocs[-1]'
  before=$(cpu_of "${procs[@]}")
  hbefore=$(cpu_of "${hprocs[@]}")
  local outs=() jobs=()
  # Two wrk processes in every set-up, a head each where there are two, so
  # the load arrives in the same pattern whatever serves it.
  for j in 0 1; do
    h=${heads[$((j % ${#heads[@]}))]}
    if [[ $kind == writes ]]; then
      url="https://127.0.0.1:${API[$h]}"
      lua=$tmp/patch.lua
    else
      url="http://127.0.0.1:${NODE[$h]}"
      lua=$tmp/script.lua
      [[ $kind == paced ]] && lua=$tmp/paced.lua
    fi
    (
      TOKEN=${TOKEN[$h]:-} taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${DURATION}s" -s "$lua" "$url" >"$tmp/wrk.$j.out" 2>&1 || true
    ) &
    jobs+=($!)
    outs+=("$tmp/wrk.$j.out")
  done
  wait "${jobs[@]}"
  local after hafter
  after=$(cpu_of "${procs[@]}")
  hafter=$(cpu_of "${hprocs[@]}")
  read -r total bad < <(python3 - "${outs[@]}" <<'EOF'
import re, sys
total = bad = 0
for f in sys.argv[1:]:
    t = open(f).read()
    m = re.search(r"(\d+) requests in", t)
    total += int(m.group(1)) if m else 0
    bad += sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", t))
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    if e: bad += sum(int(x) for x in e.groups())
print(total, bad)
EOF
  )
  local k=$kind.$setup${round:+.$round}
  RESULT[$k.rate]=$(python3 -c "print(f'{$total / $DURATION:.0f}')")
  RESULT[$k.cpu]=$(python3 -c "print(f'{($after - $before) / max($total, 1) * 1000:.3f}')")
  RESULT[$k.hcpu]=$(python3 -c "print(f'{($hafter - $hbefore) / max($total, 1) * 1000:.3f}')")
  # Net of what the set-up burns idle over the same time.
  RESULT[$k.net]=$(python3 -c "print(f'{max($after - $before - ${RESULT[idle.$setup.pct]:-0} / 100 * $DURATION, 0) / max($total, 1) * 1000:.3f}')")
  RESULT[$k.bad]=$bad
  [[ -n $round ]] && printf '  %-10s %-6s round %s: %6s req/s, %s CPU s per 1,000 (heads + database)\n' \
    "$kind" "$setup" "$round" "${RESULT[$k.rate]}" "${RESULT[$k.cpu]}"
  return 0
}
# Boot scripts: READ_ROUNDS rounds, the set-ups taking turns in each, so a
# change in what else the machine does falls on all of them alike; each
# figure is the median of its rounds.
read_phases() {
  local setup r kind kinds=(bootscript)
  ((READ_PACE_MS > 0)) && kinds+=(paced)
  for r in $(seq 1 "$READ_ROUNDS"); do
    for setup in "$@"; do
      for kind in "${kinds[@]}"; do phase "$kind" "$setup" "$r"; done
    done
  done
  for kind in "${kinds[@]}"; do medians "$kind" "$READ_ROUNDS" "rate cpu hcpu net bad" "$@"; done
}

echo "multihead: $N nodes, ${DURATION} s per phase, $CONNECTIONS connections; heads and PostgreSQL on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for setup in sqlite pg pg2 sq2; do idle "$setup"; done
# Reads first: after the write phase the database server vacuums and
# checkpoints for a while, which would be counted against the reads.
read_phases sqlite pg pg2 sq2
kill "${PID[sq2a]}" "${PID[sq2b]}"
for setup in sqlite pg pg2; do
  phase writes "$setup"
done

# ---- propagation between the two heads
taskset -c "$CLIENT_CPU" python3 - "$PROPAGATION" "${API[pg2a]}" "${API[pg2b]}" "${CAFILE[pg2a]}" "${CAFILE[pg2b]}" \
  "${TOKEN[pg2a]}" "${TOKEN[pg2b]}" "$tmp/xnames" >"$tmp/prop.out" <<'EOF'
import http.client, json, ssl, sys, time
n, pa, pb, ca_a, ca_b, token, token_b, xfile = sys.argv[1:9]
xs = open(xfile).read().split()
def conn(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    return http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
a, b = conn(pa, ca_a), conn(pb, ca_b)
h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
lat = []
for i in range(int(n)):
    x = xs[i % len(xs)]
    v = f"p{i}-{time.time_ns()}"
    a.request("PATCH", f"/hsm/v2/State/Components/{x}/SoftwareStatus", json.dumps({"SoftwareStatus": v}), h)
    r = a.getresponse(); r.read()
    if r.status >= 300:
        sys.exit(f"PATCH {x}: {r.status}")
    t0 = time.monotonic()
    while True:
        b.request("GET", f"/hsm/v2/State/Components/{x}", headers={"Authorization": f"Bearer {token_b}"})
        r = b.getresponse(); body = r.read()
        if r.status == 200 and json.loads(body).get("SoftwareStatus") == v:
            break
        if time.monotonic() - t0 > 10:
            sys.exit(f"{x} not seen on the second head after 10 s: {r.status} {body[:300]!r}, wanted {v}")
    lat.append((time.monotonic() - t0) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"{q(0.5):.1f} {q(0.99):.1f} {lat[-1]:.1f}")
EOF
read -r p50 p99 pmax <"$tmp/prop.out"
dhcp_phase
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

printf '\n%-40s %12s %12s %12s %10s %10s\n' "" "SQLite" "PostgreSQL" "2 heads PG" "PG/SQLite" "2h/SQLite"
row() { # label kind field
  local s=${RESULT[$2.sqlite.$3]} p=${RESULT[$2.pg.$3]} d=${RESULT[$2.pg2.$3]}
  printf '%-40s %12s %12s %12s %10s %10s\n' "$1" "$s" "$p" "$d" \
    "$(python3 -c "print(f'{$p / $s:.2f}' if $s else '-')")" "$(python3 -c "print(f'{$d / $s:.2f}' if $s else '-')")"
}
row "component PATCH/s ($CONNECTIONS conns)" writes rate
row "  CPU s per 1,000 (heads + database)" writes cpu
row "  CPU s per 1,000 (heads only)" writes hcpu
row "  errors" writes bad
row "bootscript req/s ($CONNECTIONS conns)" bootscript rate
row "  CPU s per 1,000 (heads + database)" bootscript cpu
row "  CPU s per 1,000 (heads only)" bootscript hcpu
row "  CPU s per 1,000 net of idle (heads + db)" bootscript net
row "  errors" bootscript bad
if ((READ_PACE_MS > 0)); then
  row "bootscript req/s, paced (${READ_PACE_MS} ms apart)" paced rate
  row "  CPU s per 1,000 (heads + database)" paced cpu
fi
row "idle CPU, no requests (% of a core)" idle pct
dhcp_rows
echo
echo "propagation head a -> head b over $PROPAGATION writes: p50 $p50 ms, p99 $p99 ms, max $pmax ms (target p99 < 200 ms)"
cpu_read=$(python3 -c "print(f'{${RESULT[bootscript.pg2.cpu]} / ${RESULT[bootscript.sqlite.cpu]}:.2f}')")
coloc=$(python3 -c "print(f'{${RESULT[bootscript.sq2.cpu]} / ${RESULT[bootscript.sqlite.cpu]}:.2f}')")
shared=$(python3 -c "print(f'{${RESULT[bootscript.pg2.cpu]} / ${RESULT[bootscript.sq2.cpu]}:.2f}')")
echo "bootscript on two SQLite heads sharing nothing, same CPU: ${RESULT[bootscript.sq2.rate]} req/s, ${RESULT[bootscript.sq2.cpu]} CPU s per 1,000 = ${coloc}x one head (two processes on one core)"
net_read=$(python3 -c "print(f'{${RESULT[bootscript.pg2.net]} / ${RESULT[bootscript.sqlite.net]}:.2f}')")
rounds=$(by_round bootscript "$READ_ROUNDS" pg2 sqlite)
echo "target: reads on two PostgreSQL heads <= 1.2x the SQLite head's CPU per request: ${cpu_read}x (median of $READ_ROUNDS rounds; by round: $rounds; ${shared}x two heads sharing nothing; ${net_read}x net of idle)"
if ((READ_PACE_MS > 0)); then
  rounds=$(by_round paced "$READ_ROUNDS" pg2 sqlite)
  echo "  paced (every set-up at about ${RESULT[paced.sqlite.rate]} req/s): two PostgreSQL heads" \
    "$(python3 -c "print(f'{${RESULT[paced.pg2.cpu]} / ${RESULT[paced.sqlite.cpu]}:.2f}')")x the SQLite head (by round: $rounds)," \
    "two SQLite heads sharing nothing $(python3 -c "print(f'{${RESULT[paced.sq2.cpu]} / ${RESULT[paced.sqlite.cpu]}:.2f}')")x," \
    "two PostgreSQL heads $(python3 -c "print(f'{${RESULT[paced.pg2.cpu]} / ${RESULT[paced.sq2.cpu]}:.2f}')")x those"
fi
dhcp_summary
