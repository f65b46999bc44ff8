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
# Then the reserved clients again at the common rate in DHCP_ROUNDS (3)
# rounds, the set-ups taking turns (see dhcp_read_rounds); the table's
# reserved CPU figures are their medians.
#
# Knobs: DHCP=0 skips the phase; DHCP_RATES ("500 1000 2000 4000 8000"),
# DHCP_STEP_SECS (3), DHCP_POOL_RANGE (1000000), DHCP_ROUNDS (3; 0: none),
# DHCP_CONTROL_CLIENTS (1; 2: each control head hears two clients, as each
# head of the pair hears both).

DHCP_RATES=${DHCP_RATES:-"500 1000 2000 4000 8000"}
DHCP_STEP_SECS=${DHCP_STEP_SECS:-3}
DHCP_POOL_RANGE=${DHCP_POOL_RANGE:-1000000}
DHCP_SETUPS=(sqlite pg pg2)
DHCP_SETS=(pool reserved)
DHCP_ROUNDS=${DHCP_ROUNDS:-3}

dhcp_id=$(($$ % 100000))
NS_BR=ocmhb-br-$dhcp_id
NS_CL=ocmhb-c-$dhcp_id
NS_H=(ocmhb-h0-$dhcp_id ocmhb-h1-$dhcp_id ocmhb-h2-$dhcp_id)
IF_H=(mhb${dhcp_id}h0 mhb${dhcp_id}h1 mhb${dhcp_id}h2)
IP_H=(10.1.250.1 10.1.250.2 10.1.250.2)
IF_CL=mhb${dhcp_id}c
IP_CL=10.1.250.100
# The control's second network (see dhcp_net2): its own bridge, head
# namespace 2 and client.
NS_BR2=ocmhb-br2-$dhcp_id
NS_CL2=ocmhb-c2-$dhcp_id
IF_CL2=mhb${dhcp_id}c2
NS_CL2B=ocmhb-c2b-$dhcp_id
IF_CL2B=mhb${dhcp_id}c2b
# A second client on the first network (see dhcp_reserved).
NS_CLB=ocmhb-cb-$dhcp_id
IF_CLB=mhb${dhcp_id}cb
IP_CLB=10.1.250.101
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

