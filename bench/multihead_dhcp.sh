# DHCP phase of bench/multihead.sh (sourced by it, after its other phases;
# uses its heads, state directories, databases, `cli`, `cpu_of`, RESULT).
#
# The loopback heads are stopped and restarted, one store set-up after the
# other, inside network namespaces with DHCP on (same state directories and
# databases): a bridge namespace, two head namespaces and a client namespace,
# each joined to the bridge by a veth pair. One head (sqlite, pg) or both
# (pg2a, pg2b) run; perfdhcp runs in the client namespace as a relay and
# broadcasts, so with two heads both hear every client and each answers its
# share (buckets of the MAC, see src/dhcp/balance.rs), as with a
# real client or a relay with both heads as helpers. Subnet 10.0.0.0/12 with the inventory's reservations
# (10.1.x.y) and a pool of 10.4.0.1-10.15.255.254.
#
# Two client sets, each stepped through DHCP_RATES (DHCP_STEP_SECS each,
# stopping at the first step with >= 1 % of the exchanges unfinished):
#
#   pool      MACs in no inventory, fresh ones every step (base
#             04:<step>:00:00:00:00, -R DHCP_POOL_RANGE): every exchange is
#             a new pool binding, committed through the store before its
#             ACK (writes).
#   reserved  the N inventory MACs, after a warm-up that gives each its
#             lease record (reads).
#
# Each step's heads + database CPU seconds are taken; CPU per 1,000
# exchanges is reported at the common rate: the highest asked rate every
# set-up completed with < 1 % drops (else the lowest). After the two-head
# pool steps both heads' `GET /dhcp/v1/leases` are compared: no address
# with two MACs, no MAC with two pool addresses, both heads agreeing.
#
# Knobs: DHCP=0 skips the phase; DHCP_RATES ("500 1000 2000 4000 8000"),
# DHCP_STEP_SECS (3), DHCP_POOL_RANGE (1000000).

DHCP_RATES=${DHCP_RATES:-"500 1000 2000 4000 8000"}
DHCP_STEP_SECS=${DHCP_STEP_SECS:-3}
DHCP_POOL_RANGE=${DHCP_POOL_RANGE:-1000000}
DHCP_SETUPS=(sqlite pg pg2)
DHCP_SETS=(pool reserved)

dhcp_id=$(($$ % 100000))
NS_BR=ocmhb-br-$dhcp_id
NS_CL=ocmhb-c-$dhcp_id
NS_H=(ocmhb-h0-$dhcp_id ocmhb-h1-$dhcp_id)
IF_H=(mhb${dhcp_id}h0 mhb${dhcp_id}h1)
IP_H=(10.1.250.1 10.1.250.2)
IF_CL=mhb${dhcp_id}c
IP_CL=10.1.250.100
dhcp_nets=()

# Removes every namespace this file made and whatever runs in it (all of
# it started here). Called from multihead.sh's exit trap.
dhcp_cleanup() {
  local ns p
  for ns in "${dhcp_nets[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  dhcp_nets=()
}

dhcp_check_tools() {
  [[ ${DHCP:-1} == 0 ]] && return
  [[ $(id -u) == 0 ]] || die "the DHCP phase needs root (network namespaces); DHCP=0 skips it"
  for c in ip perfdhcp timeout; do
    command -v "$c" >/dev/null 2>&1 || die "missing $c (Debian: iproute2, kea-admin); DHCP=0 skips the DHCP phase"
  done
}

dhcp_net() {
  local ns k
  for ns in "$NS_BR" "$NS_CL" "${NS_H[@]}"; do
    dhcp_nets+=("$ns")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip -n "$NS_BR" link add br0 type bridge
  ip -n "$NS_BR" link set br0 up
  dhcp_port() { # ns ifname ip
    ip link add "$2" netns "$1" type veth peer name "$2p" netns "$NS_BR"
    ip -n "$1" addr add "$3/12" dev "$2"
    ip -n "$1" link set "$2" up
    ip -n "$NS_BR" link set "$2p" master br0
    ip -n "$NS_BR" link set "$2p" up
  }
  for k in 0 1; do dhcp_port "${NS_H[$k]}" "${IF_H[$k]}" "${IP_H[$k]}"; done
  dhcp_port "$NS_CL" "$IF_CL" "$IP_CL"
}

