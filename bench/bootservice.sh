#!/usr/bin/env bash
# boot-service script benchmark: GET /boot-service/bootscript?mac=… requests
# per second with a new TCP connection per request (as iPXE does), for 1,000
# nodes each matched through a group selector among 100 boot configurations,
# measured in one run against the legacy GET /boot/v1/bootscript?mac=… (same
# store, same configurations) and against nginx serving a static file of the
# same size. Prints the three rates, p99 latencies and the ratios (target:
# boot-service ≥ 0.9 × the legacy route).
#
#   bash bench/bootservice.sh
#
# Everything runs on 127.0.0.1 with a temporary state directory; the cluster
# file's MACs and addresses are only data. See bench/README.md, "boot-service
# script".
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
CONFIGS=${CONFIGS:-100}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

die() {
  echo "bootservice.sh: $*" >&2
  exit 1
}

missing=()
for tool in wrk nginx curl taskset; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  pkgs=()
  for t in "${missing[@]}"; do
    case $t in
    taskset) pkgs+=(util-linux) ;;
    *) pkgs+=("$t") ;;
    esac
  done
  die "missing ${missing[*]}; on Debian: apt-get install ${pkgs[*]}"
fi

if [[ -z ${OPENCHAMI_BIN:-} ]]; then
  echo "building the release binary (nice -n 10 cargo build --release)…" >&2
  nice -n 10 cargo build --release --quiet
  OPENCHAMI_BIN=target/release/openchami
fi
[[ -x $OPENCHAMI_BIN ]] || die "$OPENCHAMI_BIN is not an executable"
BIN=$(cd "$(dirname "$OPENCHAMI_BIN")" && pwd)/$(basename "$OPENCHAMI_BIN")

# CPU pinning: server on one CPU, load generator on another.
cpus=$(nproc)
if ((cpus >= 2)); then
  pin_server=(taskset -c "$SERVER_CPU")
  pin_client=(taskset -c "$CLIENT_CPU")
  pinning="server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
else
  pin_server=()
  pin_client=()
  pinning="not pinned (only $cpus CPU)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/openchami-bench-bootservice.XXXXXX")
server_pid=
nginx_pid=
cleanup() {
  local rc=$?
  for pid in $server_pid $nginx_pid; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $server_pid $nginx_pid; do
    wait "$pid" 2>/dev/null || true
  done
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
API_PORT=${API_PORT:-$(free_port)}
NODE_PORT=${NODE_PORT:-$(free_port)}
NGINX_PORT=${NGINX_PORT:-$(free_port)}
for p in "$API_PORT" "$NODE_PORT" "$NGINX_PORT"; do
  port_in_use "$p" && die "port $p is in use"
done
NODE_BASE=http://127.0.0.1:$NODE_PORT

wait_for() { # URL what
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.05
  done
  die "$2 did not answer $1 (logs in $tmp)"
}

# ------------------------------------------------------------- openchami
cat >"$tmp/config.toml" <<EOF
state_dir = "$tmp/state"

[api]
listen = "127.0.0.1:$API_PORT"

[node]
listen = "127.0.0.1:$NODE_PORT"
advertise = "$NODE_BASE"
EOF
"${pin_server[@]}" "$BIN" --config "$tmp/config.toml" serve >"$tmp/server.log" 2>&1 &
server_pid=$!
wait_for "$NODE_BASE/healthz" "openchami"

# N nodes in the current static-discovery format, each with a BMC and one
# NIC (MAC 02:00:00:xx:xx:xx), node i in group g<i mod CONFIGS>.
{
  echo "bmcs:"
  for ((i = 0; i < N; i++)); do
    printf '  - xname: x%dc%ds%db0\n    mac: 02:01:00:%02x:%02x:%02x\n    ip: 10.2.%d.%d\n' \
      $((1000 + i / 512)) $(((i / 64) % 8)) $((i % 64)) \
      $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) $((i >> 8 & 255)) $((i & 255))
  done
  echo "nodes:"
  for ((i = 0; i < N; i++)); do
    printf '  - name: n%d\n    nid: %d\n    xname: x%dc%ds%db0n0\n    groups: [g%02d]\n' \
      "$i" $((i + 1)) $((1000 + i / 512)) $(((i / 64) % 8)) $((i % 64)) $((i % CONFIGS))
    printf '    interfaces:\n      - mac_addr: 02:00:00:%02x:%02x:%02x\n        ip_addrs:\n          - name: internal\n            ip_addr: 10.1.%d.%d\n' \
      $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) $((i >> 8 & 255)) $((i & 255))
  done
} >"$tmp/cluster.yaml"
for ((i = 0; i < N; i++)); do
  printf '02:00:00:%02x:%02x:%02x\n' $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255))