# A network: a bridge namespace, then the namespaces joined to it, each by
# a veth pair (ns:ifname:ip).
dhcp_bridge() { # bridge-ns ns:ifname:ip...
  local br=$1 ns ifname ip p
  shift
  for ns in "$br" "${@%%:*}"; do
    dhcp_nets+=("$ns")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  for p in "$@"; do
    IFS=: read -r ns ifname ip <<<"$p"
    ip link add "$ifname" netns "$ns" type veth peer name "${ifname}p" netns "$br"
    ip -n "$ns" addr add "$ip/12" dev "$ifname"
    ip -n "$ns" link set "$ifname" up
    ip -n "$br" link set "${ifname}p" master br0
    ip -n "$br" link set "${ifname}p" up
  done
}
dhcp_net() {
  dhcp_bridge "$NS_BR" "${NS_H[0]}:${IF_H[0]}:${IP_H[0]}" "${NS_H[1]}:${IF_H[1]}:${IP_H[1]}" "$NS_CL:$IF_CL:$IP_CL" \
    "$NS_CLB:$IF_CLB:$IP_CLB"
}
# A second network, sharing nothing with the first: bridge, head namespace
# 2 and a client. The control set-up (sq2) puts one SQLite head on each
# network and half the reserved clients on each, so it measures two heads
# taking turns on one core without anything shared between them.
dhcp_net2() {
  [[ -n ${DHCP_NET2:-} ]] && return
  DHCP_NET2=1
  dhcp_bridge "$NS_BR2" "${NS_H[2]}:${IF_H[2]}:${IP_H[2]}" "$NS_CL2:$IF_CL2:$IP_CL" "$NS_CL2B:$IF_CL2B:$IP_CLB"
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
dhcp_perf() { # base-mac range rate seconds [client-ns client-if]
  local out
  out=$(timeout -s KILL $(($4 + 20)) ip netns exec "${5:-$NS_CL}" taskset -c "$CLIENT_CPU" \
    perfdhcp -4 -l "${6:-$IF_CL}" -b "mac=$1" -R "$2" -r "$3" -p "$4" -n $(($3 * $4)) -W 500000 2>&1 || true)
  echo "$out" >"$tmp/perf-last.$1.txt"
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
    dhcp_up "$setup"
    local procs=("${DHCP_PROCS[@]}")
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
    dhcp_down
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
  dhcp_read_rounds
  dhcp_cleanup
}

# Starts a set-up's heads in their namespaces: DHCP_HEADS, DHCP_PROCS
# (heads, then the database server).
dhcp_up() { # setup
  local k
  setup_heads "$1"
  DHCP_HEADS=("${HEADS[@]}")
  if [[ $1 == sq2 ]]; then
    dhcp_net2
    dhcp_start_head sq2a 0
    dhcp_start_head sq2b 2
  else
    for k in "${!DHCP_HEADS[@]}"; do dhcp_start_head "${DHCP_HEADS[$k]}" "$k"; done
  fi
  [[ $1 == pg2 ]] && dhcp_wait_split
  setup_heads "$1"
  DHCP_PROCS=("${PROCS[@]}")
}
# Reserved clients at `rate` for `secs` from two perfdhcp processes, each
# with its part of the inventory's MACs at its share of the rate:
# "DORA/s drop% exchanges". Every set-up gets the same two clients (a
# wake-up, not a packet, is most of a head's cost per exchange at these
# rates, so how the packets bunch matters as much as how many there are);
# for the control (sq2) the second one is on the second network. The MACs
# are split at the multiple of 256 nearest half of them: perfdhcp adds its
# random number to the base MAC bytewise, without carry (N up to 65,536).
dhcp_reserved() { # setup rate secs
  local h=$(((N + 256) / 512 * 256))
  ((h > 0 && h < N)) || die "the DHCP read rounds need N of 512 or more"
  local parts=("0 $h $NS_CL $IF_CL" "$h $((N - h)) $NS_CLB $IF_CLB")
  [[ $1 == sq2 ]] && parts[1]="$h $((N - h)) $NS_CL2 $IF_CL2"
  if [[ $1 == sq2 && ${DHCP_CONTROL_CLIENTS:-1} == 2 ]]; then
    # Each control head hears two clients, as each head of a pair does.
    local q=$((h / 512 * 256)) q2=$(((N - h) / 512 * 256))
    ((q > 0 && q2 > 0)) || die "DHCP_CONTROL_CLIENTS=2 needs N of 1,024 or more"
    parts=("0 $q $NS_CL $IF_CL" "$q $((h - q)) $NS_CLB $IF_CLB"
      "$h $q2 $NS_CL2 $IF_CL2" "$((h + q2)) $((N - h - q2)) $NS_CL2B $IF_CL2B")
  fi
  local p first range ns ifname rate k=0 files=() rates=() jobs=()
  for p in "${parts[@]}"; do
    read -r first range ns ifname <<<"$p"
    rate=$(($2 * range / N))
    dhcp_perf "$(printf '02:ad:00:00:%02x:00' $((first / 256)))" "$range" "$rate" "$3" "$ns" "$ifname" \
      >"$tmp/reserved.$k" &
    jobs+=($!)
    files+=("$tmp/reserved.$k")
    rates+=("$rate")
    k=$((k + 1))
  done
  wait "${jobs[@]}"
  python3 - "${#files[@]}" "${files[@]}" "${rates[@]}" <<'EOF'
import sys
k = int(sys.argv[1])
got = drop = n = 0
rates = [int(r) for r in sys.argv[2 + k:]]
for f, r in zip(sys.argv[2:2 + k], rates):
    g, d, e = open(f).read().split()
    got += int(g); n += int(e); drop += float(d) * r
print(f"{got} {drop / max(sum(rates), 1):.2f} {n}")
EOF
}
dhcp_down() {
  local h
  for h in "${DHCP_HEADS[@]}"; do dhcp_stop "${PID[$h]}"; done
}

# Reserved clients (reads) again at the common rate, DHCP_ROUNDS rounds with
# the set-ups taking turns in each (heads restarted per turn), as the boot
# script rounds do: each set-up's CPU per 1,000 becomes the median of its
# rounds, and a window of IDLE_SECS with no clients before each step gives
# what the set-up burns idle, so the figure net of it is printed too.
dhcp_read_rounds() {
  ((DHCP_ROUNDS > 0)) || return 0
  local r setup at=${RESULT[dhcp_reserved.at]} i0 got drop n k key split c0 c1
  for r in $(seq 1 "$DHCP_ROUNDS"); do
    for setup in "${DHCP_SETUPS[@]}" sq2; do
      dhcp_up "$setup"
      # Warm-up (the control's heads give each client its lease record here).
      dhcp_reserved "$setup" 2000 "$([[ $setup == sq2 && $r == 1 ]] && echo 3 || echo 1)" >/dev/null
      i0=$(cpu_of "${DHCP_PROCS[@]}")
      sleep "$IDLE_SECS"
      # CPU seconds per process before and after the step; the totals
      # are their sums.
      c0=() c1=()
      for k in "${DHCP_PROCS[@]}"; do c0+=("$(cpu_of "$k")"); done
      read -r got drop n < <(dhcp_reserved "$setup" "$at" "$DHCP_STEP_SECS")
      for k in "${DHCP_PROCS[@]}"; do c1+=("$(cpu_of "$k")"); done
      key=dhcp_reserved.$setup.$r
      read -r "RESULT[$key.cpu]" "RESULT[$key.net]" split < <(python3 - "$i0" "$IDLE_SECS" "$DHCP_STEP_SECS" "$n" \
        "${#c0[@]}" "${c0[@]}" "${c1[@]}" <<'EOF'
import sys
i0, idle_secs, step_secs, n, k = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), max(int(sys.argv[4]), 1), int(sys.argv[5])
c0 = [float(x) for x in sys.argv[6:6 + k]]
c1 = [float(x) for x in sys.argv[6 + k:]]
idle = (sum(c0) - i0) / idle_secs
used = sum(c1) - sum(c0)
print(f"{used * 1000 / n:.3f} {max(used - idle * step_secs, 0) * 1000 / n:.3f}",
      " ".join(f"{b - a:.2f}" for a, b in zip(c0, c1)))
EOF
      )
      printf '  %-6s reserved round %s at %s/s: %6s DORA/s, %6s%% unfinished, %s CPU s per 1,000 (%s net of idle; CPU s by process: %s)\n' \
        "$setup" "$r" "$at" "$got" "$drop" "${RESULT[$key.cpu]}" "${RESULT[$key.net]}" "$split"
      dhcp_down
    done
  done
  medians dhcp_reserved "$DHCP_ROUNDS" "cpu net" "${DHCP_SETUPS[@]}" sq2
}