# Stops a process started by multihead.sh and forgets it.
dhcp_stop() { # pid
  local p keep=()
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# Head `name` in head namespace k, with DHCP on its veth.
dhcp_start_head() { # name k
  local name=$1 k=$2 dir=$tmp/$1
  sed -e "s|^listen = \"127.0.0.1:${NODE[$name]}\"|listen = \"${IP_H[$k]}:${NODE[$name]}\"|" \
    -e "s|^advertise = .*|advertise = \"http://${IP_H[$k]}:${NODE[$name]}\"|" "$dir/config.toml" >"$dir/dhcp.toml"
  cat >>"$dir/dhcp.toml" <<EOF
[dhcp]
enabled = true
interfaces = ["${IF_H[$k]}"]
[[dhcp.subnets]]
cidr = "10.0.0.0/12"
pool = "10.4.0.1-10.15.255.254"
routers = ["${IP_H[0]}"]
dns = ["${IP_H[0]}"]
domain = "bench.test"
EOF
  RUST_LOG=${DHCP_RUST_LOG:-warn} ip netns exec "${NS_H[$k]}" taskset -c "$SERVER_CPU" \
    "$BIN" --config "$dir/dhcp.toml" serve >"$dir/dhcp.log" 2>&1 &
  PID[$name]=$!
  pids+=("${PID[$name]}")
  for _ in $(seq 1 300); do
    ip netns exec "${NS_H[$k]}" curl -sf -o /dev/null "http://${IP_H[$k]}:${NODE[$name]}/healthz" && return
    kill -0 "${PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  die "$name did not start in its namespace: $(tail -5 "$dir/dhcp.log")"
}

# One perfdhcp run: "completed_per_second drop_pct exchanges". Bounded by
# -p, -n and timeout.
dhcp_perf() { # base-mac range rate seconds
  local out
  out=$(timeout -s KILL $(($4 + 20)) ip netns exec "$NS_CL" taskset -c "$CLIENT_CPU" \
    perfdhcp -4 -l "$IF_CL" -b "mac=$1" -R "$2" -r "$3" -p "$4" -n $(($3 * $4)) -W 500000 2>&1 || true)
  echo "$out" >"$tmp/perf-last.txt"
  if [[ -n ${VERBOSE:-} ]]; then
    echo "$out" | grep -E 'Statistics for|sent packets|received packets|orphans' >&2 || true
  fi
  echo "$out" | awk -v secs="$4" '
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

# Both heads' live pool leases compared: prints the summary line and
# returns non-zero on an address with two MACs.
dhcp_check_leases() {
  local k h files=()
  for k in 0 1; do
    h=${DHCP_HEADS[$k]}
    ip netns exec "${NS_H[$k]}" curl -sk -H "Authorization: Bearer $(cli "$h" token issue --ttl 10m)" \
      "https://127.0.0.1:${API[$h]}/dhcp/v1/leases" >"$tmp/leases.$k.json"
    files+=("$tmp/leases.$k.json")
  done
  python3 - "${files[@]}" <<'EOF'
import json, sys
heads = []
for f in sys.argv[1:]:
    try:
        heads.append([l for l in json.load(open(f)) if l["kind"] == "pool" and not l["expired"]])
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"{f}: not a lease list: {e}")
macs_of, two_macs, two_addrs = {}, 0, 0
for ls in heads:
    by_mac = {}
    for l in ls:
        macs_of.setdefault(l["ip"], set()).add(l["mac"])
        by_mac.setdefault(l["mac"], set()).add(l["ip"])
    two_addrs += sum(1 for a in by_mac.values() if len(a) > 1)
two_macs = sum(1 for m in macs_of.values() if len(m) > 1)
same = {l["ip"]: l["mac"] for l in heads[0]} == {l["ip"]: l["mac"] for l in heads[1]}
print(f"{len(heads[0])} {len(heads[1])} {two_macs} {two_addrs} {'yes' if same else 'no'}")
EOF
}

# Waits until both heads hold their head/<id> lease, then a renewal period
# more, so each has dealt the clients' buckets between them (see
# src/dhcp/balance.rs) before anything is measured.
dhcp_wait_split() {
  local h=${DHCP_HEADS[0]} live=0
  for _ in $(seq 1 100); do
    live=$(ip netns exec "${NS_H[0]}" curl -sk -H "Authorization: Bearer $(cli "$h" token issue --ttl 10m)" \
      "https://127.0.0.1:${API[$h]}/store/v1/status" | python3 -c '
import json, sys
print(sum(1 for l in json.load(sys.stdin).get("leases", [])
          if l["name"].startswith("head/") and l["expires_in_ms"] > 0))' 2>/dev/null || echo 0)
    ((live >= 2)) && break
    sleep 0.2
  done
  ((live >= 2)) || die "the two heads never both held their head lease"
  sleep 6
}

dhcp_phase() {
  [[ ${DHCP:-1} == 0 ]] && return
  echo "dhcp: rates $DHCP_RATES, $DHCP_STEP_SECS s per step"
  dhcp_net
  local h setup set r k base range got drop n c0 c1 step=0 best
  for h in sqlite pg pg2a pg2b; do dhcp_stop "${PID[$h]}"; done
  declare -gA DHCP_OK DHCP_CPU
  for setup in "${DHCP_SETUPS[@]}"; do
    case $setup in
    sqlite) DHCP_HEADS=(sqlite) ;;
    pg) DHCP_HEADS=(pg) ;;
    pg2) DHCP_HEADS=(pg2a pg2b) ;;
    esac
    for k in "${!DHCP_HEADS[@]}"; do dhcp_start_head "${DHCP_HEADS[$k]}" "$k"; done
    [[ $setup == pg2 ]] && dhcp_wait_split
    local procs=()
    for h in "${DHCP_HEADS[@]}"; do procs+=("${PID[$h]}"); done
    [[ $setup != sqlite ]] && procs+=("$PG_PID")
    for set in reserved pool; do
      if [[ $set == reserved ]]; then
        base=02:ad:00:00:00:00
        range=$N
        # Warm-up: about three exchanges per node, so each has its record.
        dhcp_perf "$base" "$range" 2000 $(((3 * N + 1999) / 2000 < 8 ? (3 * N + 1999) / 2000 : 8)) >/dev/null
      else
        range=$DHCP_POOL_RANGE
      fi
      best=0
      for r in $DHCP_RATES; do
        if [[ $set == pool ]]; then
          step=$((step + 1))
          base=04:$(printf %02x $((step % 256))):00:00:00:00
        fi
        c0=$(cpu_of "${procs[@]}")
        read -r got drop n < <(dhcp_perf "$base" "$range" "$r" "$DHCP_STEP_SECS")
        c1=$(cpu_of "${procs[@]}")
        DHCP_CPU[$setup.$set.$r]=$(python3 -c "print(f'{($c1 - $c0) * 1000 / max($n, 1):.3f}')")
        printf '  %-6s %-8s asked %6s/s: %6s DORA/s, %6s%% unfinished, %s CPU s per 1,000\n' \
          "$setup" "$set" "$r" "$got" "$drop" "${DHCP_CPU[$setup.$set.$r]}"
        if python3 -c "import sys; sys.exit(0 if $drop < 1.0 else 1)"; then
          DHCP_OK[$setup.$set.$r]=1
          if ((got > best)); then best=$got; fi
        else
          break
        fi
      done
      RESULT[dhcp_$set.$setup.rate]=$best
    done
    if [[ $setup == pg2 ]]; then
      local out=""
      for _ in $(seq 1 50); do
        out=$(dhcp_check_leases) || die "lease check: $out"
        [[ $out == *yes ]] && break
        sleep 0.2
      done
      DHCP_LEASES=$out
    fi
    for h in "${DHCP_HEADS[@]}"; do dhcp_stop "${PID[$h]}"; done
  done
  # The common rate per client set: the highest every set-up completed.
  for set in "${DHCP_SETS[@]}"; do
    local at=""
    for r in $DHCP_RATES; do
      local all=1
      for setup in "${DHCP_SETUPS[@]}"; do [[ -n ${DHCP_OK[$setup.$set.$r]:-} ]] || all=; done
      [[ -n $all ]] && at=$r
    done
    [[ -n $at ]] || at=${DHCP_RATES%% *}
    RESULT[dhcp_$set.at]=$at
    for setup in "${DHCP_SETUPS[@]}"; do
      RESULT[dhcp_$set.$setup.cpu]=${DHCP_CPU[$setup.$set.$at]:-0}
    done
  done
  dhcp_cleanup
}