done >"$tmp/macs.txt"

cli=("$BIN" --config "$tmp/config.toml")
"${cli[@]}" import -f "$tmp/cluster.yaml" >/dev/null
# One boot configuration per group (boot-service's BootConfiguration with a
# group selector); every node is matched through its group.
for ((g = 0; g < CONFIGS; g++)); do
  "${cli[@]}" boot config add "$(printf 'cfg%02d' "$g")" --group "$(printf 'g%02d' "$g")" \
    --kernel "$NODE_BASE/artifacts/vmlinuz-$g" --initrd "$NODE_BASE/artifacts/initrd-$g.img" \
    --params "console=ttyS0,115200 ip=dhcp" >/dev/null
done

first_mac=$(head -n 1 "$tmp/macs.txt")
last_mac=$(tail -n 1 "$tmp/macs.txt")
curl -sf -o "$tmp/script.ipxe" "$NODE_BASE/boot-service/bootscript?mac=$first_mac" ||
  die "GET /boot-service/bootscript?mac=$first_mac failed"
grep -q '^kernel --name kernel .*vmlinuz-0 ' "$tmp/script.ipxe" ||
  die "the first node did not get its group's script: $(head -c 300 "$tmp/script.ipxe")"
curl -sf -o "$tmp/legacy.ipxe" "$NODE_BASE/boot/v1/bootscript?mac=$first_mac" ||
  die "GET /boot/v1/bootscript?mac=$first_mac failed"
grep -q '^kernel --name kernel .*vmlinuz-0 ' "$tmp/legacy.ipxe" ||
  die "the legacy route did not give the group's script: $(head -c 300 "$tmp/legacy.ipxe")"
last_cfg=$(((N - 1) % CONFIGS))
for route in boot-service/bootscript boot/v1/bootscript; do
  curl -sf "$NODE_BASE/$route?mac=$last_mac" | grep -q "vmlinuz-$last_cfg " ||
    die "the last node did not get its group's script from /$route"
done
size=$(wc -c <"$tmp/script.ipxe")
legacy_size=$(wc -c <"$tmp/legacy.ipxe")

# ----------------------------------------------------------------- nginx
mkdir -p "$tmp/www" "$tmp/nginx"
cp "$tmp/script.ipxe" "$tmp/www/bootscript.ipxe"
# nginx's worker drops root privileges: let it reach the file.
chmod 711 "$tmp"
chmod 755 "$tmp/www"
chmod 644 "$tmp/www/bootscript.ipxe"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $tmp/www;
    }
}
EOF
"${pin_server[@]}" nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" \
  >"$tmp/nginx/stdout.log" 2>&1 &
nginx_pid=$!
wait_for "http://127.0.0.1:$NGINX_PORT/bootscript.ipxe" "nginx"
nginx_size=$(curl -sf "http://127.0.0.1:$NGINX_PORT/bootscript.ipxe" | wc -c)
[[ $nginx_size == "$size" ]] || die "nginx serves $nginx_size bytes, the script has $size"