# Rows for the final table.
dhcp_rows() {
  [[ ${DHCP:-1} == 0 ]] && return
  row "DHCP pool DORA/s (< 1 % unfinished)" dhcp_pool rate
  row "  CPU s/1,000 at ${RESULT[dhcp_pool.at]}/s (heads + db)" dhcp_pool cpu
  row "DHCP reserved DORA/s (< 1 % unfinished)" dhcp_reserved rate
  row "  CPU s/1,000 at ${RESULT[dhcp_reserved.at]}/s (heads + db)" dhcp_reserved cpu
  if ((DHCP_ROUNDS > 0)); then
    row "  the same, net of idle" dhcp_reserved net
  fi
}

dhcp_summary() {
  [[ ${DHCP:-1} == 0 ]] && return
  local a b two_macs two_addrs same
  read -r a b two_macs two_addrs same <<<"$DHCP_LEASES"
  echo "DHCP pool on two heads: $a live pool leases on head a, $b on head b; addresses with two MACs: $two_macs;" \
    "MACs with two pool addresses: $two_addrs; heads agree: $same"
  local cpu_read
  cpu_read=$(python3 -c "s = ${RESULT[dhcp_reserved.sqlite.cpu]}; print(f'{${RESULT[dhcp_reserved.pg2.cpu]} / s:.2f}' if s else '-')")
  local how="one step" rounds="" r
  if ((DHCP_ROUNDS > 0)); then
    rounds=$(by_round dhcp_reserved "$DHCP_ROUNDS" pg2 sqlite)
    how="median of $DHCP_ROUNDS rounds; by round: $rounds; $(python3 -c "print(f'{${RESULT[dhcp_reserved.pg2.net]} / ${RESULT[dhcp_reserved.sqlite.net]}:.2f}')")x net of idle"
    echo "DHCP reserved on two SQLite heads sharing nothing (two networks, half the clients each), same CPU:" \
      "${RESULT[dhcp_reserved.sq2.cpu]} CPU s per 1,000 = $(python3 -c "print(f'{${RESULT[dhcp_reserved.sq2.cpu]} / ${RESULT[dhcp_reserved.sqlite.cpu]}:.2f}')")x one head;" \
      "two PostgreSQL heads $(python3 -c "print(f'{${RESULT[dhcp_reserved.pg2.cpu]} / ${RESULT[dhcp_reserved.sq2.cpu]}:.2f}')")x it"
  fi
  echo "target: DHCP reads on two PostgreSQL heads <= 1.2x the SQLite head's CPU per exchange: ${cpu_read}x ($how)"
  # A head's CPU per exchange falls as its rate rises (more packets per
  # wake-up), and two heads each get half the rate: compare at the same
  # load per head too, from the steps (two heads at 2r/s against one at r/s).
  local at2=""
  for r in $DHCP_RATES; do
    [[ -n ${DHCP_OK[sqlite.reserved.$r]:-} && -n ${DHCP_OK[pg2.reserved.$((2 * r))]:-} ]] && at2=$r
  done
  if [[ -n $at2 ]]; then
    echo "DHCP reserved at the same load per head: two PostgreSQL heads at $((2 * at2))/s" \
      "${DHCP_CPU[pg2.reserved.$((2 * at2))]} CPU s per 1,000, one SQLite head at ${at2}/s ${DHCP_CPU[sqlite.reserved.$at2]}:" \
      "$(python3 -c "print(f'{${DHCP_CPU[pg2.reserved.$((2 * at2))]} / ${DHCP_CPU[sqlite.reserved.$at2]}:.2f}')")x"
  fi
  if [[ $two_macs != 0 ]]; then
    echo "FAIL: an address went to two MACs" >&2
    return 1
  fi
}