# Rows for the final table.
dhcp_rows() {
  [[ ${DHCP:-1} == 0 ]] && return
  row "DHCP pool DORA/s (< 1 % unfinished)" dhcp_pool rate
  row "  CPU s/1,000 at ${RESULT[dhcp_pool.at]}/s (heads + db)" dhcp_pool cpu
  row "DHCP reserved DORA/s (< 1 % unfinished)" dhcp_reserved rate
  row "  CPU s/1,000 at ${RESULT[dhcp_reserved.at]}/s (heads + db)" dhcp_reserved cpu
}

dhcp_summary() {
  [[ ${DHCP:-1} == 0 ]] && return
  local a b two_macs two_addrs same
  read -r a b two_macs two_addrs same <<<"$DHCP_LEASES"
  echo "DHCP pool on two heads: $a live pool leases on head a, $b on head b; addresses with two MACs: $two_macs;" \
    "MACs with two pool addresses: $two_addrs; heads agree: $same"
  local cpu_read
  cpu_read=$(python3 -c "s = ${RESULT[dhcp_reserved.sqlite.cpu]}; print(f'{${RESULT[dhcp_reserved.pg2.cpu]} / s:.2f}' if s else '-')")
  echo "target: DHCP reads on two PostgreSQL heads <= 1.2x the SQLite head's CPU per exchange: ${cpu_read}x"
  if [[ $two_macs != 0 ]]; then
    echo "FAIL: an address went to two MACs" >&2
    return 1
  fi
}