# ------------------------------------------------------------------- load
# One request per connection ("Connection: close"); the path cycles over
# every MAC (nginx ignores the query, so both get the same requests).
cat >"$tmp/cycle.lua" <<'EOF'
local prefix, macs, i = "", {}, 0
function init(args)
  prefix = args[1]
  for line in io.lines(args[2]) do macs[#macs + 1] = line end
end
function request()
  i = i % #macs + 1
  return wrk.format("GET", prefix .. macs[i], { ["Connection"] = "close" })
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

load() { # base path-prefix seconds → "rps p50_ms p99_ms requests socket_errors non2xx"
  "${pin_client[@]}" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${3}s" --timeout 10s \
    -s "$tmp/cycle.lua" "$1" -- "$2" "$tmp/macs.txt" | awk '/^RESULT /{print $2, $3, $4, $5, $6, $7}'
}

# CPU time (ticks, all threads) of a process and its children: how much of
# its CPU the server used, whatever else the machine was doing.
cpu_ticks() {
  local total=0 pid f
  for pid in "$@" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    [[ -r /proc/$pid/stat ]] || continue
    f=$(sed 's/^.*) //' "/proc/$pid/stat")
    read -r -a a <<<"$f"
    # fields 14 and 15 (utime, stime) are 11 and 12 after "pid (comm) ".
    total=$((total + a[11] + a[12]))
  done
  echo "$total"
}
tck=$(getconf CLK_TCK)
# measure PID URL PATH → "rps p50 p99 requests sockerr non2xx cpu_s us_per_req"
# (plus "wrk_cpu_s": user+system time of wrk itself)
measure() {
  local t0 t1 out wrk_cpu TIMEFORMAT='%U %S'
  t0=$(cpu_ticks "$1")
  { time load "$2" "$3" "$DURATION" >"$tmp/load.out"; } 2>"$tmp/load.time"
  t1=$(cpu_ticks "$1")
  out=$(cat "$tmp/load.out")
  wrk_cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$tmp/load.time")
  awk -v o="$out" -v d=$((t1 - t0)) -v hz="$tck" -v w="$wrk_cpu" 'BEGIN {
    split(o, f, " "); cpu = d / hz
    printf "%s %.2f %.1f %s\n", o, cpu, (f[4] > 0 ? cpu * 1e6 / f[4] : 0), w }'
}

oc_url="$NODE_BASE"
ng_url="http://127.0.0.1:$NGINX_PORT"
bs_path="/boot-service/bootscript?mac="
lg_path="/boot/v1/bootscript?mac="
ng_path="/bootscript.ipxe?mac="

loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
load "$oc_url" "$bs_path" "$WARMUP" >/dev/null
load "$oc_url" "$lg_path" "$WARMUP" >/dev/null
load "$ng_url" "$ng_path" "$WARMUP" >/dev/null
# Alternating rounds, so a change in background load hits all three.
fmt='%-16s %9s %8s %8s %9s %8s %8s %10s %11s %8s\n'
rows=()
bs_all=()
lg_all=()
ng_all=()
ratios=()
for ((r = 1; r <= ROUNDS; r++)); do
  read -r bs_rps bs_p50 bs_p99 bs_n bs_err bs_non2xx bs_cpu bs_us bs_wrk < <(measure "$server_pid" "$oc_url" "$bs_path")
  read -r lg_rps lg_p50 lg_p99 lg_n lg_err lg_non2xx lg_cpu lg_us lg_wrk < <(measure "$server_pid" "$oc_url" "$lg_path")
  read -r ng_rps ng_p50 ng_p99 ng_n ng_err ng_non2xx ng_cpu ng_us ng_wrk < <(measure "$nginx_pid" "$ng_url" "$ng_path")
  [[ -n ${bs_rps:-} && -n ${lg_rps:-} && -n ${ng_rps:-} ]] || die "wrk produced no result (logs in $tmp)"
  rows+=("$(printf "$fmt" "boot-service #$r" "$bs_rps" "$bs_p50" "$bs_p99" "$bs_n" "$bs_err" "$bs_non2xx" "${bs_cpu} s" "$bs_us" "${bs_wrk} s")")
  rows+=("$(printf "$fmt" "legacy BSS #$r" "$lg_rps" "$lg_p50" "$lg_p99" "$lg_n" "$lg_err" "$lg_non2xx" "${lg_cpu} s" "$lg_us" "${lg_wrk} s")")
  rows+=("$(printf "$fmt" "nginx #$r" "$ng_rps" "$ng_p50" "$ng_p99" "$ng_n" "$ng_err" "$ng_non2xx" "${ng_cpu} s" "$ng_us" "${ng_wrk} s")")
  bs_all+=("$bs_rps $bs_p99 $bs_us")
  lg_all+=("$lg_rps $lg_p99 $lg_us")
  ng_all+=("$ng_rps $ng_p99 $ng_us")
  ratios+=("$(awk -v a="$bs_rps" -v b="$lg_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')")
done
# The script must still be served correctly after the runs.
curl -sf "$NODE_BASE/boot-service/bootscript?mac=$last_mac" | grep -q '^kernel --name kernel ' ||
  die "the boot script is no longer served after the load runs"

# median COLUMN < "a b c" lines
median() {
  awk -v c="$1" '{ print $c }' | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
med() { printf '%s\n' "$@" | median "$COL"; }
COL=1; bs_rps=$(med "${bs_all[@]}"); lg_rps=$(med "${lg_all[@]}"); ng_rps=$(med "${ng_all[@]}")
COL=2; bs_p99=$(med "${bs_all[@]}"); lg_p99=$(med "${lg_all[@]}"); ng_p99=$(med "${ng_all[@]}")
COL=3; bs_us=$(med "${bs_all[@]}"); lg_us=$(med "${lg_all[@]}"); ng_us=$(med "${ng_all[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
vs_legacy=$(ratio "$bs_rps" "$lg_rps")
vs_nginx=$(ratio "$bs_rps" "$ng_rps")
lg_vs_nginx=$(ratio "$lg_rps" "$ng_rps")
verdict=$(awk -v r="$vs_legacy" 'BEGIN { print (r >= 0.9 ? "meets" : "BELOW") }')

echo "== boot-service script benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "openchami:   $("$BIN" --version)  ($BIN)"
echo "nginx:       $(nginx -v 2>&1 | sed 's/^nginx version: //'), 1 worker process, access_log off, sendfile on, static file"
echo "load:        $(wrk --version 2>&1 | head -n 1 | awk '{print $1, $2}'), -t $THREADS -c $CONNECTIONS, $ROUNDS alternating rounds of ${DURATION}s per server after ${WARMUP}s warm-up each,"
echo "             Connection: close (a new TCP connection per request)"
echo "selection:   $N nodes, node i in group g<i mod $CONFIGS>, $CONFIGS boot configurations each selecting one group"
echo "requests:    path cycles over all $N MACs (/boot-service/bootscript?mac=, /boot/v1/bootscript?mac=; nginx: same query on the static file)"
echo "pinning:     $pinning; CPUs: $cpus; load average before: $loadavg, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "body size:   $size bytes boot-service, $legacy_size bytes legacy (script for $first_mac; nginx file = the boot-service script)"
printf "$fmt" "" "req/s" "p50 ms" "p99 ms" "requests" "sockerr" "non-2xx" "server CPU" "CPU µs/req" "wrk CPU"
printf '%s\n' "${rows[@]}"
printf "$fmt" "boot-service med" "$bs_rps" "" "$bs_p99" "" "" "" "" "$bs_us" ""
printf "$fmt" "legacy BSS med" "$lg_rps" "" "$lg_p99" "" "" "" "" "$lg_us" ""
printf "$fmt" "nginx med" "$ng_rps" "" "$ng_p99" "" "" "" "" "$ng_us" ""
echo "ratios:      boot-service / legacy  $vs_legacy ($verdict the 0.9 target); per round: ${ratios[*]}"
echo "             boot-service / nginx   $vs_nginx"
echo "             legacy / nginx         $lg_vs_nginx"
echo "             CPU per request: boot-service $(ratio "$bs_us" "$lg_us") × legacy's, $(ratio "$bs_us" "$ng_us") × nginx's (medians)"
